import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from minimt import SentenceEncoder
from minimt.download import fetch

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def minilm_dir():
    return fetch("all-MiniLM-L6-v2", verify=False)  # downloads on first use: never skipped for lack of weights


@pytest.fixture(scope="session")
def minilm(minilm_dir):
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
    return SentenceEncoder(BertModel(cfg), Tokenizer(minilm_dir / "tokenizer.json", cfg.max_seq_length))
