"""cos_sim, semantic_search and the correlation helpers, against values worked out by hand."""
import numpy as np
import pytest
import torch

from minimt.evaluate import read_sts
from minimt.similarity import cos_sim, pearson, ranks, semantic_search, spearman


def test_cos_sim():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 4.0]])
    s = cos_sim(a, b)
    assert s.shape == (2, 1)
    assert torch.allclose(s[:, 0], torch.tensor([0.6, 0.8]))
    assert cos_sim([1.0, 1.0], [2.0, 2.0]).shape == (1, 1)
    with pytest.raises(ValueError, match="dimensions differ"):
        cos_sim(np.ones(3), np.ones(4))


def test_semantic_search():
    corpus = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    hits = semantic_search(np.array([[1.0, 0.1], [0.0, 1.0]]), corpus, top_k=2)
    assert [h["corpus_id"] for h in hits[0]] == [0, 2]
    assert [h["corpus_id"] for h in hits[1]] == [1, 2]
    assert hits[1][0]["score"] == pytest.approx(1.0)
    assert len(semantic_search(corpus, corpus, top_k=10)[0]) == 3


def test_correlations_by_hand():
    assert ranks([10, 30, 20, 20]).tolist() == [1.0, 4.0, 2.5, 2.5]
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # monotone but not linear: Spearman 1, Pearson below 1
    assert spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_read_sts(tmp_path, monkeypatch):
    s1, s2, gold = read_sts("test")
    assert len(s1) == len(s2) == len(gold) == 1379
    assert (s1[0], s2[0], gold[0]) == ("A girl is styling her hair.", "A girl is brushing her hair.", 2.5)
    with pytest.raises(FileNotFoundError, match=r"sts-test.csv is missing; fetch it with `make data` or "
                                                r"`python -m minimt data stsb`"):
        read_sts("test", data_dir=tmp_path)
    monkeypatch.setenv("MINIMT_DATA", str(tmp_path / "elsewhere"))  # the default is read when called, not at import
    with pytest.raises(FileNotFoundError, match="elsewhere/stsb/sts-dev.csv is missing"):
        read_sts("dev")


@pytest.mark.slow
def test_sts_benchmark_score(minilm):
    """The reference scores all-MiniLM-L6-v2 at Spearman 82.03, Pearson 82.74 on STSb test."""
    from minimt.evaluate import evaluate_sts
    r = evaluate_sts(minilm)
    assert r["spearman"] == pytest.approx(82.03, abs=0.01)
    assert r["pearson"] == pytest.approx(82.74, abs=0.01)
