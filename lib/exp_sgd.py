"""Experiments of the SGD chapter: does instability-driven flattening survive minibatch noise?

* ``sgd_batch_sweep`` - a grid of step sizes ``eta`` x batch sizes ``B`` x seeds on a small tanh
  MLP (MSE). Every run trains until the training loss falls below ``stop_loss`` (or ``max_steps``),
  so all runs are compared at the same level of fit. Per run it records the final sharpness, the
  largest ``eta * S`` seen during training (is the run stable throughout?), test accuracy, and Wu,
  Ma & E's linear-stability diagnostic along the top eigenvector: the per-example curvatures
  ``u^T H_i u`` (mean ``a``, spread ``s``) and the SGD second-moment factor ``q`` for its batch size.

The chapter separates the two effects: **instability** = the drop in final sharpness when ``eta``
grows at full batch (no noise); **noise** = the drop when ``B`` shrinks at the smallest ``eta``
(stable, ``eta S < 2`` throughout). :func:`effect_sizes` computes both from the arrays.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

from . import curvature, experiments
from .config import Config, ConfigError, require_choice, require_positive, require_positive_int
from .data import DATASETS, data_root
from .losses import LOSSES
from .models import ACTIVATIONS, ModelSpec
from .sgd_stability import batch_curvature_stats, directional_curvatures, per_example_losses
from .train import Problem, TrainConfig, build_problem, train

Progress = Callable[[int, int], None]


def default_full_dataset() -> tuple[str, int, int]:
    """``("cifar10", 5120, 2000)`` when a local CIFAR-10 copy exists, else ``("mnist1d", 4000, 1000)``.

    Evaluated once when the experiments are registered; the dataset is an explicit config field,
    so a stored result made with the other dataset is reported as STALE, never mixed up.
    """
    if (data_root() / "cifar-10-batches-py" / "test_batch").exists():
        return "cifar10", 5120, 2000
    return "mnist1d", 4000, 1000


@dataclasses.dataclass(frozen=True)
class SGDSweepConfig(Config):
    """Grid ``etas x batch_sizes x seeds``; a batch size equal to ``n_train`` means full-batch GD."""

    dataset: str = "digits"
    n_train: int = 256
    n_test: int = 297
    widths: tuple[int, ...] = (16, 16)
    activation: str = "tanh"
    loss: str = "mse"
    etas: tuple[float, ...] = (0.3, 1.0)
    batch_sizes: tuple[int, ...] = (256, 64, 16)
    seeds: tuple[int, ...] = (0, 1, 2)
    max_steps: int = 3000
    stop_loss: float = 0.05
    eig_every: int = 200
    eig_tol: float = 1e-3

    def validate(self) -> None:
        super().validate()
        require_choice("dataset", self.dataset, DATASETS)
        require_choice("loss", self.loss, LOSSES)
        require_choice("activation", self.activation, tuple(ACTIVATIONS))
        for name in ("n_train", "n_test", "max_steps", "eig_every"):
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

    def train_config(self, eta: float, batch_size: int, seed: int, device: str = "cpu") -> TrainConfig:
        """The :class:`TrainConfig` of one grid point."""
        full = batch_size == self.n_train
        return TrainConfig(scale=self.scale, dataset=self.dataset, n_train=self.n_train, n_test=self.n_test,
                           model=ModelSpec("mlp", self.widths, self.activation), loss=self.loss,
                           optimizer="gd" if full else "sgd", lr=eta, batch_size=None if full else batch_size,
                           steps=self.max_steps, seed=seed, eig_every=self.eig_every, eig_tol=self.eig_tol,
                           stop_loss=self.stop_loss, device=device)


def final_point_diagnostics(cfg: TrainConfig, theta: torch.Tensor, batch_size: int, tol: float = 1e-4,
                            problem: Problem | None = None) -> dict[str, float]:
    """Sharpness at ``theta`` and Wu-Ma-E statistics along its top eigenvector for ``batch_size``."""
    prob = problem or build_problem(cfg)
    theta = torch.as_tensor(theta, dtype=prob.flat.theta0.dtype, device=prob.flat.theta0.device)
    res = curvature.top_eigenpairs(prob.objective, theta, k=1, tol=tol)
    u = res.vectors[:, 0]
    per_ex = per_example_losses(prob.flat, prob.data.x_train, prob.train_targets, cfg.loss)
    stats = batch_curvature_stats(directional_curvatures(per_ex, theta, u), cfg.lr, batch_size)
    stats["sharpness"] = float(res.values[0])
    return stats


def run_sgd_batch_sweep(cfg: SGDSweepConfig, device: str = "cpu", progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Run the grid; arrays have shape ``(n_eta, n_batch, n_seed)`` (trajectories add a step axis)."""
    shape = (len(cfg.etas), len(cfg.batch_sizes), len(cfg.seeds))
    n_slots = cfg.max_steps // cfg.eig_every + 1
    keys = ("sharpness", "max_eta_s", "test_acc", "train_loss", "steps", "dir_a", "dir_s", "q", "s_max")
    out = {k: np.full(shape, np.nan) for k in keys}
    out["diverged"] = np.zeros(shape, dtype=bool)
    out["sharp_traj"] = np.full(shape + (n_slots,), np.nan)
    total, done = int(np.prod(shape)), 0
    for i, eta in enumerate(cfg.etas):
        for j, b in enumerate(cfg.batch_sizes):
            for k, seed in enumerate(cfg.seeds):
                tcfg = cfg.train_config(eta, b, seed, device)
                prob = build_problem(tcfg)
                hist = train(tcfg, keep_theta=True, problem=prob)
                out["steps"][i, j, k] = hist.step[-1]
                out["train_loss"][i, j, k] = hist.train_loss[-1]
                out["diverged"][i, j, k] = hist.diverged
                s_traj = hist.sharpness
                out["sharp_traj"][i, j, k, :len(s_traj)] = s_traj
                if not hist.diverged:
                    out["test_acc"][i, j, k] = hist.test_acc[-1]
                    diag = final_point_diagnostics(tcfg, torch.as_tensor(hist.theta_final), b, cfg.eig_tol, prob)
                    out["sharpness"][i, j, k] = diag["sharpness"]
                    out["max_eta_s"][i, j, k] = eta * max(np.max(s_traj, initial=0.0), diag["sharpness"])
                    for key in ("a", "s", "q", "s_max"):
                        out[f"dir_{key}" if key in ("a", "s") else key][i, j, k] = diag[key]
                done += 1
                if progress is not None:
                    progress(done, total)
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


_FULL_DATASET, _FULL_N, _FULL_TEST = default_full_dataset()

experiments.register(
    "sgd_batch_sweep", chapter="sgd_instabilities",
    description="Final sharpness vs step size and batch size (GD and SGD), with Wu-Ma-E stability diagnostics.",
    configs={
        "ci": SGDSweepConfig(scale="ci"),
        "full": SGDSweepConfig(scale="full", dataset=_FULL_DATASET, n_train=_FULL_N, n_test=_FULL_TEST,
                               widths=(256, 256), etas=(0.02, 0.1, 0.5), batch_sizes=(_FULL_N, 256, 64, 16),
                               seeds=(0, 1, 2, 3, 4), max_steps=100_000, stop_loss=0.02, eig_every=1000,
                               eig_tol=1e-4),
    },
    run=run_sgd_batch_sweep)
