"""Which technique buys how much: each speed technique of minimt's encoder switched off alone, everything else on.

    make bench      (or: cd tests/bench && ../../.venv-dev/bin/python bench_techniques.py [ROUNDS])

For each technique, the same encoder runs with it ("on") and without it ("off"), alternating in rounds so that a
slow moment of the machine hits both alike; the table shows the medians and time(off) / time(on).
  one Q/K/V matmul    SelfAttention projects with the stacked (3H, H) qkv weight; off: three Linear modules on
                      copies of its thirds, their outputs side by side (W3 only)
  no eval() walk      encode leaves a model already in eval mode as it is; off: the model is put in training mode
                      before each call, so encode walks eval() and train() over every module
  packing             the Packed layout (real tokens only); off: padded batches of 32 with the attention mask
  one split per run   packed attention takes each run's q, k, v rows with one split; off: a slice per run (each
                      slice's backward fills a batch-sized zero tensor)
Workloads: W3, one sentence per call (200 STSb test sentences, medians of single calls), and W1, the 2,758 STSb
test sentences in one encode call; float32 and bfloat16. T1: three training steps of bench_train.py's T1 (batch
32, fp32). Writes the "techniques" part of results.json.
"""
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn

from bench_encode import padded_encode
from bench_train import CFG, minimt_model, minimt_step, t1_batches, t1_data
from common import MINILM, cpu_name, save_results, write_readme
from minimt import SentenceEncoder
from minimt.model import SelfAttention
from minimt.evaluate import read_sts
from minimt.train import build_optimizer

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3


class ThreeLinears(nn.Module):
    """The Q/K/V projection as three Linear modules."""

    def __init__(self, qkv):
        super().__init__()
        self.parts = nn.ModuleList()
        for w, b in zip(qkv.weight.chunk(3), qkv.bias.chunk(3)):
            lin = nn.Linear(w.shape[1], w.shape[0]).to(w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w)
                lin.bias.copy_(b)
            self.parts.append(lin)

    def forward(self, x):
        return torch.cat([lin(x) for lin in self.parts], dim=-1)  # (..., 3H), as qkv's output


def sliced_forward(self, x, mask=None, runs=None):
    """SelfAttention.forward on a Packed batch with one slice of q, k and v per run instead of one split."""
    q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (N, H)
    parts, r0 = [], 0
    for b, T in runs:
        rows, r0 = slice(r0, r0 + b * T), r0 + b * T
        o = self.attend(*(self.heads(t[rows], b, T) for t in (q, k, v)), None)  # (b, nh, T, hd)
        parts.append(o.transpose(1, 2).reshape(b * T, -1))                    # (b*T, H)
    return self.out(torch.cat(parts))                                         # (N, H)


SPLIT_FORWARD = SelfAttention.forward


def split_per_run(on):
    SelfAttention.forward = SPLIT_FORWARD if on else sliced_forward


def t1_run():
    """A function that times three T1 training steps (bench_train.py's model, optimizer and batches)."""
    train, maps = t1_data()
    batches = t1_batches(train, maps, 4)
    model = minimt_model(maps)
    opt = build_optimizer(model, CFG)
    minimt_step(model, opt, batches[0], maps, CFG)  # warm-up

    def go():
        t0 = time.perf_counter()
        for b in batches[1:]:
            minimt_step(model, opt, b, maps, CFG)
        return time.perf_counter() - t0
    return go


def run_w3(enc, texts, walk=False):
    """Median seconds of one encode call per text; walk: put the model in training mode before each call (not
    timed), so that encode walks eval() and train() over every module."""
    times = []
    enc.encode(texts[0])  # warm-up after the other variant had the cores
    for t in texts:
        if walk:
            enc.model.train()
        t0 = time.perf_counter()
        enc.encode(t)
        times.append(time.perf_counter() - t0)
    enc.model.eval()
    return statistics.median(times)


def run_w1(encode, texts):
    t0 = time.perf_counter()
    encode(texts)
    return time.perf_counter() - t0


def switched(switch, run, default):
    """(run with the technique, run without it): switch(True) or switch(False) around the run, then back to the
    encoder's default, so that every other row measures the encoder as from_pretrained made it."""
    def variant(flag):
        def go():
            switch(flag)
            try:
                return run()
            finally:
                switch(default)
        return go
    return variant(True), variant(False)


def measure(on, off):
    """Alternate the two variants ROUNDS times: (median seconds on, median seconds off)."""
    t_on, t_off = [], []
    for _ in range(ROUNDS):
        t_on.append(on())
        t_off.append(off())
    return statistics.median(t_on), statistics.median(t_off)


def main():
    s1, s2, _ = read_sts("test")
    w1 = s1 + s2
    one = [w1[i] for i in np.random.default_rng(0).choice(len(w1), 200, replace=False)]
    rows = []
    for dtype in ("float32", "bfloat16"):
        enc = SentenceEncoder.from_pretrained(MINILM, dtype=dtype)
        enc.encode(w1[:300])

        stacked_qkv = [layer.attn.qkv for layer in enc.model.layers]
        three = [ThreeLinears(qkv) for qkv in stacked_qkv]

        def stacked(on):
            for layer, qkv, t in zip(enc.model.layers, stacked_qkv, three):
                layer.attn.qkv = qkv if on else t

        w3, w1_run = (lambda: run_w3(enc, one)), (lambda: run_w1(enc.encode, w1))
        # (technique, workload, (time with it, time without it))
        cases = [("one Q/K/V matmul", "W3", switched(stacked, w3, True)),
                 ("no eval() walk", "W3", (w3, lambda: run_w3(enc, one, walk=True))),
                 ("packing (no padding)", "W1", (w1_run, lambda: run_w1(lambda x: padded_encode(enc, x), w1)))]
        for name, wl, (with_it, without_it) in cases:
            on, off = measure(with_it, without_it)
            rows.append({"technique": name, "workload": wl, "dtype": dtype, "on_s": on, "off_s": off})
            print(f"{name:<22} {wl} {dtype:<9} on {on * 1e3:9.2f} ms  off {off * 1e3:9.2f} ms  "
                  f"off/on {off / on:5.2f}", flush=True)
    t1 = t1_run()
    on, off = measure(*switched(split_per_run, t1, True))
    rows.append({"technique": "one split per run", "workload": "T1", "dtype": "float32", "on_s": on, "off_s": off})
    print(f"{'one split per run':<22} T1 float32   on {on:9.2f} s   off {off:9.2f} s   off/on {off / on:5.2f}", flush=True)
    save_results("techniques", {"cpu": cpu_name(), "threads": torch.get_num_threads(), "rounds": ROUNDS,
                                "rows": rows})
    write_readme()


if __name__ == "__main__":
    main()
