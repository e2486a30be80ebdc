"""Gradient flow ``d theta / dt = -grad L(theta)`` as a reference for gradient descent.

Gradient descent with step size ``eta`` after ``k`` steps is compared with the flow at time
``t = eta * k``: if GD were a faithful discretisation, the two would coincide. The flow is
integrated with the classical fourth-order Runge-Kutta method (RK4) with the step
``h = min(alpha / S, max_step)``, where the sharpness ``S`` (top Hessian eigenvalue, by
:func:`instabilities.curvature.lanczos`, warm-started) is re-estimated every ``sharpness_every``
RK4 steps. RK4 on a quadratic with curvature ``S`` is stable for ``h S`` up to about 2.8, so
``alpha = 1`` leaves a safety margin even when the sharpness grows between two estimates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.func import grad

from .. import curvature
from ..config import ConfigError, require_positive, require_positive_int
from ..losses import Objective


@dataclasses.dataclass
class FlowTrajectory:
    """The flow at the requested times: iterates, loss and sharpness (``nan`` where not measured)."""

    times: np.ndarray
    thetas: torch.Tensor  # (len(times), dim)
    loss: np.ndarray
    sharpness: np.ndarray
    n_rk4_steps: int
    n_sharpness_evals: int
    diverged: bool = False


def rk4_step(gradient: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, h: float) -> torch.Tensor:
    """One classical Runge-Kutta step of ``d theta/dt = -gradient(theta)`` with step ``h``."""
    k1 = -gradient(theta)
    k2 = -gradient(theta + 0.5 * h * k1)
    k3 = -gradient(theta + 0.5 * h * k2)
    k4 = -gradient(theta + h * k3)
    return theta + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def gradient_flow(
    objective: Objective,
    theta0: torch.Tensor,
    times: Sequence[float],
    alpha: float = 1.0,
    max_step: float = 1.0,
    sharpness_every: int = 5,
    eig_tol: float = 1e-3,
    eig_max_iter: int = 100,
    sharpness_objective: Objective | None = None,
    max_rk4_steps: int = 1_000_000,
) -> FlowTrajectory:
    """Integrate the gradient flow of ``objective`` from ``theta0`` and return it at ``times``.

    ``times`` must be non-decreasing and >= 0 (compare with GD at ``t = eta * step``).
    The RK4 step is ``min(alpha / S, max_step)`` (shortened to land exactly on each requested
    time); ``S`` is re-estimated every ``sharpness_every`` steps and at every requested time
    (reported in ``sharpness``). ``sharpness_objective`` (default ``objective``) is the loss whose
    Hessian is used for ``S`` (e.g. a subset of the data). A non-finite iterate stops the
    integration; the remaining rows are ``nan`` and ``diverged`` is set.
    """
    require_positive("alpha", alpha)
    require_positive("max_step", max_step)
    require_positive_int("sharpness_every", sharpness_every)
    require_positive_int("max_rk4_steps", max_rk4_steps)
    times_arr = np.asarray(list(times), dtype=float)
    if times_arr.ndim != 1 or len(times_arr) == 0:
        raise ConfigError("times must be a non-empty sequence of flow times (e.g. eta * steps).")
    if np.any(times_arr < 0) or np.any(np.diff(times_arr) < 0) or not np.all(np.isfinite(times_arr)):
        raise ConfigError("times must be finite, >= 0 and non-decreasing; sort them first.")
    hess_obj = sharpness_objective or objective
    gradient = grad(objective)
    theta = theta0.detach().clone()
    prev_vec: torch.Tensor | None = None
    n_evals = 0

    def estimate(th: torch.Tensor) -> float:
        nonlocal prev_vec, n_evals
        op = curvature.HessianOperator(hess_obj, th, "reverse")
        res = curvature.lanczos(op, 1, max_iter=eig_max_iter, tol=eig_tol, v0=prev_vec, seed=n_evals)
        prev_vec = res.vectors
        n_evals += 1
        return float(res.values[0])

    out = torch.full((len(times_arr), theta.numel()), float("nan"), dtype=theta.dtype, device=theta.device)
    losses = np.full(len(times_arr), np.nan)
    sharp = np.full(len(times_arr), np.nan)
    t, n_steps, since_estimate, diverged = 0.0, 0, 0, False
    S = estimate(theta)
    for i, target in enumerate(times_arr):
        while t < target - 1e-12 * max(1.0, target):
            if since_estimate >= sharpness_every:
                S, since_estimate = estimate(theta), 0
            h = min(alpha / max(S, 1e-12), max_step, target - t)
            theta = rk4_step(gradient, theta, h).detach()
            t += h
            n_steps += 1
            since_estimate += 1
            if n_steps >= max_rk4_steps:
                raise ConfigError(
                    f"gradient flow needed more than max_rk4_steps={max_rk4_steps} RK4 steps; "
                    "raise max_rk4_steps or shorten the time span."
                )
            if not bool(torch.isfinite(theta).all()):
                diverged = True
                break
        if diverged:
            break
        out[i] = theta
        with torch.no_grad():
            losses[i] = float(objective(theta))
        S, since_estimate = estimate(theta), 0
        sharp[i] = S
    return FlowTrajectory(times_arr, out, losses, sharp, n_steps, n_evals, diverged)


def distances(thetas_a: torch.Tensor | np.ndarray, thetas_b: torch.Tensor | np.ndarray) -> np.ndarray:
    """Euclidean distance ``||a_i - b_i||`` between matching rows of two iterate arrays."""
    a = torch.as_tensor(np.asarray(thetas_a) if isinstance(thetas_a, np.ndarray) else thetas_a).double()
    b = torch.as_tensor(np.asarray(thetas_b) if isinstance(thetas_b, np.ndarray) else thetas_b).double()
    if a.shape != b.shape:
        raise ConfigError(f"compare iterates of one shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    return (a - b).norm(dim=-1).cpu().numpy()
