"""SentenceEncoder.encode: batching, order, output types and bad input, on all-MiniLM-L6-v2."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import assert_close
from minimt import SentenceEncoder, cos_sim

TEXTS = ["short", "a somewhat longer sentence about the weather in spring", "mid length text here",
         "", "🙂", "The quick brown fox jumps over the lazy dog. " * 40, "x"]


def test_batch_size_does_not_change_results(minilm):
    one = minilm.encode(TEXTS, batch_size=1)
    many = minilm.encode(TEXTS, batch_size=64)
    assert_close(many, one, 1e-5, "batch_size 64 vs batch_size 1")


def test_output_order_is_input_order(minilm):
    emb = minilm.encode(TEXTS, batch_size=2)  # several length-sorted batches
    for i, t in enumerate(TEXTS):
        assert_close(emb[i], minilm.encode(t), 1e-5, f"row {i} vs encoding {t[:20]!r} alone")
    rev = minilm.encode(TEXTS[::-1], batch_size=2)
    assert_close(rev[::-1], emb, 1e-5, "reversed input, reversed output")


def test_types_and_shapes(minilm):
    v = minilm.encode("hello")
    assert isinstance(v, np.ndarray) and v.shape == (384,) and v.dtype == np.float32
    m = minilm.encode(["hello", "world"], convert_to_tensor=True)
    assert isinstance(m, torch.Tensor) and m.shape == (2, 384) and m.dtype == torch.float32
    assert_close(m.norm(dim=1), [1.0, 1.0], 1e-6, "normalised by default (modules.json has Normalize)")
    raw = minilm.encode(["hello"], normalize=False)
    assert abs(np.linalg.norm(raw) - 1) > 0.01
    assert_close(raw[0] / np.linalg.norm(raw[0]), m[0], 1e-6, "normalize=False is the same direction")
    assert minilm.encode(("a", "b")).shape == (2, 384)  # any iterable of str


def test_empty_list(minilm):
    e = minilm.encode([])
    assert isinstance(e, np.ndarray) and e.shape == (0, 384)
    assert minilm.encode([], convert_to_tensor=True).shape == (0, 384)


def test_degenerate_strings_encode(minilm):
    emb = minilm.encode(["", "   ", "\n\t", "z" * 100_000, "word " * 20_000])
    assert emb.shape == (5, 384) and np.isfinite(emb).all()


@pytest.mark.parametrize("bad, error, message", [
    (None, TypeError, "got None"),
    (42, TypeError, "got int"),
    (b"bytes", TypeError, "got bytes"),
    (["ok", 3, "ok"], TypeError, r"sentences\[1\] is int"),
    (["ok", ["nested"]], TypeError, r"sentences\[1\] is list, not str \(a nested list\?"),
    (["ok", None], TypeError, r"sentences\[1\] is NoneType"),
])
def test_bad_input_raises(minilm, bad, error, message):
    with pytest.raises(error, match=message):
        minilm.encode(bad)


def test_bad_options_raise(minilm):
    with pytest.raises(ValueError, match="precision='int8' is not supported"):
        minilm.encode(["a"], precision="int8")
    with pytest.raises(ValueError, match="normalize='no' must be None"):
        minilm.encode(["a"], normalize="no")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        minilm.encode(["a"], batch_size=0)


def test_similar_sentences_are_close(minilm):
    a, b, c = minilm.encode(["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell."])
    assert cos_sim(a, b).item() > 0.6 > 0.2 > cos_sim(a, c).item()


def test_tokenizer_cuts_at_256_and_pads_to_longest(minilm):
    tok = minilm.tokenizer
    ids = tok.encode(["word " * 300, "two words"])
    assert [len(x) for x in ids] == [256, 4]  # not the 128 baked into tokenizer.json
    assert ids[0][0] == 101 and ids[0][-1] == 102  # [CLS] ... [SEP] survive the cut
    batch = tok(["two words", "three words here"])
    assert batch["input_ids"].shape == (2, 5)  # the longest in the batch, not a fixed 128
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert batch["input_ids"][0, -1] == 0  # [PAD]


def test_bfloat16_quality_gate(minilm):
    """bf16 weights and activations: every embedding within cosine 0.9995 of float32 (200 STSb sentences, in
    batches and, as the bench's W3 times them, one per call)."""
    from minimt import SentenceEncoder
    from minimt.evaluate import read_sts
    s1, s2, _ = read_sts("test")
    texts = s1[:100] + s2[:100]
    bf16 = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2", dtype="bfloat16")
    a = minilm.encode(texts)
    for how, b in (("batched", bf16.encode(texts)), ("one per call", np.stack([bf16.encode(t) for t in texts[:40]]))):
        assert b.dtype == np.float32  # returned as float32 whatever the compute dtype
        cos = (a[:len(b)] * b).sum(1) / np.linalg.norm(a[:len(b)], axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() >= 0.9995, f"{how}: smallest cosine bf16 vs fp32 {cos.min():.6f} < 0.9995"
    with pytest.raises(ValueError, match="float16 is for CUDA only"):
        SentenceEncoder.from_pretrained("all-MiniLM-L6-v2", dtype="float16", device="cpu")


def test_chunked_encoding_equals_one_chunk(minilm, monkeypatch):
    """Long inputs are tokenized and sorted a chunk at a time (flat memory); results must not change."""
    from minimt import encoder
    texts = [f"sentence number {i} " + "word " * (i % 13) for i in range(50)]
    whole = minilm.encode(texts, batch_size=8)
    monkeypatch.setattr(encoder, "CHUNK", 7)
    assert_close(minilm.encode(texts, batch_size=8), whole, 1e-6, "chunks of 7 vs one chunk")


@pytest.mark.parametrize("ratio, want", [(9.9, torch.bfloat16), (1.79, torch.float32), (0.3, torch.float32)])
def test_dtype_auto_picks_bf16_only_where_it_pays(minilm_dir, monkeypatch, capsys, ratio, want):
    import minimt.devices as devices
    monkeypatch.setattr(devices, "bf16_speedup", lambda: ratio)  # as if measured on such a CPU
    enc = SentenceEncoder.from_pretrained(minilm_dir, dtype="auto")
    assert enc.model.embeddings.word.weight.dtype == want
    line = capsys.readouterr().err.strip()
    assert line == (f"dtype='auto' -> {str(want).split('.')[1]}: bf16 matmuls run {ratio:.1f}x float32's on this "
                    f"CPU (bf16 pays from 1.8x)")


@pytest.mark.parametrize("dtype, onednn", [("float32", False), ("bfloat16", True)])
def test_encode_runs_without_onednn_only_in_float32(minilm_dir, monkeypatch, dtype, onednn):
    """fp32 on the CPU: oneDNN off while encoding (its per-shape GELU kernels fragment the heap, encoder.onednn_for);
    bf16 keeps it for its matmuls; either way the setting is put back afterwards."""
    enc = SentenceEncoder.from_pretrained(minilm_dir, dtype=dtype)
    seen = []
    embed = enc.embed_batch
    monkeypatch.setattr(enc, "embed_batch", lambda ids: seen.append(torch.backends.mkldnn.enabled) or embed(ids))
    assert torch.backends.mkldnn.enabled
    enc.encode(["one text", "and another one"])
    assert seen == [onednn] and torch.backends.mkldnn.enabled


def test_compiled_encode_keeps_onednn(compiled_minilm, monkeypatch):
    """The compiled path keeps oneDNN on in float32: inductor registers its weight-packing pass only if oneDNN is on
    when it first compiles, so an encode must not switch it off around a compile."""
    seen = []
    embed = compiled_minilm.embed_batch
    monkeypatch.setattr(compiled_minilm, "embed_batch", lambda ids: seen.append(torch.backends.mkldnn.enabled)
                        or embed(ids))
    compiled_minilm.encode(["one text", "and another one"])
    assert seen == [True] and torch.backends.mkldnn.enabled


def test_compiled_encode_freezes_the_weights(tiny_encoder):
    """compile() folds the weights into the graph as constants (what lets inductor prepack them); with freezing
    left in torch.compile's options only, dynamo lifts them as graph inputs and nothing is frozen."""
    from torch._inductor.utils import run_and_get_code
    tiny_encoder.compile()
    got, code = run_and_get_code(tiny_encoder.encode, ["a text", "two texts"])
    assert "_frozen_param" in "\n".join(code), "the compiled graph takes the weights as inputs: not frozen"
    assert tiny_encoder.compiled.fn is not None and got.shape == (2, tiny_encoder.model.config.hidden_size)


def test_a_compile_that_fails_says_so_once_and_encodes_eagerly(minilm, minilm_dir, capsys):
    """No C++ compiler, an unsupported platform: one line on stderr, then the eager path, same numbers."""
    enc = SentenceEncoder.from_pretrained(minilm_dir, compile=True)

    def broken(*args):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\n(the rest of a long message)")
    enc.compiled.fn = broken
    got = enc.encode(["one text", "and another one"])
    err = capsys.readouterr().err
    assert err == ("torch.compile failed (RuntimeError: InvalidCxxCompiler: No working C++ compiler found); "
                   "encoding without it\n")
    assert enc.compiled.fn is None and np.abs(got - minilm.encode(["one text", "and another one"])).max() < 1e-6
    with pytest.raises(ValueError, match="compile='yes' must be True or False"):
        SentenceEncoder.from_pretrained(minilm_dir, compile="yes")


def test_without_a_cxx_compiler_compile_falls_back_in_one_line(minilm_dir, tmp_path):
    """A real failure, as on a machine with no C++ compiler: inductor cannot build its kernels (CXX names a compiler
    that is not there, and an empty kernel cache holds none built before)."""
    code = ("from minimt import SentenceEncoder\n"
            f"e = SentenceEncoder.from_pretrained({str(minilm_dir)!r}, compile=True)\n"
            "v = e.encode(['a text', 'another'])\n"
            "print(v.shape, e.compiled.fn)\n")
    env = {**os.environ, "CXX": str(tmp_path / "no-such-g++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0 and run.stdout == "(2, 384) None\n", run.stderr[-2000:]
    failed = [line for line in run.stderr.splitlines() if "torch.compile failed" in line]
    assert len(failed) == 1 and "C++ compiler" in failed[0] and failed[0].endswith("; encoding without it"), run.stderr
    assert "Traceback" not in run.stderr
