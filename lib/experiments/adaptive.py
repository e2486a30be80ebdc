"""Experiments of the adaptive-methods chapter: Adam at the adaptive edge of stability, and Clipped-Ada.

* ``clipped_ada_q`` - the chapter's experiment: full-batch Clipped-Ada in the ``q^thresh`` form (our
  reconstruction; :func:`clip_for_q` sets the clip so that the raw-sharpness ceiling of the clipped
  preconditioner is ``q * 2/reference_eta``; ``q = inf`` is Adam), swept over ``q`` and ``beta2`` with
  several seeds, trained to a common loss with the rule ``clipped_ada_q`` (Clipped-Ada with a short
  warm-up). It records the raw sharpness (and the cap-riding fraction, :func:`cap_riding_fraction`),
  test accuracy, and traces of the preconditioned sharpness and of the clipped fraction.

* ``adam_aeos`` - full-batch Adam (and Clipped-Ada) on a small tanh MLP, tracking the raw sharpness
  ``S = lambda_1(H)`` and the preconditioned sharpness ``lambda_1(P^{-1}H)`` against Adam's
  threshold ``(2 + 2 beta1)/((1 - beta1) eta)`` (38/eta for beta1 = 0.9; Cohen et al. 2022).
* ``adaptive_generalization`` - GD, SGD, Adam and Clipped-Ada (several clips ``c``) trained to the
  same training loss, several seeds: test accuracy and final sharpness. The runs train as vmapped
  populations (one per optimizer: the seeds, and for Clipped-Ada the clips, are its members;
  :func:`instabilities.population.train_sweep`); at full scale the sweep checkpoints and resumes.
* ``adam_aeos_cifar10``, ``adaptive_generalization_cifar10`` - the same at full scale on the first
  5,120 CIFAR-10 images (need a local copy of CIFAR-10; ``reproduce`` skips them otherwise).

Clipped-Ada is our reconstruction (see :class:`optim.ClippedAda`): the exact form is inferred from
the authors' code, not read in the paper. ``adam_aeos`` and ``adaptive_generalization`` use the clip
``c`` directly and no warm-up (the earlier form of the chapter, kept for their full-scale results).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch

from .. import experiments  # register (registry) and checkpoint_path (reproduce)
from ..config import (
    ConfigError,
    require_choice,
    require_in_range,
    require_nonnegative,
    require_positive,
    require_positive_int,
)
from ..curvature import batched_top_eigenpairs
from ..curvature.preconditioned import PreconditionedSharpnessTracker, adam_threshold
from ..population import sweep_groups, train_sweep
from ..train import TrainConfig, build_problem, train
from .common import CHECKPOINT_EVERY, NetConfig
from .registry import Progress

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
class _AdaptiveNetConfig(NetConfig):
    """The network of :class:`~instabilities.exp_common.NetConfig` plus Adam's ``beta1``, ``beta2``, ``eps``."""

    n_train: int = 256
    widths: tuple[int, ...] = (16, 16)
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    eig_tol: float = 1e-3

    def validate(self) -> None:
        super().validate()
        require_in_range("beta1", self.beta1, 0.0, 0.999)
        require_in_range("beta2", self.beta2, 1e-6, 0.999999)
        require_nonnegative("eps", self.eps)
        require_positive("eig_tol", self.eig_tol)

    def method_config(self, optimizer: str, lr: float, clip: float, **kw) -> TrainConfig:
        """The :class:`TrainConfig` of one ``(optimizer, lr, clip)`` run (``clip=inf``: no clip)."""
        return self.train_config(
            optimizer=optimizer,
            lr=lr,
            beta1=self.beta1,
            beta2=self.beta2,
            eps=self.eps,
            clip=clip if math.isfinite(clip) else 1.0,
            eig_tol=self.eig_tol,
            **kw,
        )


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
class AdaptiveEoSConfig(_AdaptiveNetConfig):
    """Full-batch runs ``(optimizer, lr, clip)`` tracked every ``track_every`` steps."""

    runs: tuple[tuple[str, float, float], ...] = (
        ("adam", 0.005, math.inf),
        ("adam", 0.01, math.inf),
        ("clipped_ada", 0.005, 3e-3),
    )
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


def run_adam_aeos(
    cfg: AdaptiveEoSConfig, device: str = "cpu", progress: Progress | None = None
) -> dict[str, np.ndarray]:
    """Raw and preconditioned sharpness along full-batch adaptive runs."""
    n_track = cfg.steps // cfg.track_every + 1
    n = len(cfg.runs)
    out = {
        "sharpness": np.full((n, n_track), np.nan),
        "precond_sharpness": np.full((n, n_track), np.nan),
        "train_loss": np.full((n, cfg.steps + 1), np.nan),
        "precond_min": np.full((n, n_track), np.nan),
        "precond_max": np.full((n, n_track), np.nan),
        "diverged": np.zeros(n, bool),
    }
    for i, (opt, lr, clip) in enumerate(cfg.runs):
        tcfg = cfg.method_config(
            opt, lr, clip, steps=cfg.steps, seed=cfg.seed, eig_every=cfg.track_every, device=device
        )
        step_progress = (lambda s, t, i=i: progress(i * cfg.steps + s, n * cfg.steps)) if progress else None
        hist = train(
            tcfg, callbacks=[PreconditionedSharpnessTracker(cfg.track_every, tol=cfg.eig_tol)], progress=step_progress
        )
        s = hist.sharpness
        out["sharpness"][i, : len(s)] = s
        slots = np.asarray(hist.extra.get("precond_step", []), int) // cfg.track_every
        for key in ("precond_sharpness", "precond_min", "precond_max"):
            out[key][i, slots] = hist.extra.get(key, [])
        out["train_loss"][i, : len(hist.train_loss)] = hist.train_loss
        out["diverged"][i] = hist.diverged
    out["eig_steps"] = np.arange(n_track) * cfg.track_every
    out["lrs"] = np.asarray([r[1] for r in cfg.runs], float)
    out["clips"] = np.asarray([r[2] for r in cfg.runs], float)
    out["thresholds"] = np.asarray([adam_threshold(r[1], 0.0 if r[0] == "rmsprop" else cfg.beta1) for r in cfg.runs])
    out["sharpness_caps"] = np.asarray(
        [clipped_sharpness_cap(r[1], cfg.beta1, r[2], cfg.eps) if r[0] == "clipped_ada" else np.inf for r in cfg.runs]
    )
    out["labels"] = np.asarray([method_label(*r) for r in cfg.runs])
    return out


@dataclasses.dataclass(frozen=True)
class GeneralizationConfig(_AdaptiveNetConfig):
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
        return [("gd", self.gd_lr, math.inf), ("sgd", self.gd_lr, math.inf), ("adam", self.adam_lr, math.inf)] + [
            ("clipped_ada", self.adam_lr, c) for c in self.clips
        ]


def run_adaptive_generalization(
    cfg: GeneralizationConfig,
    device: str = "cpu",
    progress: Progress | None = None,
    experiment: str = "adaptive_generalization",
) -> dict[str, np.ndarray]:
    """Arrays of shape ``(n_methods, n_seeds)``: test accuracy, final sharpness, steps to ``stop_loss``.

    The runs train as one population per optimizer; the final sharpness of every run comes from
    batched Lanczos (:func:`instabilities.curvature.batched_top_eigenpairs`, tolerance ``eig_tol``).
    A ``full``-scale run checkpoints under ``experiments.checkpoint_path(experiment, cfg, "sweep")``
    and resumes from there.
    """
    methods = cfg.methods()
    shape = (len(methods), len(cfg.seeds))
    grid = [(i, k) for i in range(shape[0]) for k in range(shape[1])]
    configs = [
        cfg.method_config(
            *methods[i],
            batch_size=None if methods[i][0] == "gd" else cfg.batch_size,
            steps=cfg.max_steps,
            seed=cfg.seeds[k],
            stop_loss=cfg.stop_loss,
            device=device,
        )
        for i, k in grid
    ]
    total = len(sweep_groups(configs)) * cfg.max_steps + 1
    ckpt = experiments.checkpoint_path(experiment, cfg, "sweep") if cfg.scale == "full" else None
    hist = train_sweep(
        configs,
        progress=(lambda s, n: progress(s, total)) if progress else None,
        keep_theta=True,
        checkpoint_path=ckpt,
        checkpoint_every=CHECKPOINT_EVERY,
    )
    prob = build_problem(configs[0])  # data, model and objective do not depend on the seed or the optimizer
    dtype, dev = prob.flat.theta0.dtype, prob.flat.theta0.device
    top = batched_top_eigenpairs(
        prob.objective,
        torch.as_tensor(np.nan_to_num(hist.theta), dtype=dtype, device=dev),
        1,
        max_iter=200,
        tol=cfg.eig_tol,
        active=torch.as_tensor(~hist.diverged, device=dev),
    )
    sharp = top.values[:, 0].double().cpu().numpy()
    out = {k: np.full(shape, np.nan) for k in ("test_acc", "sharpness", "steps", "train_loss")}
    out["diverged"] = np.zeros(shape, bool)
    out["reached"] = np.zeros(shape, bool)
    for p, (i, k) in enumerate(grid):
        out["steps"][i, k] = hist.final_step[p]
        out["train_loss"][i, k] = hist.final_train_loss[p]
        out["diverged"][i, k] = hist.diverged[p]
        out["reached"][i, k] = (not hist.diverged[p]) and hist.final_train_loss[p] < cfg.stop_loss
        if not hist.diverged[p]:
            out["test_acc"][i, k] = hist.test_acc[p]
            out["sharpness"][i, k] = sharp[p]
    if progress is not None:
        progress(total, total)
    out["labels"] = np.asarray([method_label(*m) for m in methods])
    out["optimizers"] = np.asarray([m[0] for m in methods])
    out["clips"] = np.asarray([m[2] for m in methods], float)
    return out


_AEOS_FULL = dict(
    widths=(256, 256),
    steps=20_000,
    track_every=200,
    eig_tol=1e-4,
    runs=(("adam", 2e-4, math.inf), ("adam", 5e-4, math.inf), ("clipped_ada", 2e-4, 1e-3)),
)
# digits at full scale (sized for two CPU cores): the ci hyperparameters on 1,500 examples, a wider net, longer
_AEOS_DIGITS = dict(
    widths=(32, 32),
    steps=3000,
    track_every=50,
    eig_tol=1e-4,
    runs=(("adam", 0.005, math.inf), ("adam", 0.01, math.inf), ("clipped_ada", 0.005, 0.003)),
)
_GEN_DIGITS = dict(
    widths=(32, 32),
    batch_size=32,
    gd_lr=0.5,
    adam_lr=0.005,
    clips=(0.003, 0.005, 0.01),
    seeds=(0, 1, 2, 3, 4),
    max_steps=10_000,
    stop_loss=0.05,
    eig_tol=1e-4,
)
_GEN_FULL = dict(
    widths=(256, 256),
    batch_size=64,
    gd_lr=0.1,
    adam_lr=1e-3,
    clips=(3e-4, 1e-3, 3e-3, 1e-2),
    seeds=(0, 1, 2, 3, 4),
    max_steps=50_000,
    stop_loss=0.01,
    eig_tol=1e-4,
)
_CIFAR10 = dict(dataset="cifar10", n_train=5120, n_test=2000)
_NEEDS_CIFAR10 = " Needs a local copy of CIFAR-10 (see data.load_dataset)."

experiments.register(
    "adam_aeos",
    chapter="adaptive_methods",
    description="Full-batch Adam / Clipped-Ada: raw vs preconditioned sharpness against 38/eta.",
    configs={
        "ci": AdaptiveEoSConfig(scale="ci"),
        "full": AdaptiveEoSConfig(scale="full", dataset="digits", n_train=1500, n_test=297, **_AEOS_DIGITS),
    },
    run=run_adam_aeos,
)

experiments.register(
    "adam_aeos_cifar10",
    chapter="adaptive_methods",
    description="adam_aeos at full scale on the first 5,120 CIFAR-10 images." + _NEEDS_CIFAR10,
    configs={
        "ci": AdaptiveEoSConfig(scale="ci", dataset="cifar10"),
        "full": AdaptiveEoSConfig(scale="full", **_CIFAR10, **_AEOS_FULL),
    },
    run=run_adam_aeos,
)

experiments.register(
    "adaptive_generalization",
    chapter="adaptive_methods",
    description="Test accuracy and final sharpness of GD, SGD, Adam and Clipped-Ada at equal training loss.",
    configs={
        "ci": GeneralizationConfig(scale="ci"),
        "full": GeneralizationConfig(scale="full", dataset="digits", n_train=1500, n_test=297, **_GEN_DIGITS),
    },
    run=run_adaptive_generalization,
    resumable=True,
)

experiments.register(
    "adaptive_generalization_cifar10",
    chapter="adaptive_methods",
    description="adaptive_generalization at full scale on the first 5,120 CIFAR-10 images." + _NEEDS_CIFAR10,
    configs={
        "ci": GeneralizationConfig(scale="ci", dataset="cifar10"),
        "full": GeneralizationConfig(scale="full", **_CIFAR10, **_GEN_FULL),
    },
    run=functools.partial(run_adaptive_generalization, experiment="adaptive_generalization_cifar10"),
    resumable=True,
)


# -- Clipped-Ada in the q^thresh form (reconstruction) ---------------------------------------------
Q_RULE = "clipped_ada_q"  # the clipped_ada update with a short step-size warm-up (optim.py)


def clip_for_q(q: float, eta: float, beta1: float, reference_sharpness: float, eps: float = 0.0) -> float:
    """The clip ``c`` whose preconditioner caps the raw sharpness at ``q * reference_sharpness`` (ours).

    With ``P = diag(min(sqrt(v_hat), c) + eps)`` and Adam's threshold ``T = (2 + 2 beta1)/((1 - beta1) eta)``,
    stability needs ``S <= (c + eps) T`` (:func:`clipped_sharpness_cap`); solving ``(c + eps) T = q S_ref``
    gives ``c = q S_ref (1 - beta1) eta / (2 + 2 beta1) - eps``. ``q = inf`` (Adam) returns the largest
    float, so that ``min(sqrt(v_hat), c) = sqrt(v_hat)`` exactly.
    """
    if not (isinstance(q, (int, float)) and q > 0):
        raise ConfigError(f"q={q!r} (q^thresh) must be > 0; use float('inf') for Adam.")
    require_positive("reference_sharpness", reference_sharpness)
    if math.isinf(q):
        return float(np.finfo(np.float64).max)
    c = q * reference_sharpness / adam_threshold(eta, beta1) - eps
    if c <= 0:
        raise ConfigError(f"q={q} gives a clip c={c:.3g} <= 0 at eps={eps}; use a larger q or a smaller eps.")
    return c


def cap_riding_fraction(sharpness: np.ndarray, cap: float, band: float = 0.9) -> tuple[float, int]:
    """``(fraction, first)``: among the tracked values from the first one with ``S >= band * cap`` to the
    last finite one, the fraction with ``S >= band * cap``; ``first`` is the index where the cap was first
    reached (``(0.0, -1)`` if never, or if ``cap`` is infinite)."""
    s = np.asarray(sharpness, float)
    s = s[np.isfinite(s)]
    if not math.isfinite(cap) or s.size == 0:
        return 0.0, -1
    hit = np.flatnonzero(s >= band * cap)
    if hit.size == 0:
        return 0.0, -1
    first = int(hit[0])
    return float(np.mean(s[first:] >= band * cap)), first


class ClippedFractionLogger:
    """Training callback: every ``every`` steps log the fraction of coordinates whose ``sqrt(v_hat)``
    exceeds the clip (``clipped_fraction``) of a run with an adaptive rule (``clip`` in its param group)."""

    def __init__(self, every: int) -> None:
        require_positive_int("every", every)
        self.every = every

    def __call__(self, ctx) -> None:
        if ctx.step % self.every:
            return
        group = ctx.optimizer.param_groups[0]
        state = ctx.optimizer.state.get(group["params"][0], {})
        if not state or float(state["step"]) == 0:
            return
        from ..optim import clipped_denominator

        d = clipped_denominator(state["exp_avg_sq"], float(state["step"]), group["beta2"])
        ctx.history.log("clipped_step", ctx.step)
        ctx.history.log("clipped_fraction", float((d > group.get("clip", math.inf)).double().mean()))


@dataclasses.dataclass(frozen=True)
class ClippedAdaQConfig(NetConfig):
    """Full-batch Clipped-Ada swept over ``q^thresh`` (``inf`` = Adam) and ``beta2``, several seeds.

    The clip of each ``q`` is :func:`clip_for_q` with the reference sharpness ``2/reference_eta`` (GD's
    edge at step ``reference_eta``): ``q = 1`` caps the raw sharpness at that edge. Every run stops at the
    training loss ``stop_loss``; the raw sharpness is tracked every ``track_every`` steps. For the first
    seed and the first ``beta2``, one extra run per ``q`` traces the preconditioned sharpness and the
    fraction of clipped coordinates every ``trace_every`` steps. With ``gd_max_steps > 0`` a GD arm
    at ``reference_eta`` trains too.
    """

    n_train: int = 256
    widths: tuple[int, ...] = (16, 16)
    eta: float = 0.005
    reference_eta: float = 0.5
    qs: tuple[float, ...] = (0.85, 1.0, 1.25, math.inf)  # caps 3.4, 4, 5, inf; S(theta_0) <= 3.2 (seeds 0-14)
    beta1: float = 0.9
    beta2s: tuple[float, ...] = (0.99, 0.999)
    eps: float = 1e-8
    seeds: tuple[int, ...] = tuple(range(10))
    max_steps: int = 2000
    gd_max_steps: int = 0
    stop_loss: float = 1e-3
    track_every: int = 50
    trace_every: int = 25
    eig_tol: float = 1e-3

    def validate(self) -> None:
        super().validate()
        require_positive("eta", self.eta)
        require_positive("reference_eta", self.reference_eta)
        require_in_range("beta1", self.beta1, 0.0, 0.999)
        require_nonnegative("eps", self.eps)
        for name in ("max_steps", "track_every", "trace_every"):
            require_positive_int(name, getattr(self, name))
        if not (isinstance(self.gd_max_steps, int) and self.gd_max_steps >= 0):
            raise ConfigError(f"gd_max_steps={self.gd_max_steps!r} must be an integer >= 0 (0: no GD arm).")
        require_positive("stop_loss", self.stop_loss)
        require_positive("eig_tol", self.eig_tol)
        if not self.qs or not self.beta2s or not self.seeds:
            raise ConfigError("qs, beta2s and seeds must each list at least one value.")
        if not math.isinf(self.qs[-1]):
            raise ConfigError(f"qs={self.qs} must end with float('inf') (Adam, the baseline).")
        for b2 in self.beta2s:
            require_in_range("beta2 (in beta2s)", b2, 1e-6, 0.999999)
        for q in self.qs:
            clip_for_q(q, self.eta, self.beta1, self.reference_sharpness, self.eps)

    @property
    def reference_sharpness(self) -> float:
        """``2/reference_eta``: the raw sharpness that ``q = 1`` allows."""
        return 2.0 / self.reference_eta

    def clips(self) -> list[float]:
        return [clip_for_q(q, self.eta, self.beta1, self.reference_sharpness, self.eps) for q in self.qs]

    def run_config(self, q: float, beta2: float, seed: int, device: str = "cpu", **kw) -> TrainConfig:
        """The :class:`TrainConfig` of one ``(q, beta2, seed)`` run."""
        return self.train_config(
            optimizer=Q_RULE,
            lr=self.eta,
            beta1=self.beta1,
            beta2=beta2,
            eps=self.eps,
            clip=clip_for_q(q, self.eta, self.beta1, self.reference_sharpness, self.eps),
            steps=self.max_steps,
            seed=seed,
            stop_loss=self.stop_loss,
            eig_tol=self.eig_tol,
            device=device,
            **kw,
        )


def run_clipped_ada_q(
    cfg: ClippedAdaQConfig, device: str = "cpu", progress: Progress | None = None
) -> dict[str, np.ndarray]:
    """Arrays of shape ``(n_beta2, n_q, n_seed)`` (trajectories add a slot axis): final sharpness, test
    accuracy, steps, the raw-sharpness trajectory, the cap-riding fraction (:func:`cap_riding_fraction`);
    the traces of the first seed; and the GD arm at ``reference_eta`` (shape ``(n_seed,)``)."""
    from ..population import train_population

    nb, nq, ns = len(cfg.beta2s), len(cfg.qs), len(cfg.seeds)
    grid = [(b, i, k) for b in range(nb) for i in range(nq) for k in range(ns)]
    configs = [
        cfg.run_config(cfg.qs[i], cfg.beta2s[b], cfg.seeds[k], device, eig_every=cfg.track_every) for b, i, k in grid
    ]
    total = cfg.max_steps * 2 + cfg.gd_max_steps + 1
    hist = train_population(configs, keep_theta=True, progress=(lambda s, n: progress(s, total)) if progress else None)
    n_slots = cfg.max_steps // cfg.track_every + 1
    hist = hist.padded(np.arange(n_slots) * cfg.track_every)
    prob = build_problem(configs[0])
    dtype, dev = prob.flat.theta0.dtype, prob.flat.theta0.device
    top = batched_top_eigenpairs(
        prob.objective,
        torch.as_tensor(np.nan_to_num(hist.theta), dtype=dtype, device=dev),
        1,
        max_iter=200,
        tol=cfg.eig_tol,
        active=torch.as_tensor(~hist.diverged, device=dev),
    )
    shape = (nb, nq, ns)
    caps = np.asarray([q * cfg.reference_sharpness for q in cfg.qs])
    out = {
        k: np.full(shape, np.nan)
        for k in ("sharpness", "test_acc", "steps", "train_loss", "riding_fraction", "first_reach_step")
    }
    out["diverged"] = np.zeros(shape, bool)
    out["sharp_traj"] = np.full(shape + (n_slots,), np.nan)
    for p, (b, i, k) in enumerate(grid):
        out["steps"][b, i, k] = hist.final_step[p]
        out["train_loss"][b, i, k] = hist.final_train_loss[p]
        out["diverged"][b, i, k] = hist.diverged[p]
        out["sharp_traj"][b, i, k] = hist.sharpness[p]
        if not hist.diverged[p]:
            out["test_acc"][b, i, k] = hist.test_acc[p]
            out["sharpness"][b, i, k] = float(top.values[p, 0])
            frac, first = cap_riding_fraction(hist.sharpness[p], caps[i])
            out["riding_fraction"][b, i, k] = frac
            out["first_reach_step"][b, i, k] = first * cfg.track_every if first >= 0 else np.nan
    # traces of the first seed (first beta2): preconditioned sharpness and clipped fraction, one run per q
    n_trace = cfg.max_steps // cfg.trace_every + 1
    for key in ("trace_precond", "trace_sharp", "trace_clipped"):
        out[key] = np.full((nq, n_trace), np.nan)
    for i, q in enumerate(cfg.qs):
        tcfg = cfg.run_config(q, cfg.beta2s[0], cfg.seeds[0], device, eig_every=cfg.trace_every)
        h = train(
            tcfg,
            callbacks=[
                PreconditionedSharpnessTracker(cfg.trace_every, tol=cfg.eig_tol),
                ClippedFractionLogger(cfg.trace_every),
            ],
        )
        out["trace_sharp"][i, : len(h.sharpness)] = h.sharpness
        for key, name, step_key in (
            ("trace_precond", "precond_sharpness", "precond_step"),
            ("trace_clipped", "clipped_fraction", "clipped_step"),
        ):
            slots = np.asarray(h.extra.get(step_key, []), int) // cfg.trace_every
            out[key][i, slots] = h.extra.get(name, [])
        if progress is not None:
            progress(cfg.max_steps + (i + 1) * cfg.max_steps // nq, total)
    # the GD arm at the reference step size (optional)
    if not cfg.gd_max_steps:
        for key in ("gd_sharpness", "gd_test_acc", "gd_steps", "gd_train_loss"):
            out[key] = np.full(ns, np.nan)
        gd = None
    else:
        gd = train_population(
            [
                cfg.train_config(
                    optimizer="gd",
                    lr=cfg.reference_eta,
                    steps=cfg.gd_max_steps,
                    seed=s,
                    stop_loss=cfg.stop_loss,
                    device=device,
                )
                for s in cfg.seeds
            ],
            keep_theta=True,
        )
    if gd is not None:
        gtop = batched_top_eigenpairs(
            prob.objective,
            torch.as_tensor(np.nan_to_num(gd.theta), dtype=dtype, device=dev),
            1,
            max_iter=200,
            tol=cfg.eig_tol,
            active=torch.as_tensor(~gd.diverged, device=dev),
        )
        out["gd_sharpness"] = np.where(gd.diverged, np.nan, gtop.values[:, 0].double().cpu().numpy())
        out["gd_test_acc"] = np.where(gd.diverged, np.nan, gd.test_acc)
        out["gd_steps"] = gd.final_step.astype(float)
        out["gd_train_loss"] = gd.final_train_loss
    if progress is not None:
        progress(total, total)
    out.update(
        qs=np.asarray(cfg.qs, float),
        beta2s=np.asarray(cfg.beta2s, float),
        caps=caps,
        clips=np.asarray(cfg.clips()),
        eig_steps=np.arange(n_slots) * cfg.track_every,
        trace_steps=np.arange(n_trace) * cfg.trace_every,
        threshold=np.asarray(adam_threshold(cfg.eta, cfg.beta1)),
        reference_sharpness=np.asarray(cfg.reference_sharpness),
        eta=np.asarray(cfg.eta),
    )
    return out


experiments.register(
    "clipped_ada_q",
    chapter="adaptive_methods",
    description="Full-batch Clipped-Ada swept over q^thresh (inf = Adam) and beta2: raw sharpness riding its cap "
    "q * 2/eta_ref, preconditioned sharpness, test accuracy at equal training loss.",
    configs={
        "ci": ClippedAdaQConfig(scale="ci"),
        "full": ClippedAdaQConfig(
            scale="full",
            dataset="digits",
            n_train=1500,
            n_test=297,
            widths=(32, 32),
            eta=0.005,
            reference_eta=0.5,
            seeds=tuple(range(5)),
            max_steps=8000,
            gd_max_steps=0,
            stop_loss=1e-3,
            track_every=100,
            trace_every=200,
            eig_tol=1e-4,
        ),
    },
    run=run_clipped_ada_q,
)
