"""Tests of the solvable label-noise model: closed forms against dense Hessians, SGD against theory."""
import numpy as np
import pytest
import torch

from instabilities import label_noise as ln
from instabilities.config import ConfigError

TEACHER = [1.0, 0.0]


def test_noise_covariance_fixed_trace_and_errors():
    cov = ln.noise_covariance(9.0, trace=2.0)
    assert torch.allclose(torch.diag(cov), torch.tensor([0.2, 1.8], dtype=torch.float64))
    assert ln.anisotropy_q(TEACHER, ln.noise_covariance(1.0)) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="isotropic"):
        ln.noise_covariance(0.0)
    with pytest.raises(ConfigError, match="shape"):
        ln.anisotropy_q([1.0, 0.0, 0.0], cov)
    with pytest.raises(ConfigError, match="semi-definite"):
        ln.anisotropy_q(TEACHER, torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64))


@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("ratio", [1.0, 7.0])
def test_closed_forms_match_dense_hessians(depth, ratio):
    teacher = [0.8, -0.6, 0.3]
    cov = torch.diag(torch.tensor([1.0, ratio, 0.5], dtype=torch.float64))
    ts = np.array([0.2, 0.7, 1.9])
    thetas = torch.stack([ln.chain_point(t, teacher, depth)[1] for t in ts])
    net = ln.chain_point(1.0, teacher, depth)[0]
    A = torch.tensor(teacher, dtype=torch.float64).reshape(3, 1)
    s = 1.7
    dense = ln.curvature_summary(net, thetas, A, torch.full((1, 1), s, dtype=torch.float64), cov)
    closed = ln.chain_on_manifold(ts, teacher, cov, depth, input_var=s)
    for key in ("sharpness", "trace_hessian", "trace_fluctuation"):
        np.testing.assert_allclose(dense[key].numpy(), closed[key], rtol=1e-10)


def test_isotropic_noise_gives_C_proportional_to_H():
    net, theta = ln.chain_point(0.6, TEACHER, 3)
    A = torch.tensor(TEACHER, dtype=torch.float64).reshape(2, 1)
    cs = ln.curvature_summary(net, theta[None], A, torch.eye(1, dtype=torch.float64), 0.3 * torch.eye(2, dtype=torch.float64))
    assert float(cs["trace_fluctuation"][0]) == pytest.approx(0.3 * float(cs["trace_hessian"][0]), rel=1e-12)


@pytest.mark.parametrize("depth", [2, 3])
def test_fixed_point_minimises_fluctuation_and_isotropic_minimises_trace(depth):
    cov = ln.noise_covariance(5.0)
    fp = ln.chain_fixed_point(TEACHER, cov, depth)
    grid = np.linspace(0.02, 3.0, 20001)
    trc = ln.chain_on_manifold(grid, TEACHER, cov, depth)["trace_fluctuation"]
    assert grid[np.argmin(trc)] == pytest.approx(fp["hidden_sq"], abs=2e-4)
    iso = ln.chain_fixed_point(TEACHER, ln.noise_covariance(1.0), depth)
    flat = ln.chain_flattest(TEACHER, depth)
    assert iso["trace_hessian"] == pytest.approx(flat["min_trace_hessian"], rel=1e-12)
    # anisotropic noise (either way) is never flatter in the trace, and sharpness grows without bound
    traces = [ln.chain_fixed_point(TEACHER, ln.noise_covariance(r), depth)["trace_hessian"] for r in (0.3, 1.0, 3.0)]
    assert traces[1] < traces[0] and traces[1] < traces[2]
    sharp = [ln.chain_fixed_point(TEACHER, ln.noise_covariance(r), depth)["sharpness"] for r in (1, 10, 100, 1000)]
    assert np.all(np.diff(sharp) > 0) and sharp[-1] > 5 * sharp[0]


def test_manual_gradient_matches_autograd():
    net = ln.DeepLinearNet(3, (4, 2), 2)
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(5, net.dim, generator=g, dtype=torch.float64)
    x = torch.randn(5, 7, 3, generator=g, dtype=torch.float64)
    y = torch.randn(5, 7, 2, generator=g, dtype=torch.float64)
    th = theta.clone().requires_grad_(True)
    out = torch.einsum("rbi,roi->rbo", x, net.end_to_end(th))
    (0.5 * (out - y).pow(2).sum(-1).mean(-1).sum()).backward()
    torch.testing.assert_close(ln.minibatch_gradient(net, theta, x, y), th.grad)


def test_one_step_balance_drift_matches_closed_form():
    """Mean change of |u|^2 - w^2 over many independent single SGD steps from one minimum."""
    cov = ln.noise_covariance(6.0)
    net, theta = ln.chain_point(1.3, TEACHER, 2)
    R, lr = 40000, 0.1
    A = torch.tensor(TEACHER, dtype=torch.float64).reshape(2, 1)
    out = ln.label_noise_sgd(net, theta.expand(R, -1), A, torch.eye(1, dtype=torch.float64), cov, lr, 1,
                             record_every=1, seed=3, track=False)
    th = torch.from_numpy(out["theta_final"])
    bal = lambda t: (t[:, 1:] ** 2).sum(1) - t[:, 0] ** 2  # noqa: E731
    change = (bal(th) - bal(theta[None])).numpy()
    predicted = float(ln.chain_balance_drift(net, theta, cov, lr)[0])
    assert abs(change.mean() - predicted) < 4 * change.std() / np.sqrt(R)
    assert predicted > 0.01 * lr ** 2  # w^2 = 1.3 is above w*^2: the drift is clearly non-zero


def test_flow_limit_preserves_invariants_and_reaches_minimum():
    net = ln.DeepLinearNet(1, (1, 1), 2)
    theta = torch.tensor([[0.7, 1.1, 0.4, -0.2], [1.5, 0.5, 2.0, 0.3]], dtype=torch.float64)
    A = torch.tensor(TEACHER, dtype=torch.float64).reshape(2, 1)
    lim = ln.chain_flow_limit(net, theta, A)
    torch.testing.assert_close(net.end_to_end(lim).squeeze(-1), A.squeeze(-1).expand(2, -1))
    inv = lambda t: torch.stack([t[:, 1] ** 2 - t[:, 0] ** 2, (t[:, 2:] ** 2).sum(1) - t[:, 0] ** 2], 1)  # noqa: E731
    torch.testing.assert_close(inv(lim), inv(theta))


def test_sgd_converges_to_closed_form_from_different_minima():
    """Richardson-extrapolated stationary sharpness matches the closed form; inits agree."""
    cov = ln.noise_covariance(4.0)
    etas, inits, reps = (0.04, 0.08), (0.1, 4.0), 8
    thetas, lrs = [], []
    for eta in etas:
        for t in inits:
            net, th = ln.chain_point(t, TEACHER, 2)
            thetas += [th] * reps
            lrs += [eta] * reps
    A = torch.tensor(TEACHER, dtype=torch.float64).reshape(2, 1)
    out = ln.label_noise_sgd(net, torch.stack(thetas), A, torch.eye(1, dtype=torch.float64), cov, lrs, 6000,
                             record_every=100, seed=0)
    assert not out["diverged"].any()
    F = out["flow_sharpness"][30:].reshape(-1, len(etas), len(inits), reps)
    per_init = F.mean(axis=(0, 1, 3))
    start = out["flow_sharpness"][0].reshape(len(etas), len(inits), reps)[0, :, 0]
    assert abs(start[0] - start[1]) > 5.0  # very different starting sharpness ...
    assert abs(per_init[0] - per_init[1]) < 0.05 * per_init.mean()  # ... same stationary sharpness
    limit = ln.extrapolate_to_zero(etas, F.mean(axis=(0, 2, 3)))
    predicted = ln.chain_fixed_point(TEACHER, cov, 2)["sharpness"]
    assert limit == pytest.approx(predicted, rel=0.03)


def test_divergence_is_recorded_not_raised():
    net, theta = ln.chain_point(0.1, TEACHER, 2)  # sharpness 10.1: eta = 0.5 is far beyond 2/S
    A = torch.tensor(TEACHER, dtype=torch.float64).reshape(2, 1)
    out = ln.label_noise_sgd(net, theta.expand(2, -1), A, torch.eye(1, dtype=torch.float64),
                             ln.noise_covariance(1.0), [0.5, 0.01], 400, record_every=50)
    assert out["diverged"].tolist() == [True, False]
    assert np.isnan(out["sharpness"][-1, 0]) and np.isfinite(out["sharpness"][-1, 1])


def test_bad_inputs_raise_config_errors():
    net, theta = ln.chain_point(1.0, TEACHER, 2)
    A = torch.tensor(TEACHER, dtype=torch.float64).reshape(2, 1)
    I = torch.eye(1, dtype=torch.float64)
    with pytest.raises(ConfigError, match="lr"):
        ln.label_noise_sgd(net, theta[None], A, I, ln.noise_covariance(1.0), -0.1, 10)
    with pytest.raises(ConfigError, match="teacher"):
        ln.label_noise_sgd(net, theta[None], A.T, I, ln.noise_covariance(1.0), 0.1, 10)
    with pytest.raises(ConfigError, match="depth"):
        ln.chain_on_manifold(1.0, TEACHER, ln.noise_covariance(1.0), depth=1)
    with pytest.raises(ConfigError, match="distinct"):
        ln.extrapolate_to_zero([0.1, 0.1], [1.0, 2.0])
    with pytest.raises(ConfigError, match="noise along a"):
        ln.chain_fixed_point(TEACHER, torch.diag(torch.tensor([0.0, 1.0], dtype=torch.float64)))
