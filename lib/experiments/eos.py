"""Edge-of-stability experiments (Cohen et al., 2021): progressive sharpening, the 2/eta plateau,
non-monotone loss, several eigenvalues at 2/eta, and gradient descent against gradient flow.

Registered experiments (each with a ``ci`` and a ``full`` config):

* ``eos_sweep``    - full-batch GD with MSE on an offline dataset for several step sizes, top
  Hessian eigenvalues tracked every ``eig_every`` steps; the step sizes run as one vmapped
  population (:mod:`instabilities.population`);
* ``eos_sweep_ce`` - the same with cross-entropy;
* ``eos_cifar10``  - the canonical setting (fc-tanh 200-200 on the first 5k CIFAR-10 images);
  needs a local copy of CIFAR-10 and raises a clear ``FileNotFoundError`` otherwise;
* ``eos_flow``     - GD against the gradient flow from the same initialisation, compared at
  ``t = eta * step``.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch

from . import registry as experiments
from ..config import ConfigError, require_choice, require_positive, require_positive_int
from .common import NetConfig, run_population
from ..dynamics.gradient_flow import distances, gradient_flow
from ..train import StepContext, TrainConfig, build_problem, train


@dataclasses.dataclass(frozen=True)
class EosSweepConfig(NetConfig):
    """Full-batch GD on an MLP for several step sizes, with the top ``n_eigs`` Hessian eigenvalues tracked."""

    dataset: str = "mnist1d"
    n_train: int = 1000
    n_test: int = 1000
    widths: tuple[int, ...] = (100, 100)
    etas: tuple[float, ...] = (0.2, 0.4)
    steps: int = 1000
    eig_every: int = 50
    n_eigs: int = 3
    eig_tol: float = 1e-4
    n_hessian: int | None = None
    stop_acc: float = 1.1  # > 1: never stop early
    seed: int = 0
    dtype: str = "float32"

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.etas, tuple) or len(self.etas) == 0:
            raise ConfigError(f"etas={self.etas!r} must be a non-empty tuple of step sizes, e.g. (0.2, 0.4).")
        for eta in self.etas:
            require_positive("eta (each entry of etas)", eta)
        require_positive_int("steps", self.steps)
        require_positive_int("eig_every", self.eig_every)
        require_positive_int("n_eigs", self.n_eigs)
        require_positive("eig_tol", self.eig_tol)
        require_choice("dtype", self.dtype, ("float32", "float64"))
        if self.n_hessian is not None:
            require_positive_int("n_hessian", self.n_hessian)

    def gd_config(self, eta: float, device: str = "cpu") -> TrainConfig:
        """The :class:`TrainConfig` of the run with step size ``eta``."""
        return self.train_config(optimizer="gd", lr=float(eta), steps=self.steps, seed=self.seed,
                                 eig_every=self.eig_every, n_eigs=self.n_eigs, eig_tol=self.eig_tol,
                                 n_hessian=self.n_hessian, stop_acc=self.stop_acc, device=device, dtype=self.dtype)


def run_eos_sweep(cfg: EosSweepConfig, device: str = "cpu", progress=None, name: str | None = None) -> dict[str, np.ndarray]:
    """All step sizes as one vmapped population (same data and initialisation for every eta): losses
    every step, eigenvalues every ``eig_every`` steps (``nan`` after a divergence or an early stop).

    ``name`` (the registered experiment) makes a ``full``-scale run checkpoint and resume
    (:func:`instabilities.exp_common.run_population`)."""
    pop = run_population([cfg.gd_config(eta, device) for eta in cfg.etas], progress=progress, name=name, cfg=cfg)
    return {"etas": np.asarray(cfg.etas, float), "step": np.arange(cfg.steps + 1), "eig_step": pop.eig_step,
            "train_loss": pop.train_loss, "train_acc": pop.train_acc, "eigs": pop.eigs,
            "eig_residuals": pop.eig_residuals, "diverged": pop.diverged, "diverged_step": pop.diverged_step,
            "test_acc": pop.test_acc}


@dataclasses.dataclass(frozen=True)
class EosFlowConfig(NetConfig):
    """GD with step size ``eta`` against the gradient flow (RK4) from the same initialisation."""

    dataset: str = "mnist1d"
    n_train: int = 1000
    n_test: int = 1000
    widths: tuple[int, ...] = (100, 100)
    eta: float = 0.4
    steps: int = 300
    compare_every: int = 10
    flow_alpha: float = 1.0
    flow_max_step: float = 1.0
    flow_sharpness_every: int = 5
    eig_tol: float = 1e-4
    seed: int = 0
    dtype: str = "float32"

    def validate(self) -> None:
        super().validate()
        require_positive("eta", self.eta)
        require_positive_int("steps", self.steps)
        require_positive_int("compare_every", self.compare_every)
        if self.compare_every > self.steps:
            raise ConfigError(f"compare_every={self.compare_every} exceeds steps={self.steps}; lower compare_every.")
        require_positive("flow_alpha", self.flow_alpha)
        if self.flow_alpha > 2.5:
            raise ConfigError(f"flow_alpha={self.flow_alpha} makes RK4 unstable (h S > 2.8); use flow_alpha <= 2.5.")
        require_positive("flow_max_step", self.flow_max_step)
        require_positive_int("flow_sharpness_every", self.flow_sharpness_every)
        require_positive("eig_tol", self.eig_tol)
        require_choice("dtype", self.dtype, ("float32", "float64"))

    def gd_config(self, device: str = "cpu") -> TrainConfig:
        """The :class:`TrainConfig` of the GD run (sharpness tracked at every comparison step)."""
        return self.train_config(optimizer="gd", lr=float(self.eta), steps=self.steps, seed=self.seed,
                                 eig_every=self.compare_every, n_eigs=1, eig_tol=self.eig_tol, device=device,
                                 dtype=self.dtype)


def run_eos_flow(cfg: EosFlowConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """GD iterates and sharpness every ``compare_every`` steps, the flow at ``t = eta * step``, and their distance."""
    tc = cfg.gd_config(device)
    problem = build_problem(tc)
    snapshots: list[torch.Tensor] = []

    def keep(ctx: StepContext) -> None:
        if ctx.step % cfg.compare_every == 0:
            snapshots.append(ctx.theta.clone())

    hist = train(tc, callbacks=[keep], problem=problem, progress=progress)
    gd_steps = np.asarray(hist.eig_step[:len(snapshots)])
    times = cfg.eta * gd_steps
    flow = gradient_flow(problem.objective, problem.flat.theta0, times, alpha=cfg.flow_alpha,
                         max_step=cfg.flow_max_step, sharpness_every=cfg.flow_sharpness_every,
                         eig_tol=max(cfg.eig_tol, 1e-3))
    gd_thetas = torch.stack(snapshots)
    dist = distances(gd_thetas, flow.thetas)
    gd_sharp = np.asarray(hist.eigs)[:len(snapshots), 0]
    crossed = np.flatnonzero(gd_sharp >= 2.0 / cfg.eta)
    return {"eta": np.asarray(cfg.eta), "step": np.arange(len(hist.train_loss)),
            "gd_loss": np.asarray(hist.train_loss), "compare_step": gd_steps, "time": times,
            "gd_sharpness": gd_sharp, "flow_sharpness": flow.sharpness, "flow_loss": flow.loss,
            "distance": dist, "gd_norm": gd_thetas.double().norm(dim=1).numpy(),
            "first_crossing_step": np.asarray(int(gd_steps[crossed[0]]) if len(crossed) else -1),
            "flow_rk4_steps": np.asarray(flow.n_rk4_steps), "diverged": np.asarray(hist.diverged),
            "flow_diverged": np.asarray(flow.diverged)}


# -- registrations ------------------------------------------------------------------------------
_FC_FULL = dict(widths=(200, 200), activation="tanh")

experiments.register(
    "eos_sweep", chapter="edge_of_stability",
    description="Progressive sharpening and the 2/eta plateau: full-batch GD, MSE, tanh MLP, several eta.",
    configs={
        "ci": EosSweepConfig(scale="ci", dataset="mnist1d", n_train=1000, widths=(100, 100), etas=(0.2, 0.4),
                             steps=800, eig_every=40, n_eigs=3),
        "full": EosSweepConfig(scale="full", dataset="mnist1d", n_train=4000, etas=(0.05, 0.1, 0.2, 0.4),
                               steps=6000, eig_every=25, n_eigs=4, **_FC_FULL),
    },
    run=functools.partial(run_eos_sweep, name="eos_sweep"), resumable=True)

experiments.register(
    "eos_sweep_ce", chapter="edge_of_stability",
    description="The edge of stability with cross-entropy loss (same network and data as eos_sweep).",
    configs={
        "ci": EosSweepConfig(scale="ci", dataset="mnist1d", n_train=1000, widths=(100, 100), loss="ce",
                             etas=(0.5,), steps=400, eig_every=20, n_eigs=1),
        "full": EosSweepConfig(scale="full", dataset="mnist1d", n_train=4000, loss="ce", etas=(0.25, 0.5, 1.0),
                               steps=6000, eig_every=25, n_eigs=2, **_FC_FULL),
    },
    run=functools.partial(run_eos_sweep, name="eos_sweep_ce"), resumable=True)

experiments.register(
    "eos_cifar10", chapter="edge_of_stability",
    description="The canonical setting of Cohen et al. (2021): fc-tanh 200-200 on the first 5k CIFAR-10 images, "
                "MSE. Needs a local copy of CIFAR-10 (see data.load_dataset).",
    configs={
        "ci": EosSweepConfig(scale="ci", dataset="cifar10", n_train=500, etas=(0.02,), steps=100, eig_every=50,
                             n_eigs=1, **_FC_FULL),
        "full": EosSweepConfig(scale="full", dataset="cifar10", n_train=5000, etas=(0.01, 0.02, 0.04),
                               steps=10000, eig_every=50, n_eigs=2, stop_acc=0.99, **_FC_FULL),
    },
    run=functools.partial(run_eos_sweep, name="eos_cifar10"), resumable=True)

experiments.register(
    "eos_flow", chapter="edge_of_stability",
    description="Gradient descent against gradient flow (RK4, step 1/S) from the same initialisation.",
    configs={
        "ci": EosFlowConfig(scale="ci", dataset="mnist1d", n_train=1000, widths=(100, 100), eta=0.4, steps=200,
                            compare_every=10, flow_sharpness_every=20),
        "full": EosFlowConfig(scale="full", dataset="mnist1d", n_train=4000, eta=0.1, steps=3000,
                              compare_every=25, **_FC_FULL),
    },
    run=run_eos_flow)


# -- summaries printed by the chapter -------------------------------------------------------------
def first_crossing(eig_step: np.ndarray, sharpness: np.ndarray, threshold: float) -> int:
    """First tracked step whose sharpness is at least ``threshold`` (-1 if never)."""
    idx = np.flatnonzero(np.nan_to_num(np.asarray(sharpness), nan=-np.inf) >= threshold)
    return int(np.asarray(eig_step)[idx[0]]) if len(idx) else -1


def summarize_sweep(res: dict[str, np.ndarray], settle: int = 100) -> list[dict[str, float]]:
    """Per step size: initial sharpness, first step with ``S >= 2/eta``, and on the plateau (tracked
    steps at least ``settle`` steps after that crossing) the min / mean / max of ``eta S / 2``, the
    fraction of steps whose loss went *up*, and the loss at the crossing and at the end."""
    out = []
    for i, eta in enumerate(np.asarray(res["etas"], float)):
        s = res["eigs"][i, :, 0]
        loss = res["train_loss"][i]
        cross = first_crossing(res["eig_step"], s, 2.0 / eta)
        row = {"eta": float(eta), "two_over_eta": 2.0 / float(eta), "S0": float(s[0]), "crossing_step": cross,
               "plateau_min": np.nan, "plateau_mean": np.nan, "plateau_max": np.nan,
               "frac_loss_up": np.nan, "loss_at_crossing": np.nan, "loss_final": float(loss[np.isfinite(loss)][-1]),
               "diverged": bool(res["diverged"][i])}
        if cross >= 0:
            on = (res["eig_step"] >= cross + settle) & np.isfinite(s)
            if on.any():
                ratio = eta * s[on] / 2.0
                row.update(plateau_min=float(ratio.min()), plateau_mean=float(ratio.mean()),
                           plateau_max=float(ratio.max()))
            tail = loss[cross:]
            tail = tail[np.isfinite(tail)]
            row["frac_loss_up"] = float(np.mean(np.diff(tail) > 0)) if len(tail) > 1 else np.nan
            row["loss_at_crossing"] = float(loss[cross])
        out.append(row)
    return out
