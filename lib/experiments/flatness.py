"""Experiments of the chapters on rotational polarity and the flatness bias (Wang & Roberts, 2025).

* ``eigvec_rotation``: full-batch GD on a small tanh MLP at several step sizes; the top-``k`` Hessian
  eigenvectors every ``eig_every`` steps; rotation between consecutive measurements (angle of the top
  eigenvector, subspace similarity of the top ``k``), labelled by the phase ``eta S_t < 2`` or ``>= 2``.
* ``flatness_goldilocks``: final sharpness, test accuracy and divergence across a range of step sizes
  from stable to divergent, over several seeds, plus sharpness traces; all runs train as one vmapped
  population.

The protocol (full batch, MSE, sharpness by Lanczos on the training set) is ours; the paper's exact
protocol and numbers were not available to us.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .. import curvature

from . import registry as experiments
from ..config import ConfigError, require_positive, require_positive_int
from .common import NetConfig, run_population
from ..population import population_configs
from ..train import TrainConfig, train


@dataclasses.dataclass(frozen=True)
class GdSweepConfig(NetConfig):
    """The part shared by both experiments: the network (:class:`~instabilities.exp_common.NetConfig`),
    increasing step sizes ``etas``, ``steps`` of full-batch GD and the Lanczos settings."""

    etas: tuple[float, ...] = (0.1, 0.5)
    steps: int = 300
    eig_tol: float = 1e-3
    eig_max_iter: int = 120

    def validate(self) -> None:
        super().validate()
        require_positive_int("steps", self.steps)
        require_positive("eig_tol", self.eig_tol)
        require_positive_int("eig_max_iter", self.eig_max_iter)
        if not self.etas:
            raise ConfigError("etas is empty; list the step sizes to sweep, e.g. etas=(0.1, 0.5).")
        for e in self.etas:
            require_positive("eta (each entry of etas)", e)
        if list(self.etas) != sorted(self.etas):
            raise ConfigError(f"etas={self.etas} must be increasing; sort them.")

    def gd_config(self, eta: float, seed: int, **kw) -> TrainConfig:
        """The full-batch GD run at step size ``eta`` from initialisation ``seed``; ``kw`` adds tracking etc."""
        return self.train_config(optimizer="gd", lr=float(eta), steps=self.steps, seed=seed, eig_tol=self.eig_tol,
                                 eig_max_iter=self.eig_max_iter, **kw)


# -- eigenvector rotation ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RotationConfig(GdSweepConfig):
    """GD at each of ``etas``; top-``k`` eigenvectors every ``eig_every`` steps."""

    k: int = 3
    eig_every: int = 10
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        require_positive_int("k", self.k)
        require_positive_int("eig_every", self.eig_every)
        if self.eig_every >= self.steps:
            raise ConfigError(f"eig_every={self.eig_every} >= steps={self.steps} gives fewer than two "
                              "measurements; lower eig_every or raise steps.")


def rotation_between(vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For eigenvector blocks ``vecs[m]`` (``P x k``): angle (degrees) of the top eigenvector and top-``k``
    subspace similarity between consecutive measurements ``m`` and ``m + 1``."""
    vecs = np.asarray(vecs)
    if vecs.ndim != 3 or len(vecs) < 2:
        raise ConfigError("rotation_between needs an array (measurements >= 2, P, k) of eigenvectors.")
    angles, sims = [], []
    for a, b in zip(vecs[:-1], vecs[1:]):
        A, B = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        angles.append(curvature.vector_angle(A[:, 0], B[:, 0]))
        sims.append(curvature.subspace_similarity(A, B))
    return np.asarray(angles), np.asarray(sims)


def run_eigvec_rotation(cfg: RotationConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """Arrays of shape ``(n_eta, n_measurements)`` (``nan`` after a divergence); see the module docstring."""
    n_meas = cfg.steps // cfg.eig_every + 1
    n = len(cfg.etas)
    out = {k: np.full((n, n_meas), np.nan) for k in ("eig_step", "sharpness", "eta_sharpness")}
    out.update({k: np.full((n, n_meas - 1), np.nan) for k in ("top_angle_deg", "subspace_sim")})
    out["train_loss"] = np.full((n, cfg.steps + 1), np.nan)
    out["diverged"] = np.zeros(n, bool)
    for i, eta in enumerate(cfg.etas):
        step_progress = (lambda s, t, i=i: progress(i * cfg.steps + s, n * cfg.steps)) if progress else None
        h = train(cfg.gd_config(eta, cfg.seed, eig_every=cfg.eig_every, n_eigs=cfg.k, store_eigvecs=True,
                                device=device), progress=step_progress)
        m = len(h.eig_step)
        out["eig_step"][i, :m] = h.eig_step
        out["sharpness"][i, :m] = h.sharpness
        out["eta_sharpness"][i, :m] = eta * h.sharpness
        out["train_loss"][i, :len(h.train_loss)] = h.train_loss
        out["diverged"][i] = h.diverged
        if m >= 2:
            ang, sim = rotation_between(np.stack(h.eigvecs))
            out["top_angle_deg"][i, :m - 1] = ang
            out["subspace_sim"][i, :m - 1] = sim
    out["etas"] = np.asarray(cfg.etas, float)
    return out


def rotation_by_phase(res: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mean top-eigenvector angle and mean ``1 - sim`` per step size, split by the phase at the start of
    each interval: stable (``eta S_t < 2``) and unstable (``eta S_t >= 2``); ``nan`` where a phase is absent."""
    etaS = res["eta_sharpness"][:, :-1]
    out: dict[str, np.ndarray] = {"etas": res["etas"]}
    for name, mask in (("stable", etaS < 2.0), ("unstable", etaS >= 2.0)):
        ok = mask & np.isfinite(res["top_angle_deg"])
        cnt = ok.sum(1)
        with np.errstate(invalid="ignore"):
            out[f"angle_{name}"] = np.where(cnt > 0, np.where(ok, res["top_angle_deg"], 0).sum(1) / np.maximum(cnt, 1), np.nan)
            out[f"dissim_{name}"] = np.where(cnt > 0, np.where(ok, 1 - res["subspace_sim"], 0).sum(1) / np.maximum(cnt, 1), np.nan)
        out[f"count_{name}"] = cnt
    return out


# -- Goldilocks sweep ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GoldilocksConfig(GdSweepConfig):
    """GD for ``steps`` steps at each step size and seed; sharpness every ``trace_every`` steps."""

    seeds: tuple[int, ...] = (0, 1, 2)
    trace_every: int = 50

    def validate(self) -> None:
        super().validate()
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one seed, e.g. seeds=(0, 1, 2).")
        require_positive_int("trace_every", self.trace_every)
        if self.steps % self.trace_every:
            raise ConfigError(f"steps={self.steps} must be a multiple of trace_every={self.trace_every} so that "
                              "the final sharpness is measured at the last step.")


def run_flatness_goldilocks(cfg: GoldilocksConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """Final sharpness / test accuracy / train loss per (eta, seed), divergence flags and sharpness traces.

    All ``len(etas) x len(seeds)`` runs train as one vmapped population (:mod:`instabilities.population`);
    at scale ``full`` it checkpoints and resumes (:func:`instabilities.exp_common.run_population`).
    """
    n, s = len(cfg.etas), len(cfg.seeds)
    configs = population_configs(cfg.gd_config(cfg.etas[0], cfg.seeds[0], eig_every=cfg.trace_every, n_eigs=1,
                                               device=device), lrs=cfg.etas, seeds=cfg.seeds)
    pop = run_population(configs, progress=progress, name="flatness_goldilocks", cfg=cfg)

    def grid(a: np.ndarray) -> np.ndarray:  # members are seed-major (eta varies fastest) -> (eta, seed, ...)
        a = np.asarray(a)
        return np.swapaxes(a.reshape((s, n) + a.shape[1:]), 0, 1)

    trace = grid(pop.sharpness)
    diverged = grid(pop.diverged)
    out = {"sharpness_trace": trace, "initial_sharpness": trace[:, :, 0], "diverged": diverged,
           "diverged_step": grid(pop.diverged_step), "trace_step": np.arange(trace.shape[-1]) * cfg.trace_every}
    for key, value in (("final_sharpness", trace[:, :, -1]), ("test_acc", grid(pop.test_acc)),
                       ("train_acc", grid(pop.train_acc)[:, :, -1]), ("train_loss", grid(pop.train_loss)[:, :, -1])):
        out[key] = np.where(diverged, np.nan, value)
    out["etas"] = np.asarray(cfg.etas, float)
    out["seeds"] = np.asarray(cfg.seeds)
    return out


def summarise_goldilocks(res: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mean and standard deviation over the seeds that did not diverge, and the fraction that diverged."""
    out: dict[str, np.ndarray] = {"etas": res["etas"], "diverged_fraction": res["diverged"].mean(1)}
    for key in ("final_sharpness", "test_acc", "train_loss"):
        v = res[key]
        ok = np.isfinite(v)
        cnt = ok.sum(1)
        mean = np.where(cnt > 0, np.where(ok, v, 0).sum(1) / np.maximum(cnt, 1), np.nan)
        var = np.where(cnt > 0, np.where(ok, (v - mean[:, None]) ** 2, 0).sum(1) / np.maximum(cnt, 1), np.nan)
        out[f"{key}_mean"], out[f"{key}_std"] = mean, np.sqrt(var)
    return out


# -- registration -------------------------------------------------------------------------------------

_ROT_CI = RotationConfig(scale="ci", dataset="digits", n_train=300, n_test=297, widths=(32, 32),
                         etas=(0.05, 0.2, 0.5, 1.0), steps=200, k=3, eig_every=20)
_ROT_FULL = RotationConfig(scale="full", dataset="mnist1d", n_train=4000, n_test=1000, widths=(200, 200),
                           etas=(0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8), steps=5000, k=5, eig_every=25,
                           eig_tol=1e-4, eig_max_iter=300)
_GOLD_CI = GoldilocksConfig(scale="ci", dataset="digits", n_train=300, n_test=297, widths=(32, 32),
                            etas=(0.1, 0.3, 0.6, 1.0, 1.4, 1.8), seeds=(0, 1, 2), steps=200, trace_every=50)
_GOLD_FULL = GoldilocksConfig(scale="full", dataset="mnist1d", n_train=4000, n_test=1000, widths=(200, 200),
                              etas=(0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7, 1.0, 1.5),
                              seeds=(0, 1, 2, 3, 4), steps=10000, trace_every=200, eig_tol=1e-4, eig_max_iter=300)

experiments.register("eigvec_rotation", chapter="rotational_polarity",
                     description="Rotation of the top-k Hessian eigenvectors vs step size, stable vs unstable phases",
                     configs={"ci": _ROT_CI, "full": _ROT_FULL}, run=run_eigvec_rotation)
experiments.register("flatness_goldilocks", chapter="flatness_bias",
                     description="Final sharpness and test accuracy vs step size (stable -> unstable -> divergent), seeds",
                     configs={"ci": _GOLD_CI, "full": _GOLD_FULL}, run=run_flatness_goldilocks, resumable=True)
