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

from ..config import ConfigError, require_choice, require_positive, require_positive_int
from ..dynamics.gradient_flow import distances, gradient_flow
from ..train import StepContext, TrainConfig, build_problem, train
from . import registry as experiments
from .common import NetConfig, run_population


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
        return self.train_config(
            optimizer="gd",
            lr=float(eta),
            steps=self.steps,
            seed=self.seed,
            eig_every=self.eig_every,
            n_eigs=self.n_eigs,
            eig_tol=self.eig_tol,
            n_hessian=self.n_hessian,
            stop_acc=self.stop_acc,
            device=device,
            dtype=self.dtype,
        )


def run_eos_sweep(
    cfg: EosSweepConfig, device: str = "cpu", progress=None, name: str | None = None
) -> dict[str, np.ndarray]:
    """All step sizes as one vmapped population (same data and initialisation for every eta): losses
    every step, eigenvalues every ``eig_every`` steps (``nan`` after a divergence or an early stop) with
    their residuals and ``eig_matvecs``: the Hessian-vector products per member of each tracked step's
    solve (batched Lanczos runs every member for as many steps; 0 where no member was left), the tracking
    cost that ``train`` records as ``History.eig_matvecs``.

    ``name`` (the registered experiment) makes a ``full``-scale run checkpoint and resume
    (:func:`instabilities.experiments.common.run_population`)."""
    pop = run_population([cfg.gd_config(eta, device) for eta in cfg.etas], progress=progress, name=name, cfg=cfg)
    return {
        "etas": np.asarray(cfg.etas, float),
        "step": np.arange(cfg.steps + 1),
        "eig_step": pop.eig_step,
        "train_loss": pop.train_loss,
        "train_acc": pop.train_acc,
        "eigs": pop.eigs,
        "eig_residuals": pop.eig_residuals,
        "eig_matvecs": pop.eig_matvecs,
        "diverged": pop.diverged,
        "diverged_step": pop.diverged_step,
        "test_acc": pop.test_acc,
    }


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
        return self.train_config(
            optimizer="gd",
            lr=float(self.eta),
            steps=self.steps,
            seed=self.seed,
            eig_every=self.compare_every,
            n_eigs=1,
            eig_tol=self.eig_tol,
            device=device,
            dtype=self.dtype,
        )


def run_eos_flow(cfg: EosFlowConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """GD iterates and sharpness every ``compare_every`` steps, the flow at ``t = eta * step``, and their distance."""
    tc = cfg.gd_config(device)
    problem = build_problem(tc)
    snapshots: list[torch.Tensor] = []

    def keep(ctx: StepContext) -> None:
        if ctx.step % cfg.compare_every == 0:
            snapshots.append(ctx.theta.clone())

    hist = train(tc, callbacks=[keep], problem=problem, progress=progress)
    gd_steps = np.asarray(hist.eig_step[: len(snapshots)])
    times = cfg.eta * gd_steps
    flow = gradient_flow(
        problem.objective,
        problem.flat.theta0,
        times,
        alpha=cfg.flow_alpha,
        max_step=cfg.flow_max_step,
        sharpness_every=cfg.flow_sharpness_every,
        eig_tol=max(cfg.eig_tol, 1e-3),
    )
    gd_thetas = torch.stack(snapshots)
    dist = distances(gd_thetas, flow.thetas)
    gd_sharp = np.asarray(hist.eigs)[: len(snapshots), 0]
    crossed = np.flatnonzero(gd_sharp >= 2.0 / cfg.eta)
    return {
        "eta": np.asarray(cfg.eta),
        "step": np.arange(len(hist.train_loss)),
        "gd_loss": np.asarray(hist.train_loss),
        "compare_step": gd_steps,
        "time": times,
        "gd_sharpness": gd_sharp,
        "flow_sharpness": flow.sharpness,
        "flow_loss": flow.loss,
        "distance": dist,
        "gd_norm": gd_thetas.double().norm(dim=1).numpy(),
        "first_crossing_step": np.asarray(int(gd_steps[crossed[0]]) if len(crossed) else -1),
        "flow_rk4_steps": np.asarray(flow.n_rk4_steps),
        "diverged": np.asarray(hist.diverged),
        "flow_diverged": np.asarray(flow.diverged),
    }


# -- registrations ------------------------------------------------------------------------------
_FC_FULL = dict(widths=(200, 200), activation="tanh")

experiments.register(
    "eos_sweep",
    chapter="edge_of_stability",
    description="Progressive sharpening and the 2/eta plateau: full-batch GD, MSE, tanh MLP, several eta.",
    configs={
        "ci": EosSweepConfig(
            scale="ci",
            dataset="mnist1d",
            n_train=1000,
            widths=(100, 100),
            etas=(0.2, 0.4),
            steps=800,
            eig_every=40,
            n_eigs=3,
        ),
        "full": EosSweepConfig(
            scale="full",
            dataset="mnist1d",
            n_train=4000,
            etas=(0.08, 0.1, 0.14, 0.2),
            steps=2500,
            eig_every=25,
            n_eigs=3,
            **_FC_FULL,
        ),
    },
    run=functools.partial(run_eos_sweep, name="eos_sweep"),
    resumable=True,
)

experiments.register(
    "eos_sweep_ce",
    chapter="edge_of_stability",
    description="The edge of stability with cross-entropy loss (same network and data as eos_sweep).",
    configs={
        "ci": EosSweepConfig(
            scale="ci",
            dataset="mnist1d",
            n_train=1000,
            widths=(100, 100),
            loss="ce",
            etas=(0.5,),
            steps=400,
            eig_every=20,
            n_eigs=1,
        ),
        "full": EosSweepConfig(
            scale="full",
            dataset="mnist1d",
            n_train=4000,
            loss="ce",
            etas=(0.5, 1.0),
            steps=2500,
            eig_every=25,
            n_eigs=1,
            **_FC_FULL,
        ),
    },
    run=functools.partial(run_eos_sweep, name="eos_sweep_ce"),
    resumable=True,
)

experiments.register(
    "eos_cifar10",
    chapter="edge_of_stability",
    description="The canonical setting of Cohen et al. (2021): fc-tanh 200-200 on the first 5k CIFAR-10 images, "
    "MSE. Needs a local copy of CIFAR-10 (see data.load_dataset).",
    configs={
        "ci": EosSweepConfig(
            scale="ci", dataset="cifar10", n_train=500, etas=(0.02,), steps=100, eig_every=50, n_eigs=1, **_FC_FULL
        ),
        "full": EosSweepConfig(
            scale="full",
            dataset="cifar10",
            n_train=5000,
            etas=(0.01, 0.02, 0.04),
            steps=10000,
            eig_every=50,
            n_eigs=2,
            stop_acc=0.99,
            **_FC_FULL,
        ),
    },
    run=functools.partial(run_eos_sweep, name="eos_cifar10"),
    resumable=True,
)

experiments.register(
    "eos_flow",
    chapter="edge_of_stability",
    description="Gradient descent against gradient flow (RK4, step 1/S) from the same initialisation.",
    configs={
        "ci": EosFlowConfig(
            scale="ci",
            dataset="mnist1d",
            n_train=1000,
            widths=(100, 100),
            eta=0.4,
            steps=200,
            compare_every=10,
            flow_sharpness_every=20,
        ),
        "full": EosFlowConfig(
            scale="full",
            dataset="mnist1d",
            n_train=4000,
            eta=0.2,
            steps=800,
            compare_every=10,
            flow_sharpness_every=20,
            **_FC_FULL,
        ),
    },
    run=run_eos_flow,
)


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
        row = {
            "eta": float(eta),
            "two_over_eta": 2.0 / float(eta),
            "S0": float(s[0]),
            "crossing_step": cross,
            "plateau_min": np.nan,
            "plateau_mean": np.nan,
            "plateau_max": np.nan,
            "frac_loss_up": np.nan,
            "loss_at_crossing": np.nan,
            "loss_final": float(loss[np.isfinite(loss)][-1]),
            "diverged": bool(res["diverged"][i]),
        }
        if cross >= 0:
            on = (res["eig_step"] >= cross + settle) & np.isfinite(s)
            if on.any():
                ratio = eta * s[on] / 2.0
                row.update(
                    plateau_min=float(ratio.min()), plateau_mean=float(ratio.mean()), plateau_max=float(ratio.max())
                )
            tail = loss[cross:]
            tail = tail[np.isfinite(tail)]
            row["frac_loss_up"] = float(np.mean(np.diff(tail) > 0)) if len(tail) > 1 else np.nan
            row["loss_at_crossing"] = float(loss[cross])
        out.append(row)
    return out


# -- Cohen et al.'s controls: the step-size switch, momentum, dense tracking through a crossing -----
@dataclasses.dataclass(frozen=True)
class EosSwitchConfig(NetConfig):
    """GD with step size ``eta`` until ``switch_step``, then ``eta_after`` (one run, sharpness every ``eig_every``)."""

    dataset: str = "mnist1d"
    n_train: int = 1000
    n_test: int = 1000
    widths: tuple[int, ...] = (100, 100)
    eta: float = 0.2
    eta_after: float = 0.4
    switch_step: int = 450
    steps: int = 600
    eig_every: int = 10
    eig_tol: float = 1e-4
    seed: int = 0
    dtype: str = "float32"

    def validate(self) -> None:
        super().validate()
        require_positive("eta", self.eta)
        require_positive("eta_after", self.eta_after)
        require_positive_int("steps", self.steps)
        require_positive_int("eig_every", self.eig_every)
        require_positive("eig_tol", self.eig_tol)
        require_choice("dtype", self.dtype, ("float32", "float64"))
        if not (isinstance(self.switch_step, int) and 0 < self.switch_step < self.steps):
            raise ConfigError(f"switch_step={self.switch_step!r} must lie strictly between 0 and steps={self.steps}.")


def run_eos_switch(cfg: EosSwitchConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """One GD run whose step size changes from ``eta`` to ``eta_after`` at ``switch_step`` (a schedule of a
    single run, so :func:`~instabilities.train.train` with a callback that sets the optimizer's step size)."""
    tc = cfg.train_config(
        optimizer="gd",
        lr=float(cfg.eta),
        steps=cfg.steps,
        seed=cfg.seed,
        eig_every=cfg.eig_every,
        n_eigs=1,
        eig_tol=cfg.eig_tol,
        device=device,
        dtype=cfg.dtype,
    )

    def switch(ctx: StepContext) -> None:
        if ctx.step == cfg.switch_step:
            for group in ctx.optimizer.param_groups:
                group["lr"] = float(cfg.eta_after)

    hist = train(tc, callbacks=[switch], progress=progress)
    n = len(hist.train_loss)
    eta_t = np.where(np.arange(n) < cfg.switch_step, cfg.eta, cfg.eta_after)
    return {
        "eta": np.asarray(cfg.eta),
        "eta_after": np.asarray(cfg.eta_after),
        "switch_step": np.asarray(cfg.switch_step),
        "step": np.arange(n),
        "eta_t": eta_t,
        "train_loss": np.asarray(hist.train_loss),
        "eig_step": np.asarray(hist.eig_step),
        "sharpness": np.asarray(hist.eigs)[:, 0],
        "eig_residuals": np.asarray(hist.eig_residuals)[:, 0],
        "diverged": np.asarray(hist.diverged),
    }


def summarize_switch(res: dict[str, np.ndarray], settle: int = 50) -> dict[str, float]:
    """Plateau ratios ``eta S / 2`` before the switch (with the old ``eta``) and after it (with the new one,
    from ``settle`` steps after the switch on), the first tracked step after the switch with
    ``S <= 1.1 * 2/eta_after``, and the sharpness just before the switch."""
    eta, eta2, t_s = float(res["eta"]), float(res["eta_after"]), int(res["switch_step"])
    st, s = res["eig_step"], res["sharpness"]
    cross = first_crossing(st, s, 2.0 / eta)
    before = (st >= max(cross, 0) + settle) & (st < t_s) if cross >= 0 else np.zeros(len(st), bool)
    after = (st >= t_s + settle) & np.isfinite(s)
    back = np.flatnonzero((st >= t_s) & (s <= 1.1 * 2.0 / eta2))
    return {
        "crossing_step": cross,
        "ratio_before": float(np.mean(eta * s[before] / 2)) if before.any() else np.nan,
        "ratio_after": float(np.mean(eta2 * s[after] / 2)) if after.any() else np.nan,
        "ratio_after_min": float(np.min(eta2 * s[after] / 2)) if after.any() else np.nan,
        "ratio_after_max": float(np.max(eta2 * s[after] / 2)) if after.any() else np.nan,
        "S_before_switch": float(s[st < t_s][-1]),
        "steps_to_resettle": int(st[back[0]] - t_s) if len(back) else -1,
        "loss_peak_after_switch": float(np.nanmax(res["train_loss"][t_s:])),
        "loss_at_switch": float(res["train_loss"][t_s]),
    }


@dataclasses.dataclass(frozen=True)
class EosMomentumConfig(NetConfig):
    """Full-batch heavy ball and Nesterov (``beta``) at several step sizes, one vmapped population per optimizer."""

    dataset: str = "mnist1d"
    n_train: int = 1000
    n_test: int = 1000
    widths: tuple[int, ...] = (100, 100)
    beta: float = 0.5
    etas_heavy_ball: tuple[float, ...] = (0.3, 0.45)
    etas_nesterov: tuple[float, ...] = (0.3,)
    steps: int = 400
    eig_every: int = 20
    eig_tol: float = 1e-4
    seed: int = 0
    dtype: str = "float32"

    def validate(self) -> None:
        super().validate()
        if not (isinstance(self.beta, (int, float)) and 0.0 < self.beta < 1.0):
            raise ConfigError(f"beta={self.beta!r} must lie in (0, 1), e.g. 0.5.")
        for name in ("etas_heavy_ball", "etas_nesterov"):
            etas = getattr(self, name)
            if not isinstance(etas, tuple):
                raise ConfigError(f"{name}={etas!r} must be a tuple of step sizes (may be empty).")
            for eta in etas:
                require_positive(f"eta (each entry of {name})", eta)
        if not self.etas_heavy_ball and not self.etas_nesterov:
            raise ConfigError("give at least one step size in etas_heavy_ball or etas_nesterov.")
        require_positive_int("steps", self.steps)
        require_positive_int("eig_every", self.eig_every)
        require_positive("eig_tol", self.eig_tol)
        require_choice("dtype", self.dtype, ("float32", "float64"))


def run_eos_momentum(
    cfg: EosMomentumConfig, device: str = "cpu", progress=None, name: str | None = None
) -> dict[str, np.ndarray]:
    """Heavy ball and Nesterov members (same data and initialisation), with the predicted plateau
    ``threshold(method, beta) / eta`` of :func:`instabilities.dynamics.quadratic.stability_threshold`."""
    from ..dynamics.quadratic import stability_threshold
    from ..population import train_sweep

    methods = ["heavy_ball"] * len(cfg.etas_heavy_ball) + ["nesterov"] * len(cfg.etas_nesterov)
    etas = list(cfg.etas_heavy_ball) + list(cfg.etas_nesterov)
    configs = [
        cfg.train_config(
            optimizer="momentum" if m == "heavy_ball" else "nesterov",
            lr=float(eta),
            momentum=float(cfg.beta),
            steps=cfg.steps,
            seed=cfg.seed,
            eig_every=cfg.eig_every,
            n_eigs=1,
            eig_tol=cfg.eig_tol,
            device=device,
            dtype=cfg.dtype,
        )
        for m, eta in zip(methods, etas)
    ]
    kw = {}
    if name is not None and cfg.scale == "full":
        from .common import CHECKPOINT_EVERY
        from .reproduce import checkpoint_path

        kw = dict(checkpoint_path=checkpoint_path(name, cfg), checkpoint_every=CHECKPOINT_EVERY)
    pop = train_sweep(configs, progress=progress, **kw)
    pop = pop.padded(np.arange(cfg.steps // cfg.eig_every + 1, dtype=np.int64) * cfg.eig_every)
    predicted = np.array([stability_threshold(m, cfg.beta) / eta for m, eta in zip(methods, etas)])
    return {
        "method": np.asarray(methods),
        "etas": np.asarray(etas, float),
        "beta": np.asarray(cfg.beta),
        "predicted_threshold": predicted,
        "step": np.arange(cfg.steps + 1),
        "train_loss": pop.train_loss,
        "eig_step": pop.eig_step,
        "sharpness": pop.eigs[:, :, 0],
        "eig_residuals": pop.eig_residuals[:, :, 0],
        "diverged": pop.diverged,
    }


def summarize_momentum(res: dict[str, np.ndarray], settle: int = 100) -> list[dict[str, float]]:
    """Per member: the predicted plateau, the first tracked crossing of it, and the mean / min / max of
    ``S / predicted`` from ``settle`` steps after the crossing on."""
    out = []
    for i, (m, eta) in enumerate(zip(res["method"], res["etas"])):
        s, thr = res["sharpness"][i], float(res["predicted_threshold"][i])
        cross = first_crossing(res["eig_step"], s, thr)
        on = (res["eig_step"] >= cross + settle) & np.isfinite(s) if cross >= 0 else np.zeros(len(s), bool)
        r = s[on] / thr
        out.append(
            {
                "method": str(m),
                "eta": float(eta),
                "predicted": thr,
                "crossing_step": cross,
                "S0": float(s[0]),
                "ratio_mean": float(r.mean()) if on.any() else np.nan,
                "ratio_min": float(r.min()) if on.any() else np.nan,
                "ratio_max": float(r.max()) if on.any() else np.nan,
                "measured": float(np.mean(s[on])) if on.any() else np.nan,
                "diverged": bool(res["diverged"][i]),
            }
        )
    return out


@dataclasses.dataclass(frozen=True)
class EosCrossingConfig(NetConfig):
    """One GD run tracked every ``coarse_every`` steps until ``S >= dense_from * 2/eta``, then at *every*
    step (warm-started Lanczos) for ``dense_steps`` steps (the run stops there or at ``steps``); the
    iterates of the dense window are kept for the
    self-stabilization quantities ``x_t`` and ``y_t`` (:func:`self_stabilization_measures`)."""

    dataset: str = "mnist1d"
    n_train: int = 1000
    n_test: int = 1000
    widths: tuple[int, ...] = (100, 100)
    eta: float = 0.3
    steps: int = 600
    coarse_every: int = 10
    dense_from: float = 0.9
    dense_steps: int = 160
    n_eigs: int = 1
    eig_tol: float = 1e-4
    seed: int = 0
    dtype: str = "float32"

    def validate(self) -> None:
        super().validate()
        require_positive("eta", self.eta)
        require_positive_int("steps", self.steps)
        require_positive_int("coarse_every", self.coarse_every)
        require_positive_int("dense_steps", self.dense_steps)
        require_positive_int("n_eigs", self.n_eigs)
        require_positive("eig_tol", self.eig_tol)
        require_choice("dtype", self.dtype, ("float32", "float64"))
        if not (isinstance(self.dense_from, (int, float)) and 0.0 < self.dense_from <= 1.0):
            raise ConfigError(
                f"dense_from={self.dense_from!r} must lie in (0, 1]: the fraction of 2/eta at which "
                "tracking becomes dense."
            )


def run_eos_crossing(cfg: EosCrossingConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """Sharpness through the first crossing of ``2/eta``, at every step of the dense window (warm-started
    Lanczos, as in :func:`~instabilities.train.train`); and the self-stabilization measures there (see
    :func:`self_stabilization_measures`). Training stops once the dense window is complete."""
    from .. import curvature

    tc = cfg.train_config(
        optimizer="gd", lr=float(cfg.eta), steps=cfg.steps, seed=cfg.seed, device=device, dtype=cfg.dtype
    )
    rec: dict[str, list] = {"eig_step": [], "eigs": [], "res": [], "thetas": [], "vecs": []}
    state = {"dense": False, "v0": None}

    class _Done(Exception):
        pass

    def track(ctx: StepContext) -> None:
        if len(rec["thetas"]) >= cfg.dense_steps:
            raise _Done  # the dense window is complete: stop training here
        if not (state["dense"] or ctx.step % cfg.coarse_every == 0):
            return
        op = curvature.HessianOperator(ctx.problem.hessian_objective, ctx.theta, "reverse")
        r = curvature.lanczos(op, cfg.n_eigs, max_iter=300, tol=cfg.eig_tol, v0=state["v0"], seed=ctx.step)
        state["v0"] = r.vectors
        rec["eig_step"].append(ctx.step)
        rec["eigs"].append(r.values.double().cpu().numpy())
        rec["res"].append(r.residuals.double().cpu().numpy())
        if not state["dense"] and float(r.values[0]) >= cfg.dense_from * 2.0 / cfg.eta:
            state["dense"] = True
        if state["dense"]:
            rec["thetas"].append(ctx.theta.double().cpu().clone())
            rec["vecs"].append(r.vectors[:, 0].double().cpu().clone())

    losses: list[float] = []

    def log_loss(ctx: StepContext) -> None:
        losses.append(ctx.history.train_loss[-1])

    try:
        hist = train(tc, callbacks=[log_loss, track], progress=progress)
        diverged = hist.diverged
    except _Done:
        diverged = False
    eig_step = np.asarray(rec["eig_step"])
    eigs = np.stack(rec["eigs"])
    n_dense = len(rec["thetas"])
    dense_step = eig_step[len(eig_step) - n_dense :]
    out = {
        "eta": np.asarray(cfg.eta),
        "step": np.arange(len(losses)),
        "train_loss": np.asarray(losses),
        "eig_step": eig_step,
        "eigs": eigs,
        "eig_residuals": np.stack(rec["res"]),
        "dense_step": dense_step,
        "diverged": np.asarray(diverged),
    }
    if n_dense >= 3:
        thetas, vecs = torch.stack(rec["thetas"]), torch.stack(rec["vecs"])
        out.update(self_stabilization_measures(thetas, vecs, eigs[len(eig_step) - n_dense :, 0], cfg.eta))
        out["x_step"] = dense_step[1:-1]
    return out


def self_stabilization_measures(
    thetas: torch.Tensor, vecs: torch.Tensor, sharp: np.ndarray, eta: float
) -> dict[str, np.ndarray]:
    """The quantities of the self-stabilization map measured on consecutive iterates ``thetas`` (T, dim)
    with top eigenvectors ``vecs`` (T, dim) and sharpness ``sharp`` (T,):

    * ``x_t = u_1(theta_t)^T (theta_t - bar theta_t)``, the displacement along the top eigenvector from
      the second-order midpoint ``bar theta_t = (theta_{t-1} + 2 theta_t + theta_{t+1}) / 4``, which averages
      out a period-2 oscillation (for ``theta_{t +- 1} = bar theta - x u``, ``theta_t = bar theta + x u`` it
      returns ``x``); the sign of ``u_1`` is arbitrary, so only ``|x_t|`` and ``x_t^2`` carry meaning;
    * ``y_t = (S_{t-1} + 2 S_t + S_{t+1}) / 4 - 2/eta``, the sharpness excess at the same midpoint
      (the measured proxy for ``grad S . (theta - theta^dagger)``).

    Both for ``t = 1 .. T-2``."""
    mid = 0.25 * (thetas[:-2] + 2 * thetas[1:-1] + thetas[2:])
    u = vecs[1:-1]
    x = ((thetas[1:-1] - mid) * u).sum(1).numpy()
    s = np.asarray(sharp, float)
    y = 0.25 * (s[:-2] + 2 * s[1:-1] + s[2:]) - 2.0 / eta
    return {"x": x, "y": y}


def fit_self_stabilization(x: np.ndarray, y: np.ndarray, eta: float) -> dict[str, float]:
    """Test the two equations of the 2-D map on measured ``x_t``, ``y_t``.

    * ``x``-equation ``|x_{t+1}| = |1 + eta y_t| |x_t|``: least-squares slope and correlation of
      ``log|x_{t+1}/x_t|`` against ``log(1 + eta y_t)`` (prediction: slope 1), and the mean growth
      ``log|x_{t+1}/x_t|`` over the steps with ``y_t > 0`` and with ``y_t < 0`` (prediction: positive, negative);
    * ``y``-equation ``y_{t+1} - y_t = eta (alpha - beta x_t^2 / 2)``: least-squares ``alpha``, ``beta`` and the
      predicted equilibrium ``delta^2 = 2 alpha / beta`` against the measured mean of ``x^2``.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ax = np.abs(x)
    ok = (ax[:-1] > 0) & (ax[1:] > 0) & (1 + eta * y[:-1] > 0)
    lx = np.log(ax[1:][ok] / ax[:-1][ok])
    ly = np.log1p(eta * y[:-1][ok])
    slope = float(np.dot(ly - ly.mean(), lx - lx.mean()) / np.dot(ly - ly.mean(), ly - ly.mean()))
    corr_x = float(np.corrcoef(ly, lx)[0, 1])
    dy = np.diff(y) / eta
    A = np.stack([np.ones(len(dy)), -0.5 * x[:-1] ** 2], 1)
    (alpha, beta), *_ = np.linalg.lstsq(A, dy, rcond=None)
    corr_y = float(np.corrcoef(x[:-1] ** 2, dy)[0, 1])
    lg_all = np.log(np.where(ax[1:] > 0, ax[1:], np.nan) / np.where(ax[:-1] > 0, ax[:-1], np.nan))
    pos, neg = (y[:-1] > 0) & np.isfinite(lg_all), (y[:-1] < 0) & np.isfinite(lg_all)
    return {
        "x_growth_pos": float(lg_all[pos].mean()) if pos.any() else np.nan,
        "x_growth_neg": float(lg_all[neg].mean()) if neg.any() else np.nan,
        "x_slope": slope,
        "x_corr": corr_x,
        "alpha": float(alpha),
        "beta": float(beta),
        "delta2": float(2 * alpha / beta) if beta > 0 else np.nan,
        "mean_x2": float(np.mean(x**2)),
        "y_corr": corr_y,
    }


experiments.register(
    "eos_switch",
    chapter="eos_controls",
    description="Cohen et al.'s control: raise eta mid-run; the sharpness re-settles at the new 2/eta.",
    configs={
        "ci": EosSwitchConfig(scale="ci"),
        "full": EosSwitchConfig(
            scale="full", n_train=4000, eta=0.1, eta_after=0.2, switch_step=2000, steps=2800, eig_every=10, **_FC_FULL
        ),
    },
    run=run_eos_switch,
)

experiments.register(
    "eos_momentum",
    chapter="eos_controls",
    description="Heavy ball and Nesterov at the edge of stability: plateaus at (2+2b)/eta and (2+2b)/((1+2b)eta).",
    configs={
        "ci": EosMomentumConfig(scale="ci"),
        "full": EosMomentumConfig(
            scale="full",
            n_train=4000,
            beta=0.5,
            etas_heavy_ball=(0.1, 0.2),
            etas_nesterov=(0.1, 0.2),
            steps=2000,
            eig_every=20,
            **_FC_FULL,
        ),
    },
    run=functools.partial(run_eos_momentum, name="eos_momentum"),
    resumable=True,
)

experiments.register(
    "eos_relu",
    chapter="eos_controls",
    description="A second architecture: the 2/eta plateau of a ReLU MLP at four step sizes (MSE, full-batch GD).",
    configs={
        "ci": EosSweepConfig(
            scale="ci",
            dataset="mnist1d",
            n_train=1000,
            widths=(100, 100),
            activation="relu",
            etas=(0.3, 0.34, 0.38, 0.42),
            steps=400,
            eig_every=20,
            n_eigs=1,
        ),
        "full": EosSweepConfig(
            scale="full",
            dataset="mnist1d",
            n_train=4000,
            widths=(200, 200),
            activation="relu",
            etas=(0.1, 0.14, 0.2, 0.28),
            steps=2000,
            eig_every=25,
            n_eigs=1,
        ),
    },
    run=functools.partial(run_eos_sweep, name="eos_relu"),
    resumable=True,
)

experiments.register(
    "eos_crossing",
    chapter="catapults_self_stabilization",
    description="Dense (every-step) sharpness through the first crossing of 2/eta and the self-stabilization "
    "quantities x_t, y_t measured in the network.",
    configs={
        "ci": EosCrossingConfig(scale="ci"),
        "full": EosCrossingConfig(
            scale="full", n_train=4000, eta=0.2, steps=1500, coarse_every=25, dense_steps=400, **_FC_FULL
        ),
    },
    run=run_eos_crossing,
)
