"""Experiments of the classical chapters: sharpness during GD, and how to measure it correctly.

* ``sharpness_two_etas`` - full-batch GD on a tanh MLP at two step sizes (one vmapped population),
  tracking the sharpness :math:`S(\\theta_t)` (Lanczos with residuals) against the thresholds :math:`2/\\eta`.
* ``solver_accuracy`` - train a small net into the edge of stability, where the top Hessian
  eigenvalues cluster near :math:`2/\\eta`, then compare the dense spectrum (truth) with Lanczos,
  power iteration with a relative-change stopping rule, and a tiny-Krylov Lanczos; and count
  Hessian-vector products with and without warm starts across consecutive GD steps.

The measurements come from :mod:`instabilities.curvature.compare` (``compare_solvers``,
``warm_start_matvecs``, ``dense_hessian_blocked``; what a product costs: ``curvature.time_hvps``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from .. import curvature
from ..config import Config, ConfigError, require_choice, require_nonnegative, require_positive, require_positive_int
from ..data import DATASETS
from ..models import ACTIVATIONS, ModelSpec
from ..train import Problem, TrainConfig, build_problem, train
from . import registry as experiments
from .common import NetConfig, run_population

Objective = Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]


# =========================================================================== sharpness at two step sizes
@dataclasses.dataclass(frozen=True)
class SharpnessTwoEtasConfig(NetConfig):
    """Full-batch GD at several step sizes, tracking the top Hessian eigenvalue (network fields from
    :class:`~instabilities.experiments.common.NetConfig`)."""

    dataset: str = "mnist1d"
    n_train: int = 500
    n_test: int = 200  # test metrics are only logged at the end of a run
    etas: tuple[float, ...] = (0.25, 0.5)
    steps: int = 600
    eig_every: int = 20
    n_eigs: int = 1
    eig_tol: float = 1e-3
    seed: int = 0
    dtype: str = "float32"

    def validate(self) -> None:
        super().validate()
        require_choice("dtype", self.dtype, ("float32", "float64"))
        require_positive_int("steps", self.steps)
        require_positive_int("eig_every", self.eig_every)
        require_positive_int("n_eigs", self.n_eigs)
        require_positive("eig_tol", self.eig_tol)
        if not self.etas:
            raise ConfigError("etas is empty; give at least one step size, e.g. etas=(0.2, 0.4).")
        for eta in self.etas:
            require_positive("etas entry (a step size)", eta)
        if self.eig_every > self.steps:
            raise ConfigError(f"eig_every={self.eig_every} exceeds steps={self.steps}; lower eig_every.")

    def gd_config(self, eta: float, device: str = "cpu") -> TrainConfig:
        """The :class:`~instabilities.train.TrainConfig` of the run at step size ``eta``."""
        return self.train_config(
            optimizer="gd",
            lr=float(eta),
            steps=self.steps,
            seed=self.seed,
            eig_every=self.eig_every,
            n_eigs=self.n_eigs,
            eig_tol=self.eig_tol,
            device=device,
            dtype=self.dtype,
        )


def run_sharpness_two_etas(
    cfg: SharpnessTwoEtasConfig, device: str = "cpu", progress: Progress | None = None
) -> dict[str, np.ndarray]:
    """Train all step sizes as one vmapped population; arrays padded with NaN after a divergence.

    ``train_loss`` is ``(len(etas), steps+1)``; ``eigs`` is ``(len(etas), n_evals, n_eigs)`` at
    ``eig_step``; ``sharpness = eigs[..., 0]``; ``eig_residuals`` alongside. ``eig_matvecs``
    ``(len(etas), n_evals)`` counts the products per member of the batched Lanczos (which runs until
    every member has converged, so the count is shared); ``wall_seconds`` is the population's.
    At scale ``full`` it checkpoints and resumes (:func:`instabilities.experiments.common.run_population`).
    """
    configs = [cfg.gd_config(eta, device) for eta in cfg.etas]
    prob = build_problem(configs[0])
    pop = run_population(configs, progress=progress, name="sharpness_two_etas", cfg=cfg, problem=prob)
    m = len(cfg.etas)
    return {
        "etas": np.asarray(cfg.etas, dtype=np.float64),
        "step": np.arange(cfg.steps + 1),
        "eig_step": pop.eig_step,
        "train_loss": pop.train_loss,
        "train_acc": pop.train_acc,
        "eigs": pop.eigs,
        "sharpness": pop.eigs[..., 0],
        "eig_residuals": pop.eig_residuals,
        "eig_matvecs": np.tile(pop.eig_matvecs, (m, 1)),
        "diverged": pop.diverged,
        "diverged_step": pop.diverged_step,
        "wall_seconds": np.asarray(pop.wall_seconds),
        "n_params": np.asarray(prob.flat.dim),
    }


experiments.register(
    "sharpness_two_etas",
    chapter="measuring_sharpness",
    description="Sharpness of a tanh MLP during full-batch GD (MSE) at two step sizes eta and 2*eta.",
    configs={
        "ci": SharpnessTwoEtasConfig(scale="ci"),
        "full": SharpnessTwoEtasConfig(
            scale="full",
            n_train=4000,
            widths=(200, 200),
            etas=(0.1, 0.2),
            steps=5000,
            eig_every=20,
            n_eigs=2,
            eig_tol=1e-4,
        ),
    },
    run=run_sharpness_two_etas,
    resumable=True,
)


# =========================================================================== solver accuracy at the EoS
@dataclasses.dataclass(frozen=True)
class SolverAccuracyConfig(Config):
    """Train into the edge of stability, then compare eigensolvers against the dense spectrum."""

    dataset: str = "mnist1d"
    n_train: int = 500
    n_test: int = 200
    widths: tuple[int, ...] = (24, 24)
    activation: str = "tanh"
    eta: float = 0.5
    train_steps: int = 400
    track_every: int = 40  # sharpness along the training run (0: not tracked)
    seed: int = 0
    dtype: str = "float64"
    k: int = 4
    lanczos_tol: float = 1e-8
    lanczos_max_iter: int = 300
    power_tol: float = 1e-3
    power_max_iter: int = 100
    tiny_krylov: int = 8
    dense: bool = True
    n_dense_top: int = 20
    warm_steps: int = 6
    warm_k: int = 2
    warm_tol: float = 1e-6

    def validate(self) -> None:
        super().validate()
        require_choice("dataset", self.dataset, DATASETS)
        require_choice("activation", self.activation, tuple(ACTIVATIONS))
        require_choice("dtype", self.dtype, ("float32", "float64"))
        require_positive("eta", self.eta)
        for name in (
            "n_train",
            "n_test",
            "train_steps",
            "k",
            "lanczos_max_iter",
            "power_max_iter",
            "tiny_krylov",
            "n_dense_top",
            "warm_steps",
            "warm_k",
        ):
            require_positive_int(name, getattr(self, name))
        require_nonnegative("track_every", self.track_every)
        for name in ("lanczos_tol", "power_tol", "warm_tol"):
            require_positive(name, getattr(self, name))
        if self.n_dense_top < self.k:
            raise ConfigError(f"n_dense_top={self.n_dense_top} must be >= k={self.k} to compare the top k.")

    def train_config(self, device: str = "cpu") -> TrainConfig:
        return TrainConfig(
            scale=self.scale,
            dataset=self.dataset,
            n_train=self.n_train,
            n_test=self.n_test,
            model=ModelSpec("mlp", tuple(self.widths), self.activation),
            loss="mse",
            optimizer="gd",
            lr=self.eta,
            steps=self.train_steps,
            seed=self.seed,
            eig_every=self.track_every,
            n_eigs=1,
            eig_tol=1e-4,
            device=device,
            dtype=self.dtype,
        )


def run_solver_accuracy(
    cfg: SolverAccuracyConfig, device: str = "cpu", progress: Progress | None = None
) -> dict[str, np.ndarray]:
    """Train (GD) into the EoS, compare solvers at the final iterate, then count warm-start savings."""
    tcfg = cfg.train_config(device)
    prob: Problem = build_problem(tcfg)
    hist = train(tcfg, problem=prob, keep_theta=True, progress=progress)
    if hist.diverged:
        raise ConfigError(f"the training run diverged at step {hist.diverged_step}; lower eta={cfg.eta}.")
    theta = torch.as_tensor(hist.theta_final, device=prob.flat.theta0.device)
    out = curvature.compare_solvers(
        prob.objective,
        theta,
        k=cfg.k,
        solvers=("lanczos", "power", "tiny"),
        reference="dense" if cfg.dense else "lanczos",
        lanczos_tol=cfg.lanczos_tol,
        lanczos_max_iter=cfg.lanczos_max_iter,
        power_tol=cfg.power_tol,
        power_max_iter=cfg.power_max_iter,
        tiny_krylov=cfg.tiny_krylov,
        n_reference=cfg.n_dense_top,
        seed=cfg.seed,
    )
    warm = curvature.warm_start_matvecs(prob.objective, theta, cfg.eta, cfg.warm_steps, k=cfg.warm_k, tol=cfg.warm_tol)
    out.update({f"warm_{key}": val for key, val in warm.items()})
    out.update(
        {
            "eta": np.asarray(cfg.eta),
            "n_params": np.asarray(prob.flat.dim),
            "train_loss": np.asarray(hist.train_loss),
            "track_step": np.asarray(hist.eig_step),
            "track_sharpness": hist.sharpness,
        }
    )
    return out


experiments.register(
    "solver_accuracy",
    chapter="measuring_sharpness",
    description="Dense spectrum vs Lanczos, power iteration and tiny-Krylov Lanczos at the edge of stability.",
    configs={
        "ci": SolverAccuracyConfig(scale="ci"),
        "full": SolverAccuracyConfig(
            scale="full",
            n_train=4000,
            widths=(64, 64),
            eta=0.2,
            train_steps=3000,
            track_every=50,
            k=6,
            n_dense_top=40,
            tiny_krylov=12,
            warm_steps=20,
        ),
    },
    run=run_solver_accuracy,
)
