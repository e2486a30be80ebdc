"""Experiments of the adaptive-methods chapter: Adam at the adaptive edge of stability, and Clipped-Ada.

* ``adam_aeos`` - full-batch Adam (and Clipped-Ada) on a small tanh MLP, tracking the raw sharpness
  ``S = lambda_1(H)`` and the preconditioned sharpness ``lambda_1(P^{-1}H)`` against Adam's
  threshold ``(2 + 2 beta1)/((1 - beta1) eta)`` (38/eta for beta1 = 0.9; Cohen et al. 2022).
* ``adaptive_generalisation`` - GD, SGD, Adam and Clipped-Ada (several clips ``c``) trained to the
  same training loss, several seeds: test accuracy and final sharpness.

Clipped-Ada is our reconstruction (see :class:`optim.ClippedAda`): the exact form is inferred from
the authors' code, not read in the paper.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import torch

from . import curvature, experiments
from .config import (Config, ConfigError, require_choice, require_in_range, require_nonnegative, require_positive,
                     require_positive_int)
from .data import DATASETS
from .exp_sgd import default_full_dataset
from .losses import LOSSES
from .models import ACTIVATIONS, ModelSpec
from .preconditioned import PreconditionedSharpnessTracker, adam_threshold
from .train import TrainConfig, build_problem, train

Progress = Callable[[int, int], None]
ADAPTIVE = ("adam", "rmsprop", "clipped_ada")


def method_label(optimizer: str, lr: float, clip: float) -> str:
    """Short legend label of one optimiser setting."""
    names = {"gd": "GD", "sgd": "SGD", "adam": "Adam", "rmsprop": "RMSProp", "clipped_ada": "Clipped-Ada"}
    text = f"{names.get(optimizer, optimizer)} $\\eta$={lr:g}"
    return text + (f", c={clip:g}" if optimizer == "clipped_ada" else "")


def clipped_sharpness_cap(lr: float, beta1: float, clip: float, eps: float = 0.0) -> float:
    """At the adaptive edge ``lambda_1(P^{-1}H) ~ (2+2 beta1)/((1-beta1) lr)``, and ``P <= c + eps`` gives
    ``S <= (c + eps) (2+2 beta1)/((1-beta1) lr)`` (our derivation; ``inf`` without a clip)."""
    return (clip + eps) * adam_threshold(lr, beta1) if math.isfinite(clip) else math.inf


@dataclasses.dataclass(frozen=True)
class _NetConfig(Config):
    dataset: str = "digits"
    n_train: int = 256
    n_test: int = 297
    widths: tuple[int, ...] = (16, 16)
    activation: str = "tanh"
    loss: str = "mse"
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    eig_tol: float = 1e-3

    def validate(self) -> None:
        super().validate()
        require_choice("dataset", self.dataset, DATASETS)
        require_choice("loss", self.loss, LOSSES)
        require_choice("activation", self.activation, tuple(ACTIVATIONS))
        require_positive_int("n_train", self.n_train)
        require_positive_int("n_test", self.n_test)
        require_in_range("beta1", self.beta1, 0.0, 0.999)
        require_in_range("beta2", self.beta2, 1e-6, 0.999999)
        require_nonnegative("eps", self.eps)
        require_positive("eig_tol", self.eig_tol)

    def _train_config(self, optimizer: str, lr: float, clip: float, **kw) -> TrainConfig:
        return TrainConfig(scale=self.scale, dataset=self.dataset, n_train=self.n_train, n_test=self.n_test,
                           model=ModelSpec("mlp", self.widths, self.activation), loss=self.loss, optimizer=optimizer,
                           lr=lr, beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                           clip=clip if math.isfinite(clip) else 1.0, eig_tol=self.eig_tol, **kw)


def _check_runs(runs) -> None:
    if not runs:
        raise ConfigError("runs must list at least one (optimizer, lr, clip) triple.")
    for r in runs:
        if not (isinstance(r, tuple) and len(r) == 3):
            raise ConfigError(f"run {r!r} must be a triple (optimizer, lr, clip); use clip=inf for Adam.")
        require_choice("optimizer", r[0], ("gd", "sgd") + ADAPTIVE)
        require_positive("lr", r[1])
        if not (isinstance(r[2], (int, float)) and r[2] > 0):
            raise ConfigError(f"clip={r[2]!r} must be > 0 (float('inf') for no clip).")
        if r[0] == "clipped_ada" and not math.isfinite(r[2]):
            raise ConfigError("clipped_ada needs a finite clip c; use optimizer 'adam' for c = inf.")


@dataclasses.dataclass(frozen=True)
class AdaptiveEoSConfig(_NetConfig):
    """Full-batch runs ``(optimizer, lr, clip)`` tracked every ``track_every`` steps."""

    runs: tuple[tuple[str, float, float], ...] = (("adam", 0.005, math.inf), ("adam", 0.01, math.inf),
                                                  ("clipped_ada", 0.005, 3e-3))
    steps: int = 600
    track_every: int = 50
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        _check_runs(self.runs)
        for r in self.runs:
            if r[0] not in ADAPTIVE:
                raise ConfigError(f"adam_aeos tracks a preconditioner; {r[0]!r} has none (use {ADAPTIVE}).")
        require_positive_int("steps", self.steps)
        require_positive_int("track_every", self.track_every)


def run_adam_aeos(cfg: AdaptiveEoSConfig, device: str = "cpu", progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Raw and preconditioned sharpness along full-batch adaptive runs."""
    n_track = cfg.steps // cfg.track_every + 1
    n = len(cfg.runs)
    out = {"sharpness": np.full((n, n_track), np.nan), "precond_sharpness": np.full((n, n_track), np.nan),
           "train_loss": np.full((n, cfg.steps + 1), np.nan), "precond_min": np.full((n, n_track), np.nan),
           "precond_max": np.full((n, n_track), np.nan), "diverged": np.zeros(n, bool)}
    for i, (opt, lr, clip) in enumerate(cfg.runs):
        tcfg = cfg._train_config(opt, lr, clip, steps=cfg.steps, seed=cfg.seed, eig_every=cfg.track_every,
                                 device=device)
        hist = train(tcfg, callbacks=[PreconditionedSharpnessTracker(cfg.track_every, tol=cfg.eig_tol)])
        s = hist.sharpness
        out["sharpness"][i, :len(s)] = s
        slots = np.asarray(hist.extra.get("precond_step", []), int) // cfg.track_every
        for key in ("precond_sharpness", "precond_min", "precond_max"):
            out[key][i, slots] = hist.extra.get(key, [])
        out["train_loss"][i, :len(hist.train_loss)] = hist.train_loss
        out["diverged"][i] = hist.diverged
        if progress is not None:
            progress(i + 1, n)
    out["eig_steps"] = np.arange(n_track) * cfg.track_every
    out["lrs"] = np.asarray([r[1] for r in cfg.runs], float)
    out["clips"] = np.asarray([r[2] for r in cfg.runs], float)
    out["thresholds"] = np.asarray([adam_threshold(r[1], 0.0 if r[0] == "rmsprop" else cfg.beta1) for r in cfg.runs])
    out["sharpness_caps"] = np.asarray([clipped_sharpness_cap(r[1], cfg.beta1, r[2], cfg.eps) if r[0] == "clipped_ada"
                                        else np.inf for r in cfg.runs])
    out["labels"] = np.asarray([method_label(*r) for r in cfg.runs])
    return out


@dataclasses.dataclass(frozen=True)
class GeneralisationConfig(_NetConfig):
    """GD (full batch), then SGD, Adam and Clipped-Ada for each clip in ``clips`` (minibatch ``batch_size``)."""

    batch_size: int = 32
    gd_lr: float = 0.5
    adam_lr: float = 0.005
    clips: tuple[float, ...] = (3e-3, 5e-3, 1e-2)
    seeds: tuple[int, ...] = (0, 1, 2)
    max_steps: int = 2000
    stop_loss: float = 0.05

    def validate(self) -> None:
        super().validate()
        require_positive_int("batch_size", self.batch_size)
        if self.batch_size > self.n_train:
            raise ConfigError(f"batch_size={self.batch_size} exceeds n_train={self.n_train}.")
        require_positive("gd_lr", self.gd_lr)
        require_positive("adam_lr", self.adam_lr)
        for c in self.clips:
            require_positive("clip (in clips)", c)
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed.")
        require_positive_int("max_steps", self.max_steps)
        require_positive("stop_loss", self.stop_loss)

    def methods(self) -> list[tuple[str, float, float]]:
        """``(optimizer, lr, clip)`` for every compared method, in plotting order."""
        return ([("gd", self.gd_lr, math.inf), ("sgd", self.gd_lr, math.inf), ("adam", self.adam_lr, math.inf)]
                + [("clipped_ada", self.adam_lr, c) for c in self.clips])


def run_adaptive_generalisation(cfg: GeneralisationConfig, device: str = "cpu",
                                progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Arrays of shape ``(n_methods, n_seeds)``: test accuracy, final sharpness, steps to ``stop_loss``."""
    methods = cfg.methods()
    shape = (len(methods), len(cfg.seeds))
    out = {k: np.full(shape, np.nan) for k in ("test_acc", "sharpness", "steps", "train_loss")}
    out["diverged"] = np.zeros(shape, bool)
    out["reached"] = np.zeros(shape, bool)
    total, done = int(np.prod(shape)), 0
    for i, (opt, lr, clip) in enumerate(methods):
        for k, seed in enumerate(cfg.seeds):
            tcfg = cfg._train_config(opt, lr, clip, batch_size=None if opt == "gd" else cfg.batch_size,
                                     steps=cfg.max_steps, seed=seed, stop_loss=cfg.stop_loss, device=device)
            prob = build_problem(tcfg)
            hist = train(tcfg, keep_theta=True, problem=prob)
            out["steps"][i, k] = hist.step[-1]
            out["train_loss"][i, k] = hist.train_loss[-1]
            out["diverged"][i, k] = hist.diverged
            out["reached"][i, k] = (not hist.diverged) and hist.train_loss[-1] < cfg.stop_loss
            if not hist.diverged:
                out["test_acc"][i, k] = hist.test_acc[-1]
                theta = torch.as_tensor(hist.theta_final, device=prob.flat.theta0.device)
                out["sharpness"][i, k] = curvature.sharpness(prob.objective, theta, tol=cfg.eig_tol)
            done += 1
            if progress is not None:
                progress(done, total)
    out["labels"] = np.asarray([method_label(*m) for m in methods])
    out["optimizers"] = np.asarray([m[0] for m in methods])
    out["clips"] = np.asarray([m[2] for m in methods], float)
    return out


_FULL_DATASET, _FULL_N, _FULL_TEST = default_full_dataset()

experiments.register(
    "adam_aeos", chapter="adaptive_methods",
    description="Full-batch Adam / Clipped-Ada: raw vs preconditioned sharpness against 38/eta.",
    configs={
        "ci": AdaptiveEoSConfig(scale="ci"),
        "full": AdaptiveEoSConfig(scale="full", dataset=_FULL_DATASET, n_train=_FULL_N, n_test=_FULL_TEST,
                                  widths=(256, 256), runs=(("adam", 2e-4, math.inf), ("adam", 5e-4, math.inf),
                                                           ("clipped_ada", 2e-4, 1e-3)),
                                  steps=20_000, track_every=200, eig_tol=1e-4),
    },
    run=run_adam_aeos)

experiments.register(
    "adaptive_generalisation", chapter="adaptive_methods",
    description="Test accuracy and final sharpness of GD, SGD, Adam and Clipped-Ada at equal training loss.",
    configs={
        "ci": GeneralisationConfig(scale="ci"),
        "full": GeneralisationConfig(scale="full", dataset=_FULL_DATASET, n_train=_FULL_N, n_test=_FULL_TEST,
                                     widths=(256, 256), batch_size=64, gd_lr=0.1, adam_lr=1e-3,
                                     clips=(3e-4, 1e-3, 3e-3, 1e-2), seeds=(0, 1, 2, 3, 4), max_steps=50_000,
                                     stop_loss=0.01, eig_tol=1e-4),
    },
    run=run_adaptive_generalisation)
