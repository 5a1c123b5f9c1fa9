"""sentence-transformers' util functions and encode names, run as a script written against sentence-transformers
would run them, with the expected results from sentence-transformers itself (make_golden.py's util_cases).
Scores within 1e-5; ids, pairs and communities exactly."""
import json

import pytest
import torch

from conftest import GOLDEN
from helpers import assert_close
from minimt import util

TOL = 1e-5
G = json.loads((GOLDEN / "util.json").read_text(encoding="utf-8"))
EMB, QUERIES, CASES = torch.tensor(G["embeddings"]), torch.tensor(G["queries"]), G["cases"]


def assert_same_hits(got, want, what):
    for q, (g, w) in enumerate(zip(got, want)):
        assert [h["corpus_id"] for h in g] == [h["corpus_id"] for h in w], f"{what}: query {q}'s hits"
        assert_close([h["score"] for h in g], [h["score"] for h in w], TOL, f"{what}: query {q}'s scores")
    assert len(got) == len(want)


def test_cos_sim_and_dot_score():
    assert_close(util.cos_sim(EMB[:4], EMB[:6]), CASES["cos_sim"], TOL, "cos_sim")
    assert_close(util.dot_score(EMB[:4], EMB[:6]), CASES["dot_score"], TOL, "dot_score")


@pytest.mark.parametrize("chunks", [(3, 20), (100, 500000), (1, 7)])
def test_semantic_search_any_chunking(chunks):
    q, c = chunks
    got = util.semantic_search(QUERIES, EMB, query_chunk_size=q, corpus_chunk_size=c, top_k=5)
    assert_same_hits(got, CASES["semantic_search"], f"semantic_search, chunks {chunks}")


def test_semantic_search_dot_score():
    got = util.semantic_search(QUERIES, EMB, top_k=4, score_function=util.dot_score)
    assert_same_hits(got, CASES["semantic_search_dot"], "semantic_search with dot_score")


@pytest.mark.parametrize("chunks", [(11, 17), (5000, 100000)])
def test_paraphrase_mining_embeddings(chunks):
    got = util.paraphrase_mining_embeddings(EMB, query_chunk_size=chunks[0], corpus_chunk_size=chunks[1],
                                            max_pairs=40, top_k=4)
    want = CASES["paraphrase_mining_embeddings"]
    assert [p[1:] for p in got] == [p[1:] for p in want]
    assert_close([p[0] for p in got], [p[0] for p in want], TOL, "paraphrase_mining_embeddings scores")


def test_community_detection():
    assert util.community_detection(EMB, threshold=0.8, min_community_size=5, batch_size=16) == \
        CASES["community_detection"]
    assert util.community_detection(EMB[:3], min_community_size=5) == []


def test_a_sentence_transformers_script_runs_unchanged(minilm):
    """ST's names on the model: paraphrase_mining(model, ...), encode(convert_to_tensor=..., normalize_embeddings=...),
    model.similarity, get_sentence_embedding_dimension."""
    got = util.paraphrase_mining(minilm, G["sentences"], top_k=3, max_pairs=10)
    want = CASES["paraphrase_mining"]
    assert [p[1:] for p in got] == [p[1:] for p in want]
    assert_close([p[0] for p in got], [p[0] for p in want], TOL, "paraphrase_mining scores")
    e = minilm.encode(G["sentences"][:3], convert_to_tensor=True, normalize_embeddings=True)
    assert isinstance(e, torch.Tensor) and e.shape == (3, minilm.get_sentence_embedding_dimension()) == (3, 384)
    assert_close(minilm.similarity(e, e), CASES["model_similarity"], TOL, "model.similarity")
    as_list = minilm.encode(G["sentences"][:2], convert_to_numpy=False)
    assert isinstance(as_list, list) and len(as_list) == 2 and as_list[0].shape == (384,)


def test_similarity_follows_the_models_setting(tmp_path):
    import shutil
    from minimt import SentenceEncoder
    from minimt.similarity import SIMILARITY
    from minimt.config import SIMILARITY_FUNCTIONS
    assert tuple(SIMILARITY) == SIMILARITY_FUNCTIONS
    d = tmp_path / "m"
    shutil.copytree(GOLDEN / "st" / "st6_max", d)
    for name, fn in SIMILARITY.items():
        (d / "config_sentence_transformers.json").write_text(json.dumps({"similarity_fn_name": name}))
        enc = SentenceEncoder.from_pretrained(d)
        e = enc.encode(["a b c", "d e"], convert_to_tensor=True)
        assert_close(enc.similarity(e, e), fn(e, e), 0, f"similarity {name}")
    (d / "config_sentence_transformers.json").write_text(json.dumps({"similarity_fn_name": "euclidean"}))
    with pytest.raises(ValueError, match="similarity_fn_name 'euclidean' is not supported; minimt implements cosine"):
        SentenceEncoder.from_pretrained(d)
