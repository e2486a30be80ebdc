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

:class:`SharpnessTracker` wraps it with the warm-start state and a periodic verification
against a converged Lanczos solve. Two options make a tracked step cheaper: ``step()`` takes the
training step's gradient from the same differentiation as the first block product (fused), and
``amortised=True`` spends exactly one block iteration per step, so the solve converges across steps.
:func:`time_eigensolvers` and :func:`measure_tracking_cost` are the measurements behind
``benchmarks/`` and the appendix "Reproducing at full scale" (with ``curvature.time_hvps``).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import torch

from ..config import ConfigError
from .compare import sync
from .eigen import EigResult, lanczos, power_iteration
from .operator import HessianOperator, Objective



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


def start_block(n: int, b: int, X0: torch.Tensor | None = None, seed: int = 0,
                device: torch.device | str = "cpu") -> torch.Tensor:
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
    order = torch.argsort(evals, descending=True)[:min(keep, V.shape[1])]
    theta, S = evals[order], S[:, order]
    Y, HY = V @ S, HV @ S
    return theta, Y, HY, HY - Y * theta


def block_eigs(op: HessianOperator, k: int = 1, block_size: int | None = None, tol: float = 1e-3,
               max_iter: int = 50, X0: torch.Tensor | None = None, max_basis: int | None = None,
               seed: int = 0, HX0: torch.Tensor | None = None) -> BlockEigResult:
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
    return BlockEigResult(values.to(op.dtype), vectors.to(op.dtype), residuals.to(op.dtype), op.n_matvec,
                          converged, block=Y.to(op.dtype), iterations=it, block_values=theta, block_products=HY)


def next_amortised_block(Y: torch.Tensor, R: torch.Tensor | None, P: torch.Tensor | None, HY: torch.Tensor,
                         k: int, b: int) -> torch.Tensor:
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
        extra = torch.randn(Q.shape[0], b - Q.shape[1], dtype=Q.dtype, device=Q.device,
                            generator=torch.Generator(device=Q.device).manual_seed(Q.shape[1]))
        Q = torch.cat([Q, _orthonormalise_against(extra, Q)], 1)
    return Q


@dataclasses.dataclass
class SharpnessTracker:
    """Top-``k`` Hessian eigenvalues along a trajectory, warm-started step to step.

    Call ``tracker(objective, theta)`` at every step you want to measure, or
    ``tracker.step(objective, theta)`` to get the training step's loss and gradient from the same
    differentiation as the tracker's first block product (:meth:`HessianOperator.grad_and_matmat`).
    Every ``verify_every`` calls (0: never) a converged Lanczos solve (``verify_tol``) is run as
    well and the relative difference of the top eigenvalues is logged in ``verify_errors`` (the
    accuracy audit). ``warm_from=2`` warm-starts from the state of two calls ago: at the edge of
    stability the iterate flips sign along the top eigenvector every step, so the iterate two steps
    back is in the same phase of the oscillation.

    ``amortised=True`` carries the search space over from call to call: the next call starts from
    the Ritz vectors of the last call in the same phase, moved on by one subspace iteration or
    expanded by their residuals and LOBPCG-like directions (:func:`next_amortised_block`). With
    ``max_iter=1`` every call after the first in each phase does exactly **one** block iteration
    (``block_size`` products and a Rayleigh-Ritz step) and the solver keeps converging across
    training steps while the Hessian moves; ``tol`` is then not enforced (``converged`` reports
    whether it was met, the residuals are exact) and the audit measures the error.
    """

    k: int = 1
    tol: float = 1e-3
    block_size: int | None = None
    max_iter: int = 30
    hvp_method: str = "reverse"
    verify_every: int = 0
    verify_tol: float = 1e-7
    warm_from: int = 1
    amortised: bool = False
    values: list = dataclasses.field(default_factory=list)
    residuals: list = dataclasses.field(default_factory=list)
    matvecs: list = dataclasses.field(default_factory=list)
    verify_steps: list = dataclasses.field(default_factory=list)
    verify_errors: list = dataclasses.field(default_factory=list)
    _blocks: list = dataclasses.field(default_factory=list)
    _carry: dict = dataclasses.field(default_factory=dict)
    _calls: int = 0

    def __post_init__(self) -> None:
        if self.k < 1 or (self.block_size is not None and self.block_size < self.k):
            raise ConfigError(f"k={self.k}, block_size={self.block_size}: need k >= 1 and block_size >= k.")
        if self.warm_from < 1:
            raise ConfigError(f"warm_from={self.warm_from} must be >= 1 (1: previous call, 2: two calls ago).")

    def __call__(self, objective: Objective, theta: torch.Tensor) -> BlockEigResult:
        return self._track(objective, theta, fused=False)[0]

    def step(self, objective: Objective, theta: torch.Tensor) -> tuple[BlockEigResult, torch.Tensor, torch.Tensor]:
        """Track at ``theta``; return ``(result, loss, gradient)``, the gradient fused with the first block product."""
        res, loss, grad = self._track(objective, theta, fused=True)
        return res, loss, grad

    def _track(self, objective: Objective, theta: torch.Tensor, fused: bool):
        op = HessianOperator(objective, theta, self.hvp_method)
        b = min(self.block_size or self.k + 2, op.dim)
        phase = self._calls % self.warm_from
        own = phase in self._carry  # this phase of the oscillation has been solved before
        if self.amortised and self._carry:  # the block carried over from the last call in this phase
            X0 = self._carry[phase if own else max(self._carry)]["X"]
        else:
            X0 = self._blocks[-self.warm_from] if len(self._blocks) >= self.warm_from else (
                self._blocks[-1] if self._blocks else None)
        # the first solve (and, amortised, the first in each phase) converges; later ones are capped
        max_iter = self.max_iter if (own or (self._blocks and not self.amortised)) else 100
        loss = grad = HX0 = None
        if fused:
            X0 = start_block(op.dim, b, X0, self._calls, op.device)
            loss, grad, HX0 = op.grad_and_matmat(X0.to(op.dtype))
        res = block_eigs(op, self.k, b, self.tol, max_iter, X0=X0, seed=self._calls, HX0=HX0)
        self._blocks = (self._blocks + [res.block])[-self.warm_from:]
        if self.amortised:
            Y, HY = res.block.to(torch.float64), res.block_products
            R = HY - Y * res.block_values
            Yk = Y[:, :self.k]
            prev = self._carry.get(phase, {}).get("Y")
            P = None if prev is None else Yk - prev @ (prev.T @ Yk)  # how the wanted vectors moved
            self._carry[phase] = {"X": next_amortised_block(Y, R, P, HY, self.k, b), "Y": Yk}
        self.values.append(res.values.tolist())
        self.residuals.append(res.residuals.tolist())
        self.matvecs.append(op.n_matvec)
        if self.verify_every and self._calls % self.verify_every == 0:
            ref = lanczos(HessianOperator(objective, theta, "reverse"), self.k, max_iter=300,
                                    tol=self.verify_tol, v0=res.vectors)
            self.verify_steps.append(self._calls)
            self.verify_errors.append(_max_rel_error(res.values, ref.values))
        self._calls += 1
        return res, loss, grad


def _max_rel_error(values: torch.Tensor, reference: torch.Tensor) -> float:
    values, reference = values.double().cpu(), reference.double().cpu()
    return float(((values - reference).abs() / reference.abs()).max())


# --------------------------------------------------------------------------------------------
# measurements (used by benchmarks/ and the appendix)
# --------------------------------------------------------------------------------------------
def time_eigensolvers(objective: Objective, theta: torch.Tensor, k: int = 2, tol: float = 1e-3,
                      reference: EigResult | None = None, hvp_method: str = "reverse") -> list[dict]:
    """Seconds, Hessian-vector products and accuracy of several top-``k`` solvers on one Hessian.

    Rows: our Lanczos (``lanczos``, tolerance ``tol`` on the Ritz estimate), our block
    solver (cold), SciPy ``eigsh(which='LA')`` on the same HVP operator (with the per-matvec host
    round trip that implies) and deflated power iteration. Errors are relative to ``reference``
    (default: Lanczos with ``tol=1e-9`` from another random start). ``hvp_method`` is the product
    used by the block solver (``reverse``: batched double backward; ``forward``: vmapped jvp-of-grad).
    (For accuracy against the *dense* spectrum of a small net, see ``exp_classical.solvers_vs_dense_spectrum``.)
    """
    import scipy.sparse.linalg as sla

    dev = theta.device
    if reference is None:
        reference = lanczos(HessianOperator(objective, theta), k, max_iter=400, tol=1e-9, seed=12345)
    rows = []

    def record(name: str, fn: Callable[[], tuple[torch.Tensor, int]]) -> None:
        sync(dev)
        t0 = time.perf_counter()
        values, n_mv = fn()
        sync(dev)
        dt = time.perf_counter() - t0
        rows.append({"solver": name, "seconds": dt, "matvecs": int(n_mv),
                     "max_rel_error": _max_rel_error(values, reference.values),
                     "values": [round(float(v), 6) for v in values]})

    def ours_lanczos():
        op = HessianOperator(objective, theta)
        r = lanczos(op, k, max_iter=300, tol=tol)
        return r.values, r.n_matvec

    def ours_block():
        op = HessianOperator(objective, theta, hvp_method)
        r = block_eigs(op, k, tol=tol, max_iter=100)
        return r.values, r.n_matvec

    def scipy_eigsh():
        op = HessianOperator(objective, theta)

        def mv(v):
            t = torch.as_tensor(np.asarray(v).ravel(), dtype=theta.dtype, device=dev)
            return op.matvec(t).detach().cpu().double().numpy()

        lin = sla.LinearOperator((op.dim, op.dim), matvec=mv, dtype=np.float64)
        vals = sla.eigsh(lin, k=k, which="LA", tol=tol, v0=np.ones(op.dim), return_eigenvectors=False)
        return torch.as_tensor(np.sort(vals)[::-1].copy()), op.n_matvec

    def power():
        op = HessianOperator(objective, theta)
        r = power_iteration(op, k, max_iter=100, tol=tol)
        return r.values, r.n_matvec

    for method in ("reverse", "forward"):  # warm-up: first-call overheads are not the solvers' cost
        HessianOperator(objective, theta, method).matmat(torch.ones(theta.numel(), 2, dtype=theta.dtype, device=dev))
    record("lanczos (ours)", ours_lanczos)
    record("block Krylov (ours, cold)", ours_block)
    record("scipy eigsh (LA)", scipy_eigsh)
    record("power iteration", power)
    return rows


def measure_tracking_cost(objective: Objective, theta0: torch.Tensor, lr: float, steps: int = 30, k: int = 1,
                          tol: float = 1e-2, block_size: int | None = 2, verify_every: int = 10,
                          warmup: int = 0, hvp_method: str = "reverse", max_iter: int = 30,
                          warm_from: int = 1, fused: bool = False, amortised: bool = False,
                          reference_tol: float = 1e-8) -> dict[str, float | int | list]:
    """Wall time of ``steps`` GD steps without and with sharpness tracking at every step.

    The tracked loop calls a :class:`SharpnessTracker` at every step; with ``fused=True`` through
    :meth:`SharpnessTracker.step`, whose first block product comes with the step's gradient, else
    before a separate gradient. ``amortised=True`` makes the tracker do one block iteration per
    step. Every ``verify_every`` steps the tracked values are compared with a Lanczos solve
    converged to ``reference_tol`` (outside the timed region). Starts ``warmup`` untimed GD steps
    after ``theta0``, then ``warm_from`` untimed tracked steps (the converged first solve of each
    phase, paid once per run: ``cold_matvecs``); the timed steps' solves stop after ``max_iter``
    block iterations even if the tolerance is not met.

    Returns ``steps``, ``untracked_seconds``, ``tracked_seconds`` (totals), ``ratio`` (median over steps of
    tracked step time / untracked step time, the two timed back to back at the same point: robust to
    bursts of load on a shared machine), ``ratio_of_totals``,
    ``matvecs_per_step`` (mean HVPs per tracked step), ``cold_matvecs``, ``verified_steps``,
    ``verified_rel_errors``, ``max_verified_rel_error``, ``max_relative_residual`` (of the tracked
    top pair), ``sharpness_first``, ``sharpness_last`` and the settings ``fused``, ``amortised``,
    ``block_size``, ``tol``, ``warm_from``, ``hvp_method``.
    """
    theta = theta0.detach().clone()
    g_fn = torch.func.grad(objective)
    for _ in range(warmup):
        theta = theta - lr * g_fn(theta)
    tracker = SharpnessTracker(k=k, tol=tol, block_size=block_size, hvp_method=hvp_method, max_iter=max_iter,
                               warm_from=warm_from, amortised=amortised)
    cold_matvecs = 0
    for _ in range(warm_from):  # burn-in: the converged first solve of each phase, paid once per run
        tracker(objective, theta)
        cold_matvecs += tracker.matvecs[-1]
        theta = theta - lr * g_fn(theta)
    tracker.matvecs.clear()
    start = theta.detach().clone()

    def timed(fn: Callable[[], object]) -> tuple:
        sync(start.device)
        t0 = time.perf_counter()
        out = fn()
        sync(start.device)
        return out, time.perf_counter() - t0

    timed(lambda: start - lr * g_fn(start))  # warm-up of kernels and autograd caches
    th = start.clone()
    t_plain: list[float] = []
    t_tracked: list[float] = []
    errors, verified, rel_res = [], [], []
    for step in range(steps):
        point = th
        # an untracked step at the same point, timed right before the tracked one (paired: a burst of
        # load on a shared machine hits both alike); its result is discarded
        t_plain.append(timed(lambda: point - lr * g_fn(point))[1])
        if fused:
            (res, _, g), dt = timed(lambda: tracker.step(objective, point))
            th, dt_update = timed(lambda: point - lr * g)
        else:
            res, dt = timed(lambda: tracker(objective, point))
            th, dt_update = timed(lambda: point - lr * g_fn(point))
        t_tracked.append(dt + dt_update)
        rel_res.append(float(res.relative_residuals[0]))
        if verify_every and step % verify_every == 0:  # audit outside the timed region
            ref = lanczos(HessianOperator(objective, point), k, max_iter=300, tol=reference_tol)
            errors.append(_max_rel_error(res.values, ref.values))
            verified.append(step)
    return {"steps": steps, "untracked_seconds": sum(t_plain), "tracked_seconds": sum(t_tracked),
            "ratio": float(np.median(np.asarray(t_tracked) / np.maximum(t_plain, 1e-12))),
            "ratio_of_totals": sum(t_tracked) / max(sum(t_plain), 1e-12),
            "matvecs_per_step": float(np.mean(tracker.matvecs)),
            "cold_matvecs": cold_matvecs, "verified_steps": verified, "verified_rel_errors": errors,
            "max_verified_rel_error": max(errors) if errors else float("nan"),
            "max_relative_residual": max(rel_res), "sharpness_first": tracker.values[warm_from][0],
            "sharpness_last": tracker.values[-1][0], "fused": fused, "amortised": amortised,
            "block_size": block_size, "tol": tol, "warm_from": warm_from, "hvp_method": hvp_method}
