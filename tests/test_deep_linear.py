"""Tests of the general theorem of Xu et al. (deep linear networks): closed forms against dense Hessians and SGD."""

import numpy as np
import pytest
import torch

from instabilities.config import ConfigError
from instabilities.dynamics import deep_linear as dl, label_noise as ln

I2 = np.eye(2)


def _random_problem(seed, d=3):
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((d, d))
    M1, M2 = rng.standard_normal((2, d, d))
    return V, M1 @ M1.T + 0.5 * np.eye(d), M2 @ M2.T + 0.5 * np.eye(d)


def _product(Ws):
    W = Ws[-1]
    for Wk in Ws[-2::-1]:
        W = W @ Wk
    return W


def _dense(Ws, V, Sx, Se):
    net = ln.DeepLinearNet(Ws[0].shape[1], tuple(W.shape[0] for W in Ws[:-1]), Ws[-1].shape[0])
    theta = net.flatten([torch.from_numpy(W) for W in Ws])[None]
    return ln.curvature_summary(net, theta, *(torch.from_numpy(np.asarray(M, dtype=float)) for M in (V, Sx, Se)))


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_eq14_eq15_and_fluctuation_match_dense_hessians(depth):
    V, Sx, Se = _random_problem(depth)
    for Ws, T in (
        (dl.minimal_fluctuation_weights(depth, V, Sx, Se, seed=1), dl.predicted_trace(depth, V, Sx, Se)),
        (dl.minimal_trace_weights(depth, V, Sx, seed=2), dl.minimal_trace(depth, V, Sx)),
    ):
        np.testing.assert_allclose(_product(Ws), V, atol=1e-12)
        dense = _dense(Ws, V, Sx, Se)
        assert float(dense["trace_hessian"][0]) == pytest.approx(T, rel=1e-10)
        assert float(dense["trace_hessian"][0]) == pytest.approx(float(dl.trace_hessian(Ws, Sx)), rel=1e-10)
        assert float(dense["trace_fluctuation"][0]) == pytest.approx(float(dl.fluctuation(Ws, Sx, Se)), rel=1e-10)
        assert float(dense["sharpness"][0]) == pytest.approx(dl.sharpness(Ws, Sx), rel=1e-10)
    assert dl.predicted_trace(depth, V, Sx, Se) > dl.minimal_trace(depth, V, Sx)


def test_trace_formula_holds_off_the_minima():
    """Eq. 44 is exact at every theta of a linear network (the residual term has zero trace)."""
    rng = np.random.default_rng(5)
    V, Sx, Se = _random_problem(5)
    Ws = [rng.standard_normal((3, 3)) for _ in range(3)]
    net = ln.DeepLinearNet(3, (3, 3), 3)
    theta = net.flatten([torch.from_numpy(W) for W in Ws])
    H = torch.func.hessian(lambda p: ln.population_loss(net, p, torch.from_numpy(V), torch.from_numpy(Sx)))(theta)
    assert float(torch.trace(H)) == pytest.approx(float(dl.trace_hessian(Ws, Sx)), rel=1e-10)


@pytest.mark.parametrize("depth", [2, 3, 4, 6])
@pytest.mark.parametrize("sigma", [0.1, 1.0, 3.0, 100.0])
def test_two_by_two_example_eq18_eq21(depth, sigma):
    Ws = dl.minimal_fluctuation_weights(depth, I2, I2, np.diag([1.0, sigma**2]))
    assert float(dl.two_by_two_trace(sigma, depth)) == pytest.approx(float(dl.trace_hessian(Ws, I2)), rel=1e-12)
    assert float(dl.two_by_two_sharpness(sigma, depth)) == pytest.approx(dl.sharpness(Ws, I2), rel=1e-12)
    assert float(dl.two_by_two_trace(sigma, depth)) == pytest.approx(float(dl.two_by_two_trace(1 / sigma, depth)))


def test_paper_numbers_and_errata():
    assert float(dl.two_by_two_trace(3.0, 2)) == pytest.approx(9.5406, abs=1e-4)
    for D in (2, 3, 4):
        assert dl.minimal_trace(D, I2, I2) == pytest.approx(4 * D)  # T_min = D d^2, not D d^((D+2)/D)
    # T/T_min -> (2 + sigma + 1/sigma)/4 as D grows (eq. 19 overstates it by ~4)
    assert float(dl.two_by_two_trace(100.0, 200)) / 800 == pytest.approx((2 + 100 + 0.01) / 4, rel=0.03)


def test_shape_only_and_isotropy_gives_flattest():
    V, Sx, Se = _random_problem(7)
    for D in (2, 3):
        assert dl.predicted_trace(D, V, Sx, 4.2 * Se) == pytest.approx(dl.predicted_trace(D, V, Sx, Se), rel=1e-12)
        assert dl.predicted_trace(D, V, Sx, 0.3 * np.eye(3)) == pytest.approx(dl.minimal_trace(D, V, Sx), rel=1e-12)


def test_chain_is_the_rank_one_case_of_theorem_1():
    a, cov = [0.8, -0.6, 0.3], torch.diag(torch.tensor([1.0, 5.0, 0.5], dtype=torch.float64))
    for D in (2, 3, 4):
        chain = ln.chain_fixed_point(a, cov, D)["trace_hessian"]
        assert chain == pytest.approx(dl.predicted_trace(D, np.reshape(a, (3, 1)), np.eye(1), cov.numpy()), rel=1e-12)


def test_minimal_fluctuation_is_the_minimum_over_the_manifold():
    """Random GL rescalings of Lemma 5's weights never lower tr C; Lemma 5 is a noise equilibrium."""
    V, Sx, Se = _random_problem(3)
    rng = np.random.default_rng(0)
    Ws = dl.minimal_fluctuation_weights(3, V, Sx, Se)
    best = float(dl.fluctuation(Ws, Sx, Se))
    assert dl.noise_balance_residual(Ws, Sx, Se) < 1e-10
    assert dl.noise_balance_residual(dl.minimal_trace_weights(3, V, Sx), Sx, Se) > 1e-3
    for _ in range(50):
        W2 = [W.copy() for W in Ws]
        for k in range(2):
            G = np.eye(3) + 0.3 * rng.standard_normal((3, 3))
            W2[k], W2[k + 1] = G @ W2[k], W2[k + 1] @ np.linalg.inv(G)
        np.testing.assert_allclose(_product(W2), V, atol=1e-9)
        assert float(dl.fluctuation(W2, Sx, Se)) >= best * (1 - 1e-12)


def test_theorem2_inequality():
    V, Sx, Se = _random_problem(4)
    ev = np.linalg.eigvalsh(Se)
    rng = np.random.default_rng(1)
    for _ in range(30):
        Ws = dl.minimal_trace_weights(2, V, Sx)
        G = np.eye(3) + 0.5 * rng.standard_normal((3, 3))
        Ws = [G @ Ws[0], Ws[1] @ np.linalg.inv(G)]
        T, C = float(dl.trace_hessian(Ws, Sx)), float(dl.fluctuation(Ws, Sx, Se))
        assert ev[0] * T <= C * (1 + 1e-12) and C <= ev[-1] * T * (1 + 1e-12)


def test_layer_conditioning_of_lemma5():
    Ws = dl.minimal_fluctuation_weights(4, I2, I2, np.diag([1.0, 81.0]))
    # kappa^(1/4), 1, 1, kappa^(1/4)
    np.testing.assert_allclose(dl.layer_conditions(Ws), [3.0, 1.0, 1.0, 3.0], rtol=1e-10)


def test_population_gradient_is_autograd_and_zero_at_minima():
    rng = np.random.default_rng(2)
    V, Sx, _ = _random_problem(2)
    Ws = [rng.standard_normal((3, 3)) for _ in range(3)]
    net = ln.DeepLinearNet(3, (3, 3), 3)
    theta = net.flatten([torch.from_numpy(W) for W in Ws]).requires_grad_(True)
    ln.population_loss(net, theta, torch.from_numpy(V), torch.from_numpy(Sx)).backward()
    ours = net.flatten([torch.from_numpy(g) for g in dl.population_gradient(Ws, V, Sx)])
    torch.testing.assert_close(ours, theta.grad)
    assert max(np.abs(g).max() for g in dl.population_gradient(dl.minimal_trace_weights(3, V, Sx), V, Sx)) < 1e-10


def test_sgd_reaches_eq14_and_gd_freezes_it():
    """SGD on the 2x2 example (D = 2, sigma = 3) from the flattest minimum: eta -> 0 within 4 % of eq. 14;
    gradient descent afterwards keeps T fixed."""
    Se = np.diag([0.2, 1.8])
    starts = [dl.minimal_trace_weights(2, I2, I2)] * 24
    vals = []
    for eta in (0.02, 0.04):
        n = int(6 * dl.diagonal_relaxation_time(np.diag(Se), eta))
        out = dl.train(starts, I2, I2, Se, eta, [("sgd", n)], records_per_phase=12, seed=1)
        assert not out["diverged"].any()
        vals.append(np.nanmean(out["trace_hessian"][6:]))
    limit = ln.extrapolate_to_zero((0.02, 0.04), vals)
    assert limit == pytest.approx(dl.predicted_trace(2, I2, I2, Se), rel=0.04)
    assert limit > 1.1 * dl.minimal_trace(2, I2, I2)
    out = dl.train(starts[:4], I2, I2, Se, 0.02, [("sgd", 2000), ("gd", 1000)], records_per_phase=5, seed=0)
    T_gd = out["trace_hessian"][out["phase"] == 1]
    assert np.ptp(T_gd[2:], axis=0).max() < 1e-7


def test_sgd_at_depth_three_reaches_eq14():
    """D = 3 (two hidden layers of width 2): SGD's T at eta -> 0 within 6 % of eq. 14 from a flat and a sharp start."""
    Se = np.diag([0.2, 1.8])
    starts = [dl.minimal_trace_weights(3, I2, I2)] * 12 + [
        dl.minimal_fluctuation_weights(3, I2, I2, np.diag([0.02, 1.98]))
    ] * 12
    vals = []
    for eta in (0.02, 0.04):
        n = int(12 * dl.diagonal_relaxation_time(np.diag(Se), eta))
        out = dl.train(starts, I2, I2, Se, eta, [("sgd", n)], records_per_phase=12, seed=2)
        assert not out["diverged"].any()
        vals.append(np.nanmean(out["trace_hessian"][6:], axis=0).reshape(2, -1).mean(1))
    vals = np.array(vals)  # [eta, start]
    limit = ln.extrapolate_to_zero((0.02, 0.04), vals.mean(1))
    assert limit == pytest.approx(dl.predicted_trace(3, I2, I2, Se), rel=0.06)
    assert abs(vals[0, 0] - vals[0, 1]) < 0.05 * vals[0].mean()


def test_bad_input_raises_config_errors():
    with pytest.raises(ConfigError, match="D >= 2"):
        dl.predicted_trace(1, I2, I2, I2)
    with pytest.raises(ConfigError, match="Sigma_eps"):
        dl.predicted_trace(2, I2, I2, np.eye(3))
    with pytest.raises(ConfigError, match="positive definite"):
        dl.minimal_fluctuation_weights(2, I2, I2, np.diag([1.0, 0.0]))
    with pytest.raises(ConfigError, match="widths"):
        dl.minimal_fluctuation_weights(3, I2, I2, I2, widths=(1, 2))
    with pytest.raises(ConfigError, match="phase"):
        dl.train([dl.minimal_trace_weights(2, I2, I2)], I2, I2, I2, 0.01, [("adam", 100)])
