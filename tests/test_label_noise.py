"""Tests of the solvable label-noise model: closed forms against dense Hessians, SGD against theory."""

import numpy as np
import pytest
import torch

from instabilities.config import ConfigError
from instabilities.dynamics import label_noise as ln

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
    cs = ln.curvature_summary(
        net, theta[None], A, torch.eye(1, dtype=torch.float64), 0.3 * torch.eye(2, dtype=torch.float64)
    )
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
    out = ln.label_noise_sgd(
        net, theta.expand(R, -1), A, torch.eye(1, dtype=torch.float64), cov, lr, 1, record_every=1, seed=3, track=False
    )
    th = torch.from_numpy(out["theta_final"])
    bal = lambda t: (t[:, 1:] ** 2).sum(1) - t[:, 0] ** 2  # noqa: E731
    change = (bal(th) - bal(theta[None])).numpy()
    predicted = float(ln.chain_balance_drift(net, theta, cov, lr)[0])
    assert abs(change.mean() - predicted) < 4 * change.std() / np.sqrt(R)
    assert predicted > 0.01 * lr**2  # w^2 = 1.3 is above w*^2: the drift is clearly non-zero


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
    out = ln.label_noise_sgd(
        net, torch.stack(thetas), A, torch.eye(1, dtype=torch.float64), cov, lrs, 6000, record_every=100, seed=0
    )
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
    out = ln.label_noise_sgd(
        net,
        theta.expand(2, -1),
        A,
        torch.eye(1, dtype=torch.float64),
        ln.noise_covariance(1.0),
        [0.5, 0.01],
        400,
        record_every=50,
    )
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


@pytest.mark.parametrize("depth", [2, 3])
def test_relaxation_time_is_the_linear_rate_of_the_balance_path(depth):
    """tau = (2 + r) / (4 eta^2) for D = 2 (a = (1,0), trace 2); near t* the drift path decays as exp(-n / tau)."""
    for r in (0.25, 4.0, 100.0):
        cov = ln.noise_covariance(r)
        tau = ln.chain_relaxation_time(TEACHER, cov, 0.01, depth)
        if depth == 2:
            assert tau == pytest.approx((2 + r) / (4 * 0.01**2), rel=1e-12)
        t_star = ln.chain_fixed_point(TEACHER, cov, depth)["hidden_sq"]
        path = ln.chain_balance_path(t_star * (1 + 1e-5), [0.0, tau, 3 * tau], TEACHER, cov, 0.01, depth)
        np.testing.assert_allclose((path - t_star) / (t_star * 1e-5), np.exp([0.0, -1.0, -3.0]), rtol=2e-3)
        for start in (t_star / 2, 2 * t_star):  # from further away too: a single attracting balance
            far = ln.chain_balance_path(start, [0.0, 20 * tau], TEACHER, cov, 0.01, depth)
            assert abs(far[-1] / t_star - 1) < 1e-4


def _fitted_relaxation_time(delta: np.ndarray, seg: int) -> float:
    """tau of a sampled exponential relaxation.

    delta_{k+1} - delta_k = alpha + beta delta_k, exp(-seg/tau) = 1 + beta."""
    beta = np.polyfit(delta[:-1], np.diff(delta), 1)[0]
    return float(-seg / np.log1p(beta))


def test_relaxation_time_matches_simulated_relaxation():
    """The replica-mean balance delta = |u|^2 - w^2 of SGD relaxes like the drift path: fitted tau within 20 %.

    The drift path (``chain_balance_path``) fitted the same way absorbs the nonlinearity of a start 30 % away
    from t*; what remains is the O(eta S) correction of the rate. r = 1 and r = 9 have tau in the ratio 11/3;
    a rate proportional to sqrt(q) instead of q would give sqrt(5) and miss by 40 %.
    """
    A = torch.tensor(TEACHER, dtype=torch.float64).reshape(2, 1)
    I = torch.eye(1, dtype=torch.float64)
    eta, R = 0.02, 128
    for r in (1.0, 9.0):
        cov = ln.noise_covariance(r)
        tau = ln.chain_relaxation_time(TEACHER, cov, eta)
        t0 = 1.3 * ln.chain_fixed_point(TEACHER, cov)["hidden_sq"]
        seg = int(tau / 10)
        t_path = ln.chain_balance_path(t0, seg * np.arange(25), TEACHER, cov, eta)
        tau_path = _fitted_relaxation_time(1 / t_path - t_path, seg)
        assert tau_path == pytest.approx(tau, rel=0.15)  # the linear tau already describes the drift path
        net, theta = ln.chain_point(t0, TEACHER, 2)
        theta, deltas = theta.expand(R, -1).clone(), []
        for k in range(25):  # 2.5 tau in 25 segments
            th = theta.numpy()
            deltas.append(float(np.mean((th[:, 1:] ** 2).sum(1) - th[:, 0] ** 2)))
            out = ln.label_noise_sgd(net, theta, A, I, cov, eta, seg, seed=k, track=False, chain_kernel=True)
            theta = torch.from_numpy(out["theta_final"])
        tau_sgd = _fitted_relaxation_time(np.asarray(deltas), seg)
        assert tau_sgd == pytest.approx(tau_path, rel=0.2), (r, tau_sgd, tau_path, tau)


def test_chain_kernel_matches_the_generic_loop():
    """The written-out two-layer chain step gives the generic loop's trajectories (same random numbers)."""
    A = torch.tensor(TEACHER, dtype=torch.float64).reshape(2, 1)
    I = torch.eye(1, dtype=torch.float64)
    net = ln.chain_point(1.0, TEACHER, 2)[0]
    thetas = torch.stack([ln.chain_point(t, TEACHER, 2)[1] for t in (0.1, 1.0) for _ in range(3)])
    lrs = [0.05, 0.05, 3.0, 0.05, 0.05, 3.0]  # eta = 3 diverges
    kw = dict(steps=1200, batch_size=1, record_every=300, seed=3)
    ref = ln.label_noise_sgd(net, thetas, A, I, ln.noise_covariance(4.0), lrs, **kw)
    fast = ln.label_noise_sgd(net, thetas, A, I, ln.noise_covariance(4.0), lrs, chain_kernel=True, **kw)
    assert fast["diverged"].tolist() == ref["diverged"].tolist() == [False, False, True] * 2
    np.testing.assert_array_equal(fast["steps"], ref["steps"])
    for key in ("sharpness", "flow_sharpness", "trace_fluctuation", "theta_final"):
        np.testing.assert_allclose(fast[key], ref[key], rtol=1e-10, atol=1e-12, equal_nan=True)


def test_quadratic_extrapolation_is_exact_on_a_parabola():
    etas = [0.005, 0.01, 0.02]
    values = [3.0 - 20 * e + 400 * e**2 for e in etas]
    assert ln.extrapolate_to_zero(etas, values, degree=2) == pytest.approx(3.0, rel=1e-10)
    assert ln.extrapolate_to_zero(etas, values) != pytest.approx(3.0, rel=1e-3)  # a line is biased
    with pytest.raises(ConfigError, match="3 distinct"):
        ln.extrapolate_to_zero(etas[:2], values[:2], degree=2)


def test_minibatch_sgd_step_is_one_mean_gradient_step():
    """One step of label_noise_sgd with B = 4 equals theta - eta * minibatch_gradient on the same draws
    (catches a batch mean taken twice, or a missing one)."""
    net = ln.DeepLinearNet(2, (3,), 2)
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(3, net.dim, generator=g, dtype=torch.float64)
    A = torch.tensor([[1.0, 0.5], [-0.3, 0.8]], dtype=torch.float64)
    Sx = torch.tensor([[1.0, 0.2], [0.2, 0.5]], dtype=torch.float64)
    cov = ln.noise_covariance(3.0)
    B, eta, seed = 4, 0.05, 11
    out = ln.label_noise_sgd(net, theta, A, Sx, cov, eta, 1, batch_size=B, record_every=1, seed=seed, track=False)
    rng = np.random.default_rng(seed)  # the same draws as label_noise_sgd (chunk of one step)
    Lx = torch.linalg.cholesky(Sx).numpy()
    ev, U = torch.linalg.eigh(cov)
    Le = (U * ev.clamp_min(0).sqrt()).numpy()
    X = rng.standard_normal((1, 3, B, 2)) @ Lx.T
    E = np.einsum("nrbk,jk->nrbj", rng.standard_normal((1, 3, B, 2)), Le)
    Y = X @ A.numpy().T + E
    grad = ln.minibatch_gradient(net, theta, torch.from_numpy(X[0]), torch.from_numpy(Y[0]))
    np.testing.assert_allclose(out["theta_final"], (theta - eta * grad).numpy(), rtol=1e-12, atol=1e-14)


def test_minibatch_sgd_drift_scales_like_one_over_batch():
    """The expected one-step balance drift at a minimum is eta^2 s (...) / B: B = 4 gives a quarter of B = 1."""
    cov = ln.noise_covariance(6.0)
    net, theta = ln.chain_point(1.3, TEACHER, 2)
    R, lr = 40000, 0.1
    A = torch.tensor(TEACHER, dtype=torch.float64).reshape(2, 1)
    out = ln.label_noise_sgd(
        net,
        theta.expand(R, -1),
        A,
        torch.eye(1, dtype=torch.float64),
        cov,
        lr,
        1,
        batch_size=4,
        record_every=1,
        seed=5,
        track=False,
    )
    th = torch.from_numpy(out["theta_final"])
    bal = lambda t: (t[:, 1:] ** 2).sum(1) - t[:, 0] ** 2  # noqa: E731
    change = (bal(th) - bal(theta[None])).numpy()
    predicted = float(ln.chain_balance_drift(net, theta, cov, lr, batch_size=4)[0])
    assert abs(change.mean() - predicted) < 4 * change.std() / np.sqrt(R)
    assert predicted == pytest.approx(float(ln.chain_balance_drift(net, theta, cov, lr)[0]) / 4)


def test_sgd_at_depth_three_reaches_the_chain_fixed_point():
    """D = 3 chain, balanced and unbalanced starts: SGD's flow-limit sharpness at eta -> 0 within 3 % of S*."""
    cov = ln.noise_covariance(4.0)
    net = ln.DeepLinearNet(1, (1, 1), 2)
    fp = ln.chain_fixed_point(TEACHER, cov, 3)
    w = np.sqrt(fp["hidden_sq"])
    bal = torch.tensor([w, w, 1.0 / w**2, 0.0], dtype=torch.float64)
    unbal = torch.tensor([1.2 * w, w / 1.2, 1.0 / w**2, 0.0], dtype=torch.float64)
    A = torch.tensor(TEACHER, dtype=torch.float64).reshape(2, 1)
    etas, vals = (0.04, 0.08), []
    for eta in etas:
        n = int(10 * ln.chain_relaxation_time(TEACHER, cov, eta, 3)) // 100 * 100
        out = ln.label_noise_sgd(
            net,
            torch.stack([bal] * 8 + [unbal] * 8),
            A,
            torch.eye(1, dtype=torch.float64),
            cov,
            eta,
            n,
            record_every=n // 20,
            seed=4,
        )
        assert not out["diverged"].any()
        vals.append(np.mean(out["flow_sharpness"][10:]))
    assert ln.extrapolate_to_zero(etas, vals) == pytest.approx(fp["sharpness"], rel=0.03)


def test_online_sgd_threshold_and_ar1():
    assert ln.online_sgd_threshold(1) == pytest.approx(2 / 3)
    assert ln.online_sgd_threshold(10**6) == pytest.approx(2.0, rel=1e-5)
    for el in (0.3, 0.5):
        v = ln.multiplicative_ar1(el, 1500, chains=2000, seed=0)
        assert v[-500:].mean() == pytest.approx(ln.ar1_stationary_variance(el), rel=0.15)
    assert ln.multiplicative_ar1(0.9, 1500, chains=2000, seed=0).max() > 100 * ln.ar1_stationary_variance(0.5)
    assert ln.ar1_stationary_variance(0.7) == float("inf")
    # batch 8: stable at eta lambda = 1.2 > 2/3, since the threshold is 1.6
    v8 = ln.multiplicative_ar1(1.2, 1500, chains=2000, batch_size=8, seed=0)
    assert v8[-500:].mean() == pytest.approx(ln.ar1_stationary_variance(1.2, batch_size=8), rel=0.2)
