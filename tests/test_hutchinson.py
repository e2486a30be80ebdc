"""The Hutchinson trace estimator against the dense trace."""

import pytest
import torch

from instabilities import curvature
from instabilities.config import ConfigError


def _quadratic(dim=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    H = A @ A.T / dim + torch.diag(torch.rand(dim, generator=g, dtype=torch.float64))
    return (lambda th: 0.5 * th @ (H @ th)), H


def test_hutchinson_matches_dense_trace_within_its_error():
    obj, H = _quadratic()
    theta = torch.zeros(30, dtype=torch.float64)
    est = curvature.hutchinson_trace(obj, theta, n_samples=400, seed=1)
    exact = float(torch.trace(H))
    assert est.n_matvec == 400 and len(est.samples) == 400
    assert abs(est.estimate - exact) < 4 * est.stderr, (est.estimate, exact, est.stderr)
    assert est.stderr < 0.1 * exact


def test_hutchinson_on_a_network_loss_matches_dense_hessian():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(20, 3, generator=g, dtype=torch.float64), torch.randn(20, generator=g, dtype=torch.float64)

    def obj(th):  # a two-layer tanh network, loss written by hand
        W1, w2 = th[:12].reshape(4, 3), th[12:]
        r = torch.tanh(x @ W1.T) @ w2 - y
        return 0.5 * (r * r).mean()

    theta = torch.randn(16, generator=g, dtype=torch.float64)
    exact = float(torch.trace(curvature.dense_hessian(obj, theta)))
    est = curvature.hutchinson_trace(obj, theta, n_samples=600, seed=0, block=50)
    assert abs(est.estimate - exact) < 4 * est.stderr + 1e-12, (est.estimate, exact, est.stderr)


def test_hutchinson_is_exact_for_a_diagonal_hessian_and_rejects_bad_input():
    d = torch.arange(1.0, 11.0, dtype=torch.float64)
    obj = lambda th: 0.5 * (d * th * th).sum()  # noqa: E731
    est = curvature.hutchinson_trace(obj, torch.zeros(10, dtype=torch.float64), n_samples=5)
    assert est.estimate == pytest.approx(float(d.sum())) and est.stderr == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError):
        curvature.hutchinson_trace(obj, torch.zeros(10, dtype=torch.float64), n_samples=1)
