"""Experiments of the label-noise chapters: the solvable chain, the anisotropy sweep, other architectures,
and the small-/large-step reconciliation. Each has a ``ci`` (CPU) and a ``full`` (GPU-sized) config."""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch

from . import registry as experiments
from ..dynamics import label_noise as ln
from .. import sequence_models as sm
from ..config import (Config, ConfigError, require_positive, require_positive_int)


@dataclasses.dataclass(frozen=True)
class ChainConfig(Config):
    """SGD with fresh label noise on the width-one chain ``f(x) = u w_{D-1}...w_1 x``.

    Replicas run for every (ratio, eta, initial balance) triple; ``init_hidden_sq`` holds values of
    ``t = w^2`` on the manifold of minima (each is a minimum with a different sharpness).
    """

    depth: int = 2
    teacher: tuple[float, ...] = (1.0, 0.0)
    noise_trace: float = 2.0
    ratios: tuple[float, ...] = (4.0,)
    etas: tuple[float, ...] = (0.04, 0.08)
    init_hidden_sq: tuple[float, ...] = (0.1, 1.0, 4.0)
    replicas: int = 8
    batch_size: int = 1
    steps: int = 6000
    record_every: int = 100
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        require_positive_int("replicas", self.replicas)
        require_positive_int("steps", self.steps)
        require_positive_int("record_every", self.record_every)
        require_positive_int("batch_size", self.batch_size)
        require_positive("noise_trace", self.noise_trace)
        if not (isinstance(self.depth, int) and self.depth >= 2):
            raise ConfigError(f"depth={self.depth!r}: use a chain with at least 2 layers.")
        if len(self.teacher) < 2:
            raise ConfigError("teacher needs >= 2 outputs (anisotropy is a property of the output space).")
        for name, vals in (("ratios", self.ratios), ("etas", self.etas), ("init_hidden_sq", self.init_hidden_sq)):
            if len(vals) == 0 or any(not (v > 0) for v in vals):
                raise ConfigError(f"{name}={vals!r} must be a non-empty tuple of positive numbers.")


#: Quantities whose replica-averaged trajectories a chain run returns.
TRAJECTORY_KEYS = ("sharpness", "flow_sharpness", "flow_trace_hessian", "flow_trace_fluctuation")
#: Fraction of the records discarded before the standard errors stored with a run are computed.
STATIONARY_BURN_IN = 0.5


def run_chain(cfg: ChainConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """Replica-aggregated results of SGD with label noise on the chain (numpy, CPU for any ``device``).

    For each key ``k`` of ``TRAJECTORY_KEYS``: ``k_mean`` is the mean over the replicas that never diverged,
    ``[record, ratio, eta, init]`` (float32), and ``k_sem`` the standard error, over those replicas, of
    the time average over the last ``1 - STATIONARY_BURN_IN`` of the records, ``[ratio, eta, init]``.
    ``n_diverged`` counts diverged replicas per cell; the closed-form predictions per ratio stay float64.
    """
    d = len(cfg.teacher)
    a = torch.tensor(cfg.teacher, dtype=torch.float64)
    covs, thetas, lrs = [], [], []
    for r in cfg.ratios:
        cov = ln.noise_covariance(r, cfg.noise_trace, d)
        for eta in cfg.etas:
            for t0 in cfg.init_hidden_sq:
                net, th = ln.chain_point(t0, cfg.teacher, cfg.depth)
                for _ in range(cfg.replicas):
                    covs.append(cov)
                    thetas.append(th)
                    lrs.append(eta)
    out = ln.label_noise_sgd(net, torch.stack(thetas), a.reshape(d, 1), torch.eye(1, dtype=torch.float64),
                             torch.stack(covs), lrs, cfg.steps, cfg.batch_size, cfg.record_every, cfg.seed)
    shape = (len(out["steps"]), len(cfg.ratios), len(cfg.etas), len(cfg.init_hidden_sq), cfg.replicas)
    diverged = np.asarray(out["diverged"], dtype=bool).reshape(shape[1:])
    res: dict[str, np.ndarray] = {}
    for key in TRAJECTORY_KEYS:
        mean, sem = _replica_statistics(np.asarray(out[key], dtype=np.float64).reshape(shape), diverged)
        res[f"{key}_mean"], res[f"{key}_sem"] = mean.astype(np.float32), sem.astype(np.float32)
    preds = [ln.chain_fixed_point(cfg.teacher, ln.noise_covariance(r, cfg.noise_trace, d), cfg.depth)
             for r in cfg.ratios]
    res.update(steps=np.asarray(out["steps"]), ratios=np.asarray(cfg.ratios), etas=np.asarray(cfg.etas),
               init_hidden_sq=np.asarray(cfg.init_hidden_sq), replicas=np.asarray(cfg.replicas),
               init_sharpness=ln.chain_on_manifold(np.asarray(cfg.init_hidden_sq), cfg.teacher,
                                                   ln.noise_covariance(1.0, cfg.noise_trace, d), cfg.depth)["sharpness"],
               n_diverged=diverged.sum(axis=-1).astype(np.int32),
               predicted_sharpness=np.array([p["sharpness"] for p in preds]),
               predicted_trace_hessian=np.array([p["trace_hessian"] for p in preds]),
               predicted_trace_fluctuation=np.array([p["trace_fluctuation"] for p in preds]),
               predicted_q=np.array([p["q"] for p in preds]))
    return res


def _replica_statistics(x: np.ndarray, diverged: np.ndarray,
                        burn_in: float = STATIONARY_BURN_IN) -> tuple[np.ndarray, np.ndarray]:
    """``x[record, ..., replica]`` -> (mean over non-diverged replicas per record, standard error of the
    per-replica stationary time averages). NaN where fewer than 1 (mean) or 2 (error) replicas survived."""
    x = np.where(diverged[None], np.nan, x)
    with warnings.catch_warnings():  # all-diverged cells give NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=-1)
        averages = np.nanmean(x[int(burn_in * x.shape[0]):], axis=0)  # [..., replica]
        n = np.sum(~diverged, axis=-1)
        sem = np.nanstd(averages, axis=-1, ddof=1) / np.sqrt(np.maximum(n, 1))
    return mean, np.where(n >= 2, sem, np.nan)


def _burn_in(res: dict[str, np.ndarray], burn_in: float | None) -> float:
    """The burn-in fraction to use: the given one, else the one stored with the result, else 0.5."""
    if burn_in is not None:
        return float(burn_in)
    return float(res["burn_in"]) if "burn_in" in res else STATIONARY_BURN_IN


def stationary_mean(res: dict[str, np.ndarray], key: str = "flow_sharpness",
                    burn_in: float | None = None) -> np.ndarray:
    """Mean over the last ``1 - burn_in`` of the records and over the replicas that never diverged:
    ``[ratio, eta, init]`` (NaN where every replica diverged). ``burn_in=None``: the result's own
    ``burn_in`` entry if it has one (the sweep), else 0.5."""
    burn_in = _burn_in(res, burn_in)
    x = np.asarray(res[f"{key}_mean"], dtype=np.float64)
    start = int(burn_in * x.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x[start:], axis=0)


def stationary_sem(res: dict[str, np.ndarray], key: str = "flow_sharpness") -> np.ndarray:
    """Standard error of ``stationary_mean(res, key)`` at the result's burn-in, ``[ratio, eta, init]``,
    from the spread of the independent replicas' time averages."""
    return np.asarray(res[f"{key}_sem"], dtype=np.float64)


def _extrapolation_weights(etas: np.ndarray, degree: int = 1) -> np.ndarray:
    """Weights ``c`` with ``extrapolate_to_zero(etas, y, degree) = c @ y`` (the intercept is linear in y)."""
    return np.array([ln.extrapolate_to_zero(etas, np.eye(len(etas))[i], degree) for i in range(len(etas))])


def extrapolated(res: dict[str, np.ndarray], key: str = "flow_sharpness", burn_in: float | None = None,
                 degree: int = 1, per_start: bool = False) -> np.ndarray:
    """Richardson extrapolation ``eta -> 0`` of the stationary mean, pooled over inits: one per ratio;
    ``per_start=True``: one per ratio and init, ``[ratio, init]``. ``degree`` of the polynomial in ``eta``
    (2 needs three step sizes)."""
    m = stationary_mean(res, key, burn_in)  # [ratio, eta, init]
    if per_start:
        return np.einsum("rei,e->ri", m, _extrapolation_weights(np.asarray(res["etas"], dtype=float), degree))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.nanmean(m, axis=2)
    return np.array([ln.extrapolate_to_zero(res["etas"], row, degree) for row in m])


def extrapolated_sem(res: dict[str, np.ndarray], key: str = "flow_sharpness", degree: int = 1,
                     per_start: bool = False) -> np.ndarray:
    """Standard error of ``extrapolated(res, key, degree=degree, per_start=per_start)`` (independent replicas
    per cell): one per ratio, or ``[ratio, init]``."""
    sem = stationary_sem(res, key)  # [ratio, eta, init]
    c = _extrapolation_weights(np.asarray(res["etas"], dtype=float), degree)
    if per_start:
        return np.sqrt(np.einsum("rei,e->ri", sem ** 2, c ** 2))
    pooled = np.sqrt(np.sum(sem ** 2, axis=2)) / sem.shape[2]  # [ratio, eta]
    return np.sqrt(pooled ** 2 @ c ** 2)


def extrapolated_bracket(res: dict[str, np.ndarray], key: str = "flow_sharpness", burn_in: float | None = None,
                         degree: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper end, one per ratio, of the ``eta -> 0`` extrapolation allowed by the different starts.

    The expected balance obeys a one-dimensional drift with one attracting point, so runs started on the two
    sides of the stationary state approach it from the two sides: in every ``(ratio, eta)`` cell the
    stationary value lies between the smallest and the largest start's time average, in expectation and
    whatever the run length. Extrapolating with the weights ``c`` of ``extrapolate_to_zero`` (``c_i < 0``
    swaps the ends) gives a bracket for the ``eta -> 0`` value; its width measures how far the runs are from
    converged. Statistical errors (``extrapolated_sem``) are not included.
    """
    m = stationary_mean(res, key, burn_in)  # [ratio, eta, init]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmin(m, axis=2), np.nanmax(m, axis=2)  # [ratio, eta]
    c = _extrapolation_weights(np.asarray(res["etas"], dtype=float), degree)
    cp, cn = np.clip(c, 0, None), np.clip(c, None, 0)
    return lo @ cp + hi @ cn, hi @ cp + lo @ cn


@dataclasses.dataclass(frozen=True)
class RelaxedChainConfig(Config):
    """SGD with label noise on the width-one chain, one SGD run per ``(ratio, eta)`` cell, as long as that cell's
    slow balance needs.

    A cell runs ``max(min_steps, relaxation_times * tau)`` steps (rounded up to a multiple of ``records``),
    with ``tau = label_noise.chain_relaxation_time(teacher, Sigma_eps(r), eta, depth, batch_size=batch_size)``,
    and is recorded ``records`` times at equal spacing (plus step 0); its stationary statistics use the records
    after the fraction ``burn_in`` of the run. ``init_hidden_sq`` should start replicas on both sides of the
    attracting balance, so that ``extrapolated_bracket`` is a two-sided bracket.
    """

    depth: int = 2
    teacher: tuple[float, ...] = (1.0, 0.0)
    noise_trace: float = 2.0
    ratios: tuple[float, ...] = (4.0,)
    etas: tuple[float, ...] = (0.04, 0.08)
    init_hidden_sq: tuple[float, ...] = (0.1, 1.0)
    replicas: int = 4
    batch_size: int = 1
    relaxation_times: float = 10.0
    min_steps: int = 1000
    records: int = 50
    burn_in: float = 0.75
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        for name in ("replicas", "batch_size", "min_steps", "records"):
            require_positive_int(name, getattr(self, name))
        require_positive("noise_trace", self.noise_trace)
        require_positive("relaxation_times", self.relaxation_times)
        if not (isinstance(self.depth, int) and self.depth >= 2):
            raise ConfigError(f"depth={self.depth!r}: use a chain with at least 2 layers.")
        if len(self.teacher) < 2:
            raise ConfigError("teacher needs >= 2 outputs (anisotropy is a property of the output space).")
        for name, vals in (("ratios", self.ratios), ("etas", self.etas), ("init_hidden_sq", self.init_hidden_sq)):
            if len(vals) == 0 or any(not (v > 0) for v in vals):
                raise ConfigError(f"{name}={vals!r} must be a non-empty tuple of positive numbers.")
        if len(set(self.etas)) < 2:
            raise ConfigError(f"etas={self.etas!r}: the eta -> 0 extrapolation needs >= 2 distinct step sizes.")
        if not (0.0 <= self.burn_in < 1.0) or int(self.burn_in * (self.records + 1)) >= self.records + 1:
            raise ConfigError(f"burn_in={self.burn_in!r} must be in [0, 1) and leave at least one of the "
                              f"{self.records + 1} records; lower it or raise records.")


@dataclasses.dataclass(frozen=True)
class SweepConfig(RelaxedChainConfig):
    """The anisotropy sweep (``label_noise_sweep``): many ratios, two starts that bracket the balance."""


@dataclasses.dataclass(frozen=True)
class ChainConvergenceConfig(RelaxedChainConfig):
    """The convergence experiment (``label_noise_chain``): a few ratios, several starting minima (values of
    ``t = w^2`` in ``init_hidden_sq``, each a minimum with a different sharpness) whose trajectories are compared."""


def relaxation_schedule(cfg: RelaxedChainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Relaxation times ``tau`` and run lengths (steps), both ``[ratio, eta]``, of the cells of a relaxed chain run."""
    d = len(cfg.teacher)
    tau = np.array([[ln.chain_relaxation_time(cfg.teacher, ln.noise_covariance(r, cfg.noise_trace, d), eta,
                                              cfg.depth, batch_size=cfg.batch_size) for eta in cfg.etas]
                    for r in cfg.ratios])
    per_record = np.ceil(np.maximum(cfg.min_steps, cfg.relaxation_times * tau) / cfg.records)
    return tau, (per_record * cfg.records).astype(np.int64)


def drift_path_deviation(cfg: RelaxedChainConfig) -> np.ndarray:
    """Relative deviation from ``S*`` of the sharpness along the expected drift path, averaged like the runs.

    For every cell and start, ``label_noise.chain_balance_path`` (the small-``eta`` mean path of the balance,
    without fluctuations or the ``O(eta)`` offset) is evaluated at the records that ``stationary_mean`` averages
    (those after ``burn_in`` of the run of ``relaxation_schedule``); returns ``mean S(t) / S* - 1`` as
    ``[ratio, eta, init]``. It tells whether the run lengths let every start reach the stationary state; it uses
    no SGD and does not depend on the replicas.
    """
    d = len(cfg.teacher)
    _, run_steps = relaxation_schedule(cfg)
    first = int(cfg.burn_in * (cfg.records + 1))
    out = np.empty((len(cfg.ratios), len(cfg.etas), len(cfg.init_hidden_sq)))
    for k, r in enumerate(cfg.ratios):
        cov = ln.noise_covariance(r, cfg.noise_trace, d)
        target = ln.chain_fixed_point(cfg.teacher, cov, cfg.depth)["sharpness"]
        for i, eta in enumerate(cfg.etas):
            rec = np.arange(cfg.records + 1) * (int(run_steps[k, i]) // cfg.records)
            for j, t0 in enumerate(cfg.init_hidden_sq):
                t = ln.chain_balance_path(t0, rec, cfg.teacher, cov, eta, cfg.depth, batch_size=cfg.batch_size)
                S = ln.chain_on_manifold(t[first:], cfg.teacher, cov, cfg.depth)["sharpness"]
                out[k, i, j] = S.mean() / target - 1
    return out


def run_relaxed_chain(cfg: RelaxedChainConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """Like ``run_chain``, with one SGD run per ``(ratio, eta)`` cell of length ``relaxation_schedule(cfg)``.

    Adds ``relaxation_steps`` (``tau``) and ``run_steps`` per cell, ``steps`` per record and cell
    ``[record, ratio, eta]`` (so ``steps / relaxation_steps`` is the time in relaxation times), and ``burn_in``,
    which ``stationary_mean`` and ``extrapolated`` then use. Runs ``label_noise_sweep`` and ``label_noise_chain``.
    """
    d, R = len(cfg.teacher), cfg.replicas
    nr, ne, ni = len(cfg.ratios), len(cfg.etas), len(cfg.init_hidden_sq)
    a = torch.tensor(cfg.teacher, dtype=torch.float64).reshape(d, 1)
    net = ln.chain_point(1.0, cfg.teacher, cfg.depth)[0]
    thetas = torch.stack([ln.chain_point(t0, cfg.teacher, cfg.depth)[1] for t0 in cfg.init_hidden_sq for _ in range(R)])
    tau, run_steps = relaxation_schedule(cfg)
    n_rec = cfg.records + 1
    traj = {k: np.empty((n_rec, nr, ne, ni, R)) for k in TRAJECTORY_KEYS}
    steps = np.empty((n_rec, nr, ne), dtype=np.int64)
    diverged = np.empty((nr, ne, ni, R), dtype=bool)
    for k, r in enumerate(cfg.ratios):
        cov = ln.noise_covariance(r, cfg.noise_trace, d)
        for i, eta in enumerate(cfg.etas):
            seed = int(np.random.SeedSequence([cfg.seed, k, i]).generate_state(1)[0])
            n = int(run_steps[k, i])
            out = ln.label_noise_sgd(net, thetas, a, torch.eye(1, dtype=torch.float64), cov, eta, n,
                                     cfg.batch_size, n // cfg.records, seed, chain_kernel=True)
            for key in TRAJECTORY_KEYS:
                traj[key][:, k, i] = np.asarray(out[key], dtype=np.float64).reshape(n_rec, ni, R)
            steps[:, k, i] = out["steps"]
            diverged[k, i] = np.asarray(out["diverged"], dtype=bool).reshape(ni, R)
            if progress:
                progress(k * ne + i + 1, nr * ne)
    res: dict[str, np.ndarray] = {}
    for key in TRAJECTORY_KEYS:
        mean, sem = _replica_statistics(traj[key], diverged, cfg.burn_in)
        res[f"{key}_mean"], res[f"{key}_sem"] = mean.astype(np.float32), sem.astype(np.float32)
    preds = [ln.chain_fixed_point(cfg.teacher, ln.noise_covariance(r, cfg.noise_trace, d), cfg.depth)
             for r in cfg.ratios]
    res.update(steps=steps, run_steps=run_steps, relaxation_steps=tau, burn_in=np.asarray(cfg.burn_in),
               ratios=np.asarray(cfg.ratios), etas=np.asarray(cfg.etas),
               init_hidden_sq=np.asarray(cfg.init_hidden_sq), replicas=np.asarray(R),
               init_sharpness=ln.chain_on_manifold(np.asarray(cfg.init_hidden_sq), cfg.teacher,
                                                   ln.noise_covariance(1.0, cfg.noise_trace, d), cfg.depth)["sharpness"],
               n_diverged=diverged.sum(axis=-1).astype(np.int32),
               predicted_sharpness=np.array([p["sharpness"] for p in preds]),
               predicted_trace_hessian=np.array([p["trace_hessian"] for p in preds]),
               predicted_trace_fluctuation=np.array([p["trace_fluctuation"] for p in preds]),
               predicted_q=np.array([p["q"] for p in preds]))
    return res


experiments.register(
    "label_noise_chain", chapter="label_noise_model",
    description="SGD with label noise on the width-one chain: convergence of the sharpness from different minima.",
    configs={"ci": ChainConvergenceConfig(scale="ci", ratios=(4.0,), etas=(0.04, 0.08), init_hidden_sq=(0.1, 1.0, 4.0),
                                          replicas=16, relaxation_times=15.0, records=30),
             "full": ChainConvergenceConfig(scale="full", ratios=(4.0, 16.0), etas=(0.005, 0.01, 0.02),
                                            init_hidden_sq=(0.05, 0.1, 0.3, 1.0, 4.0), replicas=64,
                                            relaxation_times=15.0, records=150)},
    run=run_relaxed_chain)

experiments.register(
    "label_noise_sweep", chapter="label_noise_model",
    description="Converged sharpness of the chain vs label-noise anisotropy r (fixed trace), SGD vs closed form.",
    configs={"ci": SweepConfig(scale="ci", ratios=(0.25, 1.0, 4.0, 16.0), etas=(0.04, 0.08),
                               init_hidden_sq=(0.1, 1.0), replicas=4, relaxation_times=10.0, records=20),
             "full": SweepConfig(scale="full", ratios=(0.1, 0.25, 1.0, 2.0, 4.0, 10.0, 30.0, 100.0),
                                 etas=(0.005, 0.01, 0.02), init_hidden_sq=(0.1, 1.0), replicas=32,
                                 relaxation_times=10.0, records=100)},
    run=run_relaxed_chain)

experiments.register(
    "label_noise_reconcile", chapter="reconciling",
    description="Chain with strongly anisotropic label noise at small and large step sizes: sharpness and tr C.",
    configs={"ci": ChainConfig(scale="ci", ratios=(100.0,), etas=(0.03, 0.06, 0.1, 0.15, 0.2),
                               init_hidden_sq=(1.0, 0.0995), replicas=4, steps=12000, record_every=200),
             "full": ChainConfig(scale="full", ratios=(1.0, 100.0),
                                 etas=(0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2),
                                 init_hidden_sq=(1.0, 0.0995), replicas=32, steps=200000, record_every=1000)},
    run=run_chain)


@dataclasses.dataclass(frozen=True)
class ArchConfig(Config):
    """Online SGD with label noise ``Sigma_eps = noise_covariance(r, noise_trace)`` on MLP / RNN / transformer."""

    archs: tuple[str, ...] = ("mlp", "rnn", "transformer")
    ratios: tuple[float, ...] = (1.0, 100.0)
    seeds: tuple[int, ...] = (0, 1)
    noise_trace: float = 2.0
    lr: float = 0.18
    steps: int = 400
    batch_size: int = 4
    width: int = 12
    seq_len: int = 6
    d_in: int = 3
    teacher_scales: tuple[float, ...] = (1.0, 0.25)
    n_eval: int = 256
    final_window: int = 2
    snapshot_every: int = 100

    def validate(self) -> None:
        super().validate()
        for a in self.archs:
            if a not in sm.ARCHS:
                raise ConfigError(f"arch {a!r} unknown; choose from {sm.ARCHS}.")
        for v in self.ratios:
            require_positive("ratio", v)
        require_positive("lr", self.lr)
        require_positive("noise_trace", self.noise_trace)
        for n in ("steps", "batch_size", "width", "seq_len", "d_in", "n_eval", "final_window", "snapshot_every"):
            require_positive_int(n, getattr(self, n))
        if len(self.seeds) == 0:
            raise ConfigError("seeds must list at least one seed.")


def run_architectures(cfg: ArchConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """Final sharpness ``[arch, ratio, seed]`` (NaN where a run diverged) and clean-loss curves."""
    d_out = len(cfg.teacher_scales)
    covs = torch.stack([ln.noise_covariance(r, cfg.noise_trace, d_out) for r in cfg.ratios for _ in cfg.seeds])
    seeds = [s for _ in cfg.ratios for s in cfg.seeds]
    sharp, loss, div, nparams = [], [], [], []
    for i, arch in enumerate(cfg.archs):
        out = sm.train_sequence_label_noise(arch, covs, seeds, cfg.lr, cfg.steps, cfg.batch_size, cfg.d_in,
                                            cfg.seq_len, cfg.width, cfg.teacher_scales, cfg.n_eval,
                                            cfg.final_window, cfg.snapshot_every, device=device)
        shape = (len(cfg.ratios), len(cfg.seeds))
        sharp.append(out["final_sharpness"].reshape(shape))
        loss.append(out["clean_loss"].reshape(-1, *shape))
        div.append(out["diverged"].reshape(shape))
        nparams.append(int(out["n_params"]))
        if progress:
            progress(i + 1, len(cfg.archs))
    return {"final_sharpness": np.stack(sharp), "clean_loss": np.stack(loss), "diverged": np.stack(div),
            "steps": out["steps"], "ratios": np.asarray(cfg.ratios), "n_params": np.asarray(nparams),
            "archs": np.asarray(cfg.archs)}


experiments.register(
    "label_noise_architectures", chapter="label_noise_architectures",
    description="Final sharpness vs label-noise anisotropy for an MLP, an Elman RNN and a 1-layer transformer.",
    configs={"ci": ArchConfig(scale="ci"),
             "full": ArchConfig(scale="full", ratios=(1.0, 3.0, 10.0, 30.0, 100.0), seeds=tuple(range(8)),
                                lr=0.05, steps=40000, batch_size=8, width=64, n_eval=2048, final_window=4,
                                snapshot_every=1000)},
    run=run_architectures)
