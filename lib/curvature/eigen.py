"""Hessian-vector products and top eigenpairs of the loss Hessian, with residuals.

Near the edge of stability several Hessian eigenvalues cluster at 2/eta. Power
iteration that stops on a small relative change then under-reports the top
eigenvalue, and Lanczos with too few Krylov steps is simply wrong. The solvers
here therefore

* run Lanczos with *full* re-orthogonalisation until every wanted Ritz pair has a
  small residual, and report the explicit residual norms ``||H v - lambda v||``;
* accept a warm start (previous eigenvectors) to save matrix-vector products;
* work on any device, with batched HVPs through ``torch.func.vmap``;
* run on one iterate (:func:`lanczos`) or on every member of a population at once
  (:func:`batched_lanczos`, one Krylov basis per member), with the same stopping rule.

The products come from :mod:`instabilities.curvature.operator`. Why one family: the single and the
batched solver must agree on a member (the population chapters compare them with separate runs), so
they share the warm-start blend, the tridiagonal builder and the stopping rule (``_warm_start``,
``_tridiag``, ``_ritz_converged``) rather than keeping two copies that drift apart.

All are tested against the dense spectrum from ``torch.linalg.eigvalsh`` on small nets.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..config import ConfigError
from .operator import HessianOperator, Objective, population_hvp, population_hvp_block, population_hvp_reverse


@dataclasses.dataclass
class EigResult:
    """Eigenpairs found by an iterative solver.

    ``values`` are sorted in decreasing order, ``vectors`` has one unit column per value,
    ``residuals[i] = ||H v_i - values[i] v_i||``, ``n_matvec`` counts Hessian-vector products.
    """

    values: torch.Tensor
    vectors: torch.Tensor
    residuals: torch.Tensor
    n_matvec: int
    converged: bool

    @property
    def relative_residuals(self) -> torch.Tensor:
        return self.residuals / self.values.abs().clamp_min(1e-12)


def _as_operator(op, theta: torch.Tensor | None = None) -> HessianOperator:
    if isinstance(op, HessianOperator):
        return op
    raise ConfigError("pass a HessianOperator (curvature.HessianOperator(objective, theta)).")


def _warm_start(noise: torch.Tensor, v0: torch.Tensor | None) -> torch.Tensor:
    """The Lanczos start vector(s) of both solvers: rows of float64 ``noise`` (``(..., dim)``, not yet
    normalised) blended with the previous eigenvectors ``v0``.

    ``v0`` is ``(..., dim)`` (one vector per row) or ``(..., dim, j)`` (several previous eigenvectors,
    combined with the distinct weights ``linspace(1.0, 0.5, j)`` so that no eigenvector starts
    orthogonal to the start). The start is ``v0 / |v0| + 1e-3 * noise / |noise|``, normalised: the small
    noise keeps a warm start from being an exactly invariant subspace of the moved Hessian. Rows whose
    ``v0`` is zero or not finite start from the noise alone.
    """
    norm = noise.norm(dim=-1, keepdim=True)
    if v0 is None:
        return noise / norm
    v0 = v0.to(device=noise.device, dtype=torch.float64)
    if v0.dim() == noise.dim() + 1:  # several previous eigenvectors: combine them with distinct weights
        weights = torch.linspace(1.0, 0.5, v0.shape[-1], dtype=torch.float64, device=noise.device)
        v0 = v0 @ weights
    v0 = torch.nan_to_num(v0)
    v0_norm = v0.norm(dim=-1, keepdim=True)
    start = v0 / v0_norm.clamp_min(1e-300) + 1e-3 * noise / norm
    return torch.where(v0_norm > 0, start / start.norm(dim=-1, keepdim=True), noise / norm)


def _tridiag(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The Lanczos tridiagonal matrix(ces) from ``alpha`` (``(..., m)``) and ``beta`` (``(..., m - 1)``)."""
    T = torch.diag_embed(alpha)
    if beta.shape[-1]:
        T = T + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    return T


def _ritz_converged(b: torch.Tensor, evals: torch.Tensor, evecs: torch.Tensor, k: int, tol: float) -> torch.Tensor:
    """The stopping rule of both Lanczos solvers: every wanted Ritz pair has the residual estimate
    ``|beta_m s_{m,i}| <= tol * max(|lambda_1|, 1e-12)`` (``evals``/``evecs`` of the tridiagonal matrix,
    ``b = beta_m``; leading dimensions are members). Returns a bool tensor (one per member)."""
    top = evals.flip(-1)[..., :k]
    est = (b[..., None] * evecs[..., -1, :].flip(-1)[..., :k]).abs()
    scale = top.abs().amax(-1).clamp_min(1e-12)
    return (est <= tol * scale[..., None]).all(-1) & (top.shape[-1] >= k)


def lanczos(
    op: HessianOperator,
    k: int = 1,
    max_iter: int = 200,
    tol: float = 1e-4,
    v0: torch.Tensor | None = None,
    seed: int = 0,
    check_every: int = 5,
    min_iter: int | None = None,
) -> EigResult:
    """Top-``k`` (largest algebraic) eigenpairs by Lanczos with full re-orthogonalisation.

    Stops when the Ritz residual estimate ``|beta_m s_{m,i}|`` of each wanted pair is below
    ``tol * max(|lambda_1|, 1e-12)``, or after ``max_iter`` steps (the rule shared with
    :func:`batched_lanczos`). The Krylov basis is kept in float64. Residuals are then computed
    explicitly with one batched product (``k`` more products, counted in ``n_matvec``).

    Args:
        op: the Hessian as a :class:`~instabilities.curvature.HessianOperator` (or a subclass, e.g.
            the preconditioned operator); its ``n_matvec`` counter is what the result reports.
        k: number of top eigenpairs wanted (``>= 1``).
        max_iter: most Krylov steps (capped at the dimension).
        tol: relative tolerance of the stopping rule; ``0`` runs exactly ``max_iter`` steps.
        v0: warm start: a vector ``(dim,)`` or a block ``(dim, j)`` of previous eigenvectors, blended
            with weights ``linspace(1, 0.5, j)`` plus ``1e-3`` noise; ``None``: a random start.
        seed: seed of the random start (and of the noise added to a warm start).
        check_every: the stopping rule is evaluated every that many steps (an eigendecomposition of
            the tridiagonal matrix each time).
        min_iter: no stop before that many steps (default ``2k + 2``).

    Returns:
        :class:`EigResult` with values in decreasing order, unit vectors, explicit residuals,
        ``n_matvec`` and ``converged``.
    """
    if k < 1:
        raise ConfigError(f"k={k} must be >= 1.")
    op = _as_operator(op)
    n, device = op.dim, op.device
    max_iter = min(max_iter, n)
    min_iter = min(n, max(min_iter if min_iter is not None else 2 * k + 2, k))
    gen = torch.Generator(device=device).manual_seed(seed)
    Q = torch.zeros(max_iter + 1, n, dtype=torch.float64, device=device)
    alphas, betas = [], []
    q = _warm_start(torch.randn(n, dtype=torch.float64, device=device, generator=gen), v0)
    Q[0] = q
    converged = False
    m = 0
    for j in range(max_iter):
        w = op.matvec(Q[j].to(op.dtype)).to(torch.float64)
        a = torch.dot(w, Q[j])
        w = w - a * Q[j] - (betas[-1] * Q[j - 1] if j > 0 else 0.0)
        # full re-orthogonalisation, twice ("twice is enough")
        for _ in range(2):
            w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        b = w.norm()
        alphas.append(a)
        m = j + 1
        if m >= min_iter and (m % check_every == 0 or m == max_iter or b < 1e-10):
            evals, evecs = torch.linalg.eigh(_tridiag(torch.stack(alphas), _stack(betas, device)))
            if bool(_ritz_converged(b, evals, evecs, k, tol)):
                converged = True
                break
        if b < 1e-10:  # invariant subspace found: the Ritz values are exact
            converged = True
            break
        betas.append(b)
        Q[j + 1] = w / b
    evals, evecs = torch.linalg.eigh(_tridiag(torch.stack(alphas), _stack(betas[: m - 1], device)))
    order = torch.argsort(evals, descending=True)[:k]
    values = evals[order]
    vectors = Q[:m].T @ evecs[:, order]
    vectors = vectors / vectors.norm(dim=0, keepdim=True)
    vec = vectors.to(op.dtype)
    HV = op.matmat(vec).to(torch.float64)
    residuals = (HV - vectors * values).norm(dim=0)
    return EigResult(values.to(op.dtype), vec, residuals.to(op.dtype), op.n_matvec, converged)


def _stack(values: list, device) -> torch.Tensor:
    return torch.stack(values) if values else torch.zeros(0, dtype=torch.float64, device=device)


def power_iteration(
    op: HessianOperator,
    k: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    v0: torch.Tensor | None = None,
    seed: int = 0,
) -> EigResult:
    """Deflated power iteration, stopping on a relative change of the Rayleigh quotient below ``tol``.

    This is the scheme of popular Hessian libraries; it is here to *show* how it
    under-reports clustered top eigenvalues (compare its residuals with Lanczos').
    Like every power method it finds the eigenvalues of largest *magnitude*; they are returned in
    decreasing order (as every :class:`EigResult`), not in the order deflation found them.
    """
    op = _as_operator(op)
    gen = torch.Generator(device=op.device).manual_seed(seed)
    found_vals: list[torch.Tensor] = []
    found_vecs: list[torch.Tensor] = []
    converged = True
    for i in range(k):
        start = (
            v0[:, i]
            if (v0 is not None and v0.dim() == 2 and i < v0.shape[1])
            else (v0 if (v0 is not None and v0.dim() == 1 and i == 0) else None)
        )
        v = _warm_start(torch.randn(op.dim, dtype=torch.float64, device=op.device, generator=gen), start).to(op.dtype)
        lam = None
        ok = False
        for _ in range(max_iter):
            for u in found_vecs:  # deflate previously found directions
                v = v - torch.dot(u, v) * u
            v = v / v.norm()
            Hv = op.matvec(v)
            new = torch.dot(v, Hv)
            v = Hv / Hv.norm()
            if lam is not None and abs(float(new - lam)) <= tol * abs(float(lam)) + 1e-12:
                lam, ok = new, True
                break
            lam = new
        converged &= ok
        found_vals.append(lam)
        found_vecs.append(v)
    values = torch.stack(found_vals)
    vectors = torch.stack(found_vecs, dim=1)
    residuals = (op.matmat(vectors) - vectors * values).norm(dim=0)
    order = torch.argsort(values, descending=True)  # the EigResult contract: decreasing values
    return EigResult(values[order], vectors[:, order], residuals[order], op.n_matvec, converged)


def top_eigenpairs(
    objective: Objective,
    theta: torch.Tensor,
    k: int = 1,
    method: str = "lanczos",
    hvp_method: str = "reverse",
    **kwargs,
) -> EigResult:
    """Top-``k`` Hessian eigenpairs of ``objective`` at ``theta`` (``method``: lanczos | power | dense)."""
    op = HessianOperator(objective, theta, hvp_method)
    if method == "lanczos":
        return lanczos(op, k, **kwargs)
    if method == "power":
        return power_iteration(op, k, **kwargs)
    if method == "dense":
        H = op.dense().to(torch.float64)
        vals, vecs = torch.linalg.eigh(H)
        vals, vecs = vals.flip(0)[:k], vecs.flip(1)[:, :k]
        res = (H @ vecs - vecs * vals).norm(dim=0)
        return EigResult(vals.to(theta.dtype), vecs.to(theta.dtype), res.to(theta.dtype), 0, True)
    raise ConfigError(f"method={method!r}; choose 'lanczos', 'power' or 'dense'.")


def sharpness(objective: Objective, theta: torch.Tensor, **kwargs) -> float:
    """Largest Hessian eigenvalue :math:`S(\\theta)=\\lambda_{\\max}` (Lanczos, converged)."""
    return float(top_eigenpairs(objective, theta, k=1, **kwargs).values[0])


def subspace_similarity(A: torch.Tensor, B: torch.Tensor) -> float:
    """Similarity in [0, 1] of the column spaces of ``A`` and ``B`` (each ``dim x k``).

    With principal angles ``phi_i`` between the spans, returns ``cos(||phi||_2 / sqrt(k))``:
    1 for identical subspaces, 0 when orthogonal; insensitive to eigenvector signs and to
    rotations inside the subspace.
    """
    if A.shape != B.shape:
        raise ConfigError(f"compare subspaces of one shape, got {tuple(A.shape)} and {tuple(B.shape)}.")
    qa, _ = torch.linalg.qr(A.to(torch.float64))
    qb, _ = torch.linalg.qr(B.to(torch.float64))
    s = torch.linalg.svdvals(qa.T @ qb).clamp(-1.0, 1.0)
    angles = torch.arccos(s)
    return float(torch.cos(angles.norm() / math.sqrt(A.shape[1])))


def vector_angle(u: torch.Tensor, v: torch.Tensor) -> float:
    """Angle in degrees between the lines spanned by ``u`` and ``v`` (sign-invariant, in [0, 90])."""
    c = abs(float(torch.dot(u.double(), v.double()) / (u.double().norm() * v.double().norm())))
    return math.degrees(math.acos(min(1.0, c)))


# --------------------------------------------------------------------------------------------
# populations: batched Lanczos, one Krylov basis per member
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class BatchedEigResult:
    """Top-``k`` eigenpairs of every member: ``values (P, k)``, ``vectors (P, dim, k)``, ``residuals (P, k)``.

    Rows of inactive members are NaN. ``n_matvec`` counts products per member.
    """

    values: torch.Tensor
    vectors: torch.Tensor
    residuals: torch.Tensor
    n_matvec: int
    converged: torch.Tensor


_KRYLOV_BLOCK = 32


def _orthogonalise(w: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """Remove from each row ``w[p]`` its components along the rows of ``Q[p]`` (twice)."""
    for _ in range(2):
        w = w - torch.einsum("pm,pmd->pd", torch.einsum("pmd,pd->pm", Q, w), Q)
    return w


def batched_lanczos(
    objective: Objective,
    Theta: torch.Tensor,
    k: int = 1,
    max_iter: int = 100,
    tol: float = 1e-4,
    V0: torch.Tensor | None = None,
    active: torch.Tensor | None = None,
    seed: int = 0,
    check_every: int = 5,
    min_iter: int | None = None,
    hvp_method: str = "reverse",
) -> BatchedEigResult:
    """Top-``k`` Hessian eigenpairs of ``objective`` at every row of ``Theta`` at once.

    One Lanczos recursion with full re-orthogonalisation per member; the Krylov bases live on the
    device in float64 as a ``(P, m, dim)`` tensor and every step costs one vmapped Hessian-vector
    product for the whole population. The warm start, the tridiagonal matrix and the stopping rule
    are those of :func:`lanczos` (Ritz residual estimate ``<= tol * |lambda_1|`` for every wanted pair),
    applied to every active member; the rule is checked every ``check_every`` steps, which is the only
    host synchronisation. A member whose Krylov space becomes invariant restarts with a fresh
    orthogonal direction (``beta = 0``).

    Args:
        objective: ``theta (dim,) -> loss``, the same function for every member.
        Theta: ``(P, dim)`` parameters, one member per row.
        k: number of top eigenpairs wanted per member (``>= 1``).
        max_iter: most Krylov steps (capped at ``dim``); the basis grows in blocks of 32 vectors.
        tol: relative tolerance of the stopping rule; ``0`` runs ``max_iter`` steps.
        V0: warm start, ``(P, dim)`` or ``(P, dim, j)`` previous eigenvectors per member (zero or NaN rows
            start at random), blended as in :func:`lanczos`.
        active: ``(P,)`` bool; members with ``False`` (e.g. diverged) or non-finite rows are skipped and
            get NaN values and residuals.
        seed: seed of the random starts and restart directions.
        check_every: steps between evaluations of the stopping rule.
        min_iter: no stop before that many steps (default ``2k + 2``).
        hvp_method: ``"reverse"`` (double backward through a gradient graph built once per call,
            :func:`population_hvp_reverse`) or ``"forward"`` (vmapped ``jvp`` of ``grad``).

    Returns:
        :class:`BatchedEigResult`; ``n_matvec`` counts products per member (Krylov steps plus ``k``).
    """
    if k < 1:
        raise ConfigError(f"k={k} must be >= 1.")
    if hvp_method not in ("forward", "reverse"):
        raise ConfigError(f"hvp_method={hvp_method!r}; use 'reverse' (double backward) or 'forward' (jvp of grad).")
    P, n = Theta.shape
    dev, dtype = Theta.device, Theta.dtype
    active = torch.ones(P, dtype=torch.bool, device=dev) if active is None else active.to(dev)
    active = active & torch.isfinite(Theta).all(-1)
    safe_theta = torch.where(active[:, None], Theta, torch.zeros_like(Theta)).detach()
    max_iter = min(max_iter, n)
    min_iter = min(n, max(min_iter if min_iter is not None else 2 * k + 2, k))
    if hvp_method == "reverse":
        hv_rev = population_hvp_reverse(objective, safe_theta)
        hv = lambda _theta, v: hv_rev(v)  # noqa: E731
    else:
        hv = population_hvp(objective)
    gen = torch.Generator(device=dev).manual_seed(seed)
    f64 = torch.float64

    def noise() -> torch.Tensor:
        return _warm_start(torch.randn(P, n, dtype=f64, device=dev, generator=gen), None)

    q = _warm_start(torch.randn(P, n, dtype=f64, device=dev, generator=gen), V0)
    # the Krylov basis grows in blocks of _KRYLOV_BLOCK vectors (warm-started runs rarely need max_iter)
    Q = torch.zeros(P, min(max_iter + 1, _KRYLOV_BLOCK + 1), n, dtype=f64, device=dev)
    alpha = torch.zeros(P, max_iter, dtype=f64, device=dev)
    beta = torch.zeros(P, max_iter, dtype=f64, device=dev)
    Q[:, 0] = q
    m = 0
    converged = torch.zeros(P, dtype=torch.bool, device=dev)
    for j in range(max_iter):
        w = hv(safe_theta, Q[:, j].to(dtype)).to(f64)
        w = torch.nan_to_num(torch.where(active[:, None], w, torch.zeros_like(w)), nan=0.0, posinf=0.0, neginf=0.0)
        a = (w * Q[:, j]).sum(-1)
        w = w - a[:, None] * Q[:, j]
        if j > 0:
            w = w - beta[:, j - 1, None] * Q[:, j - 1]
        w = _orthogonalise(w, Q[:, : j + 1])
        b = w.norm(dim=-1)
        alpha[:, j] = a
        m = j + 1
        # breakdown (invariant subspace): restart with a fresh orthogonal direction and beta = 0
        small = b <= 1e-10 * a.abs().clamp_min(1.0)
        if j + 1 < max_iter:
            if j + 1 >= Q.shape[1]:
                grow = min(_KRYLOV_BLOCK, max_iter + 1 - Q.shape[1])
                Q = torch.cat([Q, torch.zeros(P, grow, n, dtype=f64, device=dev)], 1)
            fresh = noise()  # drawn every step, so the random stream does not depend on the branch below
            # orthogonalising it costs as much as the re-orthogonalisation above; on a CPU, where asking
            # whether any member broke down costs nothing, it is done only then; on a GPU always (no sync)
            if dev.type != "cpu" or bool(small.any()):
                fresh = _orthogonalise(fresh, Q[:, : j + 1])
                fresh = fresh / fresh.norm(dim=-1, keepdim=True).clamp_min(1e-300)
            Q[:, j + 1] = torch.where(small[:, None], fresh, w / b.clamp_min(1e-300)[:, None])
        b = torch.where(small, torch.zeros_like(b), b)
        beta[:, j] = b
        if m >= min_iter and (m % check_every == 0 or m == max_iter):
            vals, vecs = torch.linalg.eigh(_tridiag(alpha[:, :m], beta[:, : m - 1]))
            converged = _ritz_converged(b, vals, vecs, k, tol)
            if bool((converged | ~active).all()):  # the only host synchronisation
                break
    vals, vecs = torch.linalg.eigh(_tridiag(alpha[:, :m], beta[:, : m - 1]))
    order = torch.argsort(vals, dim=-1, descending=True)[:, :k]
    values = torch.gather(vals, 1, order)
    S = torch.gather(vecs, 2, order[:, None, :].expand(P, m, order.shape[1]))
    vectors = torch.einsum("pmd,pmk->pdk", Q[:, :m], S)
    vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-300)
    if hvp_method == "reverse":
        HV = torch.stack([hv_rev(vectors[:, :, j]) for j in range(vectors.shape[2])], -1).to(f64)
    else:
        HV = population_hvp_block(objective)(safe_theta, vectors.to(dtype)).to(f64)
    residuals = (HV - vectors * values[:, None, :]).norm(dim=1)
    nan = torch.full_like(values, float("nan"))
    values = torch.where(active[:, None], values, nan)
    residuals = torch.where(active[:, None], residuals, nan)
    vectors = torch.where(active[:, None, None], vectors, torch.zeros_like(vectors))
    return BatchedEigResult(
        values.to(dtype), vectors.to(dtype), residuals.to(dtype), m + values.shape[1], converged & active
    )


KRYLOV_BYTES = 8 * 2**30  # largest Krylov basis (float64) that one batched Lanczos call may hold


def batched_top_eigenpairs(
    objective: Objective,
    Theta: torch.Tensor,
    k: int = 1,
    max_iter: int = 100,
    tol: float = 1e-4,
    V0: torch.Tensor | None = None,
    active: torch.Tensor | None = None,
    seed: int = 0,
    max_bytes: int = KRYLOV_BYTES,
) -> BatchedEigResult:
    """:func:`batched_lanczos` over the rows of ``Theta`` in chunks of members whose Krylov bases
    (``(max_iter + 1) x dim`` float64 each) fit in ``max_bytes``; one call when they all fit.
    ``n_matvec`` is the largest count of any chunk (products per member)."""
    P, n = Theta.shape
    per_member = (min(max_iter, n) + 1) * n * 8
    size = max(1, int(max_bytes // per_member))
    if size >= P:
        return batched_lanczos(objective, Theta, k, max_iter=max_iter, tol=tol, V0=V0, active=active, seed=seed)
    parts = []
    for lo in range(0, P, size):
        sl = slice(lo, min(P, lo + size))
        parts.append(
            batched_lanczos(
                objective,
                Theta[sl],
                k,
                max_iter=max_iter,
                tol=tol,
                V0=None if V0 is None else V0[sl],
                active=None if active is None else active[sl],
                seed=seed,
            )
        )
    return BatchedEigResult(
        torch.cat([r.values for r in parts]),
        torch.cat([r.vectors for r in parts]),
        torch.cat([r.residuals for r in parts]),
        max(r.n_matvec for r in parts),
        torch.cat([r.converged for r in parts]),
    )


@dataclasses.dataclass
class TraceEstimate:
    """Hutchinson estimate of ``tr H``: ``estimate`` (mean over probes), its standard error ``stderr``,
    the per-probe values ``samples`` and the number of Hessian-vector products ``n_matvec``."""

    estimate: float
    stderr: float
    samples: torch.Tensor
    n_matvec: int


def hutchinson_trace(
    objective: Objective,
    theta: torch.Tensor,
    n_samples: int = 50,
    seed: int = 0,
    block: int = 10,
    hvp_method: str = "reverse",
) -> TraceEstimate:
    """Trace of the Hessian by Hutchinson's estimator (Hutchinson, 1989): the mean of ``v^T H v`` over
    Rademacher probes ``v`` (entries +-1), unbiased with variance ``2 sum_{i != j} H_ij^2`` per probe.
    Probes are applied in blocks of ``block`` Hessian-vector products."""
    if n_samples < 2:
        raise ConfigError(f"n_samples={n_samples} must be >= 2 (the standard error needs two probes).")
    if block < 1:
        raise ConfigError(f"block={block} must be >= 1.")
    op = HessianOperator(objective, theta, hvp_method)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    vals = []
    done = 0
    while done < n_samples:
        b = min(block, n_samples - done)
        V = (torch.randint(0, 2, (op.dim, b), generator=gen, dtype=torch.int64) * 2 - 1).to(op.dtype).to(op.device)
        HV = op.matmat(V)
        vals.append((V * HV).sum(0).to(torch.float64).cpu())
        done += b
    samples = torch.cat(vals)
    return TraceEstimate(float(samples.mean()), float(samples.std() / math.sqrt(len(samples))), samples, op.n_matvec)
