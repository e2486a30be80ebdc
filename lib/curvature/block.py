"""A block eigensolver for the top of the Hessian spectrum, built for tracking sharpness every step.

:func:`block_eigs` is a block Krylov method with Rayleigh-Ritz and thick restarts (block Lanczos
with explicit re-orthogonalisation, expanded by the residual block): every iteration applies the
Hessian to a block of ``b`` vectors at once (``HessianOperator.matmat``: one vmapped batch of
Hessian-vector products), so a GPU does ``b`` products for about the price of one launch.

Three choices make it suitable for per-step tracking at the edge of stability:

* **warm starts** from the previous step's Ritz vectors (all ``b`` of them, so a cluster of
  eigenvalues near ``2/eta`` is followed as a subspace);
* **guard vectors** (``b > k``): a cluster is resolved without the wanted Ritz values swapping;
* a stopping rule **relative to each eigenvalue**: ``||H y_i - theta_i y_i|| <= tol * |theta_i|``,
  independent of the parameter count (LOBPCG implementations that scale the tolerance with the
  dimension stop after one iteration at fp32 when ``tol`` looks "natural"). The residual bounds
  the eigenvalue error: some eigenvalue of ``H`` lies within ``||r_i||`` of ``theta_i``.

The tracker built on it (``SharpnessTracker(solver="block")``: warm-start state, fused gradient,
amortised one-iteration-per-step mode, accuracy audit) is :mod:`instabilities.curvature.tracker`; its
cost and the solver comparison are measured in :mod:`instabilities.curvature.compare`.
"""

from __future__ import annotations

import dataclasses

import torch

from ..config import ConfigError
from .eigen import EigResult
from .operator import HessianOperator


@dataclasses.dataclass
class BlockEigResult(EigResult):
    """:class:`~instabilities.curvature.EigResult` plus the whole Ritz block (for warm starts).

    ``block`` holds all ``block_size`` Ritz vectors, ``block_values`` their Ritz values and
    ``block_products`` their products ``H y`` (float64, exact: no extra products are needed to get
    their residuals), ``iterations`` the block iterations spent.
    """

    block: torch.Tensor | None = None
    iterations: int = 0
    block_values: torch.Tensor | None = None
    block_products: torch.Tensor | None = None


def _orthonormalise_against(W: torch.Tensor, V: torch.Tensor | None, drop_tol: float = 1e-8) -> torch.Tensor:
    """Columns of ``W`` made orthogonal to ``V`` (twice) and orthonormal; dependent columns dropped."""
    for _ in range(2):
        if V is not None and V.shape[1]:
            W = W - V @ (V.T @ W)
    norms = W.norm(dim=0)
    keep = norms > drop_tol * norms.max().clamp_min(1e-300)
    W = W[:, keep] / norms[keep]
    if W.shape[1] == 0:
        return W
    # orthonormalise the block itself via the eigen-decomposition of its Gram matrix (SVQB)
    G = W.T @ W
    d, U = torch.linalg.eigh(G)
    good = d > drop_tol * d.max()
    W = W @ (U[:, good] / d[good].sqrt())
    if V is not None and V.shape[1]:
        W = W - V @ (V.T @ W)
        W = W / W.norm(dim=0)
    return W


def start_block(
    n: int, b: int, X0: torch.Tensor | None = None, seed: int = 0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """An orthonormal float64 ``(n, b)`` start block: ``X0``'s columns (slightly perturbed) then random ones.

    The perturbation (``1e-4`` relative) keeps a warm start from being an exactly invariant subspace
    of a nearby Hessian; the random columns are guard vectors when ``X0`` has fewer than ``b``.
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    X = torch.randn(n, b, dtype=torch.float64, device=device, generator=gen)
    if X0 is not None:
        X0 = torch.nan_to_num(X0.to(device=device, dtype=torch.float64).reshape(n, -1))
        j = min(X0.shape[1], b)
        X[:, :j] = X0[:, :j] + 1e-4 * X[:, :j] / X[:, :j].norm(dim=0) * X0[:, :j].norm(dim=0).clamp_min(1e-300)
    return _orthonormalise_against(X, None)


def rayleigh_ritz(V: torch.Tensor, HV: torch.Tensor, keep: int) -> tuple[torch.Tensor, ...]:
    """Top-``keep`` Ritz triples of ``H`` on the span of the orthonormal ``V`` (``HV = H V`` given).

    Returns ``(theta, Y, HY, R)``: Ritz values in decreasing order, Ritz vectors ``Y = V S``, their
    products ``HY = HV S`` (no new products needed) and residuals ``R = HY - Y diag(theta)``.
    """
    T = V.T @ HV
    evals, S = torch.linalg.eigh(0.5 * (T + T.T))
    order = torch.argsort(evals, descending=True)[: min(keep, V.shape[1])]
    theta, S = evals[order], S[:, order]
    Y, HY = V @ S, HV @ S
    return theta, Y, HY, HY - Y * theta


def block_eigs(
    op: HessianOperator,
    k: int = 1,
    block_size: int | None = None,
    tol: float = 1e-3,
    max_iter: int = 50,
    X0: torch.Tensor | None = None,
    max_basis: int | None = None,
    seed: int = 0,
    HX0: torch.Tensor | None = None,
) -> BlockEigResult:
    """Top-``k`` (largest algebraic) eigenpairs of ``op`` by block Krylov iteration with Rayleigh-Ritz.

    ``block_size`` (default ``k + 2``) vectors are multiplied by ``H`` per iteration in one
    ``matmat``. The search space grows by the residual block of the current Ritz vectors and is
    restarted from the best ``2 * block_size`` Ritz vectors when it exceeds ``max_basis`` (default
    ``max(8 * block_size, 24)``). Stops when every wanted pair has
    ``||H y_i - theta_i y_i|| <= tol * |theta_i|`` (relative to the eigenvalue, not scaled by the
    dimension) or after ``max_iter`` iterations. ``X0`` (``(dim, j)``) warm-starts the block.
    If ``HX0 = H X0`` is given as well (from :meth:`HessianOperator.grad_and_matmat`, fused with a
    training step's gradient), ``X0`` must be an orthonormal ``(dim, block_size)`` block (see
    :func:`start_block`); it is used as is, and its products count in ``n_matvec`` only if they
    were made by ``op`` (``op.grad_and_matmat`` counts them).
    The basis is kept in float64; residuals are exact (computed from the stored ``H V``).
    """
    if k < 1:
        raise ConfigError(f"k={k} must be >= 1.")
    if not (tol > 0):
        raise ConfigError(f"tol={tol!r} must be > 0 (a relative residual such as 1e-3).")
    n, dev = op.dim, op.device
    b = min(block_size or k + 2, n)
    if b < k:
        raise ConfigError(f"block_size={b} must be at least k={k}.")
    max_basis = min(n, max(max_basis or 8 * b, 24, 2 * b + b))
    f64 = torch.float64
    if HX0 is None:
        V = start_block(n, b, X0, seed, dev)
        HV = op.matmat(V.to(op.dtype)).to(f64)
    else:
        if X0 is None or X0.shape != HX0.shape or X0.shape[0] != n:
            raise ConfigError("HX0 needs X0 of the same (dim, block_size) shape; build X0 with start_block().")
        V, HV = X0.to(f64), HX0.to(f64)
    converged = False
    it = 0
    theta = Y = HY = None
    for it in range(1, max_iter + 1):
        theta, Y, HY, R = rayleigh_ritz(V, HV, max(b, k))
        res = R.norm(dim=0)
        scale = theta[:k].abs().clamp_min(1e-12 * float(theta.abs().max().clamp_min(1e-300)))
        if bool((res[:k] <= tol * scale).all()) and V.shape[1] >= k:
            converged = True
            break
        if it == max_iter:
            break
        if V.shape[1] + b > max_basis:  # thick restart from the best Ritz vectors
            _, V, HV, _ = rayleigh_ritz(V, HV, 2 * b)
        W = _orthonormalise_against(R[:, :b], V)
        if W.shape[1] == 0:  # the search space is invariant: the Ritz pairs are exact
            converged = True
            break
        HW = op.matmat(W.to(op.dtype)).to(f64)
        V, HV = torch.cat([V, W], 1), torch.cat([HV, HW], 1)
    values, vectors = theta[:k], Y[:, :k]
    residuals = (HY[:, :k] - vectors * values).norm(dim=0)
    return BlockEigResult(
        values.to(op.dtype),
        vectors.to(op.dtype),
        residuals.to(op.dtype),
        op.n_matvec,
        converged,
        block=Y.to(op.dtype),
        iterations=it,
        block_values=theta,
        block_products=HY,
    )


def next_amortised_block(
    Y: torch.Tensor, R: torch.Tensor | None, P: torch.Tensor | None, HY: torch.Tensor, k: int, b: int
) -> torch.Tensor:
    """The block to multiply at the next step of amortised tracking (orthonormal, float64, ``b`` columns).

    With ``b < 3k``: ``orth(H Y)``, one step of subspace iteration on all ``b`` Ritz vectors (the
    block covers a cluster of eigenvalues that swap order from step to step). With ``b >= 3k``, in
    this order: the ``k`` wanted Ritz vectors ``Y``, their residuals ``R`` (the block Krylov
    expansion), the directions ``P`` in which they moved since the last call (as in LOBPCG), then
    further Ritz vectors as guards; ``R`` or ``P`` may be ``None`` (skipped). Columns that are
    numerically dependent on earlier ones are replaced by random directions.
    """
    if b < 3 * k:
        cand = HY[:, :b]
    else:
        cand = torch.cat([Y[:, :k]] + [M[:, :k] for M in (R, P) if M is not None] + [Y[:, k:]], 1)
    Q, Rq = torch.linalg.qr(cand)
    good = Rq.diagonal().abs() > 1e-10 * Rq.diagonal().abs().max().clamp_min(1e-300)
    Q = Q[:, good][:, :b]
    if Q.shape[1] < b:
        extra = torch.randn(
            Q.shape[0],
            b - Q.shape[1],
            dtype=Q.dtype,
            device=Q.device,
            generator=torch.Generator(device=Q.device).manual_seed(Q.shape[1]),
        )
        Q = torch.cat([Q, _orthonormalise_against(extra, Q)], 1)
    return Q
