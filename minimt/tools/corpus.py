"""Embed a large text file into an .npy file, streaming, on one or several processes.

    python -m minimt embed --input corpus.txt --output corpus.npy                      # one process
    torchrun --nproc_per_node=2 -m minimt embed --input corpus.txt --output corpus.npy # or --nnodes=... for more

Line i of the input (one text per line, UTF-8) becomes row i of an (N, D) float32 array. The output is a memory
mapped .npy, written a chunk at a time, so memory stays flat however long the corpus: neither the texts nor the
embeddings are ever all in memory (the file is mapped afresh for each chunk, so even written pages leave). Under
torchrun, rank r encodes chunks r, r + world, r + 2*world, ... into its own rows of the same file (on a shared
file system across machines); no gathering, no shard files to merge, and the rows are those one process would
write, since a text's embedding does not depend on its batch (~1e-7).

The rows go into a hidden temp file beside the output, its disk space reserved before the first chunk, renamed to
the output once every rank has written (minimt/io/files.py): a run that is killed, or finds the disk full, leaves the
output as it was, and a full disk is an error message at the start, not a crash (SIGBUS) half way.
"""
import ctypes
import ctypes.util
import numbers
from itertools import islice

import numpy as np
import torch.distributed as dist
from tqdm import tqdm  # installed with huggingface-hub

from minimt.errors import UserError
from minimt.io import distributed, files
from minimt.data import not_utf8
from minimt.encoder import CHUNK


def release_freed_memory():
    """glibc keeps freed heap blocks for reuse; batches of ever other shapes fragment them, and the process grows in
    steps (seen: +390 MB over 40k lines). malloc_trim hands the free blocks back (seen: flat). Other C libraries
    (macOS, musl) have no malloc_trim and are left as they are: this only changes memory use, never results."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))  # here, not at import; once per chunk is cheap
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def count_lines(path):
    """The number of lines; reading them all first also checks the whole file is UTF-8 before any output exists."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return sum(1 for _ in f)
    except UnicodeDecodeError:
        raise not_utf8(path) from None


def read_chunks(path, size=CHUNK):
    """(first line number, list of texts) for each run of `size` lines; line endings removed, nothing else."""
    with open(path, encoding="utf-8", newline="") as f:
        start = 0
        while chunk := list(islice(f, size)):
            yield start, [line.rstrip("\r\n") for line in chunk]
            start += len(chunk)


def embed_file(encoder, src, dst, chunk=CHUNK, log=print, show_progress_bar=False, **encode_kwargs):
    """Encode every line of src into the .npy file dst; returns the array's shape. The progress bar counts the
    lines this process encodes."""
    if not isinstance(chunk, numbers.Integral) or chunk < 1:  # 0 would write nothing, -1 fail after creating the file
        raise UserError(f"chunk must be a positive number of lines, got {chunk!r} (default: {CHUNK})")
    rank, world = distributed.init()
    n = count_lines(src)
    if n == 0:
        raise UserError(f"{src} is empty; give a file with one text per line")
    tmp = shared_temp(dst, (n, encoder.dim), rank)
    try:
        mine = sum(min(chunk, n - s) for s in range(rank * chunk, n, world * chunk))
        bar = tqdm(total=mine, desc=f"embed (rank {rank})" if world > 1 else "embed", unit="line",
                   disable=not show_progress_bar)
        for k, (start, texts) in enumerate(read_chunks(src, chunk)):
            if k % world != rank:
                continue
            emb = encoder.encode(texts, **encode_kwargs)                   # (len(texts), D)
            out = np.lib.format.open_memmap(tmp, mode="r+")  # mapped per chunk: written pages leave memory with it
            out[start:start + len(texts)] = emb
            out.flush()
            del out
            release_freed_memory()
            bar.update(len(texts))
            if not show_progress_bar:
                log(f"rank {rank}: lines {start}..{start + len(texts) - 1} of {n}")
        bar.close()
        distributed.barrier()  # every rank's rows are in the temp
        if rank == 0:
            files.publish(tmp, dst)
    finally:
        if rank == 0:
            files.discard(tmp)  # after a failure; once published there is no temp left
    distributed.finish()  # the other ranks wait here until rank 0 has renamed
    return n, encoder.dim


def shared_temp(dst, shape, rank):
    """Rank 0 creates the temp .npy beside dst, space reserved, under a name no other run can hold
    (files.new_temp); under torchrun it sends that name to the other ranks, which write into the same file."""
    name = [str(files.create_npy(dst, shape)) if rank == 0 else None]
    if dist.is_initialized():
        dist.broadcast_object_list(name, src=0)
    return name[0]
