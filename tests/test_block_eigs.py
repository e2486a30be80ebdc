"""Block eigensolver vs dense eigvalsh: small nets, clustered spectra, warm starts, relative tolerance."""
import pytest
import torch

from instabilities import curvature
from instabilities.curvature import block as be
from instabilities.config import ConfigError
from instabilities.models import ModelSpec
from instabilities.train import TrainConfig, build_problem


def _quadratic(eigenvalues, seed=0):
    """Objective 0.5 theta^T A theta with a random orthogonal eigenbasis and the given spectrum."""
    n = len(eigenvalues)
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    A = U @ torch.diag(torch.as_tensor(eigenvalues, dtype=torch.float64)) @ U.T
    A = 0.5 * (A + A.T)
    return (lambda th: 0.5 * th @ (A @ th)), A


@pytest.fixture(scope="module")
def small_net():
    cfg = TrainConfig(dataset="digits", n_train=100, n_test=50, model=ModelSpec(widths=(10, 10)), dtype="float64")
    prob = build_problem(cfg)
    return prob.hessian_objective, prob.flat.theta0


def test_block_eigs_matches_dense_on_a_small_net(small_net):
    objective, theta = small_net
    op = curvature.HessianOperator(objective, theta, "forward")
    res = be.block_eigs(op, k=3, tol=1e-8, max_iter=200)
    dense = torch.linalg.eigvalsh(op.dense()).flip(0)[:3]
    assert res.converged
    assert torch.allclose(res.values, dense, rtol=1e-8)
    # reported residuals are the true ones and satisfy the relative stopping rule
    Hv = op.dense() @ res.vectors
    true_res = (Hv - res.vectors * res.values).norm(dim=0)
    assert torch.allclose(res.residuals, true_res, rtol=1e-5, atol=1e-10)
    assert bool((res.residuals <= 1e-8 * res.values.abs()).all())


def test_clustered_top_eigenvalues_are_resolved():
    # a cluster at the top, as at the edge of stability (4.063, 4.0467, 4.0003, ...), plus a negative tail
    spectrum = [4.063, 4.0467, 4.0003, 3.9496, 3.705] + list(torch.linspace(-0.05, 3.0, 195).tolist())
    objective, A = _quadratic(spectrum)
    theta = torch.zeros(200, dtype=torch.float64)
    res = be.block_eigs(curvature.HessianOperator(objective, theta, "forward"), k=3, tol=1e-6, max_iter=300)
    dense = torch.linalg.eigvalsh(A).flip(0)[:3]
    assert torch.allclose(res.values, dense, rtol=1e-7)
    assert curvature.subspace_similarity(res.vectors, torch.linalg.eigh(A)[1].flip(1)[:, :3]) > 0.999


def test_warm_start_saves_matvecs(small_net):
    objective, theta = small_net
    cold = be.block_eigs(curvature.HessianOperator(objective, theta, "forward"), k=1, tol=1e-6, max_iter=200)
    moved = theta + 1e-3 * torch.randn(theta.shape, dtype=theta.dtype, generator=torch.Generator().manual_seed(1))
    op_m = curvature.HessianOperator(objective, moved, "forward")
    warm = be.block_eigs(op_m, k=1, tol=1e-6, max_iter=200, X0=cold.block)
    cold_m = be.block_eigs(curvature.HessianOperator(objective, moved, "forward"), k=1, tol=1e-6, max_iter=200)
    assert warm.n_matvec < cold_m.n_matvec
    dense = torch.linalg.eigvalsh(op_m.dense())[-1]
    assert abs(float(warm.values[0] - dense)) <= 1e-6 * float(dense) * 1.01


def test_tolerance_is_relative_to_the_eigenvalue_not_the_dimension():
    # the same spectrum shape at two sizes and two scales: the stopping rule must hold in every case
    for n in (60, 1500):
        for scale in (1e-3, 1e3):
            spectrum = scale * torch.cat([torch.tensor([1.0, 0.97]), torch.linspace(-0.1, 0.9, n - 2)])
            objective, A = _quadratic(spectrum.tolist(), seed=n)
            res = be.block_eigs(curvature.HessianOperator(objective, torch.zeros(n, dtype=torch.float64)),
                                k=1, tol=1e-4, max_iter=300)
            assert res.converged
            assert float(res.residuals[0]) <= 1e-4 * abs(float(res.values[0])) * 1.0001
            assert abs(float(res.values[0]) - scale) <= 1e-4 * scale


def test_invariant_subspace_is_exact():
    objective, A = _quadratic([3.0, 2.0, 1.0, 0.5])
    res = be.block_eigs(curvature.HessianOperator(objective, torch.zeros(4, dtype=torch.float64)), k=2,
                        block_size=4, tol=1e-12)
    assert torch.allclose(res.values, torch.tensor([3.0, 2.0], dtype=torch.float64), rtol=1e-10)


def test_tracker_warm_starts_and_verifies(small_net):
    objective, theta = small_net
    tracker = be.SharpnessTracker(k=2, tol=1e-4, verify_every=2)
    g = torch.func.grad(objective)
    th = theta.clone()
    for _ in range(5):
        tracker(objective, th)
        th = th - 0.5 * g(th)
    assert len(tracker.values) == 5 and len(tracker.verify_errors) == 3
    assert max(tracker.verify_errors) < 1e-3
    assert tracker.matvecs[-1] <= tracker.matvecs[0]


def test_bad_arguments_raise_config_errors(small_net):
    objective, theta = small_net
    op = curvature.HessianOperator(objective, theta)
    with pytest.raises(ConfigError, match="k=0"):
        be.block_eigs(op, k=0)
    with pytest.raises(ConfigError, match="tol"):
        be.block_eigs(op, k=1, tol=0.0)
    with pytest.raises(ConfigError, match="block_size"):
        be.block_eigs(op, k=3, block_size=2)


def test_precomputed_first_block_product_gives_the_same_solve(small_net):
    objective, theta = small_net
    op = curvature.HessianOperator(objective, theta, "reverse")
    X = be.start_block(op.dim, 3, seed=5)
    loss, grad, HX = op.grad_and_matmat(X.to(op.dtype))
    fused = be.block_eigs(op, k=2, block_size=3, tol=1e-8, max_iter=200, X0=X, HX0=HX)
    plain = be.block_eigs(curvature.HessianOperator(objective, theta, "reverse"), k=2, block_size=3, tol=1e-8,
                          max_iter=200, seed=5)
    torch.testing.assert_close(fused.values, plain.values, rtol=1e-9, atol=1e-12)
    assert fused.n_matvec == plain.n_matvec  # the fused products are counted once
    torch.testing.assert_close(grad, torch.func.grad(objective)(theta))
    with pytest.raises(ConfigError, match="HX0"):
        be.block_eigs(op, k=1, block_size=3, HX0=HX)


@pytest.mark.parametrize("block_size", [1, 2, 3])
def test_amortised_tracker_converges_on_a_fixed_quadratic(block_size):
    # one block iteration per call on a fixed Hessian: the carried block keeps converging to lambda_1
    spectrum = [5.0, 4.8, 4.5, 3.0] + torch.linspace(-0.2, 2.0, 116).tolist()
    objective, A = _quadratic(spectrum, seed=3)
    theta = torch.zeros(120, dtype=torch.float64)
    tracker = be.SharpnessTracker(k=1, block_size=block_size, amortised=True, max_iter=1, tol=1e-10)
    first = tracker(objective, theta)  # the first call is a converged solve
    assert abs(float(first.values[0]) - 5.0) < 1e-8
    tracker._carry[0]["X"] = be.start_block(120, block_size, seed=1)  # forget it: restart from random
    errors = []
    for _ in range(150):
        res = tracker(objective, theta)
        errors.append(abs(float(res.values[0]) - 5.0) / 5.0)
    assert all(m == block_size for m in tracker.matvecs[1:])  # exactly one block iteration per call
    assert errors[-1] < 1e-4 and errors[-1] < 1e-3 * errors[0]  # b = 1: power iteration, rate (4.8/5)^2
    assert max(errors) < 1.0  # Ritz values of a subspace never exceed lambda_1


def test_fused_tracked_step_matches_the_plain_tracker(small_net):
    objective, theta = small_net
    plain, fused = be.SharpnessTracker(k=1, tol=1e-6, block_size=2), be.SharpnessTracker(k=1, tol=1e-6, block_size=2)
    g_fn = torch.func.grad(objective)
    th_p = th_f = theta.clone()
    for _ in range(4):
        r_p = plain(objective, th_p)
        th_p = th_p - 0.3 * g_fn(th_p)
        r_f, loss, g = fused.step(objective, th_f)
        th_f = th_f - 0.3 * g
        torch.testing.assert_close(r_f.values, r_p.values, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(loss, objective(th_f + 0.3 * g))
    torch.testing.assert_close(th_f, th_p, rtol=1e-10, atol=1e-12)
    assert fused.matvecs == plain.matvecs


def test_measure_tracking_cost_reports_counts_and_audit(small_net):
    objective, theta = small_net
    r = be.measure_tracking_cost(objective, theta, lr=0.3, steps=4, k=1, block_size=2, verify_every=2,
                                 fused=True, amortised=True, max_iter=1, warm_from=2)
    assert r["matvecs_per_step"] == 2.0 and r["verified_steps"] == [0, 2]
    assert len(r["verified_rel_errors"]) == 2 and r["max_verified_rel_error"] >= 0
    assert r["fused"] and r["amortised"] and r["ratio"] > 0


def test_time_eigensolvers_rows(small_net):
    objective, theta = small_net
    rows = be.time_eigensolvers(objective, theta, k=2, tol=1e-6)
    assert [r["solver"] for r in rows][:2] == ["lanczos (ours)", "block Krylov (ours, cold)"]
    for r in rows[:3]:
        assert r["max_rel_error"] < 1e-4 and r["matvecs"] > 0 and len(r["values"]) == 2
