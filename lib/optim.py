"""Optimisers over the flat parameter vector.

``build_optimizer`` maps a name from :data:`OPTIMIZERS` to a ``torch.optim.Optimizer``.
GD is SGD on the full batch; the training loop decides the batch.

``rmsprop`` is Adam with ``beta1 = 0`` (bias-corrected RMSProp, the "RMS" of Wang & Roberts'
code). ``clipped_ada`` is :class:`ClippedAda`: Adam whose denominator ``sqrt(v_hat)`` is clipped
from above at ``c`` (our reconstruction of Wang & Roberts' Clipped-Ada, inferred from the authors'
code; ``beta1 = 0`` gives "RMS-UB").
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from .config import ConfigError

OPTIMIZERS = ("gd", "sgd", "momentum", "nesterov", "adam", "rmsprop", "clipped_ada")


def _check_unit_interval(name: str, value: float, allow_zero: bool = True) -> None:
    ok = isinstance(value, (int, float)) and (0.0 <= value < 1.0 if allow_zero else 0.0 < value < 1.0)
    if not ok:
        raise ConfigError(f"{name}={value!r} must lie in [0, 1); typical values are 0.9 (beta1) and 0.999 (beta2).")


class ClippedAda(torch.optim.Optimizer):
    """Adam with its denominator clipped from above (Clipped-Ada, reconstruction).

    Per coordinate, with bias-corrected moments ``m_hat``, ``v_hat``::

        d = min(sqrt(v_hat), c);   theta <- theta - lr * m_hat / (d + eps)

    so every coordinate moves with an effective step ``lr / (d + eps) >= lr / (c + eps)``:
    the preconditioner can no longer grow without bound to absorb curvature. ``c = inf``
    recovers Adam exactly; ``beta1 = 0`` gives clipped RMSProp ("RMS-UB").
    The state uses the names of ``torch.optim.Adam`` (``step``, ``exp_avg``, ``exp_avg_sq``).
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, c: float = 1.0) -> None:
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"lr={lr!r} must be a finite number > 0.")
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ConfigError(f"betas={betas!r} must be a pair (beta1, beta2), e.g. (0.9, 0.999).")
        _check_unit_interval("beta1", betas[0])
        _check_unit_interval("beta2", betas[1], allow_zero=False)
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
            raise ConfigError(f"eps={eps!r} must be a finite number >= 0 (e.g. 1e-8).")
        if not (isinstance(c, (int, float)) and c > 0 and not math.isnan(c)):
            raise ConfigError(f"c={c!r} (the clip on sqrt(v_hat)) must be > 0; use c=float('inf') for plain Adam.")
        if c + eps <= 0:
            raise ConfigError("c + eps must be > 0.")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, c=c))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                g = p.grad
                state["exp_avg"].mul_(beta1).add_(g, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat = state["exp_avg"] / (1 - beta1 ** t)
                denom = clipped_denominator(state["exp_avg_sq"], t, beta2, group["c"], group["eps"])
                p.sub_(group["lr"] * m_hat / denom)
        return loss


def clipped_denominator(exp_avg_sq: torch.Tensor, step: float, beta2: float, c: float = math.inf,
                        eps: float = 0.0) -> torch.Tensor:
    """``min(sqrt(v_hat), c) + eps`` with ``v_hat = exp_avg_sq / (1 - beta2**step)`` (``c=inf``: Adam's)."""
    d = (exp_avg_sq / (1 - beta2 ** step)).sqrt()
    if math.isfinite(c):
        d = d.clamp(max=c)
    return d + eps


def build_optimizer(name: str, params: list[torch.Tensor], lr: float, momentum: float = 0.0,
                    beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, clip: float = math.inf,
                    **extra: Any) -> torch.optim.Optimizer:
    """Optimizer ``name`` over ``params``.

    ``gd``/``sgd``: plain steps; ``momentum``/``nesterov``: heavy ball; ``adam``; ``rmsprop``
    (Adam with ``beta1=0``); ``clipped_ada`` (:class:`ClippedAda` with ``c=clip``).
    """
    if name in ("gd", "sgd"):
        return torch.optim.SGD(params, lr=lr)
    if name in ("momentum", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=name == "nesterov")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(beta1, beta2), eps=eps)
    if name == "rmsprop":
        return torch.optim.Adam(params, lr=lr, betas=(0.0, beta2), eps=eps)
    if name == "clipped_ada":
        return ClippedAda(params, lr=lr, betas=(beta1, beta2), eps=eps, c=clip)
    raise ConfigError(f"optimizer {name!r} unknown; choose one of {OPTIMIZERS}.")


def quadratic_trajectory(name: str, curvature: float, lr: float, steps: int, w0: float = 0.1,
                         divergence: float = 1e12, **options: Any) -> "torch.Tensor":
    """Iterates ``w_0..w_T`` of optimiser ``name`` on the 1-D quadratic ``L(w) = curvature/2 * w**2``.

    ``options`` go to :func:`build_optimizer` (``beta1``, ``beta2``, ``eps``, ``clip``, ``momentum``).
    The run stops early (and the trajectory is shorter) once ``|w|`` exceeds ``divergence``.
    """
    if not (isinstance(steps, int) and steps > 0):
        raise ConfigError(f"steps={steps!r} must be a positive integer.")
    w = torch.tensor([float(w0)], dtype=torch.float64, requires_grad=True)
    opt = build_optimizer(name, [w], lr, **options)
    out = [float(w0)]
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * curvature * w.pow(2)).sum().backward()
        opt.step()
        out.append(float(w.detach()))
        if not math.isfinite(out[-1]) or abs(out[-1]) > divergence:
            break
    return torch.tensor(out, dtype=torch.float64)
