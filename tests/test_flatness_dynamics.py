"""The reduced coupled map (lib/flatness_dynamics.py) is exactly GD, and its invariants hold."""

import numpy as np
import pytest

from instabilities.config import ConfigError
from instabilities.dynamics import flatness as fd, rpe, toys

Y = 1.0
LOSS = rpe.ScalarLoss("target", Y)


@pytest.mark.parametrize("eta", [0.05, 0.2, 0.3, 0.4])
def test_reduced_map_equals_gd(eta):
    theta0 = (0.1, 3.0)
    run = fd.coupled_map_from_theta(theta0, eta, Y, 300)
    tr = rpe.simulate(theta0, [eta], 300, LOSS)
    r, d = fd.reduce_state(tr.theta[0], Y)
    np.testing.assert_allclose(run.r, r, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(run.d, d, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(run.sharpness, tr.sharpness[0], rtol=1e-7)
    np.testing.assert_allclose(run.gn_sharpness, (tr.theta[0] ** 2).sum(-1), rtol=1e-7)
    np.testing.assert_allclose(run.beta, tr.beta[0], rtol=1e-7)


def test_imbalance_never_grows_while_eta_r_small():
    rng = np.random.default_rng(0)
    for _ in range(20):
        theta0 = tuple(rng.uniform(0.05, 3.0, size=2))
        eta = rng.uniform(0.02, 0.4)
        run = fd.coupled_map_from_theta(theta0, eta, Y, 200)
        if run.diverged:
            continue
        small = np.abs(eta * run.r[:-1]) < np.sqrt(2)
        steps = np.abs(run.d[1:]) <= np.abs(run.d[:-1]) * (1 + 1e-12)
        assert np.all(steps[small])
        strict = small & (np.abs(eta * run.r[:-1]) > 1e-6)  # decrease resolvable in float64
        assert np.all(np.abs(run.d[1:])[strict] < np.abs(run.d[:-1])[strict])


def test_flattening_factor_and_final_sharpness():
    theta0 = (0.1, 3.0)
    for eta in (0.1, 0.3, 0.35):
        run = fd.coupled_map_from_theta(theta0, eta, Y, 2000)
        assert not run.diverged
        # d_T = d_0 * prod(1 - eta^2 r_t^2)
        assert abs(abs(run.d[-1]) - abs(run.d[0]) * fd.flattening_factor(run.r[:-1], eta)) < 1e-9 * abs(run.d[0])
        # converged: the sharpness equals sqrt(d^2 + 4 y^2) and is below the gradient-flow minimiser's
        assert abs(run.r[-1]) < 1e-8
        assert abs(run.sharpness[-1] - run.predicted_final_sharpness) < 1e-6
        assert run.predicted_final_sharpness <= run.gradient_flow_sharpness
        assert eta * run.sharpness[-1] < 2.0
    sw = fd.eta_sweep(theta0, np.array([0.1, 0.25, 0.3, 0.35]), Y, 2000)
    assert np.all(np.diff(sw["final_sharpness"]) < 0)  # larger unstable steps end flatter
    assert sw["unstable_steps"][0] == 0 and sw["unstable_steps"][-1] > 0


def test_amplitude_factor_exact_and_instability():
    r, d, eta = 0.3, -5.0, 0.1
    r1, _ = fd.coupled_step(r, d, eta, Y)
    assert np.isclose(r1 / r, fd.amplitude_factor(r, d, eta, Y))
    # linearised growth: |1 - eta s| > 1 iff eta s > 2
    tiny = 1e-9
    s = fd.gn_sharpness(Y, d)
    for e in (1.9 / s, 2.1 / s):
        grows = abs(fd.amplitude_factor(tiny, d, e, Y)) > 1
        assert grows == (e * s > 2)


def test_stable_imbalance_bound():
    eta = 0.3
    dmax = fd.stable_imbalance_bound(eta, Y)
    assert np.isclose(eta * fd.minimiser_sharpness(dmax, Y), 2.0)
    assert np.isnan(fd.stable_imbalance_bound(1.5, Y))


def test_divergence_recorded_and_bad_input():
    run = fd.coupled_map_from_theta((0.1, 3.0), 0.8, Y, 500)
    assert run.diverged and run.diverged_step > 0 and np.isnan(run.r[-1])
    with pytest.raises(ConfigError):
        fd.coupled_map(0.1, 1.0, -0.1, Y, 10)
    with pytest.raises(ConfigError):
        fd.coupled_map(float("nan"), 1.0, 0.1, Y, 10)
    with pytest.raises(ConfigError):
        fd.reduce_state(np.ones(3), Y)


def test_self_stabilization_counterpart_is_available():
    x, y = toys.self_stabilization_map(0.01, -2.0, 0.01, 1.0, 1.0, 3000)
    assert np.all(np.isfinite(x)) and y.max() > 0  # the sharpness excess crosses zero and comes back
    assert y[-1] < y.max()


# -- the flatness dynamical system X_{t+1} = X_t + xi_t alpha(X_t) ------------------------------------------


def test_sigmoid_potential_and_inverse():
    d = fd.SigmoidDrift(beta=5.0, scale=1.0)
    xs = np.linspace(-2, 3, 11)
    # Phi' = 1 / alpha
    h = 1e-6
    np.testing.assert_allclose((d.potential(xs + h) - d.potential(xs - h)) / (2 * h), 1 / d(xs), rtol=1e-6)
    np.testing.assert_allclose(d.inverse_potential(d.potential(xs)), xs, atol=1e-9)
    with pytest.raises(ConfigError):
        fd.SigmoidDrift(beta=0.0)


def test_domination_and_quantile_bounds_hold_on_simulated_paths():
    d = fd.SigmoidDrift(beta=5.0)
    X, S = fd.simulate_log_curvature(d, 0.2, 60, 4000, seed=3)
    assert X.shape == S.shape == (4000, 61)
    assert np.max(d.potential(X) - (d.potential(0.2) + S)) < 1e-9
    t = np.arange(61)
    for q in (0.3, 0.5, 0.9):  # empirical quantile at q minus 3 sampling standard deviations of the empirical CDF
        qs = q - 3 * np.sqrt(q * (1 - q) / len(X))
        assert np.all(np.quantile(X, qs, axis=0, method="inverted_cdf") <= fd.quantile_bound(d, 0.2, t, q) + 1e-9)
    out = fd.two_step_outcomes(d, 0.2)
    assert sum(v <= 0.2 + 1e-12 for v in out.values()) == 3 and np.mean(list(out.values())) == pytest.approx(0.2)


def test_random_walk_quantile_is_exact():
    rng = np.random.default_rng(0)
    S = rng.choice([-1, 1], size=(200000, 9)).sum(1)
    for q in (0.2, 0.5, 0.8):
        assert fd.random_walk_quantile(np.array([9]), q)[0] == np.quantile(S, q, method="inverted_cdf")
    with pytest.raises(ConfigError):
        fd.random_walk_quantile(np.array([4]), 1.0)


def test_linear_drift_is_multiplicative_and_meets_the_descent_bound():
    lin = fd.LinearDrift(0.3)
    X, S = fd.simulate_log_curvature(lin, 1.0, 50, 1000, seed=1)
    kappa = -np.log(1 - 0.09) / 0.6
    qbar = (np.log(1.3) - np.log(0.7)) / 0.6
    gap = lin.potential(X) - (lin.potential(1.0) + qbar * S - kappa * np.arange(51))
    np.testing.assert_allclose(gap, 0.0, atol=1e-9)  # equality for the linear drift
    with pytest.raises(ConfigError):
        fd.LinearDrift(1.2)
