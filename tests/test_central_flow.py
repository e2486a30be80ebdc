"""The central flow: the complementarity solver, the stable phase, and the 2/eta constraint."""

import numpy as np
import pytest
import torch

from instabilities.config import ConfigError
from instabilities.dynamics.central_flow import central_flow, sharpness_gradients, solve_psd_complementarity
from instabilities.models import FlatModel, mlp


def test_complementarity_closed_form_and_conditions():
    X = solve_psd_complementarity(np.array([[-2.0]]), np.array([[[[4.0]]]]))
    assert X[0, 0] == pytest.approx(0.5)
    assert solve_psd_complementarity(np.array([[1.0]]), np.array([[[[4.0]]]]))[0, 0] == 0.0
    rng = np.random.default_rng(0)
    k = 3
    G = rng.standard_normal((k * k, 20))
    B = (G @ G.T).reshape(k, k, k, k)
    M = rng.standard_normal((k, k))
    A = -(M + M.T)
    X = solve_psd_complementarity(A, B, iters=20000, tol=1e-14)
    R = A + (B.reshape(k * k, k * k) @ X.ravel()).reshape(k, k)
    assert np.linalg.eigvalsh(X).min() > -1e-8, "X must be PSD"
    assert np.linalg.eigvalsh(0.5 * (R + R.T)).min() > -1e-5, "A + B[X] must be PSD"
    assert abs(np.sum(X * R)) < 1e-5, "complementarity <X, A + B[X]> = 0"


def _problem(seed=0):
    torch.manual_seed(seed)
    x = torch.randn(40, 5, dtype=torch.float64)
    y = torch.randn(40, 2, dtype=torch.float64)
    fm = FlatModel(mlp(5, [12], 2, "tanh").double())
    obj = lambda th: 0.5 * (fm(th, x) - y).pow(2).sum(-1).mean()  # noqa: E731
    return obj, fm.theta0.clone()


def test_sharpness_gradient_matches_finite_differences():
    obj, th = _problem()
    u = torch.randn(th.numel(), 1, dtype=torch.float64)
    u = u / u.norm()
    _, _, G = sharpness_gradients(obj, th, u)
    d = torch.randn_like(th)
    quad = lambda t: float(u[:, 0] @ torch.autograd.functional.hvp(obj, t, u[:, 0])[1])  # noqa: E731
    fd = (quad(th + 1e-5 * d) - quad(th - 1e-5 * d)) / 2e-5
    assert float(G[0] @ d) == pytest.approx(fd, rel=1e-4)


def test_stable_phase_is_euler_gradient_flow():
    obj, th = _problem()
    cf = central_flow(obj, th, eta=0.01, steps=5, substeps=2, n_eigs=1)
    w = th.clone()
    for _ in range(10):
        w = w - 0.005 * torch.func.grad(obj)(w)
    assert cf.n_critical.max() == 0
    torch.testing.assert_close(cf.thetas[-1], w)
    np.testing.assert_allclose(cf.predicted_loss, cf.loss)


def test_flow_holds_the_sharpness_at_two_over_eta():
    obj, th = _problem()
    from instabilities.curvature import sharpness

    s0 = sharpness(obj, th)
    eta = 1.9 / s0  # the flow starts just below the edge and sharpens past it unless constrained
    cf = central_flow(obj, th, eta=eta, steps=100, substeps=2, n_eigs=2, record_every=2)
    assert not cf.diverged
    top = eta * cf.eigs[:, 0] / 2
    assert np.nanmax(top) <= 1.03, "the central flow must not rise above 2/eta (beyond solver error)"
    held = cf.n_critical > 0
    assert held.any() and abs(np.mean(top[held]) - 1) < 0.005, "the critical eigenvalue must be held at 2/eta"
    assert np.nanmax(cf.eigs[0, 0]) * eta / 2 < 1 and cf.n_critical.max() >= 2, "the flow must reach the EoS"
    if cf.n_critical.max() > 0:
        assert np.all(cf.sigma2 >= 0) and np.all(cf.predicted_loss >= cf.loss - 1e-12)


def test_bad_arguments():
    obj, th = _problem()
    with pytest.raises(ConfigError, match="critical"):
        central_flow(obj, th, eta=0.1, steps=2, critical=3.0)
    with pytest.raises(ConfigError, match="substeps"):
        central_flow(obj, th, eta=0.1, steps=2, substeps=0)
