"""The one solver comparison (curvature.compare) and the timers: dense reference, warm starts, tracking cost."""

import numpy as np
import pytest
import torch

from instabilities import curvature
from instabilities.config import ConfigError

from _problems import tiny_problem


def test_blocked_dense_hessian_matches_torch_func():
    objective, theta = tiny_problem()
    op = curvature.HessianOperator(objective, theta)
    H = curvature.dense_hessian_blocked(op, block=10)
    ref = torch.func.hessian(objective)(theta)
    torch.testing.assert_close(H, 0.5 * (ref + ref.T), rtol=1e-10, atol=1e-12)
    assert op.n_matvec == theta.numel()


def test_compare_solvers_against_the_dense_spectrum():
    objective, theta = tiny_problem(1)
    r = curvature.compare_solvers(objective, theta, k=3, n_reference=10, block=16)
    dense = torch.linalg.eigvalsh(torch.func.hessian(objective)(theta)).flip(0).numpy()
    np.testing.assert_allclose(r["reference_spectrum"], dense, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r["lanczos_values"], dense[:3], rtol=1e-4)
    assert np.all(r["lanczos_residuals"] <= 1e-4 * abs(dense[0]))
    assert r["power_values"][0] <= dense[0] * (1 + 1e-9)  # a Rayleigh quotient never exceeds lambda_max
    assert r["tiny_matvecs"] == 6 and not bool(r["tiny_converged"])
    for key in ("lanczos", "power", "tiny"):
        assert r[f"{key}_values"].shape == (3,) and r[f"{key}_residuals"].shape == (3,)
        assert r[f"{key}_n_matvec"] == r[f"{key}_matvecs"] + 3  # the explicit residual check
    assert float(r["lanczos_max_rel_error"]) < 1e-4 and "lanczos_seconds" not in r


def test_compare_solvers_lanczos_reference_when_not_dense():
    objective, theta = tiny_problem(2)
    r = curvature.compare_solvers(objective, theta, k=2, n_reference=4, reference="lanczos")
    dense = torch.linalg.eigvalsh(torch.func.hessian(objective)(theta)).flip(0).numpy()
    np.testing.assert_allclose(r["reference_values"], dense[:4], rtol=1e-6)
    assert not bool(r["reference_is_dense"])
    with pytest.raises(ConfigError, match="reference"):
        curvature.compare_solvers(objective, theta, k=2, reference="exact")
    with pytest.raises(ConfigError, match="unknown"):
        curvature.compare_solvers(objective, theta, k=2, solvers=("lobpcg",))


def test_timed_solver_rows(small_net):
    objective, theta = small_net
    rows = curvature.solver_rows(
        curvature.compare_solvers(
            objective,
            theta,
            k=2,
            solvers=("lanczos", "block", "eigsh", "power"),
            tol=1e-6,
            timed=True,
            reference="lanczos",
            n_reference=2,
            reference_tol=1e-9,
            reference_max_iter=400,
            reference_seed=12345,
        )
    )
    assert [r["solver"] for r in rows][:2] == ["lanczos (ours)", "block Krylov (ours, cold)"]
    for r in rows[:3]:
        assert r["max_rel_error"] < 1e-4 and r["matvecs"] > 0 and len(r["values"]) == 2
    assert all(r["seconds"] >= 0 for r in rows)


def test_warm_start_matvecs_shapes_and_values():
    objective, theta = tiny_problem(3)
    w = curvature.warm_start_matvecs(objective, theta, eta=0.05, steps=3, k=2, tol=1e-8)
    assert w["cold_matvecs"].shape == (3,) and w["warm_values"].shape == (3, 2)
    np.testing.assert_allclose(w["warm_values"], w["cold_values"], rtol=1e-5)
    assert w["loss"][-1] < w["loss"][0]  # small steps on a smooth loss decrease it


def test_measure_tracking_cost_reports_counts_and_audit(small_net):
    objective, theta = small_net
    r = curvature.measure_tracking_cost(
        objective,
        theta,
        eta=0.3,
        steps=4,
        k=1,
        block_size=2,
        verify_every=2,
        fused=True,
        amortised=True,
        max_iter=1,
        warm_from=2,
    )
    assert r["matvecs_per_step"] == 2.0 and r["verified_steps"] == [0, 2]
    assert len(r["verified_rel_errors"]) == 2 and r["max_verified_rel_error"] >= 0
    assert r["fused"] and r["amortised"] and r["ratio"] > 0
