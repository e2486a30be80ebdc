"""Linear (mean-square) stability of SGD, after Wu, Ma & E (2018).

**1-D model.** Example ``i`` contributes the quadratic loss ``h_i x^2 / 2``; the full-batch
curvature is ``a = mean(h_i)`` (the sharpness) and the *non-uniformity* is
``s = std(h_i)`` (population standard deviation). SGD with step ``eta`` and a batch ``B`` of
``b`` examples drawn without replacement from ``n`` multiplies ``x`` by ``1 - eta * h_B``, where
``h_B`` is the batch mean of the ``h_i``. Hence (our derivation, the finite-population variance
of a sample mean)::

    E[x_{t+1}^2] = q * E[x_t^2],   q = (1 - eta a)^2 + eta^2 s^2 (n - b) / (b (n - 1)).

The minimum is mean-square stable iff ``q <= 1``: the sharpness condition ``0 <= a <= 2/eta``
of GD plus a non-uniformity condition that tightens as ``b`` shrinks.

**Networks.** Along the top Hessian eigenvector ``u`` we measure the per-example curvatures
``u^T H_i u`` (one forward-over-forward pass for all examples), whose mean is ``u^T H u = S``
and whose spread is the non-uniformity along ``u`` used in the 1-D formula (a projection of
Wu, Ma & E's matrix criterion onto the sharpest direction; our simplification).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch.func import jvp

from ..config import ConfigError
from ..models import FlatModel


def _check_batch(batch_size: int, n: int) -> None:
    if not (isinstance(n, (int, np.integer)) and n >= 2):
        raise ConfigError(f"n={n!r} (the number of examples) must be an integer >= 2.")
    if not (isinstance(batch_size, (int, np.integer)) and 1 <= batch_size <= n):
        raise ConfigError(f"batch_size={batch_size!r} must be an integer in [1, n={n}]; use batch_size=n for GD.")


def _check_eta(eta: float) -> None:
    if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta > 0):
        raise ConfigError(f"eta={eta!r} must be a finite number > 0.")


def batch_variance_factor(batch_size: int, n: int) -> float:
    """``Var(batch mean) / population variance = (n - b) / (b (n - 1))`` for sampling without replacement."""
    _check_batch(batch_size, n)
    return (n - batch_size) / (batch_size * (n - 1))


def second_moment_factor(eta: float, sharpness: float | np.ndarray, nonuniformity: float | np.ndarray,
                         batch_size: int, n: int) -> float | np.ndarray:
    """``q = (1 - eta a)^2 + eta^2 s^2 (n - b)/(b (n - 1))``: one SGD step multiplies ``E[x^2]`` by ``q``."""
    _check_eta(eta)
    a, s = np.asarray(sharpness, float), np.asarray(nonuniformity, float)
    if np.any(s < 0):
        raise ConfigError("the non-uniformity s is a standard deviation and must be >= 0.")
    q = (1 - eta * a) ** 2 + eta ** 2 * s ** 2 * batch_variance_factor(batch_size, n)
    return float(q) if q.ndim == 0 else q


def max_nonuniformity(eta: float, sharpness: float | np.ndarray, batch_size: int, n: int) -> float | np.ndarray:
    """Largest ``s`` with ``q <= 1`` at curvature ``a`` (``0`` outside ``0 <= a <= 2/eta``; ``inf`` for GD).

    ``s_max = sqrt(eta a (2 - eta a) * b (n - 1) / (n - b)) / eta``.
    """
    _check_eta(eta)
    a = np.asarray(sharpness, float)
    margin = np.clip(eta * a * (2 - eta * a), 0.0, None)
    factor = batch_variance_factor(batch_size, n)
    with np.errstate(divide="ignore"):
        s = np.where(margin > 0, np.sqrt(margin / factor) / eta if factor > 0 else np.inf, 0.0)
    return float(s) if s.ndim == 0 else s


def is_mean_square_stable(eta: float, sharpness: float, nonuniformity: float, batch_size: int, n: int) -> bool:
    """Whether ``q <= 1`` (Wu, Ma & E's linear stability in the 1-D model)."""
    return bool(second_moment_factor(eta, sharpness, nonuniformity, batch_size, n) <= 1.0)


def simulate_sgd_1d(curvatures: np.ndarray, eta: float, batch_size: int, steps: int, n_paths: int,
                    x0: float = 1.0, seed: int = 0) -> np.ndarray:
    """Monte Carlo of SGD on ``sum_i h_i x^2/(2n)``: returns ``x_t`` for every path, shape ``(n_paths, steps+1)``.

    Each step draws a fresh batch of ``batch_size`` distinct examples (without replacement).
    """
    h = np.asarray(curvatures, float).ravel()
    n = h.size
    _check_batch(batch_size, n)
    _check_eta(eta)
    if not (isinstance(steps, int) and steps > 0 and isinstance(n_paths, int) and n_paths > 0):
        raise ConfigError("steps and n_paths must be positive integers.")
    rng = np.random.default_rng(seed)
    xs = np.empty((n_paths, steps + 1))
    xs[:, 0] = x0
    for t in range(steps):
        # a batch without replacement per path: the first b entries of a random permutation
        idx = np.argsort(rng.random((n_paths, n)), axis=1)[:, :batch_size]
        h_b = h[idx].mean(axis=1)
        xs[:, t + 1] = (1 - eta * h_b) * xs[:, t]
    return xs


def curvatures_with_moments(n: int, mean: float, std: float) -> np.ndarray:
    """``n`` per-example curvatures with exactly the given mean and population std (two-point spread)."""
    if n < 2:
        raise ConfigError(f"n={n} must be >= 2.")
    signs = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    signs = signs - signs.mean()
    return mean + std * signs / signs.std()


# -- networks -----------------------------------------------------------------------------------
def per_example_losses(fm: FlatModel, x: torch.Tensor, targets: torch.Tensor, loss: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``theta -> (loss of example 1, ..., loss of example n)`` with the book's conventions (mean = L)."""
    if loss == "mse":
        return lambda theta: 0.5 * (fm(theta, x) - targets).pow(2).sum(-1)
    if loss == "ce":
        return lambda theta: torch.nn.functional.cross_entropy(fm(theta, x), targets.long(), reduction="none")
    raise ConfigError(f"loss {loss!r} unknown; choose 'mse' or 'ce'.")


def directional_curvatures(per_example: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
                           u: torch.Tensor) -> torch.Tensor:
    """``u^T H_i u`` for every example ``i`` (second derivative of each loss along ``u``), one pass."""
    theta, u = theta.detach(), u.detach().to(theta.dtype)
    first = lambda th: jvp(per_example, (th,), (u,))[1]  # noqa: E731
    return jvp(first, (theta,), (u,))[1].detach()


def batch_curvature_stats(per_example_curv: np.ndarray | torch.Tensor, eta: float, batch_size: int) -> dict[str, float]:
    """Sharpness along ``u`` (mean), non-uniformity (population std), and the SGD factor ``q`` for ``batch_size``."""
    h = np.asarray(torch.as_tensor(per_example_curv).cpu(), float).ravel()
    n = h.size
    a, s = float(h.mean()), float(h.std())
    return {"a": a, "s": s, "q": second_moment_factor(eta, a, s, batch_size, n),
            "s_max": max_nonuniformity(eta, a, batch_size, n), "eta_a": eta * a}
