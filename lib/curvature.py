"""Hessian-vector products and top eigenpairs of the loss Hessian, with residuals.

Near the edge of stability several Hessian eigenvalues cluster at 2/eta. Power
iteration that stops on a small relative change then under-reports the top
eigenvalue, and Lanczos with too few Krylov steps is simply wrong. The solvers
here therefore

* run Lanczos with *full* re-orthogonalisation until every wanted Ritz pair has a
  small residual, and report the explicit residual norms ``||H v - lambda v||``;
* accept a warm start (previous eigenvectors) to save matrix-vector products;
* work on any device, with batched HVPs through ``torch.func.vmap``;
* fuse the gradient of a training step with a block of HVPs at the same iterate
  (:func:`grad_and_hvps`), so that per-step tracking does not pay for the gradient twice.

:func:`time_hvps` measures what a gradient and a product cost on the current device.

All are tested against the dense spectrum from ``torch.linalg.eigvalsh`` on small nets.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import torch
from torch.func import grad, grad_and_value, jvp, vmap

from .config import ConfigError, require_positive_int

Objective = Callable[[torch.Tensor], torch.Tensor]


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


class HessianOperator:
    """The Hessian of ``objective`` at ``theta`` as a linear operator ``v -> H v``.

    ``method="forward"`` uses forward-over-reverse (``jvp`` of ``grad``) and batches many
    vectors with ``vmap``; ``method="reverse"`` builds the gradient graph once and
    differentiates it again for every vector (double backward), usually cheaper on CPU.
    ``n_matvec`` counts products (a batch of ``k`` vectors counts ``k``).
    """

    def __init__(self, objective: Objective, theta: torch.Tensor, method: str = "reverse") -> None:
        if method not in ("forward", "reverse"):
            raise ConfigError(f"method={method!r}; use 'forward' (jvp-of-grad) or 'reverse' (double backward).")
        self.objective, self.method = objective, method
        self.theta = theta.detach()
        self.dim = self.theta.numel()
        self.dtype, self.device = self.theta.dtype, self.theta.device
        self.n_matvec = 0
        self._grad: torch.Tensor | None = None
        self._leaf: torch.Tensor | None = None
        self._loss: torch.Tensor | None = None

    def _reverse_graph(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._grad is None:
            leaf = self.theta.clone().requires_grad_(True)
            with torch.enable_grad():
                loss = self.objective(leaf)
                g, = torch.autograd.grad(loss, leaf, create_graph=True)
            self._leaf, self._grad, self._loss = leaf, g, loss.detach()
        return self._leaf, self._grad

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for one vector ``v`` of shape ``(dim,)``."""
        self.n_matvec += 1
        v = v.to(self.dtype)
        if self.method == "forward":
            return jvp(grad(self.objective), (self.theta,), (v,))[1]
        leaf, g = self._reverse_graph()
        with torch.enable_grad():
            return torch.autograd.grad(g, leaf, v, retain_graph=True)[0]

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H V`` for a block ``V`` of shape ``(dim, k)`` (batched with vmap)."""
        k = V.shape[1]
        self.n_matvec += k
        V = V.to(self.dtype)
        if self.method == "forward":
            f = lambda v: jvp(grad(self.objective), (self.theta,), (v,))[1]  # noqa: E731
            return vmap(f, in_dims=1, out_dims=1)(V)
        leaf, g = self._reverse_graph()
        with torch.enable_grad():
            out = torch.autograd.grad(g, leaf, V.T.contiguous(), retain_graph=True, is_grads_batched=True)[0]
        return out.T

    def grad_and_matmat(self, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, gradient, H V)`` at ``theta`` from one differentiation of the objective.

        ``forward``: :func:`grad_and_hvps` (``jvp`` of ``grad_and_value``, vmapped over the tangents).
        ``reverse``: the gradient graph built for the products (``create_graph``) also yields the
        gradient itself. Either way the gradient is computed once; ``n_matvec`` grows by ``V.shape[1]``.
        """
        if self.method == "forward":
            self.n_matvec += V.shape[1]
            return grad_and_hvps(self.objective, self.theta, V)
        HV = self.matmat(V)  # builds (once) the gradient graph it differentiates
        return self._loss, self._grad.detach(), HV

    def dense(self) -> torch.Tensor:
        """The full ``dim x dim`` Hessian (small models only; tests and teaching)."""
        if self.dim > 20000:
            raise ConfigError(f"dense Hessian of {self.dim} parameters is too large; use lanczos().")
        return torch.func.hessian(self.objective)(self.theta)


def hvp(objective: Objective, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One Hessian-vector product ``H(theta) v`` by forward-over-reverse differentiation."""
    return jvp(grad(objective), (theta.detach(),), (v.to(theta.dtype),))[1]


def grad_and_hvps(objective: Objective, theta: torch.Tensor,
                  V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, gradient and ``H V`` (``V``: ``(dim, b)``) at ``theta`` in one ``torch.func`` call.

    Forward-over-reverse: ``jvp`` of ``grad_and_value`` with ``vmap`` over the ``b`` tangents only.
    The primal ``theta`` is not batched, so the loss and the gradient are computed once and only
    the tangent part of the computation is batched: a GD step that also needs ``H V`` at the same
    iterate gets its gradient for free. Returns ``(loss, grad, HV)`` with ``HV`` of shape ``(dim, b)``.
    """
    if V.dim() != 2 or V.shape[0] != theta.numel():
        raise ConfigError(f"V must have shape (dim, b) = ({theta.numel()}, b); got {tuple(V.shape)}.")
    theta = theta.detach()
    f = grad_and_value(objective)

    def one(v: torch.Tensor):
        (g, loss), (hv, _) = jvp(f, (theta,), (v,))
        return g, loss, hv

    g, loss, HV = vmap(one, in_dims=1, out_dims=(0, 0, 1))(V.to(theta.dtype))
    return loss[0], g[0], HV


def dense_hessian(objective: Objective, theta: torch.Tensor) -> torch.Tensor:
    """Dense Hessian via ``torch.func.hessian`` (for small models)."""
    return HessianOperator(objective, theta).dense()


def _as_operator(op, theta: torch.Tensor | None = None) -> HessianOperator:
    if isinstance(op, HessianOperator):
        return op
    raise ConfigError("pass a HessianOperator (curvature.HessianOperator(objective, theta)).")


def _warm_start_vector(dim: int, v0: torch.Tensor | None, dtype, device, generator) -> torch.Tensor:
    noise = torch.randn(dim, dtype=torch.float64, device=device, generator=generator)
    if v0 is None:
        return noise / noise.norm()
    v0 = v0.to(device=device, dtype=torch.float64)
    if v0.dim() == 2:  # several previous eigenvectors: combine them with distinct weights
        weights = torch.linspace(1.0, 0.5, v0.shape[1], dtype=torch.float64, device=device)
        v0 = v0 @ weights
    v0 = v0 / v0.norm()
    start = v0 + 1e-3 * noise / noise.norm()
    return start / start.norm()


def lanczos(op: HessianOperator, k: int = 1, max_iter: int = 200, tol: float = 1e-4,
            v0: torch.Tensor | None = None, seed: int = 0, check_every: int = 5,
            min_iter: int | None = None) -> EigResult:
    """Top-``k`` (largest algebraic) eigenpairs by Lanczos with full re-orthogonalisation.

    Stops when the Ritz residual estimate ``|beta_m s_{m,i}|`` of each wanted pair is below
    ``tol * max(|lambda_1|, 1e-12)``, or after ``max_iter`` steps. The Krylov basis is kept in
    float64. ``v0`` (a vector or a ``(dim, j)`` block of previous eigenvectors) warm-starts.
    Residuals are then computed explicitly with one batched product.
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
    q = _warm_start_vector(n, v0, op.dtype, device, gen)
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
            T = _tridiag(alphas, betas, device)
            evals, evecs = torch.linalg.eigh(T)
            top = evals.flip(0)[:k]
            est = (b * evecs[-1, :].flip(0)[:k]).abs()
            scale = max(float(top.abs().max()), 1e-12)
            if bool((est <= tol * scale).all()) and len(top) >= k:
                converged = True
                break
        if b < 1e-10:  # invariant subspace found: the Ritz values are exact
            converged = True
            break
        betas.append(b)
        Q[j + 1] = w / b
    T = _tridiag(alphas, betas[: m - 1], device)
    evals, evecs = torch.linalg.eigh(T)
    order = torch.argsort(evals, descending=True)[:k]
    values = evals[order]
    vectors = (Q[:m].T @ evecs[:, order])
    vectors = vectors / vectors.norm(dim=0, keepdim=True)
    vec = vectors.to(op.dtype)
    HV = op.matmat(vec).to(torch.float64)
    residuals = (HV - vectors * values).norm(dim=0)
    return EigResult(values.to(op.dtype), vec, residuals.to(op.dtype), op.n_matvec, converged)


def _tridiag(alphas, betas, device) -> torch.Tensor:
    a = torch.stack(alphas) if alphas else torch.zeros(0, dtype=torch.float64, device=device)
    T = torch.diag(a)
    if betas:
        b = torch.stack(betas)
        T = T + torch.diag(b, 1) + torch.diag(b, -1)
    return T


def power_iteration(op: HessianOperator, k: int = 1, max_iter: int = 100, tol: float = 1e-3,
                    v0: torch.Tensor | None = None, seed: int = 0) -> EigResult:
    """Deflated power iteration, stopping on a relative change of the Rayleigh quotient below ``tol``.

    This is the scheme of popular Hessian libraries; it is here to *show* how it
    under-reports clustered top eigenvalues (compare its residuals with Lanczos').
    Like every power method it finds the eigenvalues of largest *magnitude*.
    """
    op = _as_operator(op)
    gen = torch.Generator(device=op.device).manual_seed(seed)
    found_vals: list[torch.Tensor] = []
    found_vecs: list[torch.Tensor] = []
    converged = True
    for i in range(k):
        start = v0[:, i] if (v0 is not None and v0.dim() == 2 and i < v0.shape[1]) else (
            v0 if (v0 is not None and v0.dim() == 1 and i == 0) else None)
        v = _warm_start_vector(op.dim, start, op.dtype, op.device, gen).to(op.dtype)
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
    return EigResult(values, vectors, residuals, op.n_matvec, converged)


def top_eigenpairs(objective: Objective, theta: torch.Tensor, k: int = 1, method: str = "lanczos",
                   hvp_method: str = "reverse", **kwargs) -> EigResult:
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


def sync(device: torch.device | str) -> None:
    """Wait for queued kernels on a CUDA ``device`` (a no-op on the CPU), before reading a clock."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_hvps(objective: Objective, theta: torch.Tensor, block: int = 8, repeats: int = 10,
              seed: int = 0) -> dict[str, float]:
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
