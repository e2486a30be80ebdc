"""Experiments of the label-noise chapters: the solvable chain, the anisotropy sweep, other architectures,
and the small-/large-step reconciliation. Each has a ``ci`` (CPU) and a ``full`` (GPU-sized) config."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch

from .. import sequence_models as sm
from ..config import Config, ConfigError, require_positive, require_positive_int
from ..dynamics import deep_linear as dl, label_noise as ln
from . import registry as experiments


@dataclasses.dataclass(frozen=True)
class ChainBaseConfig(Config):
    """Fields shared by the chain experiments: SGD with fresh label noise on ``f(x) = u w_{D-1}...w_1 x``.

    Replicas run for every (ratio, eta, initial balance) triple; ``init_hidden_sq`` holds values of
    ``t = w^2`` on the manifold of minima (each is a minimum with a different sharpness).
    """

    depth: int = 2
    teacher: tuple[float, ...] = (1.0, 0.0)
    noise_trace: float = 2.0
    ratios: tuple[float, ...] = (4.0,)
    etas: tuple[float, ...] = (0.04, 0.08)
    init_hidden_sq: tuple[float, ...] = (0.1, 1.0)
    replicas: int = 4
    batch_size: int = 1
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        require_positive_int("replicas", self.replicas)
        require_positive_int("batch_size", self.batch_size)
        require_positive("noise_trace", self.noise_trace)
        if not (isinstance(self.depth, int) and self.depth >= 2):
            raise ConfigError(f"depth={self.depth!r}: use a chain with at least 2 layers.")
        if len(self.teacher) < 2:
            raise ConfigError("teacher needs >= 2 outputs (anisotropy is a property of the output space).")
        for name, vals in (("ratios", self.ratios), ("etas", self.etas), ("init_hidden_sq", self.init_hidden_sq)):
            if len(vals) == 0 or any(not (v > 0) for v in vals):
                raise ConfigError(f"{name}={vals!r} must be a non-empty tuple of positive numbers.")


@dataclasses.dataclass(frozen=True)
class ChainConfig(ChainBaseConfig):
    """A chain run of a fixed number of ``steps`` for every cell (``run_chain``)."""

    init_hidden_sq: tuple[float, ...] = (0.1, 1.0, 4.0)
    replicas: int = 8
    steps: int = 6000
    record_every: int = 100

    def validate(self) -> None:
        super().validate()
        require_positive_int("steps", self.steps)
        require_positive_int("record_every", self.record_every)


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
    out = ln.label_noise_sgd(
        net,
        torch.stack(thetas),
        a.reshape(d, 1),
        torch.eye(1, dtype=torch.float64),
        torch.stack(covs),
        lrs,
        cfg.steps,
        cfg.batch_size,
        cfg.record_every,
        cfg.seed,
    )
    shape = (len(out["steps"]), len(cfg.ratios), len(cfg.etas), len(cfg.init_hidden_sq), cfg.replicas)
    diverged = np.asarray(out["diverged"], dtype=bool).reshape(shape[1:])
    res: dict[str, np.ndarray] = {}
    for key in TRAJECTORY_KEYS:
        mean, sem = _replica_statistics(np.asarray(out[key], dtype=np.float64).reshape(shape), diverged)
        res[f"{key}_mean"], res[f"{key}_sem"] = mean.astype(np.float32), sem.astype(np.float32)
    preds = [
        ln.chain_fixed_point(cfg.teacher, ln.noise_covariance(r, cfg.noise_trace, d), cfg.depth) for r in cfg.ratios
    ]
    res.update(
        steps=np.asarray(out["steps"]),
        ratios=np.asarray(cfg.ratios),
        etas=np.asarray(cfg.etas),
        init_hidden_sq=np.asarray(cfg.init_hidden_sq),
        replicas=np.asarray(cfg.replicas),
        init_sharpness=ln.chain_on_manifold(
            np.asarray(cfg.init_hidden_sq), cfg.teacher, ln.noise_covariance(1.0, cfg.noise_trace, d), cfg.depth
        )["sharpness"],
        n_diverged=diverged.sum(axis=-1).astype(np.int32),
        predicted_sharpness=np.array([p["sharpness"] for p in preds]),
        predicted_trace_hessian=np.array([p["trace_hessian"] for p in preds]),
        predicted_trace_fluctuation=np.array([p["trace_fluctuation"] for p in preds]),
        predicted_q=np.array([p["q"] for p in preds]),
    )
    return res


def _replica_statistics(
    x: np.ndarray, diverged: np.ndarray, burn_in: float = STATIONARY_BURN_IN
) -> tuple[np.ndarray, np.ndarray]:
    """``x[record, ..., replica]`` -> (mean over non-diverged replicas per record, standard error of the
    per-replica stationary time averages). NaN where fewer than 1 (mean) or 2 (error) replicas survived."""
    x = np.where(diverged[None], np.nan, x)
    with warnings.catch_warnings():  # all-diverged cells give NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=-1)
        averages = np.nanmean(x[int(burn_in * x.shape[0]) :], axis=0)  # [..., replica]
        n = np.sum(~diverged, axis=-1)
        sem = np.nanstd(averages, axis=-1, ddof=1) / np.sqrt(np.maximum(n, 1))
    return mean, np.where(n >= 2, sem, np.nan)


def _burn_in(res: dict[str, np.ndarray], burn_in: float | None) -> float:
    """The burn-in fraction to use: the given one, else the one stored with the result, else 0.5."""
    if burn_in is not None:
        return float(burn_in)
    return float(res["burn_in"]) if "burn_in" in res else STATIONARY_BURN_IN


def stationary_mean(
    res: dict[str, np.ndarray], key: str = "flow_sharpness", burn_in: float | None = None
) -> np.ndarray:
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


def extrapolated(
    res: dict[str, np.ndarray],
    key: str = "flow_sharpness",
    burn_in: float | None = None,
    degree: int = 1,
    per_start: bool = False,
) -> np.ndarray:
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


def extrapolated_sem(
    res: dict[str, np.ndarray], key: str = "flow_sharpness", degree: int = 1, per_start: bool = False
) -> np.ndarray:
    """Standard error of ``extrapolated(res, key, degree=degree, per_start=per_start)`` (independent replicas
    per cell): one per ratio, or ``[ratio, init]``."""
    sem = stationary_sem(res, key)  # [ratio, eta, init]
    c = _extrapolation_weights(np.asarray(res["etas"], dtype=float), degree)
    if per_start:
        return np.sqrt(np.einsum("rei,e->ri", sem**2, c**2))
    pooled = np.sqrt(np.sum(sem**2, axis=2)) / sem.shape[2]  # [ratio, eta]
    return np.sqrt(pooled**2 @ c**2)


def extrapolated_bracket(
    res: dict[str, np.ndarray], key: str = "flow_sharpness", burn_in: float | None = None, degree: int = 1
) -> tuple[np.ndarray, np.ndarray]:
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
class RelaxedChainConfig(ChainBaseConfig):
    """SGD with label noise on the width-one chain, one SGD run per ``(ratio, eta)`` cell, as long as that cell's
    slow balance needs.

    A cell runs ``max(min_steps, relaxation_times * tau)`` steps (rounded up to a multiple of ``records``),
    with ``tau = label_noise.chain_relaxation_time(teacher, Sigma_eps(r), eta, depth, batch_size=batch_size)``,
    and is recorded ``records`` times at equal spacing (plus step 0); its stationary statistics use the records
    after the fraction ``burn_in`` of the run. ``init_hidden_sq`` should start replicas on both sides of the
    attracting balance, so that ``extrapolated_bracket`` is a two-sided bracket.
    """

    relaxation_times: float = 10.0
    min_steps: int = 1000
    records: int = 50
    burn_in: float = 0.75

    def validate(self) -> None:
        super().validate()
        for name in ("min_steps", "records"):
            require_positive_int(name, getattr(self, name))
        require_positive("relaxation_times", self.relaxation_times)
        if len(set(self.etas)) < 2:
            raise ConfigError(f"etas={self.etas!r}: the eta -> 0 extrapolation needs >= 2 distinct step sizes.")
        if not (0.0 <= self.burn_in < 1.0) or int(self.burn_in * (self.records + 1)) >= self.records + 1:
            raise ConfigError(
                f"burn_in={self.burn_in!r} must be in [0, 1) and leave at least one of the "
                f"{self.records + 1} records; lower it or raise records."
            )


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
    tau = np.array(
        [
            [
                ln.chain_relaxation_time(
                    cfg.teacher, ln.noise_covariance(r, cfg.noise_trace, d), eta, cfg.depth, batch_size=cfg.batch_size
                )
                for eta in cfg.etas
            ]
            for r in cfg.ratios
        ]
    )
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
            out = ln.label_noise_sgd(
                net,
                thetas,
                a,
                torch.eye(1, dtype=torch.float64),
                cov,
                eta,
                n,
                cfg.batch_size,
                n // cfg.records,
                seed,
                chain_kernel=True,
            )
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
    preds = [
        ln.chain_fixed_point(cfg.teacher, ln.noise_covariance(r, cfg.noise_trace, d), cfg.depth) for r in cfg.ratios
    ]
    res.update(
        steps=steps,
        run_steps=run_steps,
        relaxation_steps=tau,
        burn_in=np.asarray(cfg.burn_in),
        ratios=np.asarray(cfg.ratios),
        etas=np.asarray(cfg.etas),
        init_hidden_sq=np.asarray(cfg.init_hidden_sq),
        replicas=np.asarray(R),
        init_sharpness=ln.chain_on_manifold(
            np.asarray(cfg.init_hidden_sq), cfg.teacher, ln.noise_covariance(1.0, cfg.noise_trace, d), cfg.depth
        )["sharpness"],
        n_diverged=diverged.sum(axis=-1).astype(np.int32),
        predicted_sharpness=np.array([p["sharpness"] for p in preds]),
        predicted_trace_hessian=np.array([p["trace_hessian"] for p in preds]),
        predicted_trace_fluctuation=np.array([p["trace_fluctuation"] for p in preds]),
        predicted_q=np.array([p["q"] for p in preds]),
    )
    return res


experiments.register(
    "label_noise_chain",
    chapter="label_noise_model",
    description="SGD with label noise on the width-one chain: convergence of the sharpness from different minima.",
    configs={
        "ci": ChainConvergenceConfig(
            scale="ci",
            ratios=(4.0,),
            etas=(0.04, 0.08),
            init_hidden_sq=(0.1, 1.0, 4.0),
            replicas=16,
            relaxation_times=15.0,
            records=30,
        ),
        "full": ChainConvergenceConfig(
            scale="full",
            ratios=(4.0, 16.0),
            etas=(0.005, 0.01, 0.02),
            init_hidden_sq=(0.05, 0.1, 0.3, 1.0, 4.0),
            replicas=64,
            relaxation_times=15.0,
            records=150,
        ),
    },
    run=run_relaxed_chain,
)

experiments.register(
    "label_noise_sweep",
    chapter="label_noise_model",
    description="Converged sharpness of the chain vs label-noise anisotropy r (fixed trace), SGD vs closed form.",
    configs={
        "ci": SweepConfig(
            scale="ci",
            ratios=(0.25, 1.0, 4.0, 16.0),
            etas=(0.04, 0.08),
            init_hidden_sq=(0.1, 1.0),
            replicas=4,
            relaxation_times=10.0,
            records=20,
        ),
        "full": SweepConfig(
            scale="full",
            ratios=(0.1, 0.25, 1.0, 2.0, 4.0, 10.0, 30.0, 100.0),
            etas=(0.005, 0.01, 0.02),
            init_hidden_sq=(0.1, 1.0),
            replicas=32,
            relaxation_times=10.0,
            records=100,
        ),
    },
    run=run_relaxed_chain,
)

experiments.register(
    "label_noise_reconcile",
    chapter="reconciling",
    description="Chain with strongly anisotropic label noise at small and large step sizes: sharpness and tr C "
    "(run lengths from the relaxation time tau).",
    configs={
        "ci": RelaxedChainConfig(
            scale="ci",
            ratios=(100.0,),
            etas=(0.03, 0.05, 0.08, 0.12, 0.16, 0.2),
            init_hidden_sq=(1.0, 0.0995),
            replicas=8,
            relaxation_times=4.0,
            min_steps=2000,
            records=20,
            burn_in=0.5,
        ),
        "full": RelaxedChainConfig(
            scale="full",
            ratios=(1.0, 100.0),
            etas=(0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2),
            init_hidden_sq=(1.0, 0.0995),
            replicas=32,
            relaxation_times=10.0,
            min_steps=20000,
            records=100,
            burn_in=0.5,
        ),
    },
    run=run_relaxed_chain,
)


@dataclasses.dataclass(frozen=True)
class ArchConfig(Config):
    """Online SGD with label noise ``Sigma_eps = noise_covariance(r, noise_trace)`` on MLP / RNN / transformer.

    Every (arch, ratio, seed) also runs with ``control_factor`` times less noise (the low-noise control, which shows
    what the architecture and the fit alone do). After ``steps`` steps at ``eta``, ``anneal_steps`` steps at
    ``eta * anneal_factor`` bring the iterate close to the minima before ``S`` and ``tr E[J^T J]`` are measured.
    """

    archs: tuple[str, ...] = ("mlp", "rnn", "transformer")
    ratios: tuple[float, ...] = (1.0, 100.0)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    noise_trace: float = 1.0
    control_factor: float = 0.01
    eta: float = 0.18
    steps: int = 800
    anneal_steps: int = 800
    anneal_factor: float = 0.03
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
        for name in ("eta", "noise_trace", "control_factor", "anneal_factor"):
            require_positive(name, getattr(self, name))
        for n in ("steps", "batch_size", "width", "seq_len", "d_in", "n_eval", "final_window", "snapshot_every"):
            require_positive_int(n, getattr(self, n))
        if not (isinstance(self.anneal_steps, int) and self.anneal_steps >= 0):
            raise ConfigError(f"anneal_steps={self.anneal_steps!r} must be an integer >= 0.")
        if len(self.seeds) < 2:
            raise ConfigError("seeds must list at least two seeds (the chapter shows intervals over seeds).")


#: The two noise levels of an architecture run (the label noise, and the low-noise control).
ARCH_LEVELS = ("noise", "control")


def run_architectures(cfg: ArchConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """``final_sharpness``, ``final_trace``, ``final_clean_loss`` ``[arch, level, ratio, seed]`` (level 0: the label
    noise, 1: the low-noise control; NaN where a run diverged), ``clean_loss [snapshot, arch, level, ratio, seed]``."""
    d_out = len(cfg.teacher_scales)
    traces = (cfg.noise_trace, cfg.noise_trace * cfg.control_factor)
    covs = torch.stack([ln.noise_covariance(r, tr, d_out) for tr in traces for r in cfg.ratios for _ in cfg.seeds])
    seeds = [s for _ in traces for _ in cfg.ratios for s in cfg.seeds]
    shape = (len(traces), len(cfg.ratios), len(cfg.seeds))
    out_keys = ("final_sharpness", "final_trace", "final_clean_loss", "diverged")
    acc: dict[str, list] = {k: [] for k in (*out_keys, "clean_loss")}
    nparams = []
    for i, arch in enumerate(cfg.archs):
        out = sm.train_sequence_label_noise(
            arch,
            covs,
            seeds,
            cfg.eta,
            cfg.steps,
            cfg.batch_size,
            cfg.d_in,
            cfg.seq_len,
            cfg.width,
            cfg.teacher_scales,
            cfg.n_eval,
            cfg.final_window,
            cfg.snapshot_every,
            device=device,
            anneal_steps=cfg.anneal_steps,
            anneal_factor=cfg.anneal_factor,
        )
        for k in out_keys:
            acc[k].append(np.asarray(out[k]).reshape(shape))
        acc["clean_loss"].append(out["clean_loss"].reshape(-1, *shape))
        nparams.append(int(out["n_params"]))
        if progress:
            progress(i + 1, len(cfg.archs))
    res = {k: np.stack(v) for k, v in acc.items()}
    res["clean_loss"] = np.moveaxis(res["clean_loss"], 0, 1)
    res.update(
        steps=out["steps"],
        ratios=np.asarray(cfg.ratios),
        n_params=np.asarray(nparams),
        archs=np.asarray(cfg.archs),
        levels=np.asarray(ARCH_LEVELS),
        anneal_start=np.asarray(cfg.steps),
    )
    return res


def architecture_summary(res: dict[str, np.ndarray], key: str = "final_sharpness") -> dict[str, np.ndarray]:
    """Per (arch, level): the mean over seeds of ``key`` at each ratio ``mean [arch, level, ratio]``, the seed-paired
    ratio of the last to the first ``ratios`` entry, its mean ``gap [arch, level]`` and a 95 % interval
    ``gap_lo``/``gap_hi`` (Student t over the seeds that did not diverge), and ``loss_ratio`` ``[arch, level]``:
    final clean loss at the last ratio over that of the low-noise control at the first ratio (1 = as close to
    a minimum as the control)."""
    from scipy import stats

    x = np.asarray(res[key], dtype=float)  # [arch, level, ratio, seed]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        paired = x[:, :, -1] / x[:, :, 0]  # [arch, level, seed]
        n = np.sum(np.isfinite(paired), axis=-1)
        gap = np.nanmean(paired, axis=-1)
        half = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * np.nanstd(paired, axis=-1, ddof=1) / np.sqrt(np.maximum(n, 1))
        loss = np.nanmean(np.asarray(res["final_clean_loss"], dtype=float), axis=-1)  # [arch, level, ratio]
        return {
            "mean": np.nanmean(x, axis=-1),
            "gap": gap,
            "gap_lo": gap - half,
            "gap_hi": gap + half,
            "n": n,
            "loss": loss,
            "loss_ratio": loss[:, :, -1] / loss[:, 1:2, 0],
        }


experiments.register(
    "label_noise_architectures",
    chapter="label_noise_architectures",
    description="Final sharpness and Gauss-Newton trace vs label-noise anisotropy for an MLP, an Elman RNN and a "
    "1-layer transformer, with a low-noise control.",
    configs={
        "ci": ArchConfig(scale="ci"),
        "full": ArchConfig(
            scale="full",
            ratios=(1.0, 10.0, 100.0),
            seeds=tuple(range(6)),
            eta=0.1,
            steps=8000,
            anneal_steps=4000,
            batch_size=8,
            width=24,
            n_eval=1024,
            final_window=4,
            snapshot_every=500,
        ),
    },
    run=run_architectures,
)


# ----------------------------------------------------------------------------- the general theorem (deep linear nets)
@dataclasses.dataclass(frozen=True)
class GeneralTheoremConfig(Config):
    """Online SGD on the paper's example: ``D``-layer linear nets of width 2, ``V = Sigma_x = I_2`` and label noise
    ``Sigma_eps`` proportional to ``diag(1, sigma^2)`` with trace ``noise_trace`` (only its shape matters for the
    theorem). Per ``(depth, sigma, eta)`` cell, ``replicas`` start at the flattest minimum (Lemma 4) and as many at
    a sharper one (Lemma 5's weights for ``sigma * sharp_start``); a cell runs ``relaxation_times * (D - 1) * tau``
    steps with ``tau = deep_linear.diagonal_relaxation_time`` (deeper nets relax more slowly)."""

    depths: tuple[int, ...] = (2, 3)
    sigmas: tuple[float, ...] = (1.0, 3.0)
    noise_trace: float = 2.0
    etas: tuple[float, ...] = (0.02, 0.04)
    replicas: int = 16
    batch_size: int = 1
    relaxation_times: float = 8.0
    records: int = 20
    burn_in: float = 0.5
    sharp_start: float = 3.0
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        for name in ("replicas", "batch_size", "records"):
            require_positive_int(name, getattr(self, name))
        for name in ("noise_trace", "relaxation_times", "sharp_start"):
            require_positive(name, getattr(self, name))
        if not self.depths or any(not (isinstance(D, int) and D >= 2) for D in self.depths):
            raise ConfigError(f"depths={self.depths!r}: list depths D >= 2.")
        for name, vals in (("sigmas", self.sigmas), ("etas", self.etas)):
            if len(vals) == 0 or any(not (v > 0) for v in vals):
                raise ConfigError(f"{name}={vals!r} must be a non-empty tuple of positive numbers.")
        if len(set(self.etas)) < 2:
            raise ConfigError(f"etas={self.etas!r}: the eta -> 0 extrapolation needs >= 2 distinct step sizes.")
        if not (0.0 <= self.burn_in < 1.0):
            raise ConfigError(f"burn_in={self.burn_in!r} must be in [0, 1).")


def general_noise(sigma: float, trace: float = 2.0) -> np.ndarray:
    """``diag(1, sigma^2)`` rescaled to the given trace (the paper's eq. 18 noise; the scale does not matter)."""
    require_positive("sigma", sigma)
    d = np.array([1.0, sigma**2])
    return np.diag(d * trace / d.sum())


def general_schedule(cfg: GeneralTheoremConfig) -> tuple[np.ndarray, np.ndarray]:
    """Relaxation times ``tau`` and run lengths, both ``[depth, sigma, eta]``."""
    tau = np.array(
        [
            [
                [
                    dl.diagonal_relaxation_time(np.diag(general_noise(s, cfg.noise_trace)), e, cfg.batch_size)
                    for e in cfg.etas
                ]
                for s in cfg.sigmas
            ]
            for _ in cfg.depths
        ]
    )
    mult = np.array([cfg.relaxation_times * (D - 1) for D in cfg.depths])[:, None, None]
    steps = (np.ceil(mult * tau / cfg.records) * cfg.records).astype(np.int64)
    return tau, steps


GENERAL_KEYS = ("trace_hessian", "sharpness", "fluctuation")


def run_general(cfg: GeneralTheoremConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """SGD vs Theorem 1 on the 2 x 2 example. For ``k`` in ``GENERAL_KEYS``: ``k_mean [record, depth, sigma, eta,
    start]`` (mean over surviving replicas) and ``k_stat``/``k_sem [depth, sigma, eta, start]`` (time average after
    ``burn_in``, and its standard error over replicas); ``conditions [depth, sigma, eta, layer]`` (stationary,
    NaN-padded to the largest depth); predictions ``predicted_trace``, ``predicted_sharpness`` (eq. 21),
    ``predicted_fluctuation`` ``[depth, sigma]``, ``minimal_trace [depth]``."""
    I2 = np.eye(2)
    nD, nS, nE, R = len(cfg.depths), len(cfg.sigmas), len(cfg.etas), cfg.replicas
    tau, run_steps = general_schedule(cfg)
    n_rec = cfg.records + 1
    first = int(cfg.burn_in * n_rec)
    traj = {k: np.full((n_rec, nD, nS, nE, 2, R), np.nan) for k in GENERAL_KEYS}
    steps = np.zeros((n_rec, nD, nS, nE), dtype=np.int64)
    cond = np.full((nD, nS, nE, max(cfg.depths)), np.nan)
    diverged = np.zeros((nD, nS, nE, 2, R), dtype=bool)
    done, total = 0, nD * nS * nE
    for a, D in enumerate(cfg.depths):
        for b, sig in enumerate(cfg.sigmas):
            Se = general_noise(sig, cfg.noise_trace)
            starts = [dl.minimal_trace_weights(D, I2, I2)] * R + [
                dl.minimal_fluctuation_weights(D, I2, I2, general_noise(sig * cfg.sharp_start))
            ] * R
            for c, eta in enumerate(cfg.etas):
                seed = int(np.random.SeedSequence([cfg.seed, a, b, c]).generate_state(1)[0])
                out = dl.train(
                    starts,
                    I2,
                    I2,
                    Se,
                    float(eta),
                    [("sgd", int(run_steps[a, b, c]))],
                    cfg.records,
                    cfg.batch_size,
                    seed,
                )
                for k in GENERAL_KEYS:
                    traj[k][:, a, b, c] = out[k].reshape(n_rec, 2, R)
                steps[:, a, b, c] = out["steps"]
                diverged[a, b, c] = out["diverged"].reshape(2, R)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    cond[a, b, c, :D] = np.nanmean(out["conditions"][first:], axis=(0, 1))
                done += 1
                if progress:
                    progress(done, total)
    res: dict[str, np.ndarray] = {}
    for k in GENERAL_KEYS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res[f"{k}_mean"] = np.nanmean(traj[k], axis=-1).astype(np.float32)
        _, sem = _replica_statistics(traj[k], diverged, cfg.burn_in)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res[f"{k}_stat"] = np.nanmean(np.nanmean(traj[k][first:], axis=0), axis=-1)
        res[f"{k}_sem"] = sem
    noises = [general_noise(s, cfg.noise_trace) for s in cfg.sigmas]
    res.update(
        steps=steps,
        run_steps=run_steps,
        relaxation_steps=tau,
        conditions=cond,
        n_diverged=diverged.sum(-1),
        depths=np.asarray(cfg.depths),
        sigmas=np.asarray(cfg.sigmas),
        etas=np.asarray(cfg.etas),
        replicas=np.asarray(R),
        burn_in=np.asarray(cfg.burn_in),
        predicted_trace=np.array([[dl.predicted_trace(D, I2, I2, Se) for Se in noises] for D in cfg.depths]),
        predicted_sharpness=np.array([[float(dl.two_by_two_sharpness(s, D)) for s in cfg.sigmas] for D in cfg.depths]),
        predicted_fluctuation=np.array(
            [[dl.predicted_fluctuation(D, I2, I2, Se) for Se in noises] for D in cfg.depths]
        ),
        predicted_conditions=np.array(
            [
                [dl.layer_conditions(dl.minimal_fluctuation_weights(D, I2, I2, Se))[[0, -1]] for Se in noises]
                for D in cfg.depths
            ]
        ),
        minimal_trace=np.array([dl.minimal_trace(D, I2, I2) for D in cfg.depths]),
    )
    return res


def general_summary(res: dict[str, np.ndarray], key: str = "trace_hessian", degree: int = 1) -> dict[str, np.ndarray]:
    """``eta -> 0`` extrapolation of a general-theorem run, pooled over the two starts and per start.

    Returns ``value``/``sem`` ``[depth, sigma]``, ``per_start`` ``[depth, sigma, start]``, ``relative_error``
    (``value / prediction - 1``, for ``trace_hessian``, ``sharpness`` and ``fluctuation``), and, for the trace,
    ``ratio`` = ``value / T_min`` beside ``predicted_ratio``.
    """
    etas = np.asarray(res["etas"], dtype=float)
    c = _extrapolation_weights(etas, degree)
    stat = np.asarray(res[f"{key}_stat"], dtype=float)  # [depth, sigma, eta, start]
    sem = np.asarray(res[f"{key}_sem"], dtype=float)
    per_start = np.einsum("dsej,e->dsj", stat, c)
    value = per_start.mean(-1)
    pooled_sem = np.sqrt(np.sum(sem**2, axis=-1)) / sem.shape[-1]  # [depth, sigma, eta]
    out = {"value": value, "sem": np.sqrt(pooled_sem**2 @ c**2), "per_start": per_start}
    pred = {
        "trace_hessian": "predicted_trace",
        "sharpness": "predicted_sharpness",
        "fluctuation": "predicted_fluctuation",
    }[key]
    out["relative_error"] = value / res[pred] - 1
    if key == "trace_hessian":
        out["ratio"] = value / res["minimal_trace"][:, None]
        out["predicted_ratio"] = res["predicted_trace"] / res["minimal_trace"][:, None]
    return out


@dataclasses.dataclass(frozen=True)
class InterventionConfig(Config):
    """The SGD -> GD intervention (the paper's Fig. 4) on the 2 x 2 example: all arms start at the flattest minimum;
    ``sgd``: SGD throughout; ``sgd_gd``: SGD, then gradient descent on the population loss; ``sgd_gd_sgd``: SGD,
    GD, SGD again; ``gd``: GD throughout. Phases of ``phase_steps`` steps, same random numbers in shared phases."""

    depth: int = 2
    sigma: float = 3.0
    noise_trace: float = 2.0
    eta: float = 0.02
    replicas: int = 32
    phase_steps: tuple[int, int, int] = (2000, 4000, 12000)
    records_per_phase: int = 16
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        if not (isinstance(self.depth, int) and self.depth >= 2):
            raise ConfigError(f"depth={self.depth!r}: use D >= 2.")
        for name in ("sigma", "noise_trace", "eta"):
            require_positive(name, getattr(self, name))
        for name in ("replicas", "records_per_phase"):
            require_positive_int(name, getattr(self, name))
        if len(self.phase_steps) != 3 or any(
            not (isinstance(n, int) and n >= self.records_per_phase) for n in self.phase_steps
        ):
            raise ConfigError(f"phase_steps={self.phase_steps!r}: give three phase lengths >= records_per_phase.")


INTERVENTION_ARMS = {
    "sgd": ("sgd", "sgd", "sgd"),
    "sgd_gd": ("sgd", "gd", "gd"),
    "sgd_gd_sgd": ("sgd", "gd", "sgd"),
    "gd": ("gd", "gd", "gd"),
}


def run_intervention(cfg: InterventionConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """``{arm}_trace`` and ``{arm}_sharpness`` ``[record]`` (means over replicas), ``steps``, ``phase``,
    ``predicted_trace``, ``minimal_trace``."""
    I2 = np.eye(2)
    Se = general_noise(cfg.sigma, cfg.noise_trace)
    starts = [dl.minimal_trace_weights(cfg.depth, I2, I2)] * cfg.replicas
    res: dict[str, np.ndarray] = {}
    for i, (arm, kinds) in enumerate(INTERVENTION_ARMS.items()):
        out = dl.train(
            starts, I2, I2, Se, cfg.eta, list(zip(kinds, cfg.phase_steps)), cfg.records_per_phase, seed=cfg.seed
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res[f"{arm}_trace"] = np.nanmean(out["trace_hessian"], axis=1)
            res[f"{arm}_sharpness"] = np.nanmean(out["sharpness"], axis=1)
            res[f"{arm}_trace_sem"] = np.nanstd(out["trace_hessian"], axis=1, ddof=1) / np.sqrt(cfg.replicas)
        res["steps"], res["phase"] = out["steps"], out["phase"]
        if progress:
            progress(i + 1, len(INTERVENTION_ARMS))
    res.update(
        predicted_trace=np.asarray(dl.predicted_trace(cfg.depth, I2, I2, Se)),
        minimal_trace=np.asarray(dl.minimal_trace(cfg.depth, I2, I2)),
    )
    return res


def intervention_summary(res: dict[str, np.ndarray]) -> dict[str, float]:
    """Drift of ``T`` per arm during the second phase and the third phase (last record of the phase minus the
    first), and the gap of the GD phase's records from their mean (a frozen ``T`` has gap ~0)."""
    ph = np.asarray(res["phase"])
    out = {}
    for arm in INTERVENTION_ARMS:
        T = np.asarray(res[f"{arm}_trace"], dtype=float)
        for p in (1, 2):
            idx = np.flatnonzero(ph == p)
            out[f"{arm}_drift{p}"] = float(T[idx[-1]] - T[idx[0] - 1])
    idx = np.flatnonzero(ph == 1)
    T = np.asarray(res["sgd_gd_trace"], dtype=float)
    out["gd_phase_spread"] = float(np.max(np.abs(T[idx[1:]] - T[idx[-1]])))
    out["gd_start_change"] = float(np.max(np.abs(np.asarray(res["gd_trace"]) - res["gd_trace"][0])))
    return out


experiments.register(
    "label_noise_general",
    chapter="label_noise_model",
    description="Theorem 1 of Xu et al. on their 2x2 example: SGD's Hessian trace vs eq. 14 across noise shapes "
    "and depths.",
    configs={
        "ci": GeneralTheoremConfig(scale="ci"),
        "full": GeneralTheoremConfig(
            scale="full",
            depths=(2, 3, 4),
            sigmas=(1.0, 2.0, 3.0, 5.0),
            etas=(0.005, 0.01, 0.02),
            replicas=64,
            relaxation_times=10.0,
            records=40,
        ),
    },
    run=run_general,
)

experiments.register(
    "label_noise_intervention",
    chapter="label_noise_model",
    description="SGD -> GD -> SGD on the 2x2 example: gradient descent freezes the Hessian trace, SGD resumes "
    "the drift.",
    configs={
        "ci": InterventionConfig(scale="ci"),
        "full": InterventionConfig(
            scale="full", depth=3, eta=0.01, replicas=64, phase_steps=(10000, 20000, 80000), records_per_phase=40
        ),
    },
    run=run_intervention,
)


# ----------------------------------------------------------------------------- summaries of the stored chain results
def chain_convergence_summary(
    res: dict[str, np.ndarray], cfg: RelaxedChainConfig | None = None
) -> dict[str, np.ndarray]:
    """What the chapter prints about a ``label_noise_chain`` result: per start and pooled ``eta -> 0`` values.

    ``degree`` is 2 (parabola) with three or more step sizes, else 1. Returns ``per_start``/``per_start_err``
    ``[ratio, start]``, their deviation ``per_start_rel`` (relative to ``S*``) and ``per_start_z`` (in standard
    errors), ``pooled``/``pooled_err`` and ``line``/``line_err`` ``[ratio]``, ``stationary_rel`` ``[ratio, eta,
    start]`` (``S / S* - 1``), ``n_tau`` (shortest run in relaxation times) and, with ``cfg``, ``drift_worst``
    (largest window deviation of the drift path, ``drift_path_deviation``).
    """
    deg = min(2, len(res["etas"]) - 1)
    p = np.asarray(res["predicted_sharpness"], dtype=float)
    per_start = extrapolated(res, degree=deg, per_start=True)
    per_start_err = extrapolated_sem(res, degree=deg, per_start=True)
    out = {
        "degree": np.asarray(deg),
        "per_start": per_start,
        "per_start_err": per_start_err,
        "per_start_rel": per_start / p[:, None] - 1,
        "per_start_z": np.abs(per_start - p[:, None]) / per_start_err,
        "pooled": extrapolated(res, degree=deg),
        "pooled_err": extrapolated_sem(res, degree=deg),
        "line": extrapolated(res),
        "line_err": extrapolated_sem(res),
        "stationary_rel": stationary_mean(res) / p[:, None, None] - 1,
        "n_tau": np.asarray(float(np.min(res["run_steps"] / res["relaxation_steps"]))),
    }
    if cfg is not None:
        out["drift_worst"] = np.asarray(float(np.max(np.abs(drift_path_deviation(cfg)))))
    return out


def sweep_summary(res: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the chapter prints about a ``label_noise_sweep`` result (starts pooled), one entry per ratio unless noted.

    ``line``/``line_err`` and ``parabola``/``parabola_err`` (``eta -> 0``), the two-start ``bracket_lo``/``bracket_hi``
    of the parabola, ``misfit`` (distance of the middle step size's value from the line through the outer two, in
    standard errors; NaN with fewer than three step sizes), ``offset`` ``[ratio, eta]`` (stationary ``S / S* - 1`` in
    units of ``eta S*``), ``start_gap`` (largest gap between the two starts over the step sizes, relative to ``S*``)
    with ``start_gap_z`` (in standard errors), and ``inside`` (``S*`` inside the bracket widened by 2 s.e.).
    """
    p = np.asarray(res["predicted_sharpness"], dtype=float)
    e = np.asarray(res["etas"], dtype=float)
    deg = min(2, len(e) - 1)
    para, para_err = extrapolated(res, degree=deg), extrapolated_sem(res, degree=deg)
    lo, hi = extrapolated_bracket(res, degree=deg)
    starts = stationary_mean(res)  # [r, eta, start]
    starts_err = np.asarray(res["flow_sharpness_sem"], dtype=float)
    per_eta = np.nanmean(starts, axis=2)
    per_eta_err = np.sqrt(np.sum(starts_err**2, axis=2)) / starts.shape[2]
    misfit = np.full(len(p), np.nan)
    if len(e) >= 3:
        w = (e[2] - e[1]) / (e[2] - e[0])
        misfit = (per_eta[:, 1] - w * per_eta[:, 0] - (1 - w) * per_eta[:, 2]) / np.sqrt(
            per_eta_err[:, 1] ** 2 + (w * per_eta_err[:, 0]) ** 2 + ((1 - w) * per_eta_err[:, 2]) ** 2
        )
    gap = np.nanmax(starts, axis=2) - np.nanmin(starts, axis=2)  # [r, eta]
    gap_z = gap / np.sqrt(np.sum(starts_err**2, axis=2))
    return {
        "line": extrapolated(res),
        "line_err": extrapolated_sem(res),
        "parabola": para,
        "parabola_err": para_err,
        "bracket_lo": lo,
        "bracket_hi": hi,
        "misfit": misfit,
        "offset": (per_eta / p[:, None] - 1) / (e[None, :] * p[:, None]),
        "start_gap": np.max(gap, axis=1) / p,
        "start_gap_z": np.max(gap_z, axis=1),
        "inside": (lo - 2 * para_err <= p) & (p <= hi + 2 * para_err),
    }
