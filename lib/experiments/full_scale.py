"""The learning-rate sweep as one batched population, timed against a Python loop of separate runs.

``population_sweep`` trains ``len(etas)`` full-batch GD runs of one MLP (same data, same
initialisation) twice: as a loop of :func:`instabilities.train.train` calls (on all members, or on an
evenly spaced subset whose time is extrapolated linearly to all members) and as one
:func:`instabilities.population.train_population` call. Neither timed variant tracks curvature, as in
the measurement quoted in the project's GPU-performance issue (H100: 64 learning rates x 1000 steps,
2x100 tanh MLP, 1000 mnist1d examples, 134.7 s as a loop, 3.1 s vmapped). An untimed batched Lanczos
computation gives every member's sharpness at the shared initialisation and after the last step
(:func:`instabilities.curvature.batched_lanczos` on the looped members' final parameters; members left out
of the loop are re-run as one population tracked by :class:`instabilities.curvature.SharpnessTracker`).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from ..config import Config, ConfigError, require_choice, require_nonnegative, require_positive, require_positive_int
from ..curvature import batched_lanczos
from ..data import DATASETS
from ..losses import LOSSES
from ..models import ModelSpec
from ..population import population_configs, train_population
from ..train import TrainConfig, build_problem, train
from . import registry as experiments


@dataclasses.dataclass(frozen=True)
class PopulationSweepConfig(Config):
    """Full-batch GD at every step size in ``etas`` on one MLP; ``loop_members=0`` times the loop on all."""

    etas: tuple[float, ...] = (0.1, 1.0)
    steps: int = 200
    dataset: str = "mnist1d"
    n_train: int = 1000
    widths: tuple[int, ...] = (100, 100)
    activation: str = "tanh"
    loss: str = "mse"
    seed: int = 0
    dtype: str = "float32"
    loop_members: int = 0  # 0: time the loop on every member; k > 0: on k evenly spaced members, extrapolated
    eig_tol: float = 1e-3
    eig_max_iter: int = 100

    def validate(self) -> None:
        super().validate()
        if len(self.etas) == 0 or any(
            not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0) for v in self.etas
        ):
            raise ConfigError(f"etas={self.etas!r} must be a non-empty tuple of finite step sizes > 0.")
        require_positive_int("steps", self.steps)
        require_positive_int("n_train", self.n_train)
        require_positive_int("eig_max_iter", self.eig_max_iter)
        require_positive("eig_tol", self.eig_tol)
        require_choice("dataset", self.dataset, DATASETS)
        require_choice("loss", self.loss, LOSSES)
        require_choice("dtype", self.dtype, ("float32", "float64"))
        require_nonnegative("loop_members", self.loop_members)
        if not isinstance(self.loop_members, int) or self.loop_members > len(self.etas):
            raise ConfigError(
                f"loop_members={self.loop_members!r} must be an integer between 0 (all members) "
                f"and len(etas)={len(self.etas)}."
            )
        ModelSpec(widths=tuple(self.widths), activation=self.activation)  # raises ConfigError on bad widths

    def train_config(self, device: str = "cpu") -> TrainConfig:
        """The shared :class:`TrainConfig` of every member (``lr`` is replaced by each member's ``eta``)."""
        return TrainConfig(
            dataset=self.dataset,
            n_train=self.n_train,
            n_test=100,
            data_seed=0,
            model=ModelSpec(widths=tuple(self.widths), activation=self.activation),
            loss=self.loss,
            optimizer="gd",
            lr=float(self.etas[0]),
            steps=self.steps,
            seed=self.seed,
            eig_tol=self.eig_tol,
            eig_max_iter=self.eig_max_iter,
            device=device,
            dtype=self.dtype,
        )


def loop_indices(n_members: int, loop_members: int) -> np.ndarray:
    """Indices of the members timed as a loop: all (``loop_members=0``) or ``loop_members`` evenly spaced."""
    if loop_members <= 0 or loop_members >= n_members:
        return np.arange(n_members)
    return np.unique(np.round(np.linspace(0, n_members - 1, loop_members)).astype(int))


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run_population_sweep(cfg: PopulationSweepConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """Time the loop and the population on ``cfg``; return losses, sharpness, divergence and timings.

    ``loop_seconds`` is the loop's time for *all* members: measured when ``loop_members`` is 0, else the
    measured time of the ``loop_index`` members times ``len(etas) / len(loop_index)`` (see
    ``loop_extrapolated``). ``max_rel_loss_diff`` compares the loop's and the population's loss curves
    of the looped members (largest relative difference over the whole run and over the first 10 steps).
    Diverged members have NaN ``final_loss``, ``final_sharpness`` and ``final_loss_abs_diff``.
    """
    base = cfg.train_config(device)
    configs = population_configs(base, etas=cfg.etas)
    prob = build_problem(base)
    P = len(configs)
    # warm-up (allocations, lazy imports, CUDA context) outside the timings
    train(base.replace(steps=2), problem=prob)
    train_population([base.replace(steps=2)], problem=prob)
    idx = loop_indices(P, cfg.loop_members)
    _sync(device)
    t0 = time.perf_counter()
    loop_curves, loop_thetas = [], []
    for n, i in enumerate(idx):
        hist = train(configs[i], problem=prob, keep_theta=True)
        loop_curves.append(np.asarray(hist.train_loss, dtype=float))
        loop_thetas.append(
            hist.theta_final if hist.theta_final is not None else np.full(prob.flat.theta0.numel(), np.nan)
        )
        if progress is not None:
            progress(n + 1, len(idx) + 2)
    _sync(device)
    loop_measured = time.perf_counter() - t0
    t0 = time.perf_counter()
    pop = train_population(configs, problem=prob)
    _sync(device)
    pop_seconds = time.perf_counter() - t0
    if progress is not None:
        progress(len(idx) + 1, len(idx) + 2)
    # curvature (untimed): at the shared initialisation, and at the final parameters of every member; the
    # looped members' final parameters are at hand, the others are re-run as one tracked population
    initial = (
        batched_lanczos(prob.hessian_objective, prob.flat.theta0[None], 1, max_iter=cfg.eig_max_iter, tol=cfg.eig_tol)
        .values[0, 0]
        .item()
    )
    final_sharpness = np.full(P, np.nan)
    eig_residual = np.full(P, np.nan)
    theta_final = torch.stack([torch.as_tensor(np.asarray(t), dtype=prob.flat.theta0.dtype) for t in loop_thetas])
    res = batched_lanczos(
        prob.hessian_objective,
        theta_final.to(prob.flat.theta0.device),
        1,
        max_iter=cfg.eig_max_iter,
        tol=cfg.eig_tol,
        active=torch.as_tensor(~pop.diverged[idx]),
    )
    final_sharpness[idx] = res.values[:, 0].double().cpu().numpy()
    eig_residual[idx] = res.residuals[:, 0].double().cpu().numpy()
    rest = np.setdiff1d(np.arange(P), idx)
    if rest.size:
        tracked = train_population([configs[i].replace(eig_every=cfg.steps) for i in rest], problem=prob)
        final_sharpness[rest] = tracked.sharpness[:, -1]
        eig_residual[rest] = tracked.eig_residuals[:, -1, 0]
    final_sharpness[pop.diverged] = np.nan
    if progress is not None:
        progress(len(idx) + 2, len(idx) + 2)
    whole, early, final_diff = [], [], []
    for curve, i in zip(loop_curves, idx):
        b = pop.train_loss[i, : len(curve)]
        ok = np.isfinite(curve) & np.isfinite(b)
        rel = np.abs(curve[ok] - b[ok]) / np.maximum(np.abs(curve[ok]), 1e-12)
        whole.append(float(rel.max()) if rel.size else 0.0)
        early.append(float(rel[:10].max()) if rel.size else 0.0)
        final_diff.append(np.nan if pop.diverged[i] else abs(curve[-1] - _last_finite(pop.train_loss[i])))
    loop_seconds = loop_measured * P / len(idx)
    return {
        "etas": np.asarray(cfg.etas, dtype=float),
        "step": pop.step,
        "train_loss": pop.train_loss,
        "final_loss": np.array([np.nan if d else _last_finite(row) for d, row in zip(pop.diverged, pop.train_loss)]),
        "initial_sharpness": np.full(P, initial),
        "final_sharpness": final_sharpness,
        "eig_residual": eig_residual,
        "diverged": pop.diverged,
        "diverged_step": pop.diverged_step,
        "loop_index": idx,
        "loop_seconds_measured": np.float64(loop_measured),
        "loop_seconds": np.float64(loop_seconds),
        "loop_extrapolated": np.bool_(len(idx) < P),
        "population_seconds": np.float64(pop_seconds),
        "speedup": np.float64(loop_seconds / max(pop_seconds, 1e-12)),
        "max_rel_loss_diff": np.asarray(whole),
        "max_rel_loss_diff_first_10_steps": np.asarray(early),
        "final_loss_abs_diff": np.asarray(final_diff, dtype=float),
        "n_params": np.int64(prob.flat.theta0.numel()),
    }


def _last_finite(row: np.ndarray) -> float:
    """Last finite entry of a loss curve (a member that stopped early keeps NaN afterwards); NaN if none."""
    finite = np.flatnonzero(np.isfinite(row))
    return float(row[finite[-1]]) if finite.size else float("nan")


ETAS_CI = tuple(float(v) for v in np.round(np.geomspace(0.02, 2.0, 8), 6))
ETAS_FULL = tuple(float(v) for v in np.round(np.geomspace(0.02, 2.0, 64), 6))

experiments.register(
    "population_sweep",
    chapter="full_scale",
    description=(
        "learning-rate sweep of full-batch GD (2x100 tanh MLP, 1000 mnist1d examples, MSE) run as a "
        "Python loop of separate runs and as one vmapped population: wall times, speed-up, loss "
        "agreement, final sharpness per step size. ci: 8 step sizes x 200 steps of a 2x32 MLP, loop "
        "timed on all 8; full: the GPU issue's 64 step sizes x 1000 steps, loop timed on all 64 "
        "(measured, not extrapolated)."
    ),
    configs={
        "ci": PopulationSweepConfig(scale="ci", etas=ETAS_CI, steps=200, widths=(32, 32), eig_max_iter=60),
        "full": PopulationSweepConfig(scale="full", etas=ETAS_FULL, steps=1000, widths=(100, 100), eig_max_iter=100),
    },
    run=run_population_sweep,
)
