import numpy as np
import pytest

from instabilities.config import ConfigError
from instabilities.dynamics import quadratic as q


def random_spd(d: int, seed: int = 0, negative: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = rng.uniform(0.1, 3.0, size=d)
    if negative:
        lam[0] = -0.5
    return (U * lam) @ U.T


def test_1d_iterate_is_power_of_factor():
    for h in (0.5, 1.5, 1.9, 2.0, 2.1):
        traj = q.trajectory([1.0], [1.0], h, 40)
        expected = (1.0 - h) ** np.arange(41)
        np.testing.assert_allclose(traj[:, 0], expected, rtol=1e-12, atol=1e-300)


def test_trajectory_matches_closed_form_and_is_vectorised_over_eta():
    A = random_spd(5, seed=1)
    x0 = np.arange(1.0, 6.0)
    etas = np.array([0.1, 0.4, 0.7])
    trajs = q.trajectory(A, x0, etas, 30)
    assert trajs.shape == (3, 31, 5)
    for i, eta in enumerate(etas):
        closed = q.gd_closed_form(A, x0, eta, np.arange(31))
        np.testing.assert_allclose(trajs[i], closed, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(q.trajectory(A, x0, eta, 30), trajs[i])
    np.testing.assert_allclose(q.gd_closed_form(A, x0, 0.4, 7), trajs[1, 7], rtol=1e-10)


def test_gd_converges_iff_eta_below_two_over_lambda_max():
    A = random_spd(4, seed=2)
    lmax = np.linalg.eigvalsh(A).max()
    x0 = np.ones(4)
    ok = q.trajectory(A, x0, 0.99 * 2 / lmax, 3000)[-1]
    bad = q.trajectory(A, x0, 1.01 * 2 / lmax, 3000)[-1]
    assert np.linalg.norm(ok) < 1e-3 * np.linalg.norm(x0)
    assert np.linalg.norm(bad) > 1e3 * np.linalg.norm(x0)


def test_negative_eigenvalue_diverges_for_every_eta():
    A = random_spd(3, seed=3, negative=True)
    for eta in (1e-3, 0.1, 0.5):  # all below 2/lambda_max of the positive part
        steps = int(5.0 / (0.5 * eta))  # (1 + eta/2)^steps > e^4
        assert np.linalg.norm(q.trajectory(A, np.ones(3), eta, steps)[-1]) > 10.0


def test_neutral_case_is_period_two():
    traj = q.trajectory([3.0], [0.7], 2.0 / 3.0, 10)[:, 0]
    np.testing.assert_allclose(traj, 0.7 * (-1.0) ** np.arange(11), rtol=1e-12)


@pytest.mark.parametrize(
    "method,beta",
    [("gd", 0.0), ("heavy_ball", 0.0), ("heavy_ball", 0.5), ("heavy_ball", 0.9), ("nesterov", 0.3), ("nesterov", 0.9)],
)
def test_bisection_threshold_equals_closed_form(method, beta):
    for lam in (0.3, 1.0, 7.0):
        assert q.threshold_by_bisection(method, beta, lam=lam) == pytest.approx(
            q.stability_threshold(method, beta), abs=1e-8
        )


def test_spectral_radius_matches_numpy_eigvals_and_trajectories():
    rng = np.random.default_rng(4)
    for method in q.METHODS:
        for _ in range(20):
            eta, lam, beta = rng.uniform(0.05, 2.0), rng.uniform(0.1, 4.0), rng.uniform(0.0, 0.95)
            M = q.iteration_matrix(method, eta, lam, beta)
            expected = np.abs(np.linalg.eigvals(M)).max()
            assert q.spectral_radius(method, eta, lam, beta) == pytest.approx(expected, rel=1e-9)
    # momentum trajectories in 1-D follow the iteration matrix on (x_t, x_{t-1})
    for method in ("heavy_ball", "nesterov"):
        M = q.iteration_matrix(method, 0.3, 2.0, 0.6)
        state = np.array([1.0, 1.0])
        traj = q.trajectory([2.0], [1.0], 0.3, 12, method=method, beta=0.6)[:, 0]
        for t in range(12):
            state = M @ state
            assert traj[t + 1] == pytest.approx(state[0], rel=1e-12)


def test_momentum_stability_boundary_from_trajectories():
    for method, beta in (("heavy_ball", 0.5), ("nesterov", 0.5)):
        h = q.stability_threshold(method, beta)
        inside = q.trajectory([1.0], [1.0], 0.97 * h, 4000, method=method, beta=beta)[-1, 0]
        outside = q.trajectory([1.0], [1.0], 1.03 * h, 4000, method=method, beta=beta)[-1, 0]
        assert abs(inside) < 1e-6 and abs(outside) > 1e6


def test_classify_regimes():
    got = q.classify(np.array([0.5, 1.0, 1.5, 1.9, 2.0, 2.1]), 1.0)
    assert got.tolist() == ["converge", "converge", "oscillate", "oscillate", "neutral", "diverge"]
    assert str(q.classify(0.1, -1.0)) == "diverge"
    assert str(q.classify(0.1, 0.0)) == "neutral"


def test_descent_lemma_coefficient_is_exact_on_1d_quadratic():
    beta = 3.0
    for eta in (0.1, 0.5, 0.66, 0.8):
        x = 1.7
        g = beta * x
        after = 0.5 * beta * (x - eta * g) ** 2
        assert after == pytest.approx(0.5 * beta * x * x - float(q.guaranteed_decrease(eta, beta)) * g * g, rel=1e-12)
    c = q.guaranteed_decrease(np.linspace(0.01, 1.0, 100), beta)
    assert np.all((c > 0) == (np.linspace(0.01, 1.0, 100) < 2 / beta))


def test_quadratic_loss_vectorised():
    A = random_spd(3, seed=5)
    X = np.random.default_rng(0).normal(size=(4, 2, 3))
    vals = q.quadratic_loss(A, X)
    assert vals.shape == (4, 2)
    assert vals[1, 1] == pytest.approx(0.5 * X[1, 1] @ A @ X[1, 1])


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf"), [0.1, -1.0]])
def test_invalid_eta_raises(bad):
    with pytest.raises(ConfigError, match="eta"):
        q.trajectory([1.0], [1.0], bad, 5)


def test_invalid_inputs_raise_config_errors():
    with pytest.raises(ConfigError, match="beta"):
        q.stability_threshold("heavy_ball", 1.0)
    with pytest.raises(ConfigError, match="method"):
        q.spectral_radius("adam", 0.1, 1.0)
    with pytest.raises(ConfigError, match="symmetric"):
        q.trajectory([[1.0, 2.0], [0.0, 1.0]], [1.0, 1.0], 0.1, 3)
    with pytest.raises(ConfigError, match="length"):
        q.trajectory([1.0, 2.0], [1.0], 0.1, 3)
    with pytest.raises(ConfigError, match="lam"):
        q.threshold_by_bisection("gd", 0.0, lam=-1.0)
