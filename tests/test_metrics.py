"""Metrics on a small example worked out by hand."""
import pytest

from minimt.metrics import accuracy, confusion, f1_per_class, macro_f1


def test_metrics_by_hand():
    # true: a a a b b c ; pred: a a b b c c
    m = confusion([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], 3)
    assert m.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert accuracy(m) == pytest.approx(4 / 6)
    # a: P 2/2 R 2/3 -> F1 0.8; b: P 1/2 R 1/2 -> 0.5; c: P 1/2 R 1/1 -> 2/3
    assert f1_per_class(m).tolist() == pytest.approx([0.8, 0.5, 2 / 3])
    assert macro_f1(m) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_absent_classes_do_not_count():
    m = confusion([0, 0, 1], [0, 0, 1], 4)  # classes 2 and 3 never occur
    assert macro_f1(m) == 1.0 and accuracy(m) == 1.0
    assert macro_f1(confusion([], [], 2)) == 0.0
