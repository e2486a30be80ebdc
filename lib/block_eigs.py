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
against a converged Lanczos solve; :func:`compare_solvers` and :func:`measure_tracking_cost`
are the measurements behind ``benchmarks/`` and the appendix "Reproducing at full scale".
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import torch

from . import curvature
from .config import ConfigError
from .curvature import EigResult, HessianOperator

Objective = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class BlockEigResult(EigResult):
    """:class:`~instabilities.curvature.EigResult` plus the whole Ritz block (for warm starts)."""

    block: torch.Tensor | None = None
    iterations: int = 0


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


def block_eigs(op: HessianOperator, k: int = 1, block_size: int | None = None, tol: float = 1e-3,
               max_iter: int = 50, X0: torch.Tensor | None = None, max_basis: int | None = None,
               seed: int = 0) -> BlockEigResult:
    """Top-``k`` (largest algebraic) eigenpairs of ``op`` by block Krylov iteration with Rayleigh-Ritz.

    ``block_size`` (default ``k + 2``) vectors are multiplied by ``H`` per iteration in one
    ``matmat``. The search space grows by the residual block of the current Ritz vectors and is
    restarted from the best ``2 * block_size`` Ritz vectors when it exceeds ``max_basis`` (default
    ``max(8 * block_size, 24)``). Stops when every wanted pair has
    ``||H y_i - theta_i y_i|| <= tol * |theta_i|`` (relative to the eigenvalue, not scaled by the
    dimension) or after ``max_iter`` iterations. ``X0`` (``(dim, j)``) warm-starts the block.
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
    gen = torch.Generator(device=dev).manual_seed(seed)
    X = torch.randn(n, b, dtype=f64, device=dev, generator=gen)
    if X0 is not None:
        X0 = torch.nan_to_num(X0.to(device=dev, dtype=f64).reshape(n, -1))
        j = min(X0.shape[1], b)
        X[:, :j] = X0[:, :j] + 1e-4 * X[:, :j] / X[:, :j].norm(dim=0) * X0[:, :j].norm(dim=0).clamp_min(1e-300)
    V = _orthonormalise_against(X, None)
    HV = op.matmat(V.to(op.dtype)).to(f64)
    converged = False
    it = 0
    theta = Y = HY = None
    for it in range(1, max_iter + 1):
        T = V.T @ HV
        T = 0.5 * (T + T.T)
        evals, S = torch.linalg.eigh(T)
        order = torch.argsort(evals, descending=True)
        keep = min(V.shape[1], max(b, k))
        theta, S = evals[order[:keep]], S[:, order[:keep]]
        Y, HY = V @ S, HV @ S
        R = HY - Y * theta
        res = R.norm(dim=0)
        scale = theta[:k].abs().clamp_min(1e-12 * float(theta.abs().max().clamp_min(1e-300)))
        if bool((res[:k] <= tol * scale).all()) and V.shape[1] >= k:
            converged = True
            break
        if it == max_iter:
            break
        if V.shape[1] + b > max_basis:  # thick restart from the best Ritz vectors
            r = min(V.shape[1], 2 * b)
            S_all = torch.linalg.eigh(T)[1].flip(1)[:, :r]
            V, HV = V @ S_all, HV @ S_all
        W = _orthonormalise_against(R[:, :b], V)
        if W.shape[1] == 0:  # the search space is invariant: the Ritz pairs are exact
            converged = True
            break
        HW = op.matmat(W.to(op.dtype)).to(f64)
        V, HV = torch.cat([V, W], 1), torch.cat([HV, HW], 1)
    values, vectors = theta[:k], Y[:, :k]
    residuals = (HY[:, :k] - vectors * values).norm(dim=0)
    return BlockEigResult(values.to(op.dtype), vectors.to(op.dtype), residuals.to(op.dtype), op.n_matvec,
                          converged, block=Y.to(op.dtype), iterations=it)


@dataclasses.dataclass
class SharpnessTracker:
    """Top-``k`` Hessian eigenvalues along a trajectory, warm-started step to step.

    Call ``tracker(objective, theta)`` at every step you want to measure. Every ``verify_every``
    calls (0: never) a converged Lanczos solve (``verify_tol``) is run as well and the relative
    difference of the top eigenvalue is logged in ``verify_errors`` (the accuracy audit).
    ``warm_from=2`` warm-starts from the Ritz block of two calls ago: at the edge of stability the
    iterate flips sign along the top eigenvector every step, so the iterate two steps back is in
    the same phase of the oscillation.
    """

    k: int = 1
    tol: float = 1e-3
    block_size: int | None = None
    max_iter: int = 30
    hvp_method: str = "reverse"
    verify_every: int = 0
    verify_tol: float = 1e-7
    warm_from: int = 1
    values: list = dataclasses.field(default_factory=list)
    residuals: list = dataclasses.field(default_factory=list)
    matvecs: list = dataclasses.field(default_factory=list)
    verify_steps: list = dataclasses.field(default_factory=list)
    verify_errors: list = dataclasses.field(default_factory=list)
    _blocks: list = dataclasses.field(default_factory=list)
    _calls: int = 0

    def __call__(self, objective: Objective, theta: torch.Tensor) -> BlockEigResult:
        op = HessianOperator(objective, theta, self.hvp_method)
        X0 = self._blocks[-self.warm_from] if len(self._blocks) >= self.warm_from else (
            self._blocks[-1] if self._blocks else None)
        res = block_eigs(op, self.k, self.block_size, self.tol, self.max_iter, X0=X0, seed=self._calls)
        self._blocks = (self._blocks + [res.block])[-max(self.warm_from, 1):]
        self.values.append(res.values.tolist())
        self.residuals.append(res.residuals.tolist())
        self.matvecs.append(res.n_matvec)
        if self.verify_every and self._calls % self.verify_every == 0:
            ref = curvature.lanczos(HessianOperator(objective, theta, "reverse"), self.k, max_iter=300,
                                    tol=self.verify_tol, v0=res.vectors)
            self.verify_steps.append(self._calls)
            self.verify_errors.append(float(((res.values - ref.values).abs() / ref.values.abs()).max()))
        self._calls += 1
        return res


# --------------------------------------------------------------------------------------------
# measurements (used by benchmarks/ and the appendix)
# --------------------------------------------------------------------------------------------
def _sync(device: torch.device | str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def compare_solvers(objective: Objective, theta: torch.Tensor, k: int = 2, tol: float = 1e-3,
                    reference: EigResult | None = None, hvp_method: str = "reverse") -> list[dict]:
    """Time, Hessian-vector products and accuracy of several top-``k`` solvers on one Hessian.

    Rows: our Lanczos (``curvature.lanczos``, tolerance ``tol`` on the Ritz estimate), our block
    solver (cold), SciPy ``eigsh(which='LA')`` on the same HVP operator (with the per-matvec host
    round trip that implies) and deflated power iteration. Errors are relative to ``reference``
    (default: Lanczos with ``tol=1e-9`` from another random start). ``hvp_method`` is the product
    used by the block solver (``reverse``: batched double backward; ``forward``: vmapped jvp-of-grad).
    """
    import scipy.sparse.linalg as sla

    dev = theta.device
    if reference is None:
        reference = curvature.lanczos(HessianOperator(objective, theta), k, max_iter=400, tol=1e-9, seed=12345)
    ref = reference.values.double().cpu()
    rows = []

    def record(name: str, fn: Callable[[], tuple[torch.Tensor, int]]) -> None:
        _sync(dev)
        t0 = time.perf_counter()
        values, n_mv = fn()
        _sync(dev)
        dt = time.perf_counter() - t0
        err = float(((values.double().cpu() - ref).abs() / ref.abs()).max())
        rows.append({"solver": name, "seconds": dt, "matvecs": int(n_mv), "max_rel_error": err,
                     "values": [round(float(v), 6) for v in values]})

    def ours_lanczos():
        op = HessianOperator(objective, theta)
        r = curvature.lanczos(op, k, max_iter=300, tol=tol)
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
        r = curvature.power_iteration(op, k, max_iter=100, tol=tol)
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
                          warm_from: int = 1) -> dict[str, float]:
    """Wall time of ``steps`` GD steps without and with sharpness tracking at every step.

    The tracked loop calls a :class:`SharpnessTracker` (warm starts, block HVPs) before every
    update; every ``verify_every`` steps its value is compared with a converged Lanczos solve
    (outside the timed region). Starts ``warmup`` untimed GD steps after ``theta0``; the tracker's
    first (cold) solve is not timed either, since a long run pays it once; later solves stop after
    ``max_iter`` block iterations even if the tolerance is not met (the audit shows the cost). Returns the two times,
    their ratio, the mean matvecs per tracked step and the largest verified relative error.
    """
    theta = theta0.detach().clone()
    g_fn = torch.func.grad(objective)
    for _ in range(warmup):
        theta = theta - lr * g_fn(theta)
    start = theta.detach().clone()

    def untracked() -> float:
        th = start.clone()
        _sync(th.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            th = th - lr * g_fn(th)
        _sync(th.device)
        return time.perf_counter() - t0

    untracked()  # warm-up of kernels and autograd caches
    t_plain = untracked()
    tracker = SharpnessTracker(k=k, tol=tol, block_size=block_size, hvp_method=hvp_method, max_iter=100,
                               warm_from=warm_from)
    cold = tracker(objective, start)  # the cold start, paid once per run
    cold_matvecs = cold.n_matvec
    tracker.matvecs.clear()
    tracker.max_iter = max_iter
    th = start.clone()
    t_tracked = 0.0
    errors = []
    for step in range(steps):
        point = th
        _sync(th.device)
        t0 = time.perf_counter()
        res = tracker(objective, th)
        th = th - lr * g_fn(th)
        _sync(th.device)
        t_tracked += time.perf_counter() - t0
        if verify_every and step % verify_every == 0:  # audit outside the timed region
            ref = curvature.lanczos(HessianOperator(objective, point), k, max_iter=300, tol=1e-8)
            errors.append(float(((res.values.double() - ref.values.double()).abs() / ref.values.double().abs()).max()))
    return {"steps": steps, "untracked_seconds": t_plain, "tracked_seconds": t_tracked,
            "ratio": t_tracked / max(t_plain, 1e-12), "matvecs_per_step": float(np.mean(tracker.matvecs)),
            "cold_matvecs": cold_matvecs,
            "max_verified_rel_error": max(errors) if errors else float("nan"),
            "sharpness_first": tracker.values[0][0], "sharpness_last": tracker.values[-1][0]}


def measure_hvp_cost(objective: Objective, theta: torch.Tensor, block: int = 2, repeats: int = 5) -> dict[str, float]:
    """Seconds of one gradient and of one Hessian-vector product (single and per vector in a block).

    With ``c`` the cost of one product in gradients and ``m`` products per tracked step, tracking
    every step costs about ``1 + m * c`` untracked steps: the cost model behind the tracking benchmark.
    """
    dev = theta.device
    g_fn = torch.func.grad(objective)
    v = torch.randn(theta.numel(), block, dtype=theta.dtype, device=dev, generator=torch.Generator(device=dev).manual_seed(0))

    def timed(fn: Callable[[], object]) -> float:
        fn()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            _sync(dev)
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            best = min(best, time.perf_counter() - t0)
        return best

    out = {"gradient": timed(lambda: g_fn(theta))}
    for method in ("reverse", "forward"):
        out[f"hvp_{method}"] = timed(lambda: HessianOperator(objective, theta, method).matvec(v[:, 0]))
        out[f"hvp_{method}_block{block}_per_vector"] = timed(
            lambda: HessianOperator(objective, theta, method).matmat(v)) / block
    return out
