"""Closed forms of the two-parameter linear network (lib/rpe.py) against numpy and brute force."""

import numpy as np
import pytest

from instabilities.config import ConfigError
from instabilities.dynamics import rpe

LOSSES = [rpe.ScalarLoss("square"), rpe.ScalarLoss("target", 1.3), rpe.ScalarLoss("target", -0.7)]


def random_states(n=200, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(n, 2)) * rng.uniform(0.2, 3.0, size=(n, 1))
    eta = rng.uniform(0.01, 0.5, size=n)
    return theta, eta


@pytest.mark.parametrize("loss", LOSSES)
def test_gamma_beta_identity(loss):
    theta, eta = random_states()
    nxt = rpe.gd_step(theta, eta, loss)
    x, k = rpe.step_variables(theta, eta, loss)
    ratio = rpe.imbalance(nxt) / rpe.imbalance(theta)
    np.testing.assert_allclose(ratio, rpe.imbalance_factor(x, k), rtol=1e-9)
    # the two underlying identities
    d, d_next = theta[:, 0] ** 2 - theta[:, 1] ** 2, nxt[:, 0] ** 2 - nxt[:, 1] ** 2
    np.testing.assert_allclose(d_next, d * (1 - x**2), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rpe.output(nxt), rpe.output(theta) * (1 - k * x + x**2), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
def test_hessian_and_gradient_match_finite_differences(loss):
    theta, _ = random_states(20, 1)
    h = 1e-5
    for t in theta:
        g_fd = np.array(
            [(rpe.loss_value(t + h * e, loss) - rpe.loss_value(t - h * e, loss)) / (2 * h) for e in np.eye(2)]
        )
        np.testing.assert_allclose(rpe.gradient(t, loss), g_fd, rtol=1e-6, atol=1e-6)
        H_fd = np.stack([(rpe.gradient(t + h * e, loss) - rpe.gradient(t - h * e, loss)) / (2 * h) for e in np.eye(2)])
        np.testing.assert_allclose(rpe.hessian(t, loss), H_fd, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("loss", LOSSES)
def test_sharpness_and_angle_match_eigh(loss):
    theta, _ = random_states(300, 2)
    H = rpe.hessian(theta, loss)
    vals, vecs = np.linalg.eigh(H)
    np.testing.assert_allclose(rpe.sharpness(theta, loss), vals[:, -1], rtol=1e-10, atol=1e-10)
    top = vecs[:, :, -1]
    phi_eigh = np.degrees(np.arctan2(top[:, 1], top[:, 0]))
    gap = vals[:, -1] - vals[:, 0]
    ok = gap > 1e-6 * np.abs(vals).max(1)
    np.testing.assert_allclose(rpe.line_angle(rpe.leading_eigvec_angle(theta, loss), phi_eigh)[ok], 0.0, atol=1e-6)


def test_cot_two_phi_equals_beta_for_square_loss():
    theta, _ = random_states(300, 3)
    phi = np.radians(rpe.leading_eigvec_angle(theta))
    np.testing.assert_allclose(np.abs(1 / np.tan(2 * phi)), rpe.imbalance(theta), rtol=1e-8)


def test_minimiser_sharpness_formula():
    loss = rpe.ScalarLoss("target", 1.7)
    rng = np.random.default_rng(4)
    a = rng.uniform(0.1, 5, size=50) * rng.choice([-1, 1], size=50)
    theta = np.stack([a, 1.7 / a], -1)  # on the minimiser set z = 1.7
    np.testing.assert_allclose(
        rpe.sharpness(theta, loss), rpe.minimiser_sharpness(rpe.imbalance(theta), loss), rtol=1e-10
    )
    with pytest.raises(ConfigError):
        rpe.minimiser_sharpness(1.0, rpe.SQUARE)


def test_phase_boundaries_and_polarity():
    for k in [2.5, 4.0, 10.1, 100.01]:
        lo, hi = rpe.phase_boundaries(k)
        np.testing.assert_allclose(rpe.imbalance_factor(np.array([lo, hi]), k), 1.0, rtol=1e-12)
        for kk in (k, -k):  # x and k of the same sign
            s = np.sign(kk)
            assert rpe.polarity(s * lo * 0.98, kk) == 1 or not np.isfinite(rpe.imbalance_factor(s * lo * 0.98, kk))
            assert rpe.polarity(s * lo * 1.02, kk) == -1
            assert rpe.polarity(s * hi * 0.98, kk) == -1
            assert rpe.polarity(s * hi * 1.02, kk) == 1
        xs = np.linspace(lo * 1.001, hi * 0.999, 500)
        assert np.all(rpe.imbalance_factor(xs, k) < 1)
        xs = np.linspace(1e-4, lo * 0.999, 500)
        assert np.all(rpe.imbalance_factor(xs, k) > 1)
        # opposite signs: the imbalance always shrinks
        assert np.all(rpe.imbalance_factor(-np.linspace(1e-3, 50, 200), k) < 1)
    with pytest.raises(ConfigError):
        rpe.phase_boundaries(1.5)


def test_threshold_is_stability_threshold_for_square_loss():
    # for l = z^2, |x||k| = eta (l'' (theta0^2 + theta1^2)) is eta times the Gauss-Newton sharpness
    theta, eta = random_states(100, 5)
    x, k = rpe.step_variables(theta, eta)
    np.testing.assert_allclose(np.abs(x * k), eta * 2 * (theta**2).sum(1), rtol=1e-10)


@pytest.mark.parametrize("depth", [2, 3, 5])
@pytest.mark.parametrize("loss", LOSSES)
def test_depth_d_identity(depth, loss):
    rng = np.random.default_rng(depth)
    theta = rng.uniform(0.5, 1.5, size=(40, depth)) * rng.choice([-1, 1], size=(40, depth))
    eta = 0.05
    nxt = rpe.depth_gd_step(theta, eta, loss)
    z = np.prod(theta, -1)
    for i in range(depth):
        for j in range(i + 1, depth):
            lhs = nxt[:, i] ** 2 - nxt[:, j] ** 2
            factor = 1 - eta**2 * loss.d1(z) ** 2 * z**2 / (theta[:, i] ** 2 * theta[:, j] ** 2)
            np.testing.assert_allclose(lhs, (theta[:, i] ** 2 - theta[:, j] ** 2) * factor, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(rpe.depth_imbalance_factor(theta, eta, i, j, loss), factor, rtol=1e-10)
    if depth == 2:
        np.testing.assert_allclose(nxt, rpe.gd_step(theta, eta, loss), rtol=1e-12)


def test_gradient_flow_conserves_imbalance():
    # many tiny steps: d changes only at second order in eta
    theta = np.array([0.3, 2.0])
    loss = rpe.ScalarLoss("target", 1.0)
    d0 = theta[0] ** 2 - theta[1] ** 2
    for eta in (1e-2, 1e-3):
        tr = rpe.simulate(theta, [eta], int(2.0 / eta), loss)
        d = tr.theta[0, -1, 0] ** 2 - tr.theta[0, -1, 1] ** 2
        assert abs(d - d0) < 30 * eta * abs(d0)


def test_simulate_reproduces_notes_run_and_records_divergence():
    tr = rpe.simulate((-0.1, 10.0), [0.0099, 0.011, 0.015, 0.2], 40)
    S = tr.sharpness
    assert abs(S[0, 0] - 200.08) < 0.01
    assert S[0, -1] > 198 and S[1, -1] < 0.9 * S[1, 0] and S[2, -1] < 0.2 * S[2, 0]
    assert tr.diverged.tolist() == [False, False, False, True]
    assert np.isnan(tr.theta[3, -1]).all() and tr.diverged_step[3] > 0
    sw = rpe.eta_sweep((-0.1, 10.0), [0.0099, 0.011, 0.015], 40)
    assert np.all(np.diff(sw["max_rotation_deg"]) > 0)
    assert np.all(np.diff(sw["final_sharpness"]) < 0)


def test_bad_input_raises_config_error():
    with pytest.raises(ConfigError):
        rpe.ScalarLoss("cubic")
    with pytest.raises(ConfigError):
        rpe.ScalarLoss("square", 1.0)
    with pytest.raises(ConfigError):
        rpe.simulate((1.0, 2.0, 3.0), [0.1], 10)
    with pytest.raises(ConfigError):
        rpe.simulate((1.0, 2.0), [-0.1], 10)
    with pytest.raises(ConfigError):
        rpe.simulate((1.0, 2.0), [0.1], 0)
    with pytest.raises(ConfigError):
        rpe.depth_imbalance_factor(np.ones(3), 0.1, 1, 1)


# -- diagonal linear networks of any depth --------------------------------------------------------------


def test_dln_hessian_matches_finite_differences_and_points_at_small_parameters():
    rng = np.random.default_rng(2)
    for n in (2, 3, 5):
        th = rng.uniform(0.4, 1.6, size=n)
        target = 0.8
        f = lambda t, target=target: 0.5 * (np.prod(t) - target) ** 2  # noqa: E731
        H = rpe.dln_hessian(th, np.prod(th) - target, 1.0)
        h, E = 1e-4, np.eye(n)
        fd = np.array(
            [
                [
                    (
                        f(th + h * E[i] + h * E[j])
                        - f(th + h * E[i] - h * E[j])
                        - f(th - h * E[i] + h * E[j])
                        + f(th - h * E[i] - h * E[j])
                    )
                    / (4 * h * h)
                    for j in range(n)
                ]
                for i in range(n)
            ]
        )
        np.testing.assert_allclose(H, fd, atol=1e-6)
        at_min = th * np.r_[target / np.prod(th), np.ones(n - 1)]
        u = rpe.dln_top_eigvec(rpe.dln_hessian(at_min, 0.0, 1.0))
        w = 1 / at_min
        np.testing.assert_allclose(u, w / np.linalg.norm(w), atol=1e-12)


@pytest.mark.parametrize("d1", [2e-3, -2e-3])
def test_dln_first_order_tilt(d1):
    th = np.array([0.5, 1.0, 2.0])
    th[0] *= 1.0 / np.prod(th)
    u = rpe.dln_top_eigvec(rpe.dln_hessian(th, d1, 1.0))
    w = 1 / th
    eps = u / (w / np.linalg.norm(w)) - 1
    pred = rpe.dln_first_order_tilt(th, d1, 1.0)
    np.testing.assert_allclose(eps, pred, atol=0.02 * np.abs(pred).max())
    assert np.sign(eps[0]) == -np.sign(d1)  # the smallest parameter: away when z' Theta > 0, towards when < 0


def test_polarity_ratio_closed_form_and_identity():
    rng = np.random.default_rng(5)
    t = rng.normal(size=(500, 2))
    d1, d2 = rng.normal(size=500), rng.uniform(0.3, 3.0, size=500)
    v = np.linalg.eigh(rpe.dln_hessian(t, d1, d2))[1][..., -1]
    p1, p2 = rpe.polarity_variables(t, d1, d2)
    R = rpe.polarity_ratio(p1, p2)
    np.testing.assert_allclose(np.abs(v[:, 0] / v[:, 1]), R, rtol=1e-8)
    np.testing.assert_allclose(R * rpe.polarity_ratio(-p1, p2), 1.0, rtol=1e-13)
    beta = np.abs(p1 / p2)
    np.testing.assert_allclose(R, np.sqrt(1 + beta**2) - np.sign(p1) * beta, rtol=1e-8)


def test_path_sum_equals_relu_forward_pass():
    rng = np.random.default_rng(0)
    Ws = [rng.normal(size=(3, 2)), rng.normal(size=(2, 3))]
    for x in rng.normal(size=(10, 2)):
        np.testing.assert_allclose(rpe.path_sum(Ws, x), rpe.relu_mlp(Ws, x), atol=1e-12)


def test_balanced_dln_map_orbits_and_monotone_basin():
    # n = 2, target 1: the balanced minimiser has S* = 2, so eta < 1 converges and eta slightly above 1 has period 2
    assert rpe.orbit_period(rpe.balanced_dln_orbit(0.5, 0.7, 1.0, 2, 3000)) == 1
    orbit = rpe.balanced_dln_orbit(0.5, 1.05, 1.0, 2, 3000)
    assert rpe.orbit_period(orbit) == 2
    p = orbit[-2:].min()
    F = lambda x: rpe.balanced_dln_map(rpe.balanced_dln_map(x, 1.05, 1.0, 2), 1.05, 1.0, 2)  # noqa: E731
    a = rpe.monotone_basin(F, p, 0.05)
    assert 0.05 < a < p
    ev = rpe.balanced_dln_orbit(0.5 * (a + p), 1.05, 1.0, 2, 200)[::2]
    live = np.abs(ev - p) > 1e-12
    assert np.all(np.diff(ev)[live[:-1]] > 0)
    F12 = lambda x: rpe.balanced_dln_map(rpe.balanced_dln_map(x, 1.2, 1.0, 2), 1.2, 1.0, 2)  # noqa: E731
    p12 = rpe.balanced_dln_orbit(0.5, 1.2, 1.0, 2, 3000)[-2:].min()
    assert np.isnan(rpe.monotone_basin(F12, p12, 0.05))
    assert np.isnan(rpe.balanced_dln_orbit(0.5, 5.0, 1.0, 2, 50)[-1])  # blows up: recorded as nan
