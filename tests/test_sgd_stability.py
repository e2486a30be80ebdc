import itertools

import numpy as np
import pytest
import torch

from instabilities import curvature
from instabilities.config import ConfigError
from instabilities.dynamics.sgd_stability import (
    batch_curvature_stats,
    batch_variance_factor,
    curvatures_with_moments,
    directional_curvatures,
    is_mean_square_stable,
    max_nonuniformity,
    per_example_losses,
    second_moment_factor,
    simulate_sgd_1d,
)
from instabilities.losses import make_objective
from instabilities.models import FlatModel, mlp


@pytest.mark.parametrize("n, b", [(6, 1), (6, 2), (7, 3), (5, 5)])
def test_second_moment_factor_equals_exact_enumeration(n, b):
    rng = np.random.default_rng(n * 10 + b)
    h = rng.normal(1.0, 2.0, size=n)
    eta = 0.7
    batches = list(itertools.combinations(range(n), b))  # all equally likely without replacement
    exact = np.mean([(1 - eta * h[list(B)].mean()) ** 2 for B in batches])
    q = second_moment_factor(eta, h.mean(), h.std(), b, n)
    assert q == pytest.approx(exact, rel=1e-12)


def test_monte_carlo_second_moment_decays_like_q_power_t():
    h = curvatures_with_moments(20, 0.5, 1.2)
    assert h.mean() == pytest.approx(0.5) and h.std() == pytest.approx(1.2)
    eta, b, T = 1.0, 4, 6
    xs = simulate_sgd_1d(h, eta, b, T, n_paths=100_000, seed=3)
    q = second_moment_factor(eta, 0.5, 1.2, b, 20)
    mc = (xs**2).mean(axis=0)
    np.testing.assert_allclose(mc, q ** np.arange(T + 1), rtol=0.05)


def test_noise_can_destabilise_a_gd_stable_minimum():
    # a = 1.5 < 2/eta = 2: GD converges; with large non-uniformity SGD with b = 1 is unstable in mean square
    n, eta = 100, 1.0
    assert is_mean_square_stable(eta, 1.5, 0.5, 1, n)
    assert not is_mean_square_stable(eta, 1.5, 4.0, 1, n)
    assert is_mean_square_stable(eta, 1.5, 4.0, n, n)  # full batch: noise-free
    h = curvatures_with_moments(n, 1.5, 4.0)
    xs = simulate_sgd_1d(h, eta, 1, 40, n_paths=2000, seed=0)
    assert np.median(np.abs(xs[:, -1])) > 1e3


def test_stability_boundary_is_where_q_equals_one():
    eta, b, n = 0.5, 8, 200
    a = np.linspace(0.2, 3.8, 7)  # inside (0, 2/eta = 4)
    s_max = max_nonuniformity(eta, a, b, n)
    np.testing.assert_allclose(second_moment_factor(eta, a, s_max, b, n), 1.0, rtol=1e-12)
    assert max_nonuniformity(eta, 4.5, b, n) == 0.0  # beyond 2/eta nothing is stable
    assert np.isinf(max_nonuniformity(eta, 1.0, n, n))  # GD: no noise condition
    assert max_nonuniformity(eta, 1.0, 1, n) < max_nonuniformity(eta, 1.0, 16, n)  # small batches are stricter
    assert batch_variance_factor(n, n) == 0.0 and batch_variance_factor(1, n) == 1.0


@pytest.mark.parametrize("bad", [dict(batch_size=0), dict(batch_size=11), dict(eta=-0.1), dict(s=-1.0)])
def test_bad_input_raises(bad):
    kw = dict(eta=0.1, a=1.0, s=1.0, batch_size=2, n=10)
    kw.update(bad)
    with pytest.raises(ConfigError):
        second_moment_factor(kw["eta"], kw["a"], kw["s"], kw["batch_size"], kw["n"])


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_directional_curvatures_match_dense_per_example_hessians(loss):
    torch.manual_seed(0)
    fm = FlatModel(mlp(3, [4], 3, "tanh").double())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    y = (
        torch.randn(7, 3, generator=gen, dtype=torch.float64)
        if loss == "mse"
        else torch.randint(0, 3, (7,), generator=gen)
    )
    theta = fm.theta0.double()
    u = torch.randn(theta.numel(), generator=gen, dtype=torch.float64)
    u = u / u.norm()
    curv = directional_curvatures(per_example_losses(fm, x, y, loss), theta, u)
    for i in range(7):
        Hi = curvature.dense_hessian(make_objective(fm, x[i : i + 1], y[i : i + 1], loss), theta)
        assert float(curv[i]) == pytest.approx(float(u @ Hi @ u), rel=1e-8, abs=1e-10)
    H = curvature.dense_hessian(make_objective(fm, x, y, loss), theta)
    assert float(curv.mean()) == pytest.approx(float(u @ H @ u), rel=1e-8, abs=1e-10)
    stats = batch_curvature_stats(curv, eta=0.5, batch_size=7)
    assert stats["q"] == pytest.approx((1 - 0.5 * stats["a"]) ** 2)  # full batch: no noise term


# -- SGD and its matched SDE --------------------------------------------------------------------
from instabilities.dynamics.sgd_stability import example_weights, train_reweighted, weight_covariance  # noqa: E402


@pytest.mark.parametrize("kind", ["sgd", "sde"])
def test_sgd_and_sde_weights_share_mean_and_covariance(kind):
    n, b, draws = 6, 2, 60000
    gen = torch.Generator().manual_seed(1)
    W = example_weights(kind, torch.full((draws,), b), n, gen).numpy()
    np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-12)  # both are unbiased reweightings of the loss
    np.testing.assert_allclose(W.mean(0), np.full(n, 1 / n), atol=3e-3)
    np.testing.assert_allclose(np.cov(W.T, bias=True), weight_covariance(b, n), atol=2e-3)


def test_weights_reject_unknown_kind():
    with pytest.raises(ConfigError, match="weighting"):
        example_weights("adam", torch.tensor([2]), 4, torch.Generator())


def test_reweighted_gd_equals_plain_gd():
    torch.manual_seed(0)
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)
    fm = FlatModel(mlp(3, [4], 1).double())
    per_ex = per_example_losses(fm, x, y, "mse")
    theta = fm.theta0.clone()
    out = train_reweighted(per_ex, theta[None], 0.1, ["gd"], [10], max_steps=5, stop_loss=0.0)
    for _ in range(5):
        th = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(per_ex(th).mean(), th)
        theta = theta - 0.1 * g
    np.testing.assert_allclose(out["theta"][0], theta.numpy(), rtol=1e-10, atol=1e-12)
    assert out["steps"][0] == 5 and not out["diverged"][0]
