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
from collections.abc import Callable

import numpy as np
import torch
from torch.func import jvp

from .. import optim
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


def second_moment_factor(
    eta: float, sharpness: float | np.ndarray, nonuniformity: float | np.ndarray, batch_size: int, n: int
) -> float | np.ndarray:
    """``q = (1 - eta a)^2 + eta^2 s^2 (n - b)/(b (n - 1))``: one SGD step multiplies ``E[x^2]`` by ``q``."""
    _check_eta(eta)
    a, s = np.asarray(sharpness, float), np.asarray(nonuniformity, float)
    if np.any(s < 0):
        raise ConfigError("the non-uniformity s is a standard deviation and must be >= 0.")
    q = (1 - eta * a) ** 2 + eta**2 * s**2 * batch_variance_factor(batch_size, n)
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


def simulate_sgd_1d(
    curvatures: np.ndarray, eta: float, batch_size: int, steps: int, n_paths: int, x0: float = 1.0, seed: int = 0
) -> np.ndarray:
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
def per_example_losses(
    fm: FlatModel, x: torch.Tensor, targets: torch.Tensor, loss: str
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``theta -> (loss of example 1, ..., loss of example n)`` with the book's conventions (mean = L)."""
    if loss == "mse":
        return lambda theta: 0.5 * (fm(theta, x) - targets).pow(2).sum(-1)
    if loss == "ce":
        return lambda theta: torch.nn.functional.cross_entropy(fm(theta, x), targets.long(), reduction="none")
    raise ConfigError(f"loss {loss!r} unknown; choose 'mse' or 'ce'.")


def directional_curvatures(
    per_example: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """``u^T H_i u`` for every example ``i`` (second derivative of each loss along ``u``), one pass."""
    theta, u = theta.detach(), u.detach().to(theta.dtype)
    first = lambda th: jvp(per_example, (th,), (u,))[1]  # noqa: E731
    return jvp(first, (theta,), (u,))[1].detach()


def batch_curvature_stats(per_example_curv: np.ndarray | torch.Tensor, eta: float, batch_size: int) -> dict[str, float]:
    """Sharpness along ``u`` (mean), non-uniformity (population std), and the SGD factor ``q`` for ``batch_size``."""
    h = np.asarray(torch.as_tensor(per_example_curv).cpu(), float).ravel()
    n = h.size
    a, s = float(h.mean()), float(h.std())
    return {
        "a": a,
        "s": s,
        "q": second_moment_factor(eta, a, s, batch_size, n),
        "s_max": max_nonuniformity(eta, a, batch_size, n),
        "eta_a": eta * a,
    }


# -- SGD and its SDE: one update, different example weights ----------------------------------------
WEIGHTINGS = ("gd", "sgd", "sde")


def example_weights(
    kind: str, batch_sizes: torch.Tensor, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Random example weights ``w`` (one row per member) with ``grad sum_i w_i l_i`` the step's gradient.

    * ``gd``:  ``w_i = 1/n`` (the full-batch gradient);
    * ``sgd``: ``w_i = 1[i in B]/b`` for a fresh batch ``B`` of ``b`` distinct examples (uniform,
      without replacement; ``b`` per row from ``batch_sizes``);
    * ``sde``: ``w_i = 1/n + sigma_b (z_i - mean(z))/sqrt(n)`` with ``z ~ N(0, I_n)`` and
      ``sigma_b^2 = (n-b)/(b(n-1))``: Gaussian weights with **the same mean and covariance** as the
      ``sgd`` weights, so the gradient noise ``sum_i (w_i - 1/n) grad l_i`` is Gaussian with exactly
      SGD's covariance ``sigma_b^2 Cov_i(grad l_i)``. One step with these weights is the
      Euler-Maruyama step (``dt = eta``) of the SDE that matches SGD's first two moments.
    """
    if kind not in WEIGHTINGS:
        raise ConfigError(f"weighting {kind!r} unknown; choose one of {WEIGHTINGS}.")
    b = torch.as_tensor(batch_sizes).reshape(-1)
    P = b.numel()
    if kind == "gd":
        return torch.full((P, n), 1.0 / n, dtype=dtype)
    if kind == "sgd":
        ranks = torch.rand(P, n, generator=generator).argsort(1).argsort(1)
        return (ranks < b[:, None]).to(dtype) / b[:, None].to(dtype)
    z = torch.randn(P, n, generator=generator, dtype=dtype)
    sigma = torch.sqrt((n - b.to(dtype)) / (b.to(dtype) * (n - 1)))
    return 1.0 / n + sigma[:, None] * (z - z.mean(1, keepdim=True)) / math.sqrt(n)


def weight_covariance(batch_size: int, n: int) -> np.ndarray:
    """Covariance of the ``sgd`` (and ``sde``) weights: ``(n-b)/(b n (n-1)) (I - 11^T/n)`` (our derivation)."""
    factor = batch_variance_factor(batch_size, n) / n
    return factor * (np.eye(n) - np.full((n, n), 1.0 / n))


def train_reweighted(
    per_example: Callable[[torch.Tensor], torch.Tensor],
    Theta0: torch.Tensor,
    eta: float,
    kinds: list[str],
    batch_sizes: list[int],
    max_steps: int,
    stop_loss: float,
    seed: int = 0,
    divergence_loss: float = 1e6,
) -> dict[str, np.ndarray]:
    """GD, SGD and matched-noise SDE runs as one vmapped population: ``theta <- theta - eta grad sum_i w_i l_i``.

    Row ``p`` of ``Theta0`` starts member ``p``, whose weights are of kind ``kinds[p]`` (see
    :func:`example_weights`) with batch size ``batch_sizes[p]`` (ignored for ``gd``). The arms differ
    only in the law of the weights, so the update is one line for all of them. A member stops once
    its full-batch loss ``mean_i l_i`` is below ``stop_loss`` (or after ``max_steps``) and is marked
    diverged when the loss is non-finite or above ``divergence_loss``. Returns ``theta`` (final
    parameters, NaN rows for diverged members), ``train_loss`` (final), ``steps``, ``diverged``.
    """
    from torch.func import grad_and_value, vmap

    _check_eta(eta)
    P = Theta0.shape[0]
    if len(kinds) != P or len(batch_sizes) != P:
        raise ConfigError(
            f"kinds and batch_sizes need one entry per member ({P}); got {len(kinds)}, {len(batch_sizes)}."
        )
    for k in kinds:
        if k not in WEIGHTINGS:
            raise ConfigError(f"weighting {k!r} unknown; choose one of {WEIGHTINGS}.")
    n = int(per_example(Theta0[0]).numel())
    for b in batch_sizes:
        _check_batch(int(b), n)
    dtype = Theta0.dtype
    gen = torch.Generator().manual_seed(seed)
    b_all = torch.as_tensor(batch_sizes)

    def weighted(th: torch.Tensor, w: torch.Tensor):
        losses = per_example(th)
        return (w * losses).sum(), losses.mean()

    step_fn = vmap(grad_and_value(weighted, has_aux=True))
    Theta = Theta0.clone()
    steps = np.full(P, max_steps, dtype=np.int64)
    final_loss = np.full(P, np.nan)
    diverged = np.zeros(P, dtype=bool)
    alive = np.ones(P, dtype=bool)
    for t in range(max_steps + 1):
        rows = np.flatnonzero(alive)
        W = torch.empty(rows.size, n, dtype=dtype)
        for kind in [k for k in WEIGHTINGS if any(kinds[r] == k for r in rows)]:  # fixed order: reproducible draws
            sel = [i for i, r in enumerate(rows) if kinds[r] == kind]
            W[sel] = example_weights(kind, b_all[rows[sel]], n, gen, dtype)
        idx = torch.as_tensor(rows)
        G, (_, loss) = step_fn(Theta[idx], W)
        loss_h = loss.detach().double().numpy()
        final_loss[rows] = loss_h
        bad = ~np.isfinite(loss_h) | (loss_h > divergence_loss)
        done = ~bad & ((loss_h < stop_loss) | (t == max_steps))
        diverged[rows[bad]] = True
        steps[rows[bad | done]] = t
        keep = ~bad & ~done
        alive[rows[~keep]] = False
        if not keep.any():
            break
        k = torch.as_tensor(np.flatnonzero(keep))
        Theta[idx[k]] = optim.update("gd", Theta[idx[k]], G[k], {}, {"lr": eta}).detach()  # the one GD rule
    theta = Theta.detach().numpy().copy()
    theta[diverged] = np.nan
    return {"theta": theta, "train_loss": final_loss, "steps": steps, "diverged": diverged}
