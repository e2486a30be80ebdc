"""Batched Lanczos (one Krylov basis per population member) against per-member Lanczos and the dense spectrum."""

import pytest
import torch

from instabilities import curvature, population as pop
from instabilities.models import ModelSpec
from instabilities.train import TrainConfig, build_problem

BASE = TrainConfig(
    dataset="digits", n_train=64, n_test=32, model=ModelSpec(widths=(12, 12)), steps=20, lr=0.1, dtype="float64"
)


@pytest.mark.parametrize("hvp_method", ["reverse", "forward"])
def test_batched_lanczos_matches_per_member_lanczos_and_dense(hvp_method):
    prob = build_problem(BASE)
    cfgs = pop.population_configs(BASE, seeds=[0, 1, 2])
    theta = pop._init_thetas(cfgs, prob)
    res = curvature.batched_lanczos(prob.hessian_objective, theta, k=3, max_iter=120, tol=1e-8, hvp_method=hvp_method)
    assert bool(res.converged.all())
    for p in range(3):
        op = curvature.HessianOperator(prob.hessian_objective, theta[p])
        one = curvature.lanczos(op, 3, max_iter=120, tol=1e-8)
        dense = torch.linalg.eigvalsh(op.dense()).flip(0)[:3]
        assert torch.allclose(res.values[p], one.values, rtol=1e-7)
        assert torch.allclose(res.values[p], dense, rtol=1e-7)
        assert float(res.residuals[p].max()) < 1e-5 * float(dense[0])
    assert res.n_matvec > 40  # the Krylov basis grew past its first block


def test_chunked_top_eigenpairs_match_one_batch():
    prob = build_problem(BASE)
    theta = pop._init_thetas(pop.population_configs(BASE, seeds=[0, 1, 2]), prob)
    active = torch.tensor([True, False, True])
    one = curvature.batched_top_eigenpairs(prob.hessian_objective, theta, k=2, max_iter=120, tol=1e-8, active=active)
    per_member = (120 + 1) * theta.shape[1] * 8
    chunked = curvature.batched_top_eigenpairs(
        prob.hessian_objective, theta, k=2, max_iter=120, tol=1e-8, active=active, max_bytes=2 * per_member
    )  # chunks of two members
    assert chunked.values.shape == (3, 2) and chunked.vectors.shape == (3, theta.shape[1], 2)
    assert torch.isnan(chunked.values[1]).all() and torch.isnan(one.values[1]).all()
    torch.testing.assert_close(chunked.values[[0, 2]], one.values[[0, 2]], rtol=1e-7, atol=0)


def test_batched_lanczos_restarts_after_breakdown_on_a_low_rank_hessian():
    """A rank-3 Hessian makes the Krylov space invariant after 3 steps: the recursion must restart with a
    fresh orthogonal direction (beta = 0) to find the 4th eigenvalue, 0, instead of stalling or repeating."""
    d = torch.tensor([5.0, 3.0, 1.0] + [0.0] * 7, dtype=torch.float64)

    def objective(theta):
        return 0.5 * (d * theta**2).sum()

    Theta = torch.randn(3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for hvp_method in ("reverse", "forward"):
        res = curvature.batched_lanczos(
            objective, Theta, k=4, max_iter=10, tol=1e-10, check_every=1, hvp_method=hvp_method
        )
        torch.testing.assert_close(res.values, d[:4].expand(3, 4), rtol=1e-10, atol=1e-10)
        assert float(res.residuals.max()) < 1e-10
        gram = torch.einsum("pdk,pdl->pkl", res.vectors, res.vectors)  # four orthonormal eigenvectors per member
        torch.testing.assert_close(gram, torch.eye(4, dtype=torch.float64).expand(3, 4, 4), rtol=0, atol=1e-8)


def test_batched_lanczos_warm_start_and_inactive_member():
    prob = build_problem(BASE)
    theta = pop._init_thetas(pop.population_configs(BASE, seeds=[0, 1]), prob)
    cold = curvature.batched_lanczos(prob.hessian_objective, theta, k=1, max_iter=120, tol=1e-6, check_every=1)
    warm = curvature.batched_lanczos(
        prob.hessian_objective, theta, k=1, max_iter=120, tol=1e-6, check_every=1, V0=cold.vectors
    )
    assert warm.n_matvec < cold.n_matvec
    assert torch.allclose(warm.values, cold.values, rtol=1e-6)
    theta_bad = theta.clone()
    theta_bad[1] = float("nan")
    res = curvature.batched_lanczos(prob.hessian_objective, theta_bad, k=1, max_iter=60, tol=1e-6)
    assert torch.isnan(res.values[1]).all() and torch.allclose(res.values[0], cold.values[0], rtol=1e-6)
