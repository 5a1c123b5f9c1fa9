"""minimt: a small, readable multi-task sentence transformer in plain PyTorch."""
from minimt.config import BertConfig
from minimt.encoder import SentenceEncoder
from minimt.errors import UserError
from minimt.evaluate import evaluate_sts
from minimt.model import BertModel
from minimt.multitask import MultiTaskModel
from minimt.similarity import cos_sim, semantic_search

__all__ = ["BertConfig", "BertModel", "MultiTaskModel", "SentenceEncoder", "UserError", "cos_sim", "semantic_search",
           "evaluate_sts"]
