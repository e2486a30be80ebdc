"""Preconditioned sharpness and the stability thresholds of GD, heavy ball and Adam.

An optimiser that steps ``theta <- theta - eta * P^{-1} (...)`` with a diagonal preconditioner ``P``
is stable on a quadratic with Hessian ``H`` according to the eigenvalues of ``P^{-1} H`` instead of
``H``. This module computes the **preconditioned sharpness** ``lambda_1(P^{-1} H)`` as the top
eigenvalue of the symmetric matrix ``P^{-1/2} H P^{-1/2}`` (same spectrum) with Hessian-vector
products and :func:`~instabilities.curvature.lanczos`, reads ``P`` from the state of Adam / Clipped-Ada
(``P = diag(sqrt(v_hat) + eps)`` or ``diag(min(sqrt(v_hat), c) + eps)``), and gives the thresholds
``2/eta`` (GD), ``(2 + 2 beta)/eta`` (heavy ball) and ``(2 + 2 beta1)/((1 - beta1) eta)`` (Adam with a
frozen preconditioner; 38/eta for beta1 = 0.9, Cohen et al. 2022).
"""

from __future__ import annotations

import math

import torch

from ..config import ConfigError
from ..optim import optimizer_preconditioner  # reads P from the optimizer state (one home: optim)
from .eigen import EigResult, lanczos
from .operator import HessianOperator, Objective


# -- thresholds -------------------------------------------------------------------------------
def _check_eta_beta(eta: float, beta: float) -> None:
    if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta > 0):
        raise ConfigError(f"eta={eta!r} must be a finite number > 0.")
    if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
        raise ConfigError(f"beta={beta!r} must lie in [0, 1).")


def gd_threshold(eta: float) -> float:
    """GD on a quadratic is stable iff every curvature is below ``2/eta``."""
    _check_eta_beta(eta, 0.0)
    return 2.0 / eta


def momentum_threshold(eta: float, beta: float) -> float:
    """Heavy ball ``v <- beta v - eta g; theta <- theta + v`` is stable iff curvature < ``(2 + 2 beta)/eta``."""
    _check_eta_beta(eta, beta)
    return (2.0 + 2.0 * beta) / eta


def adam_threshold(eta: float, beta1: float) -> float:
    """Adam with a frozen preconditioner is stable iff ``lambda(P^{-1}H) < (2 + 2 beta1)/((1 - beta1) eta)``."""
    _check_eta_beta(eta, beta1)
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * eta)


# -- preconditioners --------------------------------------------------------------------------
def preconditioned_sharpness_bounds(sharpness: float, precond: torch.Tensor) -> tuple[float, float]:
    """For ``S = lambda_1(H) > 0``: ``S / max(P) <= lambda_1(P^{-1}H) <= S / min(P)``."""
    return sharpness / float(precond.max()), sharpness / float(precond.min())


class PreconditionedHessianOperator(HessianOperator):
    """``v -> P^{-1/2} H P^{-1/2} v`` for a positive diagonal ``P`` (symmetric; spectrum of ``P^{-1}H``)."""

    def __init__(
        self, objective: Objective, theta: torch.Tensor, precond: torch.Tensor, method: str = "reverse"
    ) -> None:
        super().__init__(objective, theta, method)
        precond = torch.as_tensor(precond, dtype=self.dtype, device=self.device).reshape(-1)
        if precond.numel() != self.dim:
            raise ConfigError(f"the preconditioner has {precond.numel()} entries but theta has {self.dim}.")
        if not bool((precond > 0).all()) or not bool(torch.isfinite(precond).all()):
            raise ConfigError("the preconditioner diagonal must be finite and > 0 (add eps > 0 to sqrt(v_hat)).")
        self.precond = precond
        self.scale = precond.rsqrt()

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.scale * super().matvec(self.scale * v.to(self.dtype))

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.scale[:, None] * super().matmat(self.scale[:, None] * V.to(self.dtype))

    def dense(self) -> torch.Tensor:
        return self.scale[:, None] * super().dense() * self.scale[None, :]


def preconditioned_sharpness(
    objective: Objective, theta: torch.Tensor, precond: torch.Tensor, k: int = 1, **lanczos_kwargs
) -> EigResult:
    """Top-``k`` eigenpairs of ``P^{-1/2} H P^{-1/2}`` (values = top eigenvalues of ``P^{-1}H``)."""
    op = PreconditionedHessianOperator(objective, theta, precond)
    return lanczos(op, k, **lanczos_kwargs)


class PreconditionedSharpnessTracker:
    """Training callback: every ``every`` steps log ``lambda_1(P^{-1}H)`` of the run's Adam-type optimiser.

    A thin callback around THE tracker (:class:`~instabilities.curvature.tracker.SharpnessTracker`, Lanczos,
    warm-started, with the preconditioner as an operator option). Logs ``precond_step``,
    ``precond_sharpness`` and ``precond_min`` / ``precond_max`` (range of ``P``) into ``history.extra``.
    Use it with :func:`train.train` (``callbacks=[tracker]``).
    """

    def __init__(self, every: int, tol: float = 1e-3, max_iter: int = 200) -> None:
        from .tracker import SharpnessTracker

        if not (isinstance(every, int) and every > 0):
            raise ConfigError(f"every={every!r} must be a positive integer.")
        self.every, self.tol, self.max_iter = every, tol, max_iter
        self.tracker = SharpnessTracker(k=1, solver="lanczos", tol=tol, max_iter=max_iter)

    def __call__(self, ctx) -> None:
        if ctx.step % self.every:
            return
        P = optimizer_preconditioner(ctx.optimizer)
        if P is None:
            return
        res = self.tracker(ctx.problem.hessian_objective, ctx.theta, seed=ctx.step, precond=P)
        ctx.history.log("precond_step", ctx.step)
        ctx.history.log("precond_sharpness", float(res.values[0]))
        ctx.history.log("precond_min", float(P.min()))
        ctx.history.log("precond_max", float(P.max()))
