"""minimt trace: what it reports is what the model computes, and what it prints is what it writes as JSON."""
import json
import math
import re

import numpy as np
import pytest
import torch

from helpers import assert_close
from minimt import SentenceEncoder
from minimt.io import checkpoint
from minimt.tools.cli import main
from minimt.multitask import MultiTaskModel
from minimt.tools.trace import WORDS, observe, trace

TEXT = "The quick brown fox jumps over the lazy dog."


def check_trace(enc, t, text):
    """The invariants every trace must hold, on any model."""
    T, L, nh, H = len(t["tokens"]), enc.config.num_hidden_layers, enc.config.num_attention_heads, enc.dim
    assert t["tokens"][0]["token"] == "[CLS]" and t["tokens"][-1]["token"] == "[SEP]"
    assert [x["id"] for x in t["tokens"]] == enc.tokenizer.encode([text])[0]
    assert [s["name"] for s in t["stages"]] == ["embeddings"] + [f"layer {i}" for i in range(L)]
    assert all(s["shape"] == [T, H] for s in t["stages"])
    assert t["pooled"]["shape"] == [1, H] and t["attention"]["shape"] == [1, nh, T, T]

    # the pooled vector is encode()'s, before and after normalisation (encode runs SDPA, the trace the manual path)
    assert_close(torch.tensor(t["pooled"]["vector"]), enc.encode(text, normalize=False), 1e-5, "pooled vs encode")
    assert_close(torch.tensor(t["normalized"]["vector"]), enc.encode(text, normalize=True), 1e-5,
                 "normalized vs encode")
    assert t["pooled"]["norm"] == pytest.approx(float(np.linalg.norm(enc.encode(text, normalize=False))), rel=1e-5)
    assert t["normalized"]["norm"] == pytest.approx(1, abs=1e-5)
    assert t["attention"]["sdpa_max_abs_diff"] < 1e-5

    assert abs(sum(t["shares"]) - 1) < 1e-5 and len(t["shares"]) == T
    assert len(t["heads"]) == L and all(len(heads) == nh for heads in t["heads"])
    for heads in t["heads"]:
        for h in heads:
            for key in ("cls_entropy", "mean_entropy"):  # nats: 0 (one token) to ln T (uniform)
                assert -1e-5 <= h[key] <= math.log(T) + 1e-5, (key, h)
            assert 0 <= h["cls_top"] < T and 0 <= h["mean_top"] < T
            assert 0 < h["cls_top_weight"] <= 1 + 1e-6 and 1 / T - 1e-6 <= h["mean_top_weight"] <= 1 + 1e-6
    assert [n["cosine"] for n in t["neighbours"]] == sorted((n["cosine"] for n in t["neighbours"]), reverse=True)
    assert all(n["word"] in WORDS and -1 - 1e-5 <= n["cosine"] <= 1 + 1e-5 for n in t["neighbours"])

    # what the page draws: every head's weights (kept to 1e-6), each token's norm per stage, each stage's pooled
    # vector against the final one
    w = torch.tensor(t["attention"]["weights"])
    assert w.shape == (L, nh, T, T) and t["attention"]["weight_digits"] == 6
    assert_close(w.sum(dim=-1), torch.ones(L, nh, T), T * 1e-6, "rounded attention rows sum to 1")
    for s in t["stages"]:
        assert len(s["norms"]) == T and np.mean(s["norms"]) == pytest.approx(s["norm_mean"], rel=1e-5)
        assert -1 - 1e-6 <= s["cos_to_final"] <= 1 + 1e-6
    assert t["stages"][-1]["cos_to_final"] == pytest.approx(1, abs=1e-5)  # the last layer pooled is the final one


def test_trace_minilm_equals_encode(own_minilm):
    enc = own_minilm
    t = trace(enc, TEXT, top_k=5)
    check_trace(enc, t, TEXT)
    assert t["model"]["normalize"] and len(t["neighbours"]) == 5
    assert t["neighbours"][0]["word"] == "dog"  # the sentence's subject, among 80 words of every topic
    assert all(layer.attn.use_sdpa for layer in enc.model.layers), "the trace must put SDPA back"
    assert not enc.model.training


def test_attention_rows_are_distributions(own_minilm):
    """The hooked weights: every head's rows sum to 1, and the trace's numbers are read from them."""
    enc = own_minilm
    ids = enc.tokenizer.encode([TEXT])[0]
    seen = observe(enc.model, ids)
    T = len(ids)
    assert len(seen.probs) == enc.config.num_hidden_layers
    t = trace(enc, TEXT)
    for layer, p in enumerate(seen.probs):
        assert p.shape == (enc.config.num_attention_heads, T, T) and (p >= 0).all()
        assert_close(p.sum(dim=-1), torch.ones(p.shape[:2]), 1e-5, f"layer {layer}: attention rows sum to 1")
        assert [h["cls_top"] for h in t["heads"][layer]] == p[:, 0].argmax(dim=-1).tolist()
        ent = -(p * p.clamp_min(1e-30).log()).sum(-1)                       # (nh, T) nats
        assert_close(torch.tensor([h["mean_entropy"] for h in t["heads"][layer]]), ent.mean(-1), 1e-5, "entropy")
        assert_close(torch.tensor(t["attention"]["weights"][layer]), p, 5.1e-7, f"layer {layer}: weights as kept")
    # the hooks saw the tensors the model pooled: the last layer's mean is the pooled vector
    assert_close(seen.stages[-1][1].mean(dim=0), seen.pooled, 1e-6, "mean of the last stage vs pooled")


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_shares_sum_to_one_for_every_pooling(tiny_encoder, pooling):
    tiny_encoder.config.pooling = pooling
    t = trace(tiny_encoder, "shares of a pooled vector")
    check_trace(tiny_encoder, t, "shares of a pooled vector")
    if pooling == "cls":  # the sentence vector is the [CLS] token's: all of it
        assert t["shares"][0] == pytest.approx(1, abs=1e-6) and max(map(abs, t["shares"][1:])) == 0


def test_model_is_put_back_as_it_was(tiny_encoder):
    """A model loaded with manual attention, or in training mode (shared with a training loop), stays so."""
    tiny_encoder.model.set_attention("manual")
    tiny_encoder.model.train()
    trace(tiny_encoder, "hello")
    assert not any(layer.attn.use_sdpa for layer in tiny_encoder.model.layers) and tiny_encoder.model.training
    assert all(not layer.attn.probs._forward_hooks for layer in tiny_encoder.model.layers), "hooks left behind"


def test_long_and_empty_texts(tiny_encoder):
    n = tiny_encoder.max_seq_length
    long = trace(tiny_encoder, "word " * 500)
    assert len(long["tokens"]) == n and long["cut"]
    empty = trace(tiny_encoder, "")
    assert [x["token"] for x in empty["tokens"]] == ["[CLS]", "[SEP]"] and not empty["cut"]
    check_trace(tiny_encoder, empty, "")


def test_bad_arguments_are_named(tiny_encoder):
    with pytest.raises(ValueError, match=r"top_k \(--top\) must be an integer from 1 to"):
        trace(tiny_encoder, "hello", top_k=0)
    with pytest.raises(ValueError, match="top_k"):
        trace(tiny_encoder, "hello", top_k=len(WORDS) + 1)
    with pytest.raises(TypeError, match="not str"):
        trace(tiny_encoder, ["a list"])


def parse_printed(out):
    """The numbers `minimt trace` prints, by section, as the JSON's field names."""
    got = {"tokens": [], "stages": [], "heads": [], "shares": [], "neighbours": []}
    for line in out.splitlines():
        if m := re.fullmatch(r"\s+(\d+)  (\S+)\s+(\d+)", line):
            got["tokens"].append({"index": int(m[1]), "token": m[2], "id": int(m[3])})
        elif m := re.fullmatch(r"  (embeddings|layer \d+)\s+\((\d+), (\d+)\)\s+([\d.]+)\s+([\d.]+)", line):
            got["stages"].append({"name": m[1], "shape": [int(m[2]), int(m[3])], "norm_mean": float(m[4]),
                                  "norm_cls": float(m[5])})
        elif m := re.fullmatch(r"\s+(\d+)\s+(\d+)\s+([\d.]+)  (\d+):\S+\s+([\d.]+)\s+([\d.]+)  (\d+):\S+\s+([\d.]+)",
                               line):
            got["heads"].append({"layer": int(m[1]), "head": int(m[2]), "cls_entropy": float(m[3]),
                                 "cls_top": int(m[4]), "cls_top_weight": float(m[5]), "mean_entropy": float(m[6]),
                                 "mean_top": int(m[7]), "mean_top_weight": float(m[8])})
        elif m := re.fullmatch(r"  \d+:\S+\s+([+-][\d.]+)\s+#*", line):
            got["shares"].append(float(m[1]))
        elif m := re.fullmatch(r"  ([+-][\d.]+)  (\w+)", line):
            got["neighbours"].append({"word": m[2], "cosine": float(m[1])})
        elif m := re.search(r"\|pooled\| = ([\d.]+)", line):
            got["pooled_norm"] = float(m[1])
        elif m := re.search(r"traced in ([\d.]+) s", line):
            got["seconds"] = float(m[1])
    return got


def assert_printed_is_json(out, t):
    """Every printed number is the JSON's, to the digits printed."""
    got = parse_printed(out)
    assert got["tokens"] == t["tokens"]
    assert len(got["stages"]) == len(t["stages"])
    for g, s in zip(got["stages"], t["stages"]):
        assert g["name"] == s["name"] and g["shape"] == s["shape"]
        assert g["norm_mean"] == pytest.approx(s["norm_mean"], abs=5.1e-5)
        assert g["norm_cls"] == pytest.approx(s["norm_cls"], abs=5.1e-5)
    heads = [dict(h, layer=layer) for layer, hs in enumerate(t["heads"]) for h in hs]
    assert len(got["heads"]) == len(heads) == len(t["heads"]) * len(t["heads"][0])
    for g, h in zip(got["heads"], heads):
        for k, v in g.items():
            assert v == (pytest.approx(h[k], abs=5.1e-4) if isinstance(v, float) else h[k]), (k, g, h)
    assert got["shares"] == pytest.approx(t["shares"], abs=5.1e-5)
    assert [n["word"] for n in got["neighbours"]] == [n["word"] for n in t["neighbours"]]
    assert [n["cosine"] for n in got["neighbours"]] == pytest.approx([n["cosine"] for n in t["neighbours"]],
                                                                        abs=5.1e-5)
    assert got["pooled_norm"] == pytest.approx(t["pooled"]["norm"], abs=5.1e-5)
    assert got["seconds"] == pytest.approx(t["seconds"], abs=5.1e-4)


def run_cli(capsys, *args):
    assert main(["trace", *args]) == 0
    return capsys.readouterr().out


def test_cli_minilm_print_equals_json(minilm_dir, minilm, tmp_path, capsys):
    path = tmp_path / "trace.json"
    out = run_cli(capsys, TEXT, "--model", str(minilm_dir), "--json", str(path), "--top", "3")
    t = json.loads(path.read_text(encoding="utf-8"))
    assert_printed_is_json(out, t)
    assert f"wrote {path}" in out and [p.name for p in tmp_path.iterdir()] == ["trace.json"]  # no temp left
    check_trace(minilm, t, TEXT)
    assert len(t["neighbours"]) == 3


def test_cli_json_target_is_checked_before_the_trace(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist: create it or choose another --json"):
        main(["trace", TEXT, "--model", str(tiny_checkpoint), "--json", str(tmp_path / "nowhere" / "t.json")])
    assert capsys.readouterr().out == "", "the trace was printed before its --json target was checked"


def test_cli_tiny_checkpoint(tiny_checkpoint, tmp_path, capsys):
    """A model directory with no Normalize module: the trace still reports the normalised vector, and says so."""
    path = tmp_path / "tiny.json"
    out = run_cli(capsys, "ünïcode ✓ text", "--model", str(tiny_checkpoint), "--json", str(path))
    t = json.loads(path.read_text(encoding="utf-8"))
    assert_printed_is_json(out, t)
    assert not t["model"]["normalize"] and "normalize=False" in out
    check_trace(SentenceEncoder.from_pretrained(tiny_checkpoint), t, "ünïcode ✓ text")


def test_cli_training_checkpoint(tiny_encoder, tmp_path, capsys):
    """A fine-tuned training checkpoint (checkpoint.json + heads): its encoder is traced, and each head's
    prediction is the one predict() gives, with every label's probability."""
    best = tmp_path / "best"
    checkpoint.save(best, MultiTaskModel(tiny_encoder, {"topic": ["a", "b"], "mood": ["x", "y", "z"]}), {"step": 1})
    path = tmp_path / "ckpt.json"
    out = run_cli(capsys, TEXT, "--model", str(best), "--json", str(path), "--top", "2")
    t = json.loads(path.read_text(encoding="utf-8"))
    assert_printed_is_json(out, t)
    check_trace(SentenceEncoder.from_pretrained(best), t, TEXT)
    want = MultiTaskModel.from_checkpoint(best).predict([TEXT])[0]
    assert list(t["predictions"]) == list(want)
    for task, (label, prob) in want.items():
        p = t["predictions"][task]
        assert p["label"] == label and p["probability"] == pytest.approx(prob, abs=1e-5)
        assert sum(p["probabilities"]) == pytest.approx(1, abs=1e-5) and len(p["labels"]) == len(p["probabilities"])
        assert re.search(rf"^  {task}\s+{label}\s+{p['probability']:.3f}$", out, re.M), out
    assert t["model"]["name"] == str(best)


def test_trace_of_an_encoder_has_no_predictions(tiny_encoder):
    assert "predictions" not in trace(tiny_encoder, TEXT)


def test_cli_pair_and_compare_print_equals_json(tiny_checkpoint, tmp_path, capsys):
    """The pair and compare sections print below the rest, which stays as the JSON says; a model compared with
    itself has not changed at all."""
    path = tmp_path / "both.json"
    out = run_cli(capsys, TEXT, "--model", str(tiny_checkpoint), "--json", str(path), "--pair", "a fox",
                  "--compare", str(tiny_checkpoint))
    t = json.loads(path.read_text(encoding="utf-8"))
    assert_printed_is_json(out, t)
    assert f"pair: cos({TEXT!r}, 'a fox') = {t['pair']['cosine']:.4f}" in out
    assert "  per layer (mean over heads): 0: 0.0000  1: 0.0000" in out and t["compare"]["by_layer"] == [0.0, 0.0]
