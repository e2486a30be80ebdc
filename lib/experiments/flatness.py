"""Experiments of the chapter on the flatness bias (Wang & Roberts, 2026, §5–6).

* ``gfs_descent``: the network counterpart of the flatness dynamical system. The deep linear network of
  :mod:`instabilities.experiments.rpe` is trained by GD at several step sizes, each given as
  ``eta_gfs = eta S_GFS(theta_0)``: the sharpness of the minimiser gradient flow would reach from the
  start, in units of ``2 / eta``. Every ``gfs_every`` steps the gradient-flow solution (GFS) of the current
  iterate is computed; its sharpness is the latent valley curvature ``U_t`` and ``X_t = log(eta U_t)``.
  Also recorded: the distance between the GFS minimisers over time (which valley GD is in).
* ``flatness_goldilocks``: the de-confounded flatness and generalization sweep. A tanh MLP trains by
  full-batch GD at step sizes with ``eta S(theta_0) < 2`` until a common training loss ``stop_loss``
  (not a fixed step budget), over several seeds, as one vmapped population; at the stopping point the
  top Hessian eigenvalue (Lanczos) and the Hessian trace (Hutchinson) measure flatness, and the test
  accuracy is taken on the full test split.

The protocols are ours; the paper's own settings (CIFAR-10, Fashion-MNIST, VGG/ResNet, §6.2) were not
recovered beyond their names and need data this book does not ship.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.func import grad, hessian, vmap

from .. import curvature
from ..config import ConfigError, require_positive, require_positive_int
from ..population import population_configs
from ..train import build_problem
from . import registry as experiments
from .common import NetConfig, run_population
from .rpe import EpisodeConfig, gfs_sharpness, t_interval

# -- the flatness dynamical system on a network --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GfsDescentConfig(EpisodeConfig):
    """The deep linear problem of :class:`~instabilities.experiments.rpe.EpisodeConfig`; GD at every
    ``eta_gfs`` in ``eta_gfs_values`` (``eta = eta_gfs / S_GFS(theta_0)`` per seed) for ``steps`` steps."""

    eta_gfs_values: tuple[float, ...] = (1.6, 2.2, 2.5, 2.8)
    steps: int = 150
    gfs_every: int = 10
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)

    def validate(self) -> None:
        super().validate()
        if not self.eta_gfs_values:
            raise ConfigError("eta_gfs_values is empty; list the step sizes in units of 2/S_GFS, e.g. (1.6, 2.5).")
        for v in self.eta_gfs_values:
            require_positive("eta_gfs (each entry of eta_gfs_values)", v)
        if self.steps % self.gfs_every:
            raise ConfigError(f"steps={self.steps} must be a multiple of gfs_every={self.gfs_every}.")


def run_gfs_descent(cfg: GfsDescentConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """Arrays ``(n_values, n_seeds, n_points)``: ``gfs`` (GFS sharpness), ``x`` (``log(eta gfs)``),
    ``basin_distance`` (distance of the GFS minimiser from the first one), ``loss``; ``eta``, ``eta_s0`` and
    ``included`` are ``(n_values, n_seeds)``; ``step`` the measured steps. Runs with ``eta S(theta_0) >= 2``
    (a catapult at step 0) are not ``included``: their ``gfs``, ``x`` and ``basin_distance`` are NaN."""
    if device != "cpu":
        raise ConfigError("gfs_descent is a small CPU experiment; run it with device='cpu'.")
    net = cfg.problem()
    Theta0 = net.init(cfg.seeds, cfg.layer_scales)
    S0 = torch.linalg.eigvalsh(vmap(hessian(net.loss))(Theta0))[:, -1]
    gfs0 = torch.as_tensor(gfs_sharpness(net, Theta0, cfg.gfs_step, cfg.gfs_iters)[0])
    V, n = len(cfg.eta_gfs_values), len(cfg.seeds)
    eta = torch.as_tensor(cfg.eta_gfs_values, dtype=torch.float64)[:, None] / gfs0[None, :]  # (V, n)
    Theta = Theta0.repeat(V, 1)
    h = eta.reshape(-1, 1)
    g = vmap(grad(net.loss))
    idx = np.arange(0, cfg.steps + 1, cfg.gfs_every)
    snaps = []
    for t in range(cfg.steps + 1):
        if t % cfg.gfs_every == 0:
            snaps.append(Theta.clone())
        if t == cfg.steps:
            break
        Theta = Theta - h * g(Theta)
        if progress:
            progress(t + 1, cfg.steps + 1)
    P = torch.stack(snaps, 1)  # (V n, points, dim)
    X = P.reshape(-1, net.n_params)
    for _ in range(cfg.gfs_iters):
        X = X - cfg.gfs_step * g(X)
    ok = torch.isfinite(X).all(-1)  # a run that diverged (only runs left out can) has no gradient-flow solution
    X = torch.where(ok[:, None], X, torch.zeros_like(X))
    gfs = torch.linalg.eigvalsh(vmap(hessian(net.loss))(X))[:, -1]
    gfs = torch.where(ok, gfs, torch.full_like(gfs, float("nan"))).reshape(V, n, len(idx)).numpy()
    mins = X.reshape(V, n, len(idx), -1)
    included = (eta * S0[None, :] < 2.0).numpy()  # eta S(theta_0) >= 2 would start with a catapult: left out (NaN)
    drop = lambda a: np.where(included[:, :, None], a, np.nan)  # noqa: E731
    out = {
        "gfs": drop(gfs),
        "x": drop(np.log(eta.numpy()[:, :, None] * gfs)),
        "basin_distance": drop((mins - mins[:, :, :1]).norm(dim=-1).numpy()),
        "included": included,
        "loss": vmap(net.loss)(P.reshape(-1, net.n_params)).reshape(V, n, len(idx)).numpy(),
        "gfs_loss": vmap(net.loss)(X).reshape(V, n, len(idx)).numpy(),
        "eta": eta.numpy(),
        "eta_s0": (eta * S0[None, :]).numpy(),
        "step": idx,
        "eta_gfs_values": np.asarray(cfg.eta_gfs_values, float),
        "seeds": np.asarray(cfg.seeds),
    }
    return out


def seed_quantiles(x: np.ndarray, qs: tuple[float, ...] = (0.5, 0.8)) -> dict[float, np.ndarray]:
    """Quantiles over the seed axis (axis ``-2``) of ``(..., n_seeds, n_points)`` arrays, ignoring the NaN rows
    of runs left out: ``{q: (..., n_points)}``."""
    return {q: np.nanquantile(x, q, axis=-2) for q in qs}


# -- de-confounded flatness and generalization ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GoldilocksConfig(NetConfig):
    """Full-batch GD at every step size in ``etas`` and seed in ``seeds`` until the training loss is below
    ``stop_loss`` (at most ``max_steps``); sharpness every ``trace_every`` steps; at the end the top
    eigenvalue (Lanczos to ``eig_tol``) and the Hutchinson trace (``trace_samples`` probes)."""

    etas: tuple[float, ...] = (0.1, 0.2)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    stop_loss: float = 0.05
    max_steps: int = 2000
    trace_every: int = 50
    eig_tol: float = 1e-3
    eig_max_iter: int = 120
    trace_samples: int = 30

    def validate(self) -> None:
        super().validate()
        for name in ("max_steps", "trace_every", "eig_max_iter", "trace_samples"):
            require_positive_int(name, getattr(self, name))
        require_positive("stop_loss", self.stop_loss)
        require_positive("eig_tol", self.eig_tol)
        if not self.etas:
            raise ConfigError("etas is empty; list the step sizes to sweep, e.g. etas=(0.1, 0.5).")
        for e in self.etas:
            require_positive("eta (each entry of etas)", e)
        if list(self.etas) != sorted(self.etas):
            raise ConfigError(f"etas={self.etas} must be increasing; sort them.")
        if len(self.seeds) < 2:
            raise ConfigError("give at least two seeds (intervals need them), e.g. seeds=(0, 1, 2, 3, 4).")
        if self.max_steps % self.trace_every:
            raise ConfigError(f"max_steps={self.max_steps} must be a multiple of trace_every={self.trace_every}.")


def run_flatness_goldilocks(cfg: GoldilocksConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """Per (eta, seed): steps to reach ``stop_loss``, final loss, final top eigenvalue and Hutchinson trace,
    test accuracy (full test split), initial ``eta S(theta_0)``, divergence; sharpness traces.

    All ``len(etas) x len(seeds)`` runs train as one vmapped population (:mod:`instabilities.population`);
    at scale ``full`` it checkpoints and resumes (:func:`instabilities.experiments.common.run_population`)."""
    n, s = len(cfg.etas), len(cfg.seeds)
    base = cfg.train_config(
        optimizer="gd",
        lr=float(cfg.etas[0]),
        steps=cfg.max_steps,
        seed=cfg.seeds[0],
        eig_every=cfg.trace_every,
        n_eigs=1,
        eig_tol=cfg.eig_tol,
        eig_max_iter=cfg.eig_max_iter,
        stop_loss=cfg.stop_loss,
        device=device,
    )
    configs = population_configs(base, etas=cfg.etas, seeds=cfg.seeds)
    pop = run_population(configs, progress=progress, name="flatness_goldilocks", cfg=cfg, keep_theta=True)
    prob = build_problem(base)
    obj = prob.objective
    lam, tr, acc, floss = (np.full(len(configs), np.nan) for _ in range(4))
    for m in range(len(configs)):
        if pop.diverged[m]:
            continue
        theta = torch.as_tensor(pop.theta[m], dtype=prob.flat.theta0.dtype)
        eig = curvature.top_eigenpairs(obj, theta, k=1, tol=cfg.eig_tol, max_iter=cfg.eig_max_iter, seed=m)
        lam[m] = float(eig.values[0])
        tr[m] = curvature.hutchinson_trace(obj, theta, n_samples=cfg.trace_samples, seed=m).estimate
        with torch.no_grad():
            out = prob.flat(theta, prob.data.x_test)
            acc[m] = float((out.argmax(-1) == prob.data.y_test).double().mean())
            floss[m] = float(obj(theta))

    def grid(a: np.ndarray) -> np.ndarray:  # members are seed-major (eta varies fastest) -> (eta, seed, ...)
        a = np.asarray(a)
        return np.swapaxes(a.reshape((s, n) + a.shape[1:]), 0, 1)

    trace = grid(pop.sharpness)
    etas = np.asarray(cfg.etas, float)
    stopped = grid(pop.stopped_step)
    return {
        "etas": etas,
        "seeds": np.asarray(cfg.seeds),
        "sharpness_trace": trace,
        "trace_step": np.arange(trace.shape[-1]) * cfg.trace_every,
        "eta_s0": etas[:, None] * trace[:, :, 0],
        "final_sharpness": grid(lam),
        "hessian_trace": grid(tr),
        "test_acc": grid(acc),
        "final_loss": grid(floss),
        "steps_to_loss": np.where(stopped >= 0, stopped, -1),
        "reached": stopped >= 0,
        "diverged": grid(pop.diverged),
        "n_test": np.asarray(len(prob.data.y_test)),
    }


def summarize_goldilocks(res: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per step size: mean and 95 % t-interval over seeds of the final sharpness, Hessian trace, test
    accuracy and steps to the common loss; the fraction of runs that reached the loss or diverged."""
    out: dict[str, np.ndarray] = {
        "etas": res["etas"],
        "reached_fraction": res["reached"].mean(1),
        "diverged_fraction": res["diverged"].mean(1),
    }
    for key in ("final_sharpness", "hessian_trace", "test_acc", "steps_to_loss", "eta_s0"):
        v = np.where(res["reached"], res[key], np.nan) if key != "eta_s0" else res[key]
        stats = np.array([t_interval(row) for row in v])
        out[f"{key}_mean"], out[f"{key}_lo"], out[f"{key}_hi"] = stats.T
    return out


def paired_difference(res: dict[str, np.ndarray], key: str, i: int, j: int) -> tuple[float, float, float]:
    """``key`` at step size ``etas[j]`` minus at ``etas[i]``, paired by seed (same initialisation): mean and
    95 % t-interval over the seeds where both runs reached the common loss."""
    both = res["reached"][i] & res["reached"][j]
    return t_interval(res[key][j][both] - res[key][i][both])


# -- registration -------------------------------------------------------------------------------------

_GFS_CI = GfsDescentConfig(scale="ci")
_GFS_FULL = GfsDescentConfig(
    scale="full",
    eta_gfs_values=(1.6, 1.9, 2.2, 2.5, 2.8),
    steps=400,
    gfs_every=10,
    gfs_iters=2000,
    gfs_step=0.015,
    seeds=tuple(range(20)),
)
_GOLD_CI = GoldilocksConfig(
    scale="ci",
    dataset="digits",
    n_train=500,
    n_test=297,
    widths=(32, 32),
    etas=(0.15, 0.3, 0.45, 0.6),
    seeds=(0, 1, 2, 3, 4),
    stop_loss=0.05,
    max_steps=1000,
    trace_every=50,
)
_GOLD_FULL = GoldilocksConfig(
    scale="full",
    dataset="digits",
    n_train=1500,
    n_test=297,
    widths=(64, 64),
    etas=(0.1, 0.2, 0.3, 0.45, 0.6, 0.75),
    seeds=tuple(range(10)),
    stop_loss=0.02,
    max_steps=20000,
    trace_every=500,
    eig_tol=1e-4,
    eig_max_iter=300,
    trace_samples=50,
)

experiments.register(
    "gfs_descent",
    chapter="flatness_bias",
    description="Deep linear net: log-sharpness of the gradient-flow solution across seeds and "
    "step sizes (the network counterpart of X_t), and the valley GD is in",
    configs={"ci": _GFS_CI, "full": _GFS_FULL},
    run=run_gfs_descent,
)
experiments.register(
    "flatness_goldilocks",
    chapter="flatness_bias",
    description="GD to a common training loss at step sizes with eta S(theta_0) < 2: top eigenvalue, "
    "Hutchinson trace and test accuracy (full test split) over seeds",
    configs={"ci": _GOLD_CI, "full": _GOLD_FULL},
    run=run_flatness_goldilocks,
    resumable=True,
)
