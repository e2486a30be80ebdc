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

* ``sgd_sde_contrast`` - GD, SGD and the SDE with SGD's noise covariance (Euler-Maruyama, ``dt = eta``)
  at one step size, from the same initializations, to a common training loss: the three arms are one
  update with three laws for the example weights
  (:func:`instabilities.dynamics.sgd_stability.train_reweighted`).

The chapter separates the two effects: **instability** = the drop in final sharpness when ``eta``
grows at full batch (no noise); **noise** = the drop when ``B`` shrinks at the smallest ``eta``
(stable, ``eta S < 2`` throughout). :func:`effect_sizes` computes both from the arrays and
:func:`paired_effects` adds Student-t intervals over seeds (:func:`seed_interval`), pairing runs by seed.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch

from .. import experiments  # register (registry) and checkpoint_path (reproduce)
from ..config import ConfigError, require_positive, require_positive_int
from ..curvature import batched_top_eigenpairs, hutchinson_trace
from ..dynamics.sgd_stability import batch_curvature_stats, directional_curvatures, per_example_losses
from ..population import sweep_groups, train_sweep
from ..train import Problem, TrainConfig, build_problem
from .common import CHECKPOINT_EVERY, NetConfig
from .registry import Progress


@dataclasses.dataclass(frozen=True)
class SGDSweepConfig(NetConfig):
    """Grid ``etas x batch_sizes x seeds``; a batch size equal to ``n_train`` means full-batch GD."""

    n_train: int = 256
    widths: tuple[int, ...] = (16, 16)
    # eta S(theta_0) < 2 for both (S(theta_0) <= 3.2 over seeds 0-14), so the edge is reached by progressive
    # sharpening; 0.6/32 = 0.3/16: the pair (0.6, b=32), (0.3, b=16) has the same noise temperature eta/b
    etas: tuple[float, ...] = (0.3, 0.6)
    batch_sizes: tuple[int, ...] = (256, 32, 16)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    max_steps: int = 3000
    stop_loss: float = 0.02
    eig_every: int = 50
    eig_tol: float = 1e-3
    trace_probes: int = 30  # Hutchinson probes for tr H at every final point (0: no trace)

    def validate(self) -> None:
        super().validate()
        for name in ("max_steps", "eig_every"):
            require_positive_int(name, getattr(self, name))
        if not (isinstance(self.trace_probes, int) and (self.trace_probes == 0 or self.trace_probes >= 2)):
            raise ConfigError(f"trace_probes={self.trace_probes!r} must be 0 (no trace) or an integer >= 2.")
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
        return self.train_config(
            optimizer="gd" if full else "sgd",
            lr=eta,
            batch_size=None if full else batch_size,
            steps=self.max_steps,
            seed=seed,
            eig_every=self.eig_every,
            eig_tol=self.eig_tol,
            stop_loss=self.stop_loss,
            device=device,
        )


def final_point_diagnostics(
    cfg: TrainConfig,
    theta: torch.Tensor,
    batch_size: int,
    tol: float = 1e-4,
    problem: Problem | None = None,
    top: tuple[float, torch.Tensor] | None = None,
) -> dict[str, float]:
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


def run_sgd_batch_sweep(
    cfg: SGDSweepConfig, device: str = "cpu", progress: Progress | None = None, experiment: str = "sgd_batch_sweep"
) -> dict[str, np.ndarray]:
    """Run the grid; arrays have shape ``(n_eta, n_batch, n_seed)`` (trajectories add a step axis).

    One population per batch size; the final-point sharpness of every run comes from one batched
    Lanczos (:func:`instabilities.curvature.batched_top_eigenpairs`, tolerance ``eig_tol``) and feeds
    :func:`final_point_diagnostics`. A ``full``-scale run checkpoints under
    ``experiments.checkpoint_path(experiment, cfg, "sweep")`` and resumes from there.
    """
    shape = (len(cfg.etas), len(cfg.batch_sizes), len(cfg.seeds))
    grid = [(i, j, k) for i in range(shape[0]) for j in range(shape[1]) for k in range(shape[2])]
    configs = [cfg.run_config(cfg.etas[i], cfg.batch_sizes[j], cfg.seeds[k], device) for i, j, k in grid]
    n_groups = len(sweep_groups(configs))
    total = n_groups * cfg.max_steps + 1
    ckpt = experiments.checkpoint_path(experiment, cfg, "sweep") if cfg.scale == "full" else None
    hist = train_sweep(
        configs,
        progress=(lambda s, n: progress(s, total)) if progress else None,
        keep_theta=True,
        checkpoint_path=ckpt,
        checkpoint_every=CHECKPOINT_EVERY,
    )
    n_slots = cfg.max_steps // cfg.eig_every + 1
    hist = hist.padded(np.arange(n_slots) * cfg.eig_every)
    prob = build_problem(configs[0])  # data, model and objective do not depend on the seed
    dtype, dev = prob.flat.theta0.dtype, prob.flat.theta0.device
    Theta = torch.as_tensor(np.nan_to_num(hist.theta), dtype=dtype, device=dev)
    top = batched_top_eigenpairs(
        prob.objective, Theta, 1, max_iter=200, tol=cfg.eig_tol, active=torch.as_tensor(~hist.diverged, device=dev)
    )
    keys = ("sharpness", "trace", "max_eta_s", "test_acc", "train_loss", "steps", "dir_a", "dir_s", "q", "s_max")
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
            diag = final_point_diagnostics(
                configs[p],
                Theta[p],
                cfg.batch_sizes[j],
                cfg.eig_tol,
                prob,
                top=(float(top.values[p, 0]), top.vectors[p, :, 0]),
            )
            out["sharpness"][i, j, k] = diag["sharpness"]
            if cfg.trace_probes:
                out["trace"][i, j, k] = hutchinson_trace(prob.objective, Theta[p], cfg.trace_probes, seed=p).estimate
            out["max_eta_s"][i, j, k] = cfg.etas[i] * max(np.nanmax(s_traj, initial=0.0), diag["sharpness"])
            for key in ("a", "s", "q", "s_max"):
                out[f"dir_{key}" if key in ("a", "s") else key][i, j, k] = diag[key]
    if progress is not None:
        progress(total, total)
    out["etas"] = np.asarray(cfg.etas, float)
    out["batch_sizes"] = np.asarray(cfg.batch_sizes)
    out["eig_steps"] = np.arange(n_slots) * cfg.eig_every
    return out


def seed_interval(values: np.ndarray, axis: int = -1, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds (axis ``axis``, finite entries only) and its Student-t interval ``(mean, lo, hi)``.

    With ``k`` finite values the half-width is ``t_{k-1} s / sqrt(k)`` (``s``: sample standard deviation);
    fewer than two values give a NaN interval.
    """
    from scipy.stats import t as student_t

    if not 0 < level < 1:
        raise ConfigError(f"level={level!r} must lie in (0, 1), e.g. 0.95.")
    v = np.moveaxis(np.asarray(values, float), axis, -1)
    ok = np.isfinite(v)
    k = ok.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(k > 0, np.nansum(v, -1) / np.maximum(k, 1), np.nan)
        sd = np.sqrt(np.nansum((v - mean[..., None]) ** 2 * ok, -1) / np.maximum(k - 1, 1))
        half = np.where(k > 1, student_t.ppf(0.5 + level / 2, np.maximum(k - 1, 1)) * sd / np.sqrt(k), np.nan)
    return mean, mean - half, mean + half


def effect_sizes(res: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sharpness reductions (seed means) relative to the stable full-batch baseline ``(eta_0, B = n)``.

    ``instability[i]`` = S(eta_0, n) - S(eta_i, n): full batch, only ``eta`` changes (no noise).
    ``noise[j]``       = S(eta_0, n) - S(eta_0, B_j): smallest ``eta``, only the batch shrinks.
    ``both[i, j]``     = S(eta_0, n) - S(eta_i, B_j).
    ``eta_at_batch[i, j]`` = S(eta_0, B_j) - S(eta_i, B_j): the ``eta`` effect inside SGD at batch ``B_j``.
    """
    S = np.nanmean(res["sharpness"], axis=2)
    base = S[0, 0]
    return {
        "baseline": np.asarray(base),
        "instability": base - S[:, 0],
        "noise": base - S[0, :],
        "both": base - S,
        "eta_at_batch": S[0:1, :] - S,
        "mean_sharpness": S,
    }


def paired_effects(
    res: dict[str, np.ndarray], level: float = 0.95, measure: str = "sharpness"
) -> dict[str, tuple[np.ndarray, ...]]:
    """:func:`effect_sizes` with Student-t intervals over seeds, pairing runs by seed (same initialization).

    Each entry is ``(mean, lo, hi)``: ``instability[i]`` = S(eta_0, n) - S(eta_i, n), ``noise[j]`` =
    S(eta_0, n) - S(eta_0, B_j), ``batch_drop[i, j]`` = S(eta_i, n) - S(eta_i, B_j) (the flattening by
    batch size at step size ``eta_i``), ``sharpness[i, j]`` = the final sharpness itself. ``measure``
    names the flatness measure (``"sharpness"`` or ``"trace"``, the Hutchinson estimate of tr H).
    """
    S = res[measure]
    return {
        "instability": seed_interval(S[0:1, 0] - S[:, 0], level=level),
        "noise": seed_interval(S[0, 0:1] - S[0, :], level=level),
        "batch_drop": seed_interval(S[:, 0:1] - S, level=level),
        "sharpness": seed_interval(S, level=level),
    }


# mnist1d / CIFAR-10, widths (256, 256): S(theta_0) is about 8-9.5, so eta <= 0.15 keeps eta S(theta_0) < 2
_FULL = dict(
    widths=(256, 256),
    etas=(0.02, 0.05, 0.15),
    seeds=(0, 1, 2, 3, 4),
    max_steps=100_000,
    stop_loss=0.02,
    eig_every=1000,
    eig_tol=1e-4,
)
# digits (sized for two CPU cores), widths (64, 64): S(theta_0) is about 2.4, so eta <= 0.6 keeps eta S(theta_0) < 2
_FULL_DIGITS = dict(
    widths=(64, 64),
    etas=(0.15, 0.3, 0.6),
    seeds=(0, 1, 2, 3, 4),
    max_steps=30_000,
    stop_loss=0.02,
    eig_every=500,
    eig_tol=1e-4,
)

experiments.register(
    "sgd_batch_sweep",
    chapter="sgd_instabilities",
    description="Final sharpness vs step size and batch size (GD and SGD), with Wu-Ma-E stability diagnostics.",
    configs={
        "ci": SGDSweepConfig(scale="ci"),
        "full": SGDSweepConfig(
            scale="full", dataset="digits", n_train=1500, n_test=297, batch_sizes=(1500, 128, 32, 16), **_FULL_DIGITS
        ),
    },
    run=run_sgd_batch_sweep,
    resumable=True,
)

experiments.register(
    "sgd_batch_sweep_cifar10",
    chapter="sgd_instabilities",
    description="sgd_batch_sweep at full scale on the first 5,120 CIFAR-10 images. Needs a local copy of CIFAR-10 "
    "(see data.load_dataset).",
    configs={
        "ci": SGDSweepConfig(scale="ci", dataset="cifar10"),  # small, but also needs the local CIFAR-10 copy
        "full": SGDSweepConfig(
            scale="full", dataset="cifar10", n_train=5120, n_test=2000, batch_sizes=(5120, 256, 64, 16), **_FULL
        ),
    },
    run=functools.partial(run_sgd_batch_sweep, experiment="sgd_batch_sweep_cifar10"),
    resumable=True,
)


# -- SGD against its matched SDE -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SDEContrastConfig(NetConfig):
    """GD, SGD and the matched-noise SDE (Euler-Maruyama, ``dt = eta``) at one step size ``eta``.

    Per seed: one GD run, and for every ``b`` in ``batch_sizes`` one SGD and one SDE run whose
    gradient noise has exactly SGD's covariance (:func:`~instabilities.dynamics.sgd_stability.example_weights`).
    All runs start from the seed's initialization and stop at the same training loss ``stop_loss``.
    """

    n_train: int = 256
    widths: tuple[int, ...] = (16, 16)
    eta: float = 0.6
    batch_sizes: tuple[int, ...] = (32, 16)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    max_steps: int = 3000
    stop_loss: float = 0.02
    eig_tol: float = 1e-3

    def validate(self) -> None:
        super().validate()
        require_positive("eta", self.eta)
        require_positive_int("max_steps", self.max_steps)
        require_positive("stop_loss", self.stop_loss)
        require_positive("eig_tol", self.eig_tol)
        if not self.batch_sizes or not self.seeds:
            raise ConfigError("batch_sizes and seeds must each list at least one value.")
        for b in self.batch_sizes:
            require_positive_int("batch size (in batch_sizes)", b)
            if b >= self.n_train:
                raise ConfigError(f"batch size {b} must be < n_train={self.n_train} (GD is always included).")

    def arms(self) -> list[tuple[str, int]]:
        """``(weighting, batch size)`` of every arm: GD first, then SGD and SDE for each batch size."""
        return [("gd", self.n_train)] + [(k, b) for b in self.batch_sizes for k in ("sgd", "sde")]


def run_sgd_sde_contrast(
    cfg: SDEContrastConfig, device: str = "cpu", progress: Progress | None = None
) -> dict[str, np.ndarray]:
    """Final sharpness and test accuracy of GD, SGD and matched SDE; arrays of shape ``(n_arms, n_seeds)``."""
    from ..dynamics.sgd_stability import train_reweighted

    if device != "cpu":
        raise ConfigError("sgd_sde_contrast runs on the CPU (device='cpu').")
    arms = cfg.arms()
    probs = [build_problem(cfg.train_config(optimizer="gd", lr=cfg.eta, seed=s)) for s in cfg.seeds]
    prob = probs[0]
    Theta0 = torch.stack([p.flat.theta0 for p in probs])
    s0 = batched_top_eigenpairs(prob.objective, Theta0, 1, max_iter=200, tol=cfg.eig_tol).values[:, 0]
    grid = [(a, k) for a in range(len(arms)) for k in range(len(cfg.seeds))]
    per_ex = per_example_losses(prob.flat, prob.data.x_train, prob.train_targets, cfg.loss)
    out = train_reweighted(
        per_ex,
        Theta0[[k for _, k in grid]],
        cfg.eta,
        [arms[a][0] for a, _ in grid],
        [arms[a][1] for a, _ in grid],
        cfg.max_steps,
        cfg.stop_loss,
        seed=cfg.seeds[0],
    )
    ok = ~out["diverged"]
    Theta = torch.as_tensor(np.nan_to_num(out["theta"]), dtype=Theta0.dtype)
    top = batched_top_eigenpairs(prob.objective, Theta, 1, max_iter=200, tol=cfg.eig_tol, active=torch.as_tensor(ok))
    with torch.no_grad():
        pred = torch.func.vmap(lambda th: prob.flat(th, prob.data.x_test))(Theta).argmax(-1)
        acc = (pred == prob.data.y_test).double().mean(-1).numpy()
    shape = (len(arms), len(cfg.seeds))
    res = {
        "sharpness": np.where(ok, top.values[:, 0].double().numpy(), np.nan).reshape(shape),
        "test_acc": np.where(ok, acc, np.nan).reshape(shape),
        "steps": out["steps"].reshape(shape).astype(float),
        "train_loss": out["train_loss"].reshape(shape),
        "diverged": out["diverged"].reshape(shape),
        "sharpness_init": s0.double().numpy(),
        "kinds": np.asarray([a[0] for a in arms]),
        "batch_sizes": np.asarray([a[1] for a in arms]),
        "eta": np.asarray(cfg.eta),
    }
    if progress is not None:
        progress(1, 1)
    return res


def sde_contrast_summary(
    res: dict[str, np.ndarray], level: float = 0.95
) -> dict[str, dict[int, tuple[np.ndarray, ...]]]:
    """Per batch size ``b``: Student-t intervals (paired by seed) of SGD - SDE and of GD - SGD.

    ``{"sharpness": {b: (mean, lo, hi)}, "test_acc": {...}, "gd_minus_sgd": {...}, "gd_minus_sde": {...}}``;
    the last two are sharpness differences (the flattening that each kind of noise adds to GD's).
    """
    kinds, bs = list(res["kinds"]), list(res["batch_sizes"])
    gd = kinds.index("gd")
    out: dict[str, dict[int, tuple[np.ndarray, ...]]] = {
        k: {} for k in ("sharpness", "test_acc", "gd_minus_sgd", "gd_minus_sde")
    }
    for b in sorted({int(b) for k, b in zip(kinds, bs) if k == "sgd"}, reverse=True):
        i_sgd = next(i for i, (k, bb) in enumerate(zip(kinds, bs)) if k == "sgd" and bb == b)
        i_sde = next(i for i, (k, bb) in enumerate(zip(kinds, bs)) if k == "sde" and bb == b)
        for key in ("sharpness", "test_acc"):
            out[key][b] = seed_interval(res[key][i_sgd] - res[key][i_sde], level=level)
        out["gd_minus_sgd"][b] = seed_interval(res["sharpness"][gd] - res["sharpness"][i_sgd], level=level)
        out["gd_minus_sde"][b] = seed_interval(res["sharpness"][gd] - res["sharpness"][i_sde], level=level)
    return out


experiments.register(
    "sgd_sde_contrast",
    chapter="sgd_instabilities",
    description="GD vs SGD vs the SDE with SGD's noise covariance (same eta, same noise scale, equal training loss): "
    "final sharpness and test accuracy.",
    configs={
        "ci": SDEContrastConfig(scale="ci"),
        "full": SDEContrastConfig(
            scale="full",
            dataset="digits",
            n_train=1500,
            n_test=297,
            widths=(64, 64),
            eta=0.4,
            batch_sizes=(128, 32, 16),
            seeds=tuple(range(5)),
            max_steps=30_000,
            stop_loss=0.02,
            eig_tol=1e-4,
        ),
    },
    run=run_sgd_sde_contrast,
)
