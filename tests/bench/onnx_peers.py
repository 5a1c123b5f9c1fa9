"""Two more benchmark peers for all-MiniLM-L6-v2, built on inference engines instead of PyTorch eager.

    .venv-dev/bin/python tests/bench/onnx_peers.py      (self-check: agreement with sentence-transformers + timings;
                                                         reads stsb/ from data/: `make data` first)

Both run the same ONNX graph, exported once from transformers' BertModel (fp32) to weights/onnx/model.onnx:
  OrtEncoder      - onnxruntime on the graph rewritten by its BERT optimizer (model-opt.onnx), which fuses the
                    attention block, LayerNorm+residual and GELU into single hand-written CPU kernels.
  OpenVinoEncoder - Intel OpenVINO compiling the plain exported graph for the CPU (its own fusions, oneDNN kernels).
Tokenising, length-sorted batching, mean pooling and L2 normalisation are ours, as in sentence-transformers.
Reference tools only (.venv-dev): onnxruntime, openvino, torch, transformers, sentence-transformers.
"""
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
MINILM, ONNX_DIR = ROOT / "weights" / "all-MiniLM-L6-v2", ROOT / "weights" / "onnx"
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
FUSED = ["EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu", "FastGelu", "Gelu"]


def _fresh(out, src):
    return out.exists() and out.stat().st_mtime > src.stat().st_mtime


def export_onnx(model_dir, out_dir):
    import torch
    from transformers import AutoModel
    model_dir, out = Path(model_dir), Path(out_dir) / "model.onnx"
    if _fresh(out, model_dir / "model.safetensors"):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    bert = AutoModel.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32).eval()

    # Exporting BertModel itself fails here ("forward() got multiple values for argument 'use_cache'"); a wrapper
    # that calls it by keyword works, and leaves the unused pooler output out of the graph.
    class LastHidden(torch.nn.Module):
        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    wrapper = LastHidden()
    wrapper.bert = bert  # as a submodule its weights are parameters; a closure over bert fails ("requires grad")
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])  # one padded row: the mask path gets traced
    torch.onnx.export(wrapper, (ids, (ids > 0).long(), torch.zeros_like(ids)), str(out), dynamo=False,
                      opset_version=17, input_names=INPUTS, output_names=["last_hidden_state"],
                      dynamic_axes={n: {0: "batch", 1: "seq"} for n in INPUTS + ["last_hidden_state"]})
    return out


def ort_optimize(onnx_path):
    from onnxruntime.transformers.optimizer import optimize_model
    onnx_path, out = Path(onnx_path), Path(onnx_path).with_name("model-opt.onnx")
    if not _fresh(out, onnx_path):
        optimize_model(str(onnx_path), model_type="bert", num_heads=12, hidden_size=384).save_model_to_file(str(out))
    import onnx  # count from the saved file, so a reused model-opt.onnx reports the same way
    ops = Counter(n.op_type for n in onnx.load(str(out), load_external_data=False).graph.node)
    print("ORT fused ops:", {k: ops[k] for k in FUSED}, f"({sum(ops.values())} nodes in all)")
    if ops["Attention"] != 6:  # one per layer; fewer means the optimizer no longer recognises this export's pattern
        raise RuntimeError(f"ORT optimizer fused {ops['Attention']} of 6 attention blocks in {out}")
    return out


class _Peer:
    """Shared front and back end: tokenise, sort by length, pad per batch, run the engine, mean-pool, normalise."""

    def __init__(self, tokenizer_dir):
        self.tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
        self.tok.enable_truncation(256)  # sentence-transformers' max_seq_length; tokenizer.json itself says 128
        self.tok.no_padding()            # ... and pads everything to 128; we pad each batch to its longest instead

    def encode(self, texts, batch_size=32):
        enc = self.tok.encode_batch(list(texts))
        order = np.argsort([-len(e.ids) for e in enc], kind="stable")  # little padding, so little wasted work
        out = np.empty((len(enc), 384), np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = len(enc[rows[0]].ids)
            ids, mask = np.zeros((len(rows), width), np.int64), np.zeros((len(rows), width), np.int64)
            for i, r in enumerate(rows):
                ids[i, :len(enc[r].ids)], mask[i, :len(enc[r].ids)] = enc[r].ids, 1
            h = self._run({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
            m = mask[:, :, None].astype(np.float32)
            pooled = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            out[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out


class OrtEncoder(_Peer):
    def __init__(self, onnx_path, tokenizer_dir, threads=2):
        import onnxruntime as ort
        super().__init__(tokenizer_dir)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])

    def _run(self, feeds):
        return self.sess.run(["last_hidden_state"], feeds)[0]


class OpenVinoEncoder(_Peer):
    def __init__(self, onnx_path, tokenizer_dir, threads=2, hint="LATENCY"):
        import openvino as ov
        super().__init__(tokenizer_dir)
        # f32 spelled out: where the CPU has AVX512-BF16/AMX, OpenVINO's default precision is bf16, not f32.
        # LATENCY: one stream, both threads on each request. THROUGHPUT splits the cores into streams, which pays off
        # only with several requests in flight (AsyncInferQueue): ours come one at a time. Measured (busy 2 cores), sync
        # calls: a tie on 800 STS sentences (3.99 vs 3.95 s) and at batch 1 (10.6 vs 10.8 ms), so the simpler one.
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": threads}
        self.model = ov.Core().compile_model(ov.Core().read_model(str(onnx_path)), "CPU", config)
        self.request = self.model.create_infer_request()

    def _run(self, feeds):
        return self.request.infer(feeds)[0].copy()  # copy: the request reuses its output buffer next call


if __name__ == "__main__":
    import torch
    from sentence_transformers import SentenceTransformer
    sys.path.insert(0, str(ROOT))
    from minimt.evaluate import read_sts
    torch.set_num_threads(2)
    s1, s2, _ = read_sts("test")
    texts, onnx_path, ref, bad = s1 + s2, export_onnx(MINILM, ONNX_DIR), None, []
    peers = {"sentence-transformers": SentenceTransformer(str(MINILM), device="cpu"),
             "ORT optimized": OrtEncoder(ort_optimize(onnx_path), MINILM),
             "OpenVINO": OpenVinoEncoder(onnx_path, MINILM)}
    for name, enc in peers.items():
        enc.encode(texts[:64], batch_size=32)  # warm-up: first calls allocate buffers and pick kernels
        t = time.perf_counter()
        emb = np.asarray(enc.encode(texts, batch_size=32))
        wall, ref = time.perf_counter() - t, emb if ref is None else ref
        lat = []
        for _ in range(50):  # batch-1 latency: one short sentence per call, as a search query would be
            t = time.perf_counter()
            enc.encode(["A man is playing a guitar."], batch_size=1)
            lat.append(time.perf_counter() - t)
        diff = np.abs(emb - ref).max()
        bad += [name] if diff > 1e-5 else []
        print(f"{name:22s} {len(texts)} sentences {wall:6.2f} s   batch-1 median {1e3 * np.median(lat):6.2f} ms"
              f"   max |diff| vs sentence-transformers {diff:.2e}")
    if bad:
        sys.exit(f"FAIL: {bad} differ from sentence-transformers by more than 1e-5")
