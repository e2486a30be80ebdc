"""Experiments of the SGD chapter: does instability-driven flattening survive minibatch noise?

* ``sgd_batch_sweep`` - a grid of step sizes ``eta`` x batch sizes ``B`` x seeds on a small tanh
  MLP (MSE). Every run trains until the training loss falls below ``stop_loss`` (or ``max_steps``),
  so all runs are compared at the same level of fit. Per run it records the final sharpness, the
  largest ``eta * S`` seen during training (is the run stable throughout?), test accuracy, and Wu,
  Ma & E's linear-stability diagnostic along the top eigenvector: the per-example curvatures
  ``u^T H_i u`` (mean ``a``, spread ``s``) and the SGD second-moment factor ``q`` for its batch size.
  The runs of one batch size (all ``eta`` x seeds) train as one vmapped population
  (:func:`instabilities.population.train_sweep`); at full scale the sweep checkpoints and resumes.
* ``sgd_batch_sweep_cifar10`` - the same at full scale on the first 5,120 CIFAR-10 images (needs a
  local copy of CIFAR-10; ``reproduce`` skips it otherwise).

The chapter separates the two effects: **instability** = the drop in final sharpness when ``eta``
grows at full batch (no noise); **noise** = the drop when ``B`` shrinks at the smallest ``eta``
(stable, ``eta S < 2`` throughout). :func:`effect_sizes` computes both from the arrays.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import numpy as np
import torch

from . import registry as experiments
from ..config import ConfigError, require_positive, require_positive_int
from .common import CHECKPOINT_EVERY, NetConfig
from ..curvature import batched_top_eigenpairs
from ..population import sweep_groups, train_sweep
from ..dynamics.sgd_stability import batch_curvature_stats, directional_curvatures, per_example_losses
from ..train import Problem, TrainConfig, build_problem

Progress = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class SGDSweepConfig(NetConfig):
    """Grid ``etas x batch_sizes x seeds``; a batch size equal to ``n_train`` means full-batch GD."""

    n_train: int = 256
    widths: tuple[int, ...] = (16, 16)
    etas: tuple[float, ...] = (0.3, 1.0)
    batch_sizes: tuple[int, ...] = (256, 64, 16)
    seeds: tuple[int, ...] = (0, 1, 2)
    max_steps: int = 3000
    stop_loss: float = 0.05
    eig_every: int = 200
    eig_tol: float = 1e-3

    def validate(self) -> None:
        super().validate()
        for name in ("max_steps", "eig_every"):
            require_positive_int(name, getattr(self, name))
        require_positive("stop_loss", self.stop_loss)
        require_positive("eig_tol", self.eig_tol)
        if not self.etas or not self.batch_sizes or not self.seeds:
            raise ConfigError("etas, batch_sizes and seeds must each list at least one value.")
        for eta in self.etas:
            require_positive("eta (in etas)", eta)
        if list(self.etas) != sorted(self.etas):
            raise ConfigError(f"etas={self.etas} must be increasing (the first is the 'stable' baseline).")
        for b in self.batch_sizes:
            require_positive_int("batch size (in batch_sizes)", b)
            if b > self.n_train:
                raise ConfigError(f"batch size {b} exceeds n_train={self.n_train}; use n_train for full batch.")
        if self.batch_sizes[0] != self.n_train:
            raise ConfigError(f"batch_sizes must start with n_train={self.n_train} (the full-batch baseline).")

    def run_config(self, eta: float, batch_size: int, seed: int, device: str = "cpu") -> TrainConfig:
        """The :class:`TrainConfig` of one grid point."""
        full = batch_size == self.n_train
        return self.train_config(optimizer="gd" if full else "sgd", lr=eta, batch_size=None if full else batch_size,
                                 steps=self.max_steps, seed=seed, eig_every=self.eig_every, eig_tol=self.eig_tol,
                                 stop_loss=self.stop_loss, device=device)


def final_point_diagnostics(cfg: TrainConfig, theta: torch.Tensor, batch_size: int, tol: float = 1e-4,
                            problem: Problem | None = None,
                            top: tuple[float, torch.Tensor] | None = None) -> dict[str, float]:
    """Sharpness at ``theta`` and Wu-Ma-E statistics along its top eigenvector for ``batch_size``.

    ``top = (sharpness, u)`` skips the eigen-solve when the top eigenpair is already known.
    """
    prob = problem or build_problem(cfg)
    theta = torch.as_tensor(theta, dtype=prob.flat.theta0.dtype, device=prob.flat.theta0.device)
    if top is None:
        from ..curvature import top_eigenpairs

        res = top_eigenpairs(prob.objective, theta, k=1, tol=tol)
        top = (float(res.values[0]), res.vectors[:, 0])
    per_ex = per_example_losses(prob.flat, prob.data.x_train, prob.train_targets, cfg.loss)
    stats = batch_curvature_stats(directional_curvatures(per_ex, theta, top[1]), cfg.lr, batch_size)
    stats["sharpness"] = float(top[0])
    return stats


def run_sgd_batch_sweep(cfg: SGDSweepConfig, device: str = "cpu", progress: Progress | None = None,
                        experiment: str = "sgd_batch_sweep") -> dict[str, np.ndarray]:
    """Run the grid; arrays have shape ``(n_eta, n_batch, n_seed)`` (trajectories add a step axis).

    One population per batch size; the final-point sharpness of every run comes from one batched
    Lanczos (:func:`instabilities.population.batched_top_eigenpairs`, tolerance ``eig_tol``) and feeds
    :func:`final_point_diagnostics`. A ``full``-scale run checkpoints under
    ``experiments.checkpoint_path(experiment, cfg, "sweep")`` and resumes from there.
    """
    shape = (len(cfg.etas), len(cfg.batch_sizes), len(cfg.seeds))
    grid = [(i, j, k) for i in range(shape[0]) for j in range(shape[1]) for k in range(shape[2])]
    configs = [cfg.run_config(cfg.etas[i], cfg.batch_sizes[j], cfg.seeds[k], device) for i, j, k in grid]
    n_groups = len(sweep_groups(configs))
    total = n_groups * cfg.max_steps + 1
    ckpt = experiments.checkpoint_path(experiment, cfg, "sweep") if cfg.scale == "full" else None
    hist = train_sweep(configs, progress=(lambda s, n: progress(s, total)) if progress else None, keep_theta=True,
                       checkpoint_path=ckpt, checkpoint_every=CHECKPOINT_EVERY)
    n_slots = cfg.max_steps // cfg.eig_every + 1
    hist = hist.padded(np.arange(n_slots) * cfg.eig_every)
    prob = build_problem(configs[0])  # data, model and objective do not depend on the seed
    dtype, dev = prob.flat.theta0.dtype, prob.flat.theta0.device
    Theta = torch.as_tensor(np.nan_to_num(hist.theta), dtype=dtype, device=dev)
    top = batched_top_eigenpairs(prob.objective, Theta, 1, max_iter=200, tol=cfg.eig_tol,
                          active=torch.as_tensor(~hist.diverged, device=dev))
    keys = ("sharpness", "max_eta_s", "test_acc", "train_loss", "steps", "dir_a", "dir_s", "q", "s_max")
    out = {k: np.full(shape, np.nan) for k in keys}
    out["diverged"] = np.zeros(shape, dtype=bool)
    out["sharp_traj"] = np.full(shape + (n_slots,), np.nan)
    for p, (i, j, k) in enumerate(grid):
        out["steps"][i, j, k] = hist.final_step[p]
        out["train_loss"][i, j, k] = hist.final_train_loss[p]
        out["diverged"][i, j, k] = hist.diverged[p]
        s_traj = hist.sharpness[p]
        out["sharp_traj"][i, j, k] = s_traj
        if not hist.diverged[p]:
            out["test_acc"][i, j, k] = hist.test_acc[p]
            diag = final_point_diagnostics(configs[p], Theta[p], cfg.batch_sizes[j], cfg.eig_tol, prob,
                                           top=(float(top.values[p, 0]), top.vectors[p, :, 0]))
            out["sharpness"][i, j, k] = diag["sharpness"]
            out["max_eta_s"][i, j, k] = cfg.etas[i] * max(np.nanmax(s_traj, initial=0.0), diag["sharpness"])
            for key in ("a", "s", "q", "s_max"):
                out[f"dir_{key}" if key in ("a", "s") else key][i, j, k] = diag[key]
    if progress is not None:
        progress(total, total)
    out["etas"] = np.asarray(cfg.etas, float)
    out["batch_sizes"] = np.asarray(cfg.batch_sizes)
    out["eig_steps"] = np.arange(n_slots) * cfg.eig_every
    return out


def effect_sizes(res: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sharpness reductions (seed means) relative to the stable full-batch baseline ``(eta_0, B = n)``.

    ``instability[i]`` = S(eta_0, n) - S(eta_i, n): full batch, only ``eta`` changes (no noise).
    ``noise[j]``       = S(eta_0, n) - S(eta_0, B_j): smallest ``eta``, only the batch shrinks.
    ``both[i, j]``     = S(eta_0, n) - S(eta_i, B_j).
    ``eta_at_batch[i, j]`` = S(eta_0, B_j) - S(eta_i, B_j): the ``eta`` effect inside SGD at batch ``B_j``.
    """
    S = np.nanmean(res["sharpness"], axis=2)
    base = S[0, 0]
    return {"baseline": np.asarray(base), "instability": base - S[:, 0], "noise": base - S[0, :],
            "both": base - S, "eta_at_batch": S[0:1, :] - S, "mean_sharpness": S}


_FULL = dict(widths=(256, 256), etas=(0.02, 0.1, 0.5), seeds=(0, 1, 2, 3, 4), max_steps=100_000, stop_loss=0.02,
             eig_every=1000, eig_tol=1e-4)

experiments.register(
    "sgd_batch_sweep", chapter="sgd_instabilities",
    description="Final sharpness vs step size and batch size (GD and SGD), with Wu-Ma-E stability diagnostics.",
    configs={
        "ci": SGDSweepConfig(scale="ci"),
        "full": SGDSweepConfig(scale="full", dataset="mnist1d", n_train=4000, n_test=1000,
                               batch_sizes=(4000, 256, 64, 16), **_FULL),
    },
    run=run_sgd_batch_sweep, resumable=True)

experiments.register(
    "sgd_batch_sweep_cifar10", chapter="sgd_instabilities",
    description="sgd_batch_sweep at full scale on the first 5,120 CIFAR-10 images. Needs a local copy of CIFAR-10 "
                "(see data.load_dataset).",
    configs={
        "ci": SGDSweepConfig(scale="ci", dataset="cifar10"),  # small, but also needs the local CIFAR-10 copy
        "full": SGDSweepConfig(scale="full", dataset="cifar10", n_train=5120, n_test=2000,
                               batch_sizes=(5120, 256, 64, 16), **_FULL),
    },
    run=functools.partial(run_sgd_batch_sweep, experiment="sgd_batch_sweep_cifar10"), resumable=True)
