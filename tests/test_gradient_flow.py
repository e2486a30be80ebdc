"""Gradient flow reference: RK4 against the exact solution on quadratics."""

import numpy as np
import pytest
import torch

from instabilities.config import ConfigError
from instabilities.dynamics import gradient_flow as gf


def _quadratic(dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    evals = torch.linspace(0.1, 5.0, dim, dtype=torch.float64)
    A = Q @ torch.diag(evals) @ Q.T
    b = torch.randn(dim, generator=g, dtype=torch.float64)
    return A, b, evals


def test_flow_on_quadratic_matches_matrix_exponential():
    A, b, evals = _quadratic()
    theta_star = torch.linalg.solve(A, b)
    objective = lambda th: 0.5 * th @ A @ th - b @ th  # noqa: E731
    theta0 = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    times = [0.0, 0.3, 1.0, 2.5, 4.0]
    exact = torch.stack([theta_star + torch.linalg.matrix_exp(-t * A) @ (theta0 - theta_star) for t in times])
    coarse = gf.gradient_flow(objective, theta0, times, alpha=0.5, sharpness_every=3)
    traj = gf.gradient_flow(objective, theta0, times, alpha=0.1, sharpness_every=3)
    assert traj.thetas.shape == (5, 6) and not traj.diverged
    torch.testing.assert_close(traj.thetas, exact, rtol=0, atol=1e-7)
    err_coarse = float((coarse.thetas - exact).abs().max())
    err_fine = float((traj.thetas - exact).abs().max())
    assert 1e-7 < err_coarse < 1e-3 and err_fine < err_coarse / 100  # fourth order: (0.5/0.1)^4 = 625
    np.testing.assert_allclose(traj.sharpness, float(evals[-1]), rtol=1e-4)
    assert np.all(np.diff(traj.loss) < 0)  # the flow decreases the loss monotonically
    # step size control: h = alpha / S  ->  about 4.0 * 5.0 / 0.5 = 40 and 4.0 * 5.0 / 0.1 = 200 steps
    assert 40 <= coarse.n_rk4_steps <= 45 and 200 <= traj.n_rk4_steps <= 205


def test_rk4_step_is_fourth_order_on_linear_ode():
    A, _, _ = _quadratic(4)
    grad_fn = lambda th: A @ th  # noqa: E731
    theta = torch.ones(4, dtype=torch.float64)
    errs = []
    for h in (0.1, 0.05):
        exact = torch.linalg.matrix_exp(-h * A) @ theta
        errs.append(float((gf.rk4_step(grad_fn, theta, h) - exact).norm()))
    assert 25 < errs[0] / errs[1] < 40  # local error O(h^5): ratio 32


def test_flow_differs_from_unstable_gd_but_tracks_small_step_gd():
    A, b, _ = _quadratic()
    objective = lambda th: 0.5 * th @ A @ th - b @ th  # noqa: E731
    theta0 = torch.zeros(6, dtype=torch.float64)
    eta, steps = 0.01, 200
    th = theta0.clone()
    for _ in range(steps):
        th = th - eta * (A @ th - b)
    traj = gf.gradient_flow(objective, theta0, [eta * steps])
    assert gf.distances(th[None], traj.thetas)[0] < 0.01 * float(th.norm())


def test_flow_validation_and_distances():
    obj = lambda th: (th**2).sum()  # noqa: E731
    with pytest.raises(ConfigError, match="non-decreasing"):
        gf.gradient_flow(obj, torch.ones(3), [1.0, 0.5])
    with pytest.raises(ConfigError, match="non-empty"):
        gf.gradient_flow(obj, torch.ones(3), [])
    with pytest.raises(ConfigError, match="alpha"):
        gf.gradient_flow(obj, torch.ones(3), [1.0], alpha=0.0)
    with pytest.raises(ConfigError, match="one shape"):
        gf.distances(torch.zeros(2, 3), torch.zeros(3, 3))
    np.testing.assert_allclose(gf.distances(np.zeros((2, 2)), np.array([[3.0, 4.0], [0.0, 1.0]])), [5.0, 1.0])
