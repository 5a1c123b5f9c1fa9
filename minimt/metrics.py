"""Classification metrics from a confusion matrix: accuracy, per-class F1 and their macro average."""
import numpy as np


def confusion(y_true, y_pred, n_classes):
    """(C, C) counts: rows = true class, columns = predicted class."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return m


def accuracy(m):
    return float(np.trace(m) / m.sum()) if m.sum() else 0.0


def f1_per_class(m):
    tp = np.diag(m).astype(np.float64)
    predicted, actual = m.sum(axis=0), m.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    return np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)


def macro_f1(m):
    """Mean F1 over the classes that occur (as true or predicted labels): each class counts equally."""
    present = (m.sum(axis=0) + m.sum(axis=1)) > 0
    return float(f1_per_class(m)[present].mean()) if present.any() else 0.0
