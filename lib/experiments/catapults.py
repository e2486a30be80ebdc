"""Catapults in a real network (after Lewkowycz et al., 2020) and the central flow against GD (after Cohen et
al., 2025), for the chapter on catapults and self-stabilization.

Registered experiments (each with a ``ci`` and a ``full`` config):

* ``catapult_net``  - a wide one-hidden-layer ReLU network trained by full-batch GD (MSE) with step sizes
  ``eta = c / lambda_0`` for a grid of ``c = eta lambda_0`` (``lambda_0``: the sharpness at initialisation),
  all members one vmapped population from one initialisation: loss spike, sharpness drop, final sharpness,
  test accuracy and divergence against ``eta lambda_0``;
* ``central_flow``  - GD at the edge of stability and its central flow
  (:func:`instabilities.dynamics.central_flow.central_flow`) from the same initialisation.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch

from .. import curvature
from ..config import ConfigError, require_choice, require_positive, require_positive_int
from ..dynamics.central_flow import central_flow
from ..dynamics.gradient_flow import distances
from ..train import StepContext, build_problem, train
from . import registry as experiments
from .common import NetConfig, run_population


@dataclasses.dataclass(frozen=True)
class CatapultNetConfig(NetConfig):
    """Full-batch GD on a wide ReLU MLP at the step sizes ``eta_lambda0 / lambda_0``."""

    dataset: str = "mnist1d"
    n_train: int = 128
    n_test: int = 1000
    widths: tuple[int, ...] = (512,)
    activation: str = "relu"
    eta_lambda0: tuple[float, ...] = (0.5, 1.0, 1.5, 1.9, 2.2, 2.6, 3.0, 3.3, 3.6, 4.0, 5.0, 8.0, 12.0)
    steps: int = 60
    eig_every: int = 4
    eig_tol: float = 1e-4
    divergence_loss: float = 1e4
    seed: int = 0
    dtype: str = "float32"

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.eta_lambda0, tuple) or not self.eta_lambda0:
            raise ConfigError(
                f"eta_lambda0={self.eta_lambda0!r} must be a non-empty tuple of multiples of "
                "1/lambda_0, e.g. (1.0, 3.0, 6.0)."
            )
        for c in self.eta_lambda0:
            require_positive("eta_lambda0 (each entry)", c)
        require_positive_int("steps", self.steps)
        require_positive_int("eig_every", self.eig_every)
        require_positive("eig_tol", self.eig_tol)
        require_positive("divergence_loss", self.divergence_loss)
        require_choice("dtype", self.dtype, ("float32", "float64"))


def run_catapult_net(
    cfg: CatapultNetConfig, device: str = "cpu", progress=None, name: str | None = None
) -> dict[str, np.ndarray]:
    """Measure ``lambda_0`` (converged Lanczos at the initialisation), then train every
    ``eta = eta_lambda0 / lambda_0`` as one population with the sharpness every ``eig_every`` steps."""
    base = cfg.train_config(
        optimizer="gd",
        lr=1.0,
        steps=cfg.steps,
        seed=cfg.seed,
        eig_every=cfg.eig_every,
        n_eigs=1,
        eig_tol=cfg.eig_tol,
        divergence_loss=cfg.divergence_loss,
        device=device,
        dtype=cfg.dtype,
    )
    problem = build_problem(base)
    op = curvature.HessianOperator(problem.hessian_objective, problem.flat.theta0, "reverse")
    lam0 = float(curvature.lanczos(op, 1, max_iter=300, tol=1e-6).values[0])
    etas = [c / lam0 for c in cfg.eta_lambda0]
    pop = run_population(
        [base.replace(lr=float(eta)) for eta in etas], progress=progress, name=name, cfg=cfg, problem=problem
    )
    return {
        "eta_lambda0": np.asarray(cfg.eta_lambda0, float),
        "lambda0": np.asarray(lam0),
        "etas": np.asarray(etas),
        "step": np.arange(cfg.steps + 1),
        "train_loss": pop.train_loss,
        "train_acc": pop.train_acc,
        "test_acc": pop.test_acc,
        "eig_step": pop.eig_step,
        "sharpness": pop.eigs[:, :, 0],
        "eig_residuals": pop.eig_residuals[:, :, 0],
        "diverged": pop.diverged,
        "diverged_step": pop.diverged_step,
    }


def summarize_catapult(res: dict[str, np.ndarray], spike: float = 2.0) -> dict[str, np.ndarray | float]:
    """Per member: the loss spike ``max_t L_t / L_0``, the final ``eta S`` (last tracked finite sharpness) and the
    largest ``eta S`` (both in units of ``eta``), plus the measured phase boundaries: the smallest ``eta lambda_0``
    whose loss rises more than ``spike``-fold, and the smallest one that diverges (``nan`` if none)."""
    c = res["eta_lambda0"]
    loss = res["train_loss"]
    ratio = np.nanmax(loss, axis=1) / loss[:, 0]
    final = np.array([s[np.isfinite(s)][-1] if np.isfinite(s).any() else np.nan for s in res["sharpness"]])
    eta_s_final = res["etas"] * final
    div = res["diverged"].astype(bool)
    spiked = (~div) & (ratio > spike)
    return {
        "eta_lambda0": c,
        "loss_ratio": ratio,
        "eta_S_final": eta_s_final,
        "diverged": div,
        "catapult": spiked & (eta_s_final < c),
        "lower_boundary": float(c[spiked].min()) if spiked.any() else np.nan,
        "upper_boundary": float(c[div].min()) if div.any() else np.nan,
        "largest_converged": float(c[~div].max()) if (~div).any() else np.nan,
    }


@dataclasses.dataclass(frozen=True)
class CentralFlowConfig(NetConfig):
    """GD with step size ``eta`` and its central flow (``substeps`` Euler substeps per step) from one initialisation."""

    dataset: str = "mnist1d"
    n_train: int = 500
    n_test: int = 500
    widths: tuple[int, ...] = (64, 64)
    eta: float = 0.4
    steps: int = 240
    substeps: int = 2
    n_eigs: int = 3
    record_every: int = 4
    avg_window: int = 8
    stable_eig_every: int = 4
    eig_tol: float = 1e-4
    seed: int = 0
    dtype: str = "float32"

    def validate(self) -> None:
        super().validate()
        require_positive("eta", self.eta)
        for f in ("steps", "substeps", "n_eigs", "record_every", "avg_window", "stable_eig_every"):
            require_positive_int(f, getattr(self, f))
        require_positive("eig_tol", self.eig_tol)
        require_choice("dtype", self.dtype, ("float32", "float64"))
        if self.record_every > self.steps:
            raise ConfigError(f"record_every={self.record_every} exceeds steps={self.steps}; lower record_every.")


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of ``x`` over ``window`` entries (shorter windows at the ends)."""
    x = np.asarray(x, float)
    c = np.concatenate([[0.0], np.cumsum(x)])
    lo = np.clip(np.arange(len(x)) - window // 2, 0, len(x))
    hi = np.clip(lo + window, 0, len(x))
    lo = np.maximum(hi - window, 0)
    return (c[hi] - c[lo]) / (hi - lo)


def run_central_flow(cfg: CentralFlowConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """GD (sharpness and iterate every ``record_every`` steps) and the central flow at the same times; the
    time-averaged GD loss (centred moving average over ``avg_window`` steps) against the flow's prediction
    ``L(w) + tr(Sigma)/eta``, and the distance between GD and the flow."""
    tc = cfg.train_config(
        optimizer="gd",
        lr=float(cfg.eta),
        steps=cfg.steps,
        seed=cfg.seed,
        eig_every=cfg.record_every,
        n_eigs=cfg.n_eigs,
        eig_tol=cfg.eig_tol,
        device=device,
        dtype=cfg.dtype,
    )
    problem = build_problem(tc)
    snaps: list[torch.Tensor] = []

    def keep(ctx: StepContext) -> None:
        if ctx.step % cfg.record_every == 0:
            snaps.append(ctx.theta.clone())

    half = None if progress is None else (lambda d, n: progress(d, 2 * n))
    hist = train(tc, callbacks=[keep], problem=problem, progress=half)
    rest = None if progress is None else (lambda d, n: progress(n + d, 2 * n))
    cf = central_flow(
        problem.objective,
        problem.flat.theta0,
        cfg.eta,
        cfg.steps,
        substeps=cfg.substeps,
        n_eigs=cfg.n_eigs,
        record_every=cfg.record_every,
        eig_tol=cfg.eig_tol,
        hessian_objective=problem.hessian_objective,
        stable_eig_every=cfg.stable_eig_every,
        progress=rest,
    )
    gd_loss = np.asarray(hist.train_loss)
    n = min(len(snaps), len(cf.time))
    return {
        "eta": np.asarray(cfg.eta),
        "step": np.arange(len(gd_loss)),
        "gd_loss": gd_loss,
        "gd_loss_avg": moving_average(gd_loss, cfg.avg_window),
        "time": cf.time[:n],
        "gd_eigs": np.asarray(hist.eigs)[:n],
        "cf_loss": cf.loss[:n],
        "cf_predicted_loss": cf.predicted_loss[:n],
        "cf_eigs": cf.eigs[:n],
        "cf_sigma2": cf.sigma2[:n],
        "cf_n_critical": cf.n_critical[:n],
        "distance": distances(torch.stack(snaps[:n]), cf.thetas[:n]),
        "gd_norm": torch.stack(snaps[:n]).double().norm(dim=1).numpy(),
        "diverged": np.asarray(hist.diverged),
        "cf_diverged": np.asarray(cf.diverged),
    }


def summarize_central_flow(res: dict[str, np.ndarray], late: int = 80) -> dict[str, float]:
    """Where the central flow agrees with GD: the first recorded time with a critical eigenvalue (the flow
    enters the EoS); before it, the relative sharpness and loss errors; from ``late`` steps after it on, the
    relative errors of the predicted loss ``L(w) + tr(Sigma)/eta`` and of the plain ``L(w)`` against the
    time-averaged GD loss, and GD's and the flow's mean ``eta S / 2``; the largest GD sharpness and the
    GD-flow distance."""
    t = res["time"]
    on = np.flatnonzero(res["cf_n_critical"] > 0)
    enter = int(t[on[0]]) if len(on) else -1
    after = t >= enter + late if enter >= 0 else np.zeros(len(t), bool)
    before = t < enter if enter >= 0 else np.ones(len(t), bool)
    avg = res["gd_loss_avg"][t]
    rel_loss = np.abs(res["cf_predicted_loss"] - avg) / avg
    rel_plain = np.abs(res["cf_loss"] - avg) / avg
    rel_s = np.abs(res["cf_eigs"][:, 0] - res["gd_eigs"][:, 0]) / res["gd_eigs"][:, 0]
    gd_s = res["gd_eigs"][:, 0]
    return {
        "enter_eos": enter,
        "n_critical_max": int(res["cf_n_critical"].max()),
        "rel_loss_err_before": float(np.mean(np.abs(res["cf_loss"] - avg)[before] / avg[before]))
        if before.any()
        else np.nan,
        "gd_sharpness_ratio_after": float(np.mean(res["eta"] * gd_s[after] / 2)) if after.any() else np.nan,
        "gd_sharpness_peak_ratio": float(np.nanmax(res["eta"] * gd_s / 2)),
        "gd_peak_time": int(t[np.nanargmax(gd_s)]),
        "rel_loss_err_mean": float(np.mean(rel_loss[after])) if after.any() else np.nan,
        "rel_loss_err_plain_mean": float(np.mean(rel_plain[after])) if after.any() else np.nan,
        "rel_sharpness_err_mean": float(np.mean(rel_s[after])) if after.any() else np.nan,
        "rel_sharpness_err_before": float(np.mean(rel_s[before])) if before.any() else np.nan,
        "cf_sharpness_ratio_after": float(np.mean(res["eta"] * res["cf_eigs"][after, 0] / 2))
        if after.any()
        else np.nan,
        "distance_end": float(res["distance"][-1]),
        "distance_at_enter": float(res["distance"][after][0]) if after.any() else np.nan,
        "norm_end": float(res["gd_norm"][-1]),
    }


experiments.register(
    "catapult_net",
    chapter="catapults_self_stabilization",
    description=(
        "Catapults in a wide ReLU network: loss spike, sharpness drop and final sharpness against eta*lambda_0."
    ),
    configs={
        "ci": CatapultNetConfig(scale="ci"),
        "full": CatapultNetConfig(
            scale="full",
            n_train=1000,
            widths=(1024,),
            eta_lambda0=(0.5, 1.0, 1.5, 1.9, 2.2, 2.6, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0),
            steps=400,
            eig_every=10,
        ),
    },
    run=functools.partial(run_catapult_net, name="catapult_net"),
    resumable=True,
)

experiments.register(
    "central_flow",
    chapter="catapults_self_stabilization",
    description="The central flow of GD (Cohen et al., 2025) against time-averaged GD: loss and sharpness.",
    configs={
        "ci": CentralFlowConfig(scale="ci"),
        "full": CentralFlowConfig(
            scale="full",
            n_train=1000,
            n_test=1000,
            widths=(100, 100),
            eta=0.3,
            steps=600,
            substeps=2,
            n_eigs=3,
            record_every=5,
            avg_window=10,
        ),
    },
    run=run_central_flow,
)
