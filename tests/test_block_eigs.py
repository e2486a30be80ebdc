"""Block eigensolver vs dense eigvalsh: small nets, clustered spectra, warm starts, relative tolerance."""

import pytest
import torch

from instabilities import curvature
from instabilities.config import ConfigError
from instabilities.curvature import block as be

from _problems import quadratic_with_spectrum


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
    objective, A = quadratic_with_spectrum(spectrum)
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
            objective, A = quadratic_with_spectrum(spectrum.tolist(), seed=n)
            res = be.block_eigs(
                curvature.HessianOperator(objective, torch.zeros(n, dtype=torch.float64)), k=1, tol=1e-4, max_iter=300
            )
            assert res.converged
            assert float(res.residuals[0]) <= 1e-4 * abs(float(res.values[0])) * 1.0001
            assert abs(float(res.values[0]) - scale) <= 1e-4 * scale


def test_invariant_subspace_is_exact():
    objective, A = quadratic_with_spectrum([3.0, 2.0, 1.0, 0.5])
    res = be.block_eigs(
        curvature.HessianOperator(objective, torch.zeros(4, dtype=torch.float64)), k=2, block_size=4, tol=1e-12
    )
    assert torch.allclose(res.values, torch.tensor([3.0, 2.0], dtype=torch.float64), rtol=1e-10)


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
    plain = be.block_eigs(
        curvature.HessianOperator(objective, theta, "reverse"), k=2, block_size=3, tol=1e-8, max_iter=200, seed=5
    )
    torch.testing.assert_close(fused.values, plain.values, rtol=1e-9, atol=1e-12)
    assert fused.n_matvec == plain.n_matvec  # the fused products are counted once
    torch.testing.assert_close(grad, torch.func.grad(objective)(theta))
    with pytest.raises(ConfigError, match="HX0"):
        be.block_eigs(op, k=1, block_size=3, HX0=HX)
