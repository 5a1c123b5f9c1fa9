"""Where the model runs and in which number format: the rules, each decided here once.

    device  "cpu", "cuda", "cuda:1", "mps", or "auto" (cuda if present, else mps, else cpu); a device this
            machine does not have is refused before any work starts
    dtype   "float32" (the reference), "bfloat16" (fp32's range, 8 bits of mantissa: fast on CPUs with AVX512-BF16
            or AMX, and on recent GPUs), "float16" (CUDA only: CPUs compute it slowly, without fp32 accumulation),
            or "auto" (bfloat16 where it pays on this machine, float32 elsewhere)
"""
import functools
import platform
import time
from pathlib import Path

import torch

from minimt.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BF16_PAYS = 1.8  # bf16 is worth its rounding where its matmuls run this much faster than fp32's


def pick_device(device):
    """A torch.device for `device`: "auto" chooses; any other name must be present on this machine."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"device {device!r} is not a device name ({e}); use 'cpu', 'cuda', 'cuda:1', 'mps' or "
                        f"'auto'") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r}: this PyTorch sees no CUDA GPU (a CPU build, or no driver); use "
                        f"device='cpu' or 'auto'")
    if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
        raise UserError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s); use a "
                        f"lower index or 'auto'")
    if d.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {device!r}: MPS (Apple GPUs) is not available here; use device='cpu' or 'auto'")
    return d


def check_dtype(dtype, device):
    """The torch dtype for the name `dtype` on `device`, or a UserError saying what to use instead."""
    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} is not supported; use one of {sorted(DTYPES) + ['auto']}")
    if dtype == "float16" and device.type != "cuda":
        raise UserError(f"float16 is for CUDA only (device {device}): CPUs compute it slowly and without fp32 "
                        f"accumulation; use bfloat16 there")
    return DTYPES[dtype]


def auto_dtype(device):
    """(dtype, why) for dtype="auto": bfloat16 where bf16 matmuls run >= BF16_PAYS x float32 on this machine
    (CPUs with AVX512-BF16 or AMX: 2-10x; elsewhere bf16 is emulated and slower), on CUDA where the GPU has bf16;
    otherwise float32. The bf16 quality gate (tests/test_encoder.py) holds either way."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ("bfloat16", "this GPU computes bf16") if ok else ("float32", "this GPU has no bf16")
    if device.type != "cpu":
        return "float32", f"no bf16 check for {device.type}"
    ratio = bf16_speedup()
    verdict = "bfloat16" if ratio >= BF16_PAYS else "float32"
    return verdict, f"bf16 matmuls run {ratio:.1f}x float32's on this CPU (bf16 pays from {BF16_PAYS}x)"


@functools.cache  # once per process: ~0.1 s
def bf16_speedup(tokens=512, H=384, I=1536, reps=5):
    """float32 time / bfloat16 time of an FFN-sized matmul pair on the CPU: the model's shapes, best of `reps`."""
    def best(dtype):
        x, w1, w2 = torch.randn(tokens, H, dtype=dtype), torch.randn(I, H, dtype=dtype), torch.randn(H, I, dtype=dtype)
        times = []
        for _ in range(reps + 1):  # the first call warms up (packing, thread pool)
            t0 = time.perf_counter()
            (x @ w1.t()) @ w2.t()                                         # (tokens, I) then (tokens, H)
            times.append(time.perf_counter() - t0)
        return min(times[1:])
    return best(torch.float32) / best(torch.bfloat16)


def cpu_name():
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) ..."): what the bench and the study record beside a time."""
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"
