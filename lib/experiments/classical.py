"""Experiments of the classical chapters: sharpness during GD, and how to measure it correctly.

* ``sharpness_two_lrs`` - full-batch GD on a tanh MLP at two step sizes (one vmapped population),
  tracking the sharpness :math:`S(\\theta_t)` (Lanczos with residuals) against the thresholds :math:`2/\\eta`.
* ``solver_accuracy`` - train a small net into the edge of stability, where the top Hessian
  eigenvalues cluster near :math:`2/\\eta`, then compare the dense spectrum (truth) with Lanczos,
  power iteration with a relative-change stopping rule, and a tiny-Krylov Lanczos; and count
  Hessian-vector products with and without warm starts across consecutive GD steps.

Helpers used by the chapter and the tests: :func:`dense_hessian_blocked`, :func:`solvers_vs_dense_spectrum`,
:func:`warm_start_matvecs` (what a product costs: ``curvature.time_hvps``).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch
from torch.func import grad

from .. import curvature

from . import registry as experiments
from ..config import (Config, ConfigError, require_choice, require_nonnegative, require_positive,
                     require_positive_int)
from ..data import DATASETS
from .common import NetConfig, run_population
from ..models import ACTIVATIONS, ModelSpec
from ..train import Problem, TrainConfig, build_problem, train

Objective = Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]


# =========================================================================== helpers
def dense_hessian_blocked(op: curvature.HessianOperator, block: int = 256) -> torch.Tensor:
    """The dense Hessian built from batched Hessian-vector products, ``block`` columns at a time.

    Memory stays bounded (one block of tangents at a time), unlike a single ``torch.func.hessian``
    call; the result is symmetrised (``(H + H^T)/2``) to remove round-off asymmetry.
    """
    require_positive_int("block", block)
    n = op.dim
    H = torch.empty(n, n, dtype=op.dtype, device=op.device)
    eye = torch.eye(n, dtype=op.dtype, device=op.device)
    for start in range(0, n, block):
        stop = min(n, start + block)
        H[:, start:stop] = op.matmat(eye[:, start:stop])
    return 0.5 * (H + H.T)


def solvers_vs_dense_spectrum(objective: Objective, theta: torch.Tensor, k: int = 4, lanczos_tol: float = 1e-8,
                    lanczos_max_iter: int = 300, power_tol: float = 1e-3, power_max_iter: int = 100,
                    tiny_krylov: int | None = None, dense: bool = True, n_dense_top: int = 20,
                    block: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Top-``k`` Hessian eigenvalues of ``objective`` at ``theta`` by several solvers, with residuals.

    Returns numpy arrays ``{solver}_values``, ``{solver}_residuals``, ``{solver}_matvecs`` for the
    solvers ``lanczos`` (full re-orthogonalisation, stops on Ritz residuals below ``lanczos_tol``),
    ``power`` (deflated power iteration stopping on a relative change below ``power_tol``) and
    ``tiny`` (Lanczos with ``tiny_krylov`` steps, default ``2k``, no convergence check), plus
    ``reference_values`` (top ``n_dense_top`` eigenvalues) and ``reference_spectrum`` (all of them)
    from the dense Hessian when ``dense`` is true, else from Lanczos run to ``1e-10``.
    Accuracy only; for wall times see ``block_eigs.time_eigensolvers`` and ``curvature.time_hvps``.
    """
    require_positive_int("k", k)
    tiny_krylov = 2 * k if tiny_krylov is None else tiny_krylov
    require_positive_int("tiny_krylov", tiny_krylov)
    out: dict[str, np.ndarray] = {}
    runs = {
        "lanczos": lambda op: curvature.lanczos(op, k, max_iter=lanczos_max_iter, tol=lanczos_tol, seed=seed),
        "power": lambda op: curvature.power_iteration(op, k, max_iter=power_max_iter, tol=power_tol, seed=seed),
        "tiny": lambda op: curvature.lanczos(op, k, max_iter=tiny_krylov, tol=0.0, seed=seed),
    }
    for name, solve in runs.items():
        op = curvature.HessianOperator(objective, theta, "reverse")
        res = solve(op)
        out[f"{name}_values"] = res.values.detach().cpu().double().numpy()
        out[f"{name}_residuals"] = res.residuals.detach().cpu().double().numpy()
        # matvecs used by the solver itself (the explicit residual check adds k more, not counted)
        out[f"{name}_matvecs"] = np.asarray(res.n_matvec - k)
        out[f"{name}_converged"] = np.asarray(bool(res.converged))
    op = curvature.HessianOperator(objective, theta, "reverse")
    if dense:
        spectrum = torch.linalg.eigvalsh(dense_hessian_blocked(op, block).double()).flip(0)
    else:
        spectrum = curvature.lanczos(op, n_dense_top, max_iter=max(600, 4 * n_dense_top), tol=1e-10,
                                     seed=seed + 1).values.double()
    spectrum = spectrum.cpu().numpy()
    out["reference_values"] = spectrum[:n_dense_top]
    out["reference_spectrum"] = spectrum
    out["reference_is_dense"] = np.asarray(dense)
    return out


def warm_start_matvecs(objective: Objective, theta: torch.Tensor, lr: float, steps: int, k: int = 2,
                       tol: float = 1e-6, max_iter: int = 300) -> dict[str, np.ndarray]:
    """Hessian-vector products per top-``k`` Lanczos solve over ``steps`` consecutive GD steps.

    At every iterate the top-``k`` eigenpairs are computed twice: from a random start (``cold``)
    and from the previous step's eigenvectors (``warm``). Returns per-step ``cold_matvecs``,
    ``warm_matvecs``, the eigenvalues ``cold_values`` / ``warm_values`` (``steps x k``) and
    ``loss`` along the way.
    """
    require_positive("lr", lr)
    require_positive_int("steps", steps)
    g = grad(objective)
    theta = theta.detach().clone()
    prev: torch.Tensor | None = None
    cold_n, warm_n, cold_v, warm_v, losses = [], [], [], [], []
    for t in range(steps):
        cold = curvature.lanczos(curvature.HessianOperator(objective, theta), k, max_iter=max_iter, tol=tol, seed=t)
        warm = cold if prev is None else curvature.lanczos(curvature.HessianOperator(objective, theta), k,
                                                           max_iter=max_iter, tol=tol, v0=prev, seed=t)
        prev = warm.vectors
        cold_n.append(cold.n_matvec - k)
        warm_n.append(warm.n_matvec - k)
        cold_v.append(cold.values.double().cpu().numpy())
        warm_v.append(warm.values.double().cpu().numpy())
        losses.append(float(objective(theta)))
        theta = theta - lr * g(theta)
    return {"cold_matvecs": np.asarray(cold_n), "warm_matvecs": np.asarray(warm_n),
            "cold_values": np.stack(cold_v), "warm_values": np.stack(warm_v), "loss": np.asarray(losses)}


# =========================================================================== sharpness at two step sizes
@dataclasses.dataclass(frozen=True)
class SharpnessTwoLrsConfig(NetConfig):
    """Full-batch GD at several step sizes, tracking the top Hessian eigenvalue (network fields from
    :class:`~instabilities.exp_common.NetConfig`)."""

    dataset: str = "mnist1d"
    n_train: int = 500
    n_test: int = 200  # test metrics are only logged at the end of a run
    lrs: tuple[float, ...] = (0.25, 0.5)
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
        if not self.lrs:
            raise ConfigError("lrs is empty; give at least one step size, e.g. lrs=(0.2, 0.4).")
        for lr in self.lrs:
            require_positive("lrs entry (a step size eta)", lr)
        if self.eig_every > self.steps:
            raise ConfigError(f"eig_every={self.eig_every} exceeds steps={self.steps}; lower eig_every.")

    def gd_config(self, lr: float, device: str = "cpu") -> TrainConfig:
        """The :class:`~instabilities.train.TrainConfig` of the run at step size ``lr``."""
        return self.train_config(optimizer="gd", lr=float(lr), steps=self.steps, seed=self.seed,
                                 eig_every=self.eig_every, n_eigs=self.n_eigs, eig_tol=self.eig_tol, device=device,
                                 dtype=self.dtype)


def run_sharpness_two_lrs(cfg: SharpnessTwoLrsConfig, device: str = "cpu",
                          progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Train all step sizes as one vmapped population; arrays padded with NaN after a divergence.

    ``train_loss`` is ``(len(lrs), steps+1)``; ``eigs`` is ``(len(lrs), n_evals, n_eigs)`` at
    ``eig_step``; ``sharpness = eigs[..., 0]``; ``eig_residuals`` alongside. ``eig_matvecs``
    ``(len(lrs), n_evals)`` counts the products per member of the batched Lanczos (which runs until
    every member has converged, so the count is shared); ``wall_seconds`` is the population's.
    At scale ``full`` it checkpoints and resumes (:func:`instabilities.exp_common.run_population`).
    """
    configs = [cfg.gd_config(lr, device) for lr in cfg.lrs]
    prob = build_problem(configs[0])
    pop = run_population(configs, progress=progress, name="sharpness_two_lrs", cfg=cfg, problem=prob)
    m = len(cfg.lrs)
    return {"lrs": np.asarray(cfg.lrs, dtype=np.float64), "step": np.arange(cfg.steps + 1),
            "eig_step": pop.eig_step, "train_loss": pop.train_loss, "train_acc": pop.train_acc,
            "eigs": pop.eigs, "sharpness": pop.eigs[..., 0], "eig_residuals": pop.eig_residuals,
            "eig_matvecs": np.tile(pop.eig_matvecs, (m, 1)), "diverged": pop.diverged,
            "diverged_step": pop.diverged_step, "wall_seconds": np.asarray(pop.wall_seconds),
            "n_params": np.asarray(prob.flat.dim)}


experiments.register(
    "sharpness_two_lrs", chapter="measuring_sharpness",
    description="Sharpness of a tanh MLP during full-batch GD (MSE) at two step sizes eta and 2*eta.",
    configs={
        "ci": SharpnessTwoLrsConfig(scale="ci"),
        "full": SharpnessTwoLrsConfig(scale="full", n_train=4000, widths=(200, 200), lrs=(0.1, 0.2),
                                      steps=5000, eig_every=20, n_eigs=2, eig_tol=1e-4),
    },
    run=run_sharpness_two_lrs, resumable=True)


# =========================================================================== solver accuracy at the EoS
@dataclasses.dataclass(frozen=True)
class SolverAccuracyConfig(Config):
    """Train into the edge of stability, then compare eigensolvers against the dense spectrum."""

    dataset: str = "mnist1d"
    n_train: int = 500
    n_test: int = 200
    widths: tuple[int, ...] = (24, 24)
    activation: str = "tanh"
    lr: float = 0.5
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
        require_positive("lr", self.lr)
        for name in ("n_train", "n_test", "train_steps", "k", "lanczos_max_iter", "power_max_iter", "tiny_krylov",
                     "n_dense_top", "warm_steps", "warm_k"):
            require_positive_int(name, getattr(self, name))
        require_nonnegative("track_every", self.track_every)
        for name in ("lanczos_tol", "power_tol", "warm_tol"):
            require_positive(name, getattr(self, name))
        if self.n_dense_top < self.k:
            raise ConfigError(f"n_dense_top={self.n_dense_top} must be >= k={self.k} to compare the top k.")

    def train_config(self, device: str = "cpu") -> TrainConfig:
        return TrainConfig(scale=self.scale, dataset=self.dataset, n_train=self.n_train, n_test=self.n_test,
                           model=ModelSpec("mlp", tuple(self.widths), self.activation), loss="mse",
                           optimizer="gd", lr=self.lr, steps=self.train_steps, seed=self.seed,
                           eig_every=self.track_every, n_eigs=1, eig_tol=1e-4, device=device, dtype=self.dtype)


def run_solver_accuracy(cfg: SolverAccuracyConfig, device: str = "cpu",
                        progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Train (GD) into the EoS, compare solvers at the final iterate, then count warm-start savings."""
    tcfg = cfg.train_config(device)
    prob: Problem = build_problem(tcfg)
    hist = train(tcfg, problem=prob, keep_theta=True, progress=progress)
    if hist.diverged:
        raise ConfigError(f"the training run diverged at step {hist.diverged_step}; lower lr={cfg.lr}.")
    theta = torch.as_tensor(hist.theta_final, device=prob.flat.theta0.device)
    out = solvers_vs_dense_spectrum(prob.objective, theta, k=cfg.k, lanczos_tol=cfg.lanczos_tol,
                          lanczos_max_iter=cfg.lanczos_max_iter, power_tol=cfg.power_tol,
                          power_max_iter=cfg.power_max_iter, tiny_krylov=cfg.tiny_krylov, dense=cfg.dense,
                          n_dense_top=cfg.n_dense_top, seed=cfg.seed)
    warm = warm_start_matvecs(prob.objective, theta, cfg.lr, cfg.warm_steps, k=cfg.warm_k, tol=cfg.warm_tol)
    out.update({f"warm_{key}": val for key, val in warm.items()})
    out.update({"lr": np.asarray(cfg.lr), "n_params": np.asarray(prob.flat.dim),
                "train_loss": np.asarray(hist.train_loss), "track_step": np.asarray(hist.eig_step),
                "track_sharpness": hist.sharpness})
    return out


experiments.register(
    "solver_accuracy", chapter="measuring_sharpness",
    description="Dense spectrum vs Lanczos, power iteration and tiny-Krylov Lanczos at the edge of stability.",
    configs={
        "ci": SolverAccuracyConfig(scale="ci"),
        "full": SolverAccuracyConfig(scale="full", n_train=4000, widths=(100, 100), lr=0.2, train_steps=3000,
                                     track_every=50, k=6, n_dense_top=40, tiny_krylov=12, warm_steps=20),
    },
    run=run_solver_accuracy)
