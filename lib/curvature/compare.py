"""What the curvature tools cost and how accurate they are: the one solver comparison and the timers.

Why here: a claim such as "Lanczos needs a few tens of products where power iteration needs hundreds"
or "tracking costs three gradients per step" is only as good as the measurement behind it, and the
chapters, the benchmarks and the appendix must make the *same* measurement. So:

* :func:`compare_solvers`: the top-``k`` eigenvalues of one Hessian by several solvers (Lanczos, power
  iteration, a tiny Krylov space, the block solver, SciPy ``eigsh``), with residuals, products, errors
  against a reference (the dense spectrum, or a tightly converged Lanczos solve) and optionally wall times;
  :func:`solver_rows` lays it out as table rows. :func:`dense_hessian_blocked` is its dense reference.
* :func:`warm_start_matvecs`: products per solve with and without warm starts along GD.
* the timers: :func:`sync` (the one clock barrier), :func:`time_hvps` (a gradient vs Hessian-vector
  products), :func:`measure_tracking_cost` (a GD step with and without the
  :class:`~instabilities.curvature.tracker.SharpnessTracker`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch.func import grad

from .. import optim
from ..config import ConfigError, require_positive, require_positive_int
from .block import block_eigs
from .eigen import EigResult, lanczos, power_iteration
from .operator import HessianOperator, Objective
from .tracker import SharpnessTracker, max_rel_error


def sync(device: torch.device | str) -> None:
    """Wait for queued kernels on a CUDA ``device`` (a no-op on the CPU), before reading a clock."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_hvps(
    objective: Objective, theta: torch.Tensor, block: int = 8, repeats: int = 10, seed: int = 0
) -> dict[str, float]:
    """Best-of-``repeats`` wall times (seconds) of a gradient and of Hessian-vector products.

    Keys (times): ``gradient``; ``hvp_reverse`` (double backward, gradient graph rebuilt, as for a
    new iterate) and ``hvp_forward`` (``jvp`` of ``grad``) for one vector;
    ``hvp_reverse_block_per_vector`` and ``hvp_forward_block_per_vector`` (``block`` products in one
    batched call, divided by ``block``); ``grad_and_block_reverse`` and ``grad_and_block_forward``
    (gradient plus ``block`` products at one iterate, :meth:`HessianOperator.grad_and_matmat`).
    For every time key except ``gradient`` there is ``ratio_<key>`` = time / gradient time (the
    cost ``c`` of the cost model, in gradients), and ``block`` is echoed. The methods are timed
    round-robin so that a burst of load hits all alike. Timings only; the tests assert no times.
    """
    require_positive_int("block", block)
    require_positive_int("repeats", repeats)
    theta = theta.detach()
    dev = theta.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    V = torch.randn(theta.numel(), block, generator=gen, dtype=theta.dtype, device=dev)

    def gradient() -> torch.Tensor:
        leaf = theta.clone().requires_grad_(True)
        return torch.autograd.grad(objective(leaf), leaf)[0]

    fns: dict[str, Callable[[], object]] = {"gradient": gradient}
    for method in ("reverse", "forward"):
        op = lambda m=method: HessianOperator(objective, theta, m)  # noqa: E731  (a fresh iterate each call)
        fns[f"hvp_{method}"] = lambda op=op: op().matvec(V[:, 0])
        fns[f"hvp_{method}_block"] = lambda op=op: op().matmat(V)
        fns[f"grad_and_block_{method}"] = lambda op=op: op().grad_and_matmat(V)
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()  # warm-up: first-call overheads are not the products' cost
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(dev)
            t0 = time.perf_counter()
            fn()
            sync(dev)
            best[name] = min(best[name], time.perf_counter() - t0)
    out = {}
    for name, t in best.items():
        per_vector = name.startswith("hvp_") and name.endswith("_block")
        out[name + "_per_vector" if per_vector else name] = t / block if per_vector else t
    for key in [k for k in out if k != "gradient"]:
        out[f"ratio_{key}"] = out[key] / out["gradient"]
    out["block"] = float(block)
    return out


# --------------------------------------------------------------------------------------------
# the solver comparison
# --------------------------------------------------------------------------------------------
def dense_hessian_blocked(op: HessianOperator, block: int = 256) -> torch.Tensor:
    """The dense Hessian built from batched Hessian-vector products, ``block`` columns at a time.

    Memory stays bounded (one block of tangents at a time), unlike a single ``torch.func.hessian``
    call; the result is symmetrised (``(H + H^T)/2``) to remove round-off asymmetry.
    """
    require_positive_int("block", block)
    n = op.dim
    H = torch.empty(n, n, dtype=op.dtype, device=op.device)
    eye = torch.eye(n, dtype=op.dtype, device=op.device)
    for start in range(0, n, block):
        stop = min(n, start + block)
        H[:, start:stop] = op.matmat(eye[:, start:stop])
    return 0.5 * (H + H.T)


SOLVER_LABELS = {
    "lanczos": "lanczos (ours)",
    "block": "block Krylov (ours, cold)",
    "eigsh": "scipy eigsh (LA)",
    "power": "power iteration",
    "tiny": "lanczos, tiny Krylov space",
}


def compare_solvers(
    objective: Objective,
    theta: torch.Tensor,
    k: int = 4,
    solvers: tuple[str, ...] = ("lanczos", "power", "tiny"),
    reference: str | EigResult = "dense",
    timed: bool = False,
    tol: float | None = None,
    lanczos_tol: float = 1e-8,
    lanczos_max_iter: int = 300,
    power_tol: float = 1e-3,
    power_max_iter: int = 100,
    tiny_krylov: int | None = None,
    block_tol: float = 1e-3,
    block_max_iter: int = 100,
    eigsh_tol: float = 1e-3,
    hvp_method: str = "reverse",
    n_reference: int = 20,
    reference_tol: float = 1e-10,
    reference_max_iter: int | None = None,
    reference_seed: int | None = None,
    block: int = 256,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Top-``k`` Hessian eigenvalues of ``objective`` at ``theta`` by several solvers, against a reference.

    ``solvers`` (any of): ``lanczos`` (full re-orthogonalisation, Ritz residuals below ``lanczos_tol``,
    at most ``lanczos_max_iter`` steps), ``power`` (deflated power iteration stopping on a relative change
    below ``power_tol``), ``tiny`` (Lanczos with ``tiny_krylov`` steps, default ``2k``, no convergence
    check), ``block`` (:func:`~instabilities.curvature.block.block_eigs` from a cold start, ``block_tol``,
    products by ``hvp_method``) and ``eigsh`` (SciPy ``eigsh(which='LA')`` on the same products, one host
    round trip per product). ``tol`` (if given) sets the tolerance of lanczos, power, block and eigsh at once.

    ``reference``: ``"dense"`` (the spectrum of :func:`dense_hessian_blocked`, ``block`` columns at a time),
    ``"lanczos"`` (``n_reference`` eigenpairs converged to ``reference_tol`` in at most
    ``reference_max_iter`` steps, default ``max(600, 4 n_reference)``, from seed ``reference_seed``, default
    ``seed + 1``) or an :class:`EigResult` computed elsewhere. With ``timed`` each solve is timed (products
    warmed up first, CUDA synchronised around the clock).

    Returns numpy arrays; per solver ``{name}_values``, ``{name}_residuals``, ``{name}_matvecs`` (products
    of the solve itself, without the explicit residual check), ``{name}_n_matvec`` (all products),
    ``{name}_converged``, ``{name}_max_rel_error`` (against the reference's top ``k``) and, timed,
    ``{name}_seconds``; plus ``reference_values`` (top ``n_reference``), ``reference_spectrum`` (all
    computed) and ``reference_is_dense``.
    """
    require_positive_int("k", k)
    tiny_krylov = 2 * k if tiny_krylov is None else tiny_krylov
    require_positive_int("tiny_krylov", tiny_krylov)
    unknown = [name for name in solvers if name not in SOLVER_LABELS]
    if unknown:
        raise ConfigError(f"solvers {unknown} unknown; choose from {sorted(SOLVER_LABELS)}.")
    if tol is not None:
        lanczos_tol = power_tol = block_tol = eigsh_tol = tol
    dev = theta.device
    op = HessianOperator(objective, theta, "reverse")
    if isinstance(reference, EigResult):
        spectrum, is_dense = reference.values.detach().double(), False
    elif reference == "dense":
        spectrum, is_dense = torch.linalg.eigvalsh(dense_hessian_blocked(op, block).double()).flip(0), True
    elif reference == "lanczos":
        spectrum = lanczos(
            op,
            n_reference,
            max_iter=reference_max_iter or max(600, 4 * n_reference),
            tol=reference_tol,
            seed=seed + 1 if reference_seed is None else reference_seed,
        ).values
        spectrum, is_dense = spectrum.double(), False
    else:
        raise ConfigError(f"reference={reference!r}; use 'dense', 'lanczos' or an EigResult.")
    spectrum = spectrum.cpu()

    def eigsh(op: HessianOperator) -> EigResult:
        import scipy.sparse.linalg as sla

        def mv(v):
            t = torch.as_tensor(np.asarray(v).ravel(), dtype=theta.dtype, device=dev)
            return op.matvec(t).detach().cpu().double().numpy()

        lin = sla.LinearOperator((op.dim, op.dim), matvec=mv, dtype=np.float64)
        vals = sla.eigsh(lin, k=k, which="LA", tol=eigsh_tol, v0=np.ones(op.dim), return_eigenvectors=False)
        vals = torch.as_tensor(np.sort(vals)[::-1].copy())
        return EigResult(vals, torch.zeros(op.dim, 0), torch.full_like(vals, float("nan")), op.n_matvec, True)

    runs: dict[str, tuple[str, Callable[[HessianOperator], EigResult], int]] = {  # (hvp method, solve, check)
        "lanczos": ("reverse", lambda op: lanczos(op, k, max_iter=lanczos_max_iter, tol=lanczos_tol, seed=seed), k),
        "power": ("reverse", lambda op: power_iteration(op, k, max_iter=power_max_iter, tol=power_tol, seed=seed), k),
        "tiny": ("reverse", lambda op: lanczos(op, k, max_iter=tiny_krylov, tol=0.0, seed=seed), k),
        "block": (hvp_method, lambda op: block_eigs(op, k, tol=block_tol, max_iter=block_max_iter), 0),
        "eigsh": ("reverse", eigsh, 0),
    }
    if timed:  # warm-up: first-call overheads are not the solvers' cost
        for method in ("reverse", "forward"):
            HessianOperator(objective, theta, method).matmat(
                torch.ones(theta.numel(), 2, dtype=theta.dtype, device=dev)
            )
    out: dict[str, np.ndarray] = {}
    for name in solvers:
        method, solve, check = runs[name]
        op = HessianOperator(objective, theta, method)
        sync(dev)
        t0 = time.perf_counter()
        res = solve(op)
        sync(dev)
        seconds = time.perf_counter() - t0
        values = res.values.detach().cpu().double()
        out[f"{name}_values"] = values.numpy()
        out[f"{name}_residuals"] = res.residuals.detach().cpu().double().numpy()
        out[f"{name}_matvecs"] = np.asarray(res.n_matvec - check)
        out[f"{name}_n_matvec"] = np.asarray(res.n_matvec)
        out[f"{name}_converged"] = np.asarray(bool(res.converged))
        out[f"{name}_max_rel_error"] = np.asarray(max_rel_error(values, spectrum[: len(values)]))
        if timed:
            out[f"{name}_seconds"] = np.asarray(seconds)
    spectrum = spectrum.numpy()
    out["reference_values"] = spectrum[:n_reference]
    out["reference_spectrum"] = spectrum
    out["reference_is_dense"] = np.asarray(is_dense)
    return out


def solver_rows(comparison: dict[str, np.ndarray]) -> list[dict]:
    """The solvers of a :func:`compare_solvers` result as table rows: ``solver`` (label), ``seconds``
    (NaN when not timed), ``matvecs`` (all products), ``max_rel_error`` and ``values`` (rounded to 6 digits)."""
    rows = []
    for name, label in SOLVER_LABELS.items():
        if f"{name}_values" in comparison:
            rows.append(
                {
                    "solver": label,
                    "seconds": float(comparison.get(f"{name}_seconds", float("nan"))),
                    "matvecs": int(comparison[f"{name}_n_matvec"]),
                    "max_rel_error": float(comparison[f"{name}_max_rel_error"]),
                    "values": [round(float(v), 6) for v in comparison[f"{name}_values"]],
                }
            )
    order = ("lanczos", "block", "eigsh", "power", "tiny")
    return sorted(rows, key=lambda r: order.index(next(n for n, l in SOLVER_LABELS.items() if l == r["solver"])))


def warm_start_matvecs(
    objective: Objective,
    theta: torch.Tensor,
    eta: float,
    steps: int,
    k: int = 2,
    tol: float = 1e-6,
    max_iter: int = 300,
) -> dict[str, np.ndarray]:
    """Hessian-vector products per top-``k`` Lanczos solve over ``steps`` consecutive GD steps.

    At every iterate the top-``k`` eigenpairs are computed twice: from a random start (``cold``)
    and from the previous step's eigenvectors (``warm``). Returns per-step ``cold_matvecs``,
    ``warm_matvecs`` (without the explicit residual check), the eigenvalues ``cold_values`` /
    ``warm_values`` (``steps x k``) and ``loss`` along the way.
    """
    require_positive("eta", eta)
    require_positive_int("steps", steps)
    g = grad(objective)
    theta = theta.detach().clone()
    state, hyper = optim.init_state("gd", theta), {"lr": eta}
    prev: torch.Tensor | None = None
    cold_n, warm_n, cold_v, warm_v, losses = [], [], [], [], []
    for t in range(steps):
        cold = lanczos(HessianOperator(objective, theta), k, max_iter=max_iter, tol=tol, seed=t)
        warm = (
            cold
            if prev is None
            else lanczos(HessianOperator(objective, theta), k, max_iter=max_iter, tol=tol, v0=prev, seed=t)
        )
        prev = warm.vectors
        cold_n.append(cold.n_matvec - k)
        warm_n.append(warm.n_matvec - k)
        cold_v.append(cold.values.double().cpu().numpy())
        warm_v.append(warm.values.double().cpu().numpy())
        losses.append(float(objective(theta)))
        theta = optim.update("gd", theta, g(theta), state, hyper)
    return {
        "cold_matvecs": np.asarray(cold_n),
        "warm_matvecs": np.asarray(warm_n),
        "cold_values": np.stack(cold_v),
        "warm_values": np.stack(warm_v),
        "loss": np.asarray(losses),
    }


# --------------------------------------------------------------------------------------------
# what tracking costs
# --------------------------------------------------------------------------------------------
def measure_tracking_cost(
    objective: Objective,
    theta0: torch.Tensor,
    eta: float,
    steps: int = 30,
    k: int = 1,
    tol: float = 1e-2,
    block_size: int | None = 2,
    verify_every: int = 10,
    warmup: int = 0,
    hvp_method: str = "reverse",
    max_iter: int = 30,
    warm_from: int = 1,
    fused: bool = False,
    amortised: bool = False,
    reference_tol: float = 1e-8,
) -> dict[str, float | int | list]:
    """Wall time of ``steps`` GD steps without and with sharpness tracking at every step.

    The tracked loop calls a :class:`~instabilities.curvature.tracker.SharpnessTracker`
    (``solver="block"``) at every step; with ``fused=True`` through :meth:`SharpnessTracker.step`,
    whose first block product comes with the step's gradient, else before a separate gradient.
    ``amortised=True`` makes the tracker do one block iteration per step. ``eta`` is the GD step size.
    Every ``verify_every`` steps the tracked values are compared with a Lanczos solve
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
    state, hyper = optim.init_state("gd", theta), {"lr": eta}

    def gd_step(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:  # the one GD rule (instabilities.optim)
        return optim.update("gd", p, g, state, hyper)

    for _ in range(warmup):
        theta = gd_step(theta, g_fn(theta))
    tracker = SharpnessTracker(
        k=k,
        solver="block",
        tol=tol,
        block_size=block_size,
        hvp_method=hvp_method,
        max_iter=max_iter,
        warm_from=warm_from,
        amortised=amortised,
    )
    cold_matvecs = 0
    for _ in range(warm_from):  # burn-in: the converged first solve of each phase, paid once per run
        tracker(objective, theta)
        cold_matvecs += tracker.matvecs[-1]
        theta = gd_step(theta, g_fn(theta))
    tracker.matvecs.clear()
    start = theta.detach().clone()

    def timed(fn: Callable[[], object]) -> tuple:
        sync(start.device)
        t0 = time.perf_counter()
        out = fn()
        sync(start.device)
        return out, time.perf_counter() - t0

    timed(lambda: gd_step(start, g_fn(start)))  # warm-up of kernels and autograd caches
    th = start.clone()
    t_plain: list[float] = []
    t_tracked: list[float] = []
    errors, verified, rel_res = [], [], []
    for step in range(steps):
        point = th
        # an untracked step at the same point, timed right before the tracked one (paired: a burst of
        # load on a shared machine hits both alike); its result is discarded
        t_plain.append(timed(lambda p=point: gd_step(p, g_fn(p)))[1])
        if fused:
            (res, _, g), dt = timed(lambda p=point: tracker.step(objective, p))
            th, dt_update = timed(lambda p=point, g=g: gd_step(p, g))
        else:
            res, dt = timed(lambda p=point: tracker(objective, p))
            th, dt_update = timed(lambda p=point: gd_step(p, g_fn(p)))
        t_tracked.append(dt + dt_update)
        rel_res.append(float(res.relative_residuals[0]))
        if verify_every and step % verify_every == 0:  # audit outside the timed region
            ref = lanczos(HessianOperator(objective, point), k, max_iter=300, tol=reference_tol)
            errors.append(max_rel_error(res.values, ref.values))
            verified.append(step)
    return {
        "steps": steps,
        "untracked_seconds": sum(t_plain),
        "tracked_seconds": sum(t_tracked),
        "ratio": float(np.median(np.asarray(t_tracked) / np.maximum(t_plain, 1e-12))),
        "ratio_of_totals": sum(t_tracked) / max(sum(t_plain), 1e-12),
        "matvecs_per_step": float(np.mean(tracker.matvecs)),
        "cold_matvecs": cold_matvecs,
        "verified_steps": verified,
        "verified_rel_errors": errors,
        "max_verified_rel_error": max(errors) if errors else float("nan"),
        "max_relative_residual": max(rel_res),
        "sharpness_first": tracker.values[warm_from][0],
        "sharpness_last": tracker.values[-1][0],
        "fused": fused,
        "amortised": amortised,
        "block_size": block_size,
        "tol": tol,
        "warm_from": warm_from,
        "hvp_method": hvp_method,
    }
