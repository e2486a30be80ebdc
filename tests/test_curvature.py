import math

import pytest
import torch

from instabilities import curvature, losses, models, train
from instabilities.config import ConfigError


def small_problem(seed=0, n=64, widths=(12, 12)):
    torch.manual_seed(seed)
    x = torch.randn(n, 6, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (n,)), 3).double()
    m = models.build_model(models.ModelSpec(widths=widths), (6,), 3, seed=seed).double()
    fm = models.FlatModel(m)
    return losses.make_objective(fm, x, y, "mse"), fm.theta0


@pytest.mark.parametrize("method", ["forward", "reverse"])
def test_hvp_matches_dense(method):
    obj, theta = small_problem()
    op = curvature.HessianOperator(obj, theta, method)
    H = op.dense()
    torch.testing.assert_close(H, H.T, atol=1e-10, rtol=0)
    V = torch.randn(theta.numel(), 3, dtype=torch.float64)
    torch.testing.assert_close(op.matvec(V[:, 0]), H @ V[:, 0], atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(op.matmat(V), H @ V, atol=1e-9, rtol=1e-7)
    assert op.n_matvec == 4
    torch.testing.assert_close(curvature.hvp(obj, theta, V[:, 1]), H @ V[:, 1], atol=1e-9, rtol=1e-7)


def test_lanczos_matches_dense_top_k():
    obj, theta = small_problem(1)
    dense = torch.linalg.eigvalsh(curvature.dense_hessian(obj, theta)).flip(0)
    res = curvature.top_eigenpairs(obj, theta, k=4, tol=1e-8, max_iter=300)
    torch.testing.assert_close(res.values, dense[:4], rtol=1e-7, atol=1e-9)
    assert res.converged and float(res.relative_residuals.max()) < 1e-5
    # eigenvectors are orthonormal
    G = res.vectors.T @ res.vectors
    torch.testing.assert_close(G, torch.eye(4, dtype=G.dtype), atol=1e-6, rtol=0)


class MatrixOperator(curvature.HessianOperator):
    """A HessianOperator for an explicit symmetric matrix (to build hard spectra)."""

    def __init__(self, A):
        super().__init__(lambda t: 0.5 * t @ A @ t, torch.zeros(A.shape[0], dtype=A.dtype))
        self.A = A

    def matvec(self, v):
        self.n_matvec += 1
        return self.A @ v.to(self.A.dtype)

    def matmat(self, V):
        self.n_matvec += V.shape[1]
        return self.A @ V.to(self.A.dtype)


def clustered_matrix(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    vals = torch.cat(
        [
            torch.tensor([5.25, 5.22, 5.19, 5.10], dtype=torch.float64),
            torch.rand(n - 4, generator=g, dtype=torch.float64) * 3.0 - 0.2,
        ]
    )
    return (Q * vals) @ Q.T, vals.sort(descending=True).values


def test_clustered_top_eigenvalues_lanczos_vs_power():
    A, vals = clustered_matrix()
    lz = curvature.lanczos(MatrixOperator(A), k=3, tol=1e-8, max_iter=200)
    torch.testing.assert_close(lz.values, vals[:3], rtol=1e-8, atol=0)
    assert float(lz.residuals.max()) < 1e-6
    # power iteration with a loose relative-change stop under-reports the cluster ...
    pw = curvature.power_iteration(MatrixOperator(A), k=3, tol=1e-3, max_iter=100)
    assert float(pw.values[0]) <= float(vals[0]) + 1e-9
    assert float((vals[:3] - pw.values).abs().max()) > 1e-3
    # ... and its residuals reveal it
    assert float(pw.residuals.max()) > 100 * float(lz.residuals.max())


def test_tiny_krylov_space_is_wrong_but_flagged():
    A, vals = clustered_matrix(seed=2)
    res = curvature.lanczos(MatrixOperator(A), k=2, max_iter=4, tol=1e-8, min_iter=4)
    assert not res.converged
    assert float(res.residuals.max()) > 1e-2


def test_warm_start_saves_matvecs():
    A, vals = clustered_matrix(seed=3)
    cold = curvature.lanczos(MatrixOperator(A), k=2, tol=1e-6, max_iter=300)
    E = torch.randn(A.shape[0], A.shape[0], dtype=torch.float64) * 1e-4
    A2 = A + (E + E.T) / 2  # a slightly moved Hessian, as after one GD step
    warm = curvature.lanczos(MatrixOperator(A2), k=2, tol=1e-6, max_iter=300, v0=cold.vectors)
    cold2 = curvature.lanczos(MatrixOperator(A2), k=2, tol=1e-6, max_iter=300, seed=5)
    assert warm.converged and cold2.converged
    torch.testing.assert_close(warm.values, cold2.values, rtol=1e-5, atol=0)
    assert warm.n_matvec < cold2.n_matvec


def test_network_at_edge_of_stability_matches_dense():
    cfg = train.TrainConfig(
        dataset="digits",
        n_train=200,
        n_test=50,
        model=models.ModelSpec(widths=(16, 16)),
        lr=0.5,
        steps=300,
        dtype="float64",
    )
    prob = train.build_problem(cfg)
    hist = train.train(cfg, problem=prob, keep_theta=True)
    theta = torch.as_tensor(hist.theta_final)
    dense = torch.linalg.eigvalsh(curvature.dense_hessian(prob.objective, theta)).flip(0)
    res = curvature.top_eigenpairs(prob.objective, theta, k=3, tol=1e-9, max_iter=400)
    torch.testing.assert_close(res.values, dense[:3], rtol=1e-6, atol=1e-9)
    assert float(dense[0]) > 0.8 * 2 / cfg.lr  # the run did reach the edge of stability


def test_similarity_and_angle():
    U = torch.linalg.qr(torch.randn(50, 3, dtype=torch.float64))[0]
    R = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    assert curvature.subspace_similarity(U, U @ R) == pytest.approx(1.0, abs=1e-7)  # rotation inside
    assert curvature.subspace_similarity(U, -U) == pytest.approx(1.0, abs=1e-7)
    W = torch.linalg.qr(torch.cat([U, torch.randn(50, 3, dtype=torch.float64)], 1))[0][:, 3:]
    assert curvature.subspace_similarity(U, W) == pytest.approx(0.0, abs=1e-7)
    e1, e2 = torch.eye(2, dtype=torch.float64)
    assert curvature.vector_angle(e1, -e1) == pytest.approx(0.0, abs=1e-6)
    assert curvature.vector_angle(e1, e1 + e2) == pytest.approx(45.0)
    with pytest.raises(ConfigError):
        curvature.subspace_similarity(U, U[:, :2])


def test_errors():
    obj, theta = small_problem()
    with pytest.raises(ConfigError):
        curvature.HessianOperator(obj, theta, "magic")
    with pytest.raises(ConfigError):
        curvature.top_eigenpairs(obj, theta, method="arnoldi")
    with pytest.raises(ConfigError):
        curvature.lanczos(curvature.HessianOperator(obj, theta), k=0)


@pytest.mark.parametrize("method", ["forward", "reverse"])
def test_grad_and_hvps_match_separate_gradient_and_products(method):
    obj, theta = small_problem(3)
    V = torch.randn(theta.numel(), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    H = curvature.dense_hessian(obj, theta)
    op = curvature.HessianOperator(obj, theta, method)
    loss, g, HV = op.grad_and_matmat(V)
    torch.testing.assert_close(loss, obj(theta), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(g, torch.func.grad(obj)(theta), atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(HV, H @ V, atol=1e-9, rtol=1e-7)
    assert op.n_matvec == 3 and HV.shape == V.shape
    # the function form (forward-over-reverse) agrees, and the operator still works afterwards
    loss2, g2, HV2 = curvature.grad_and_hvps(obj, theta, V)
    torch.testing.assert_close(HV2, HV, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(g2, g, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(op.matvec(V[:, 0]), H @ V[:, 0], atol=1e-9, rtol=1e-7)


def test_differentiable_hvps_match_the_products_and_differentiate_once_more():
    obj, theta = small_problem(3, n=32, widths=(5,))
    gen = torch.Generator().manual_seed(0)
    U = torch.linalg.qr(torch.randn(theta.numel(), 2, generator=gen, dtype=torch.float64))[0]
    leaf = theta.detach().clone().requires_grad_(True)
    loss, g, HU = curvature.operator.differentiable_hvps(obj, leaf, U)
    H = curvature.dense_hessian(obj, theta)
    assert len(HU) == 2 and g.requires_grad and all(hu.requires_grad for hu in HU)
    torch.testing.assert_close(torch.stack(HU, dim=1).detach(), H @ U, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(g.detach(), torch.func.grad(obj)(theta), atol=1e-12, rtol=1e-10)
    assert float(loss.detach()) == pytest.approx(float(obj(theta)), rel=1e-12)
    # third derivatives: d/dtheta (u_0^T H u_1) along d against central differences of dense Hessians
    with torch.enable_grad():
        (third,) = torch.autograd.grad(HU[1] @ U[:, 0], leaf)
    d = torch.randn(theta.numel(), generator=gen, dtype=torch.float64)
    eps = 1e-4
    Hp, Hm = (curvature.dense_hessian(obj, theta + s * eps * d) for s in (1.0, -1.0))
    fd = (U[:, 0] @ (Hp - Hm) @ U[:, 1]) / (2 * eps)
    assert float(third @ d) == pytest.approx(float(fd), rel=1e-5, abs=1e-9)
    with pytest.raises(ConfigError, match="require grad"):
        curvature.operator.differentiable_hvps(obj, theta.detach(), U)
    with pytest.raises(ConfigError, match="shape"):
        curvature.operator.differentiable_hvps(obj, leaf, U[:-1])


def test_grad_and_hvps_rejects_a_wrongly_shaped_block():
    obj, theta = small_problem(3)
    with pytest.raises(ConfigError, match="shape"):
        curvature.grad_and_hvps(obj, theta, torch.zeros(theta.numel()))


def test_time_hvps_returns_the_documented_keys():
    obj, theta = small_problem(4)
    c = curvature.time_hvps(obj, theta, block=3, repeats=1)
    times = [
        "gradient",
        "hvp_reverse",
        "hvp_forward",
        "hvp_reverse_block_per_vector",
        "hvp_forward_block_per_vector",
        "grad_and_block_reverse",
        "grad_and_block_forward",
    ]
    assert set(c) == set(times) | {f"ratio_{k}" for k in times[1:]} | {"block"}
    assert c["block"] == 3
    for key in times[1:]:
        assert c[key] > 0 and math.isclose(c[f"ratio_{key}"], c[key] / c["gradient"])
    with pytest.raises(ConfigError, match="block"):
        curvature.time_hvps(obj, theta, block=0)


def test_power_iteration_returns_values_in_decreasing_order():
    """EigResult's contract: values in decreasing order. Deflated power iteration finds the eigenvalue of
    largest magnitude first (-5 here), so returning the values in the order found breaks the contract."""
    A = torch.diag(torch.tensor([-5.0, 3.0, 1.0, 0.5, 0.2], dtype=torch.float64))
    pw = curvature.power_iteration(MatrixOperator(A), k=2, tol=1e-12, max_iter=500)
    torch.testing.assert_close(pw.values, torch.tensor([3.0, -5.0], dtype=torch.float64), rtol=1e-6, atol=1e-6)
    assert bool((pw.values[:-1] >= pw.values[1:]).all()), f"not decreasing: {pw.values.tolist()}"
    # vectors and residuals follow their values
    torch.testing.assert_close(pw.vectors[:, 0].abs(), torch.eye(5, dtype=torch.float64)[:, 1], atol=1e-5, rtol=0)
    assert float(pw.residuals.max()) < 1e-4


def test_one_lanczos_family_single_and_batched_agree():
    """lanczos and batched_lanczos share the warm start, tridiagonal matrix and stopping rule: on one member
    they stop after the same number of steps with the same values."""
    obj, theta = small_problem(2)
    one = curvature.lanczos(curvature.HessianOperator(obj, theta), 2, max_iter=200, tol=1e-6, check_every=5)
    batched = curvature.batched_lanczos(obj, theta[None], 2, max_iter=200, tol=1e-6, check_every=5)
    torch.testing.assert_close(batched.values[0], one.values, rtol=1e-6, atol=0)
    assert batched.n_matvec == one.n_matvec
