"""Data-parallel training over several processes, launched by torchrun (one process per core, GPU or machine).

Every rank holds the whole model and the same batch plan; it takes every world-th example of each batch, and
after backward the ranks add up their gradients, so every rank takes the same optimizer step as one process
would on the whole batch. DistributedDataParallel does that sum inside backward (in buckets, overlapping the
communication); here it is one explicit all-reduce per tensor after backward. That also keeps working when
gradual unfreezing opens tensors mid-run (DDP's wrapper would have to be rebuilt) and when heads train on cached
embeddings (there is no forward for DDP to hook). The backend is gloo on the CPU, NCCL on GPUs (one per process).

    torchrun --nproc_per_node=2 -m minimt train CONFIG.json
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=2 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 -m minimt train CONFIG.json
"""
import os

import torch
import torch.distributed as dist

from minimt.devices import pick_device


def init(device="cpu"):
    """(rank, world size). Starts the process group when torchrun launched more than one process: NCCL when the
    tensors live on GPUs, gloo for the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():  # reads MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE set by torchrun
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
    return dist.get_rank(), world


def local_device(device):
    """The device this process trains on: under torchrun one GPU per process (cuda -> cuda:LOCAL_RANK)."""
    d = pick_device(device)
    if d.type == "cuda" and d.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return d


def all_sum(t):
    """Sum a tensor over all ranks, in place (a no-op in a single process)."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def sync_gradients(params):
    """Add up every trainable tensor's gradient over the ranks. A rank with no example in this batch has no
    gradient: it contributes zeros, and must still take part, since every rank waits for all the others."""
    if not dist.is_initialized():
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def barrier():
    if dist.is_initialized():
        dist.barrier()


def finish():
    if dist.is_initialized():
        dist.barrier()  # the other ranks wait here while rank 0 writes the last checkpoint and scores test
        dist.destroy_process_group()
