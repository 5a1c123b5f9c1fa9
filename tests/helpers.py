"""Comparison with evidence: on failure, print the largest difference and the first values side by side."""
import numpy as np
import torch


def assert_close(got, want, tol, what):
    got = got.detach().float().numpy() if isinstance(got, torch.Tensor) else np.asarray(got, np.float32)
    want = want.detach().float().numpy() if isinstance(want, torch.Tensor) else np.asarray(want, np.float32)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != reference {want.shape}"
    diff = np.abs(got - want)
    worst = float(diff.max()) if diff.size else 0.0
    if worst > tol:
        at = np.unravel_index(diff.argmax(), diff.shape)
        pairs = ", ".join(f"{g:+.7f}/{w:+.7f}" for g, w in zip(got.ravel()[:5], want.ravel()[:5]))
        raise AssertionError(f"{what}: maxdiff {worst:.3g} at {at} > tolerance {tol:g}; "
                             f"first values minimt/reference: {pairs}")
    return worst
