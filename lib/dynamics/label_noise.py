"""The exactly solvable label-noise model: deep linear networks, SGD with fresh label noise.

Setting (after Xu, Beneventano, Chuang & Ziyin, 2026; the formulas here are *our derivation*):
inputs ``x ~ N(0, Sigma_x)``, a linear teacher ``y = A x + eps`` with label noise
``eps ~ N(0, Sigma_eps)``, and a deep linear student ``f(x) = W_D ... W_1 x``. The population loss is::

    L(theta) = 1/2 tr[(W - A) Sigma_x (W - A)^T] + 1/2 tr Sigma_eps,      W = W_D ... W_1.

At a global minimum (``W = A``) the Hessian is the Gauss-Newton matrix ``H = E[J^T J]`` and the
per-example gradient covariance is ``C = E[J^T Sigma_eps J]`` with ``J = df/dtheta``; both are Hessians
of a population loss, with output metric ``I`` and ``Sigma_eps`` respectively, which is how they are
computed here (exactly, with ``torch.func.hessian``).

Closed forms for the *width-one chain* (hidden widths all 1, scalar input, ``d`` outputs):
``f(x) = u w_{D-1} ... w_1 x`` with teacher vector ``a`` and ``s = E[x^2]``. On the balanced part of the
manifold of minima (``w_i^2 = t`` for every scalar layer, ``u = a / t^{(D-1)/2}``)::

    S      = s (t^{D-1} + (D-1) |a|^2 / t)            (sharpness, lambda_max of H)
    tr H   = s (d t^{D-1} + (D-1) |a|^2 / t)
    tr C   = s (t^{D-1} tr Sigma_eps + (D-1) a^T Sigma_eps a / t)

and SGD's label noise drives the balance to the minimiser of ``tr C``: ``t* = (a^T Sigma_eps a / tr Sigma_eps)^{1/D}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.func import hessian, vmap

from ..config import ConfigError


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run tiny tensor code on one CPU thread (faster, no oversubscription); restores the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- noise covariances
def noise_covariance(ratio: float, trace: float = 2.0, dim: int = 2) -> torch.Tensor:
    """Diagonal label-noise covariance ``diag(1, ..., 1, ratio)`` rescaled to the given trace.

    ``ratio = 1`` is isotropic noise; ``ratio > 1`` puts more noise on the last output.
    """
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio > 0):
        raise ConfigError(f"ratio={ratio!r} must be a finite number > 0 (1 = isotropic label noise).")
    if not (math.isfinite(trace) and trace > 0):
        raise ConfigError(f"trace={trace!r} must be > 0 (total label-noise variance).")
    if not (isinstance(dim, int) and dim >= 2):
        raise ConfigError(f"dim={dim!r}: anisotropy needs at least 2 outputs; use dim >= 2.")
    diag = torch.ones(dim, dtype=torch.float64)
    diag[-1] = ratio
    return torch.diag(diag * trace / diag.sum())


def anisotropy_q(teacher: Sequence[float] | torch.Tensor, noise_cov: torch.Tensor) -> float:
    """``q = a^T Sigma_eps a / (|a|^2 tr Sigma_eps)``: the share of label noise along the teacher.

    ``q = 1/d`` for isotropic noise; ``q -> 0`` when the noise avoids the teacher's output direction.
    """
    a = torch.as_tensor(teacher, dtype=torch.float64).reshape(-1)
    cov = torch.as_tensor(noise_cov, dtype=torch.float64)
    _check_cov(cov, a.numel())
    if float(a.norm()) == 0.0:
        raise ConfigError("the teacher vector a is zero; use a teacher with |a| > 0.")
    return float(a @ cov @ a / (a @ a) / torch.trace(cov))


def _check_cov(cov: torch.Tensor, dim: int) -> None:
    if cov.shape != (dim, dim):
        raise ConfigError(
            f"noise covariance has shape {tuple(cov.shape)}; it must be ({dim}, {dim}), "
            "one row per output of the teacher."
        )
    if not torch.allclose(cov, cov.T) or float(torch.linalg.eigvalsh(cov).min()) < -1e-12:
        raise ConfigError(
            "noise covariance must be symmetric positive semi-definite; build it with noise_covariance(ratio, trace)."
        )


# ----------------------------------------------------------------------------- closed forms (chain)
def chain_on_manifold(
    hidden_sq: float | np.ndarray,
    teacher: Sequence[float],
    noise_cov: torch.Tensor,
    depth: int = 2,
    input_var: float = 1.0,
) -> dict[str, np.ndarray]:
    """Sharpness, ``tr H`` and ``tr C`` along the balanced minima of the width-one chain (our derivation).

    ``hidden_sq`` is ``t = w_i^2`` (one value or an array). ``C`` is the per-example gradient covariance.
    """
    if not (isinstance(depth, int) and depth >= 2):
        raise ConfigError(f"depth={depth!r}: the chain needs depth D >= 2 weight layers.")
    if input_var <= 0:
        raise ConfigError(f"input_var={input_var!r} must be > 0 (it is E[x^2]).")
    a = torch.as_tensor(teacher, dtype=torch.float64).reshape(-1)
    cov = torch.as_tensor(noise_cov, dtype=torch.float64)
    _check_cov(cov, a.numel())
    t = np.asarray(hidden_sq, dtype=float)
    if np.any(t <= 0):
        raise ConfigError("hidden_sq must be > 0 (it is the squared weight w^2 of a hidden layer).")
    a2, d = float(a @ a), a.numel()
    aSa, trS = float(a @ cov @ a), float(torch.trace(cov))
    D, s = depth, input_var
    return {
        "sharpness": s * (t ** (D - 1) + (D - 1) * a2 / t),
        "trace_hessian": s * (d * t ** (D - 1) + (D - 1) * a2 / t),
        "trace_fluctuation": s * (t ** (D - 1) * trS + (D - 1) * aSa / t),
    }


def chain_fixed_point(
    teacher: Sequence[float], noise_cov: torch.Tensor, depth: int = 2, input_var: float = 1.0
) -> dict[str, float]:
    """SGD's predicted balance ``t* = (a^T Sigma a / tr Sigma)^{1/D}`` and the converged curvature (our derivation)."""
    a = torch.as_tensor(teacher, dtype=torch.float64).reshape(-1)
    cov = torch.as_tensor(noise_cov, dtype=torch.float64)
    _check_cov(cov, a.numel())
    aSa = float(a @ cov @ a)
    if aSa <= 0:
        raise ConfigError(
            "a^T Sigma_eps a = 0: with no label noise along the teacher the balance has no "
            "fixed point (the sharpness grows without bound); add noise along a."
        )
    t_star = (aSa / float(torch.trace(cov))) ** (1.0 / depth)
    vals = chain_on_manifold(t_star, a, cov, depth, input_var)
    return {"hidden_sq": t_star, "q": anisotropy_q(a, cov), **{k: float(v) for k, v in vals.items()}}


def chain_flattest(teacher: Sequence[float], depth: int = 2, input_var: float = 1.0) -> dict[str, float]:
    """The minima of ``S`` and of ``tr H`` over the balanced manifold (our derivation)."""
    a = torch.as_tensor(teacher, dtype=torch.float64).reshape(-1)
    a2, d, D, s = float(a @ a), a.numel(), depth, input_var
    t_s = a2 ** (1.0 / D)  # dS/dt = 0: (D-1) t^{D-2} = (D-1) a2 / t^2
    t_tr = (a2 / d) ** (1.0 / D)
    return {
        "min_sharpness": s * (t_s ** (D - 1) + (D - 1) * a2 / t_s),
        "min_trace_hessian": s * (d * t_tr ** (D - 1) + (D - 1) * a2 / t_tr),
    }


def _balance_rate(t: np.ndarray, a2: float, aSa: float, trS: float, depth: int, scale: float) -> np.ndarray:
    """``dt/dn`` of the balance ``t`` along the balanced minima in expectation (``scale = eta^2 s / B``)."""
    D = depth
    return -scale * (t ** (D - 1) * trS - aSa / t) / (1.0 + (D - 1) * a2 / t**D)


def _chain_constants(
    teacher: Sequence[float], noise_cov: torch.Tensor, lr: float, depth: int, input_var: float, batch_size: int
) -> tuple[float, float, float, float]:
    a = torch.as_tensor(teacher, dtype=torch.float64).reshape(-1)
    cov = torch.as_tensor(noise_cov, dtype=torch.float64)
    _check_cov(cov, a.numel())
    if not (isinstance(depth, int) and depth >= 2):
        raise ConfigError(f"depth={depth!r}: the chain needs depth D >= 2 weight layers.")
    if not (math.isfinite(lr) and lr > 0) or input_var <= 0:
        raise ConfigError(f"lr={lr!r} and input_var={input_var!r} must be > 0.")
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer.")
    aSa = float(a @ cov @ a)
    if aSa <= 0:
        raise ConfigError(
            "a^T Sigma_eps a = 0: without label noise along the teacher the balance never settles; add noise along a."
        )
    return float(a @ a), aSa, float(torch.trace(cov)), lr**2 * input_var / batch_size


def chain_relaxation_time(
    teacher: Sequence[float],
    noise_cov: torch.Tensor,
    lr: float,
    depth: int = 2,
    input_var: float = 1.0,
    batch_size: int = 1,
) -> float:
    """Number of SGD steps ``tau`` over which the balance relaxes to ``t*`` near it (our derivation).

    Along the balanced minima the expected drift of the balance (``chain_balance_drift``) moves ``t = w^2`` by
    ``dt/dn = -(eta^2 s/B) (t^{D-1} tr Sigma - a^T Sigma a / t) / (1 + (D-1)|a|^2 / t^D)`` per step. Linearised at
    ``t*`` its rate is ``1/tau = (eta^2 s/B) D a^T Sigma a / (t*^2 + (D-1)|a|^2 t*^{2-D})``. Only the noise
    *along the teacher* drives the balance, so ``tau`` grows as that share ``q`` shrinks: for ``D = 2``,
    ``a = (1, 0)``, ``Sigma = noise_covariance(r, 2)``, ``tau = (2 + r) / (4 eta^2)``. For ``D > 2`` the hidden
    layers are assumed balanced (their own balance relaxes separately).
    """
    a2, aSa, trS, scale = _chain_constants(teacher, noise_cov, lr, depth, input_var, batch_size)
    D = depth
    t_star = (aSa / trS) ** (1.0 / D)
    return float((t_star**2 + (D - 1) * a2 * t_star ** (2 - D)) / (scale * D * aSa))


def chain_balance_path(
    hidden_sq0: float,
    steps: Sequence[float] | np.ndarray,
    teacher: Sequence[float],
    noise_cov: torch.Tensor,
    lr: float,
    depth: int = 2,
    input_var: float = 1.0,
    batch_size: int = 1,
) -> np.ndarray:
    """The balance ``t(n)`` at the given step counts predicted by the expected drift alone (our derivation).

    Integrates ``dt/dn`` of ``chain_relaxation_time`` from ``t(0) = hidden_sq0`` (the small-``eta`` mean path
    of SGD along the balanced minima, without its ``O(eta)`` fluctuations), so it shows how long the approach
    from a given start takes, including the nonlinear part far from ``t*``.
    """
    from scipy.integrate import solve_ivp

    if not (math.isfinite(hidden_sq0) and hidden_sq0 > 0):
        raise ConfigError(f"hidden_sq0={hidden_sq0!r} must be > 0 (a squared hidden weight).")
    n = np.asarray(steps, dtype=float)
    if n.ndim != 1 or n.size == 0 or np.any(n < 0) or np.any(np.diff(n) < 0):
        raise ConfigError("steps must be a non-empty, non-decreasing 1-D sequence of step counts >= 0.")
    a2, aSa, trS, scale = _chain_constants(teacher, noise_cov, lr, depth, input_var, batch_size)
    if n[-1] == 0:
        return np.full(n.shape, float(hidden_sq0))
    # integrate in log t (t stays positive) over the rescaled time scale * n
    sol = solve_ivp(
        lambda _, y: _balance_rate(np.exp(y), a2, aSa, trS, depth, 1.0) / np.exp(y),
        (0.0, scale * float(n[-1])),
        [math.log(hidden_sq0)],
        t_eval=scale * n,
        method="LSODA",
        rtol=1e-10,
        atol=1e-12,
    )
    if not sol.success:  # pragma: no cover - the right-hand side is smooth
        raise RuntimeError(f"chain_balance_path: integration failed ({sol.message}).")
    return np.exp(sol.y[0])


# ----------------------------------------------------------------------------- deep linear networks
@dataclasses.dataclass(frozen=True)
class DeepLinearNet:
    """Shapes of a deep linear network ``d_in -> widths... -> d_out`` viewed through one flat vector."""

    d_in: int
    widths: tuple[int, ...]
    d_out: int

    def __post_init__(self) -> None:
        for name, v in (("d_in", self.d_in), ("d_out", self.d_out), *(("width", w) for w in self.widths)):
            if not (isinstance(v, int) and v > 0):
                raise ConfigError(f"{name}={v!r} must be a positive integer.")
        object.__setattr__(self, "widths", tuple(self.widths))

    @property
    def shapes(self) -> list[tuple[int, int]]:
        dims = [self.d_in, *self.widths, self.d_out]
        return [(b, a) for a, b in zip(dims[:-1], dims[1:])]

    @property
    def depth(self) -> int:
        return len(self.widths) + 1

    @property
    def dim(self) -> int:
        return sum(a * b for a, b in self.shapes)

    def layers(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """Weight matrices ``W_1..W_D`` (leading batch dimensions of ``theta`` are kept)."""
        if theta.shape[-1] != self.dim:
            raise ConfigError(f"theta has {theta.shape[-1]} entries; this network has {self.dim}.")
        chunks = torch.split(theta, [a * b for a, b in self.shapes], dim=-1)
        return [c.reshape(*theta.shape[:-1], *s) for c, s in zip(chunks, self.shapes)]

    def flatten(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        lead = layers[0].shape[:-2]
        return torch.cat([W.reshape(*lead, -1) for W in layers], dim=-1)

    def end_to_end(self, theta: torch.Tensor) -> torch.Tensor:
        """The product ``W = W_D ... W_1`` (shape ``(..., d_out, d_in)``)."""
        Ws = self.layers(theta)
        W = Ws[0]
        for Wk in Ws[1:]:
            W = Wk @ W
        return W


def chain_point(hidden_sq: float, teacher: Sequence[float], depth: int = 2) -> tuple[DeepLinearNet, torch.Tensor]:
    """The balanced global minimum of the width-one chain with ``w_i^2 = hidden_sq`` (flat theta)."""
    a = torch.as_tensor(teacher, dtype=torch.float64).reshape(-1, 1)
    if hidden_sq <= 0:
        raise ConfigError(f"hidden_sq={hidden_sq!r} must be > 0.")
    net = DeepLinearNet(1, (1,) * (depth - 1), a.shape[0])
    w = math.sqrt(hidden_sq)
    layers = [torch.full((1, 1), w, dtype=torch.float64) for _ in range(depth - 1)]
    layers.append(a / w ** (depth - 1))
    return net, net.flatten(layers)


def population_loss(
    net: DeepLinearNet,
    theta: torch.Tensor,
    teacher: torch.Tensor,
    input_cov: torch.Tensor,
    metric: torch.Tensor | None = None,
) -> torch.Tensor:
    """``1/2 tr[M (W - A) Sigma_x (W - A)^T]`` without the constant noise floor (``M = I`` by default).

    With ``M = I`` its Hessian at a minimum is ``H``; with ``M = Sigma_eps`` it is the gradient-noise
    covariance ``C`` of one example.
    """
    E = net.end_to_end(theta) - teacher
    M = torch.eye(E.shape[-2], dtype=E.dtype) if metric is None else metric
    return 0.5 * torch.einsum("ij,jk,kl,il->", M, E, input_cov, E)


def curvature_summary(
    net: DeepLinearNet, theta: torch.Tensor, teacher: torch.Tensor, input_cov: torch.Tensor, noise_cov: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Exact ``S``, ``tr H`` and ``tr C`` at each row of ``theta``.

    ``theta`` has shape ``(R, P)``; ``noise_cov`` is ``(d, d)`` or ``(R, d, d)``."""
    theta = theta.reshape(-1, net.dim).to(torch.float64)
    R = theta.shape[0]
    noise = noise_cov.to(torch.float64).expand(R, *noise_cov.shape[-2:])

    def one(th, M):
        H = hessian(lambda p: population_loss(net, p, teacher, input_cov))(th)
        C = hessian(lambda p: population_loss(net, p, teacher, input_cov, M))(th)
        return torch.linalg.eigvalsh(H)[-1], torch.diagonal(H).sum(), torch.diagonal(C).sum()

    S, trH, trC = vmap(one)(theta, noise)
    return {"sharpness": S, "trace_hessian": trH, "trace_fluctuation": trC}


def _grads(net: DeepLinearNet, Ws: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Minibatch gradients of ``1/(2B) sum |f(x)-y|^2`` for replicas ``(R, ...)`` (manual backprop)."""
    hs = [x]
    for W in Ws:
        hs.append(hs[-1] @ W.transpose(-1, -2))
    delta = (hs[-1] - y) / x.shape[-2]
    grads = [None] * len(Ws)
    for k in range(len(Ws) - 1, -1, -1):
        grads[k] = delta.transpose(-1, -2) @ hs[k]
        if k:
            delta = delta @ Ws[k]
    return grads


def minibatch_gradient(net: DeepLinearNet, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Flat gradient of the minibatch loss for each replica (``theta (R,P)``, ``x (R,B,d_in)``, ``y (R,B,d_out)``)."""
    return net.flatten(_grads(net, net.layers(theta), x, y))


def chain_flow_limit(net: DeepLinearNet, theta: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The minimum that gradient flow reaches from ``theta`` (rows of a width-one chain, scalar input).

    Gradient flow conserves ``w_i^2 - w_1^2`` and ``|u|^2 - w_1^2`` (our derivation), so the limit is the point
    on ``u w_{D-1}...w_1 = a`` with the same invariants; found by bisection on ``w_1^2``.
    """
    if net.d_in != 1 or any(w != 1 for w in net.widths):
        raise ConfigError("chain_flow_limit needs a width-one chain: DeepLinearNet(1, (1,)*(D-1), d).")
    theta = theta.reshape(-1, net.dim).to(torch.float64)
    a = teacher.reshape(-1).to(torch.float64)
    Ws = net.layers(theta)
    w = torch.cat([W.reshape(-1, 1) for W in Ws[:-1]], dim=1)  # (R, D-1)
    u = Ws[-1].reshape(theta.shape[0], -1)
    c = w**2 - w[:, :1] ** 2
    cu = (u**2).sum(1) - w[:, 0] ** 2
    lo = torch.clamp(-(torch.minimum(c.min(1).values, cu)), min=0.0)
    hi = lo + 1.0
    prod = lambda t1: (t1 + cu) * (t1.unsqueeze(1) + c).prod(1)  # noqa: E731
    a2 = float(a @ a)
    while bool((prod(hi) < a2).any()):
        hi = torch.where(prod(hi) < a2, 2 * hi, hi)
    for _ in range(80):  # the bracket shrinks below float64 resolution
        mid = (lo + hi) / 2
        low = prod(mid) < a2
        lo, hi = torch.where(low, mid, lo), torch.where(low, hi, mid)
    t1 = (lo + hi) / 2
    w_new = torch.sign(w) * (t1.unsqueeze(1) + c).clamp_min(0).sqrt()
    u_new = a.unsqueeze(0) / w_new.prod(1, keepdim=True)
    return torch.cat([w_new, u_new], dim=1)


def chain_balance_drift(
    net: DeepLinearNet,
    theta: torch.Tensor,
    noise_cov: torch.Tensor,
    lr: float,
    input_var: float = 1.0,
    batch_size: int = 1,
) -> torch.Tensor:
    """Expected one-step change of ``|u|^2 - w_1^2`` under SGD at a global minimum of a width-one chain.

    Closed form (our derivation): ``eta^2 s (P^2 tr Sigma - (P/w_1)^2 u^T Sigma u) / B`` with ``P = w_1...w_{D-1}``.
    Gradient flow keeps this quantity fixed; label noise moves it towards the minimum of ``tr C``.
    """
    if net.d_in != 1 or any(w != 1 for w in net.widths):
        raise ConfigError("chain_balance_drift needs a width-one chain: DeepLinearNet(1, (1,)*(D-1), d).")
    theta = theta.reshape(-1, net.dim).to(torch.float64)
    Ws = net.layers(theta)
    w = torch.cat([W.reshape(-1, 1) for W in Ws[:-1]], dim=1)
    u = Ws[-1].reshape(theta.shape[0], -1)
    P = w.prod(1)
    cov = noise_cov.to(torch.float64)
    uSu = torch.einsum("ri,ij,rj->r", u, cov, u)
    return lr**2 * input_var * (P**2 * torch.trace(cov) - (P / w[:, 0]) ** 2 * uSu) / batch_size


def label_noise_sgd(
    net: DeepLinearNet,
    theta0: torch.Tensor,
    teacher: torch.Tensor,
    input_cov: torch.Tensor,
    noise_cov: torch.Tensor,
    lr: float | Sequence[float],
    steps: int,
    batch_size: int = 1,
    record_every: int = 100,
    seed: int = 0,
    divergence: float = 1e8,
    chunk: int = 500,
    track: bool = True,
    chain_kernel: bool = False,
) -> dict[str, np.ndarray]:
    """Online SGD (fresh inputs and fresh label noise every step) on ``R`` replicas at once.

    ``theta0``: ``(R, P)``; ``noise_cov``: ``(d, d)`` or one per replica ``(R, d, d)``; ``lr``: one value or
    one per replica. Every ``record_every`` steps the exact population ``S``, ``tr H``, ``tr C`` and the
    excess loss are recorded (for width-one chains also the same three at the gradient-flow limit of
    the iterate, ``flow_sharpness``, ``flow_trace_hessian``, ``flow_trace_fluctuation``). A replica
    whose parameters become non-finite or exceed ``divergence`` is frozen
    and marked in ``diverged``; its later records are NaN. The loop runs in numpy (float64), drawing
    random numbers ``chunk`` steps at a time; the result depends only on ``seed``. ``track=False``
    skips the curvature records (only ``theta_final`` and ``diverged`` are returned). ``chain_kernel=True``
    uses, for a two-layer width-one chain with ``batch_size=1``, a step written out on one-dimensional arrays
    (about twice as fast; same random numbers, equal results up to round-off); otherwise it is ignored.
    """
    if not (isinstance(steps, int) and steps > 0) or not (isinstance(record_every, int) and record_every > 0):
        raise ConfigError("steps and record_every must be positive integers.")
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer.")
    dt = torch.float64
    theta = theta0.reshape(-1, net.dim).to(dt).numpy().copy()
    theta_start = theta.copy()
    R = theta.shape[0]
    lrs = np.asarray(lr, dtype=float).reshape(-1)
    if lrs.size not in (1, R) or bool((lrs <= 0).any()) or not np.isfinite(lrs).all():
        raise ConfigError(f"lr must be one positive value or one per replica ({R}).")
    lrs = np.broadcast_to(lrs, (R,)).reshape(R, 1).copy()
    A = teacher.to(dt)
    Sx = input_cov.to(dt)
    noise = noise_cov.to(dt).expand(R, net.d_out, net.d_out).contiguous()
    if A.shape != (net.d_out, net.d_in) or Sx.shape != (net.d_in, net.d_in):
        raise ConfigError(f"teacher must be ({net.d_out}, {net.d_in}) and input_cov ({net.d_in}, {net.d_in}).")
    if not torch.allclose(noise, noise.transpose(-1, -2)) or float(torch.linalg.eigvalsh(noise).min()) < -1e-12:
        raise ConfigError(
            "every noise covariance must be symmetric positive semi-definite; build them with "
            "noise_covariance(ratio, trace)."
        )
    Lx = torch.linalg.cholesky(Sx).numpy()
    evals, evecs = torch.linalg.eigh(noise)  # a square root that also works for singular covariances
    Le = (evecs * evals.clamp_min(0).sqrt().unsqueeze(-2)).numpy()  # (R, d, d)
    An = A.numpy()
    rng = np.random.default_rng(seed)
    alive = np.ones(R, dtype=bool)
    is_chain = net.d_in == 1 and all(w == 1 for w in net.widths)
    flow_keys = ["flow_sharpness", "flow_trace_hessian", "flow_trace_fluctuation"]
    keys = ["sharpness", "trace_hessian", "trace_fluctuation", "excess_loss"] + (flow_keys if is_chain else [])
    rec_steps: list[int] = []
    recs: dict[str, list] = {k: [] for k in keys}
    sizes = [a * b for a, b in net.shapes]
    offsets = np.cumsum([0, *sizes])

    def record(t: int, current: np.ndarray | None = None) -> None:
        if not track:
            return
        with single_thread():
            _record(t, current)

    def _record(t: int, current: np.ndarray | None = None) -> None:
        now = theta if current is None else current
        th = torch.from_numpy(np.where(alive[:, None], now, theta_start))  # dead rows: harmless stand-in
        cs = curvature_summary(net, th, A, Sx, noise)
        cs["excess_loss"] = vmap(lambda p: population_loss(net, p, A, Sx))(th)
        if is_chain:
            flow = curvature_summary(net, chain_flow_limit(net, th, A), A, Sx, noise)
            cs.update({"flow_" + k: v for k, v in flow.items()})
        rec_steps.append(t)
        for k in keys:
            recs[k].append(np.where(alive, cs[k].numpy(), np.nan))

    record(0)
    t = 0
    fast = chain_kernel and is_chain and net.depth == 2 and batch_size == 1
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected and recorded below
        while t < steps:
            n = min(chunk, steps - t)
            X = rng.standard_normal((n, R, batch_size, net.d_in)) @ Lx.T
            E = np.einsum("nrbk,rjk->nrbj", rng.standard_normal((n, R, batch_size, net.d_out)), Le)
            Y = X @ An.T + E
            if fast:
                t, theta = _chain_steps(theta, X, Y, lrs[:, 0], alive, t, steps, record_every, record, divergence)
                continue
            for i in range(n):
                Ws = [theta[:, offsets[k] : offsets[k + 1]].reshape(R, *s) for k, s in enumerate(net.shapes)]
                hs = [X[i]]
                for W in Ws:
                    hs.append(hs[-1] @ W.transpose(0, 2, 1))
                delta = (hs[-1] - Y[i]) / batch_size
                grads: list = [None] * len(Ws)
                for k in range(len(Ws) - 1, -1, -1):
                    grads[k] = (delta.transpose(0, 2, 1) @ hs[k]).reshape(R, -1)
                    if k:
                        delta = delta @ Ws[k]
                theta = theta - lrs * np.concatenate(grads, axis=1) * alive[:, None]
                t += 1
                if t % record_every == 0 or t == steps:
                    bad = ~np.isfinite(theta).all(1) | (np.abs(theta).max(1) > divergence)
                    if bad.any():
                        alive &= ~bad
                        theta[bad] = 0.0
                    record(t)
    out = {k: np.stack(v) for k, v in recs.items()} if track else {}
    out["steps"] = np.asarray(rec_steps)
    out["diverged"] = ~alive
    out["theta_final"] = theta
    return out


def _chain_steps(
    theta: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    lr: np.ndarray,
    alive: np.ndarray,
    t: int,
    steps: int,
    record_every: int,
    record,
    divergence: float,
) -> tuple[int, np.ndarray]:
    """SGD steps of ``f(x) = u w x`` (batch 1) for one chunk of draws ``X (n,R,1,1)``, ``Y (n,R,1,d)``.

    The same update as the generic loop, on one-dimensional arrays: ``h = x w``, ``delta = h u - y``,
    ``u -= eta h delta``, ``w -= eta x u.delta``. Divergence checks and records as in ``label_noise_sgd``.
    """
    d = Y.shape[-1]
    x_all = np.ascontiguousarray(X[:, :, 0, 0])
    y_all = [np.ascontiguousarray(Y[:, :, 0, j]) for j in range(d)]
    w = theta[:, 0].copy()
    us = [theta[:, 1 + j].copy() for j in range(d)]
    lr = lr * alive
    for i in range(x_all.shape[0]):
        x = x_all[i]
        h = x * w
        deltas = [h * us[j] - y_all[j][i] for j in range(d)]
        dot = deltas[0] * us[0]
        for j in range(1, d):
            dot += deltas[j] * us[j]
        step_u = lr * h
        for j in range(d):
            us[j] -= step_u * deltas[j]
        w -= lr * (dot * x)
        t += 1
        if t % record_every == 0 or t == steps:
            theta = np.column_stack([w, *us])
            bad = ~np.isfinite(theta).all(1) | (np.abs(theta).max(1) > divergence)
            if bad.any():
                alive &= ~bad
                theta[bad] = 0.0
                w, us, lr = theta[:, 0].copy(), [theta[:, 1 + j].copy() for j in range(d)], lr * alive
            record(t, theta)
    return t, np.column_stack([w, *us])


def extrapolate_to_zero(etas: Sequence[float], values: Sequence[float], degree: int = 1) -> float:
    """Least-squares polynomial in ``eta`` through ``(eta, value)`` evaluated at ``eta = 0`` (Richardson extrapolation).

    SGD's stationary sharpness differs from its small-step limit by ``O(eta)``; with two step sizes
    ``eta`` and ``2 eta`` the line (``degree=1``) gives ``2 v(eta) - v(2 eta)``. ``degree=2`` also removes
    the ``O(eta^2)`` term; it needs at least three step sizes and amplifies noise more.
    """
    x, y = np.asarray(etas, dtype=float), np.asarray(values, dtype=float)
    if not (isinstance(degree, int) and degree >= 1):
        raise ConfigError(f"degree={degree!r} must be a positive integer (1: line, 2: parabola in eta).")
    if x.size < degree + 1 or np.unique(x).size < degree + 1 or x.shape != y.shape:
        raise ConfigError(
            f"extrapolate_to_zero with degree={degree} needs values at >= {degree + 1} distinct "
            "step sizes, one value per step size."
        )
    return float(np.polyfit(x, y, degree)[-1])


# ----------------------------------------------------------------------------- stability of online SGD
def online_sgd_threshold(batch_size: int = 1) -> float:
    """Largest ``eta * lambda`` at which online SGD on a quadratic with Gaussian inputs is mean-square stable.

    Along an eigen-direction of curvature ``lambda`` one step multiplies the error by ``1 - eta lambda xbar2``,
    where ``xbar2`` is the batch mean of ``x^2`` with ``E[xbar2] = 1`` and ``E[xbar2^2] = 1 + 2/B`` (Gaussian
    ``x``); the second moment contracts iff ``1 - 2 eta lambda + (1 + 2/B) (eta lambda)^2 < 1``, i.e.
    ``eta lambda < 2 / (1 + 2/B)``: ``2/3`` for ``B = 1``, ``2`` (gradient descent) as ``B -> infinity`` (our
    derivation; cf. the "edge of stochastic stability" of Andreyev & Beneventano, 2024).
    """
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer.")
    return 2.0 / (1.0 + 2.0 / batch_size)


def multiplicative_ar1(
    eta_lambda: float,
    steps: int,
    chains: int = 2000,
    batch_size: int = 1,
    noise_var: float = 1.0,
    eta: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """Simulate ``z_{t+1} = (1 - eta lambda xbar2_t) z_t + eta xi_t`` (``xbar2``: batch mean of squared Gaussians,
    ``E xi^2 = noise_var``) for many chains from ``z = 0``; returns the variance over chains at every step.

    The stationary variance is ``eta^2 v / (2 eta lambda - (1 + 2/B) (eta lambda)^2)`` below
    ``online_sgd_threshold(B)`` and infinite above it.
    """
    if not (isinstance(steps, int) and steps > 0 and isinstance(chains, int) and chains > 1):
        raise ConfigError("steps must be a positive integer and chains an integer > 1.")
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer.")
    rng = np.random.default_rng(seed)
    z = np.zeros(chains)
    out = np.empty(steps)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            x2 = np.mean(rng.standard_normal((chains, batch_size)) ** 2, axis=1)
            z = (1.0 - eta_lambda * x2) * z + eta * math.sqrt(noise_var) * rng.standard_normal(chains)
            out[t] = np.var(z)
    return out


def ar1_stationary_variance(eta_lambda: float, eta: float = 0.1, noise_var: float = 1.0, batch_size: int = 1) -> float:
    """``eta^2 v / (2 eta lambda - (1 + 2/B) (eta lambda)^2)``, ``inf`` at or above ``online_sgd_threshold(B)``."""
    denom = 2.0 * eta_lambda - (1.0 + 2.0 / batch_size) * eta_lambda**2
    return float(eta**2 * noise_var / denom) if denom > 0 else math.inf
