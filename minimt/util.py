"""sentence-transformers' `util` names, for scripts written against it: `from minimt import util`.
The functions live in minimt/similarity.py."""
from minimt.similarity import (cos_sim, community_detection, dot_score, paraphrase_mining,  # noqa: F401
                               paraphrase_mining_embeddings, semantic_search)
