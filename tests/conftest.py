import json
import random
from pathlib import Path

import pytest
from safetensors.torch import load_file

from minimt import SentenceEncoder
from minimt.io.download import fetch

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def minilm_dir():
    return fetch("all-MiniLM-L6-v2", verify=False)  # downloads on first use: never skipped for lack of weights


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    return SentenceEncoder.from_pretrained(minilm_dir)


@pytest.fixture(scope="session")
def compiled_minilm(minilm_dir):
    """all-MiniLM-L6-v2 encoding through torch.compile (SentenceEncoder.compile): compiled once per session."""
    return SentenceEncoder.from_pretrained(minilm_dir, compile=True)


@pytest.fixture(params=["eager", "compiled"])
def any_minilm(request):
    """Both encode paths: each golden that takes this runs on the eager packed path and on the compiled one."""
    return request.getfixturevalue("minilm" if request.param == "eager" else "compiled_minilm")


@pytest.fixture
def own_minilm(minilm_dir):
    """A copy of its own, for a test that changes the model's settings (pooling, attention)."""
    return SentenceEncoder.from_pretrained(minilm_dir)


@pytest.fixture(scope="session")
def golden():
    meta = json.loads((GOLDEN / "minilm.json").read_text(encoding="utf-8"))
    return meta, load_file(GOLDEN / "minilm.safetensors")


@pytest.fixture
def tiny_encoder(minilm_dir):
    """A random 2-layer encoder (BertConfig.tiny) with MiniLM's real tokenizer: fast tests of training code."""
    import torch
    from minimt.config import BertConfig
    from minimt.model import BertModel
    from minimt.tokenizer import Tokenizer
    torch.manual_seed(0)
    cfg = BertConfig.tiny(vocab_size=30522)
    return SentenceEncoder(BertModel(cfg).eval(), Tokenizer(minilm_dir / "tokenizer.json", cfg.max_seq_length))


@pytest.fixture(scope="session")
def tiny_checkpoint(minilm_dir, tmp_path_factory):
    """A random tiny BERT written as a checkpoint directory (bare dialect) with MiniLM's tokenizer: what
    SentenceEncoder.from_pretrained and the training loop read, at a fraction of the cost."""
    import shutil
    from dataclasses import asdict
    import torch
    from safetensors.torch import save_file
    from minimt.config import BertConfig
    from minimt.model import BertModel
    from minimt.weights import checkpoint_tensors
    d = tmp_path_factory.mktemp("tiny_ckpt")
    torch.manual_seed(0)
    cfg = BertConfig.tiny(vocab_size=30522)
    state = {k: v.contiguous() for k, v in checkpoint_tensors(BertModel(cfg).state_dict()).items()}
    save_file(state, d / "model.safetensors")
    hf = {k: v for k, v in asdict(cfg).items() if k not in ("max_seq_length", "pooling", "normalize", "do_lower_case")}
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_act": "gelu", **hf}))
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": cfg.max_seq_length}))
    shutil.copy(minilm_dir / "tokenizer.json", d / "tokenizer.json")
    return d


TOPICS = {"sport": ["football", "tennis", "goal", "match"], "food": ["pizza", "bread", "cheese", "soup"],
          "tech": ["laptop", "phone", "battery", "screen"]}
MOODS = {"positive": ["great", "love", "wonderful"], "negative": ["awful", "hate", "broken"]}


@pytest.fixture(scope="session")
def data_file(tmp_path_factory):
    """120 short texts with a topic and a sentiment; every 7th row lacks its sentiment label."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "reviews.tsv"
    lines = ["text\ttopic\tmood"]
    for i in range(120):
        topic, mood = rng.choice(sorted(TOPICS)), rng.choice(sorted(MOODS))
        text = f"{rng.choice(MOODS[mood])} {rng.choice(TOPICS[topic])} {rng.choice(TOPICS[topic])} number {i}"
        lines.append(f"{text}\t{topic}\t{'' if i % 7 == 0 else mood}")
    path.write_text("\n".join(lines) + "\n")
    return path
