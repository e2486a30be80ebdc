"""Full-batch GD / minibatch SGD (and other optimisers) with a curvature tracker.

``train(TrainConfig(...))`` returns a :class:`History` of numpy arrays: the training loss
every step, test metrics every ``eval_every`` steps, and the top ``n_eigs`` Hessian
eigenvalues (with residuals and, on request, eigenvectors) every ``eig_every`` steps.
A run whose loss or parameters become NaN/inf, or whose loss exceeds ``divergence_loss``,
stops and is *recorded* as diverged (``history.diverged``); it does not raise.
Long runs checkpoint atomically every ``checkpoint_every`` steps and resume from the
checkpoint when restarted with the same config.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import curvature
from .config import Config, ConfigError, require_choice, require_nonnegative, require_positive, require_positive_int
from .data import DATASETS, Dataset, load_dataset
from .losses import LOSSES, accuracy, loss_value, make_objective, prepare_targets
from .models import FlatModel, ModelSpec, build_model
from .optim import OPTIMIZERS, build_optimizer
from .results import atomic_torch_save


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """One training run. ``batch_size=None`` means full batch (gradient descent)."""

    dataset: str = "mnist1d"
    n_train: int = 1000
    n_test: int = 1000
    data_seed: int = 0
    model: ModelSpec = ModelSpec()
    loss: str = "mse"
    optimizer: str = "gd"
    lr: float = 0.1
    momentum: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    clip: float = 1.0  # Clipped-Ada's upper bound on the preconditioner (ignored by other optimisers)
    batch_size: int | None = None
    steps: int = 1000
    seed: int = 0
    eig_every: int = 0  # 0: no curvature tracking
    n_eigs: int = 1
    eig_tol: float = 1e-4
    eig_max_iter: int = 300
    n_hessian: int | None = None  # examples used for the Hessian (None: the whole training set)
    store_eigvecs: bool = False
    eval_every: int = 0  # 0: test metrics only at the end
    stop_loss: float = 0.0  # stop once the training loss is below this (0: never)
    stop_acc: float = 1.1  # stop once the training accuracy is at least this (>1: never)
    divergence_loss: float = 1e6
    device: str = "cpu"
    dtype: str = "float32"

    def validate(self) -> None:
        super().validate()
        require_choice("dataset", self.dataset, DATASETS)
        require_choice("loss", self.loss, LOSSES)
        require_choice("optimizer", self.optimizer, OPTIMIZERS)
        require_choice("dtype", self.dtype, ("float32", "float64"))
        require_positive("lr (the learning rate eta)", self.lr)
        require_positive_int("steps", self.steps)
        require_positive_int("n_train", self.n_train)
        require_positive_int("n_test", self.n_test)
        require_positive_int("n_eigs", self.n_eigs)
        require_nonnegative("eig_every", self.eig_every)
        require_nonnegative("eval_every", self.eval_every)
        require_nonnegative("momentum", self.momentum)
        require_positive("clip", self.clip)
        require_positive("divergence_loss", self.divergence_loss)
        if self.batch_size is not None:
            require_positive_int("batch_size", self.batch_size)
            if self.batch_size > self.n_train:
                raise ConfigError(
                    f"batch_size={self.batch_size} exceeds n_train={self.n_train}; use "
                    "batch_size=None for full-batch GD."
                )
        if self.optimizer == "gd" and self.batch_size not in (None, self.n_train):
            raise ConfigError("optimizer='gd' is full batch; set batch_size=None or use optimizer='sgd'.")
        if self.n_hessian is not None:
            require_positive_int("n_hessian", self.n_hessian)
        if not str(self.device).startswith(("cpu", "cuda")):
            raise ConfigError(f"device={self.device!r}; use 'cpu' or 'cuda'.")


@dataclasses.dataclass
class History:
    """Everything a run logged; ``as_arrays()`` gives a flat dict for :func:`~instabilities.results.save_result`."""

    step: list[int] = dataclasses.field(default_factory=list)
    train_loss: list[float] = dataclasses.field(default_factory=list)
    train_acc: list[float] = dataclasses.field(default_factory=list)
    eval_step: list[int] = dataclasses.field(default_factory=list)
    test_loss: list[float] = dataclasses.field(default_factory=list)
    test_acc: list[float] = dataclasses.field(default_factory=list)
    eig_step: list[int] = dataclasses.field(default_factory=list)
    eigs: list[list[float]] = dataclasses.field(default_factory=list)
    eig_residuals: list[list[float]] = dataclasses.field(default_factory=list)
    eig_matvecs: list[int] = dataclasses.field(default_factory=list)
    eigvecs: list[np.ndarray] = dataclasses.field(default_factory=list)
    extra: dict[str, list] = dataclasses.field(default_factory=dict)
    diverged: bool = False
    diverged_step: int = -1
    wall_seconds: float = 0.0
    theta_final: np.ndarray | None = None

    def log(self, name: str, value: Any) -> None:
        """Append ``value`` to a custom series (used by callbacks)."""
        self.extra.setdefault(name, []).append(value)

    @property
    def sharpness(self) -> np.ndarray:
        return np.asarray(self.eigs)[:, 0] if self.eigs else np.zeros(0)

    def as_arrays(self) -> dict[str, np.ndarray]:
        out = {
            k: np.asarray(getattr(self, k))
            for k in (
                "step",
                "train_loss",
                "train_acc",
                "eval_step",
                "test_loss",
                "test_acc",
                "eig_step",
                "eigs",
                "eig_residuals",
                "eig_matvecs",
            )
        }
        if self.eigvecs:
            out["eigvecs"] = np.stack(self.eigvecs)
        for k, v in self.extra.items():
            out[f"extra_{k}"] = np.asarray(v)
        out["diverged"] = np.asarray(self.diverged)
        out["diverged_step"] = np.asarray(self.diverged_step)
        out["wall_seconds"] = np.asarray(self.wall_seconds)
        if self.theta_final is not None:
            out["theta_final"] = self.theta_final
        return out


@dataclasses.dataclass
class StepContext:
    """What a callback sees each step (before the update): the iterate, the log, the optimiser."""

    step: int
    theta: torch.Tensor  # detached current parameters
    history: History
    optimizer: torch.optim.Optimizer
    problem: Problem


Callback = Callable[[StepContext], None]


@dataclasses.dataclass
class Problem:
    """A dataset, a model and the training objective built from a :class:`TrainConfig`."""

    data: Dataset
    flat: FlatModel
    train_targets: torch.Tensor
    test_targets: torch.Tensor
    objective: Callable[[torch.Tensor], torch.Tensor]
    hessian_objective: Callable[[torch.Tensor], torch.Tensor]


def build_problem(cfg: TrainConfig) -> Problem:
    """Load data and model for ``cfg`` on its device and dtype."""
    dtype = getattr(torch, cfg.dtype)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but no CUDA GPU is visible; use device='cpu' (scale 'ci').")
    flatten = cfg.model.arch != "cnn"
    data = load_dataset(cfg.dataset, cfg.n_train, cfg.n_test, seed=cfg.data_seed, flatten=flatten).to(cfg.device, dtype)
    module = build_model(cfg.model, data.in_shape, data.out_dim, seed=cfg.seed).to(device=cfg.device, dtype=dtype)
    flat = FlatModel(module)
    ytr = prepare_targets(data.y_train, cfg.loss, data.n_classes).to(dtype if cfg.loss == "mse" else torch.long)
    yte = prepare_targets(data.y_test, cfg.loss, data.n_classes).to(dtype if cfg.loss == "mse" else torch.long)
    objective = make_objective(flat, data.x_train, ytr, cfg.loss)
    nh = cfg.n_hessian or cfg.n_train
    hess_obj = objective if nh >= cfg.n_train else make_objective(flat, data.x_train[:nh], ytr[:nh], cfg.loss)
    return Problem(data, flat, ytr, yte, objective, hess_obj)


def train(
    cfg: TrainConfig,
    callbacks: Sequence[Callback] = (),
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 0,
    keep_theta: bool = False,
    problem: Problem | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> History:
    """Run ``cfg``; see the module docstring. ``callbacks(ctx: StepContext)`` run every step after
    logging and before the update (``ctx.history.log(name, value)`` records custom series).

    With ``checkpoint_path`` and ``checkpoint_every > 0`` the run saves its state atomically and
    resumes from an existing checkpoint whose config hash matches (a mismatching one is refused).
    """
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    prob = problem or build_problem(cfg)
    theta = prob.flat.theta0.clone().requires_grad_(True)
    opt = build_optimizer(
        cfg.optimizer,
        [theta],
        cfg.lr,
        momentum=cfg.momentum,
        beta1=cfg.beta1,
        beta2=cfg.beta2,
        eps=cfg.eps,
        clip=cfg.clip,
    )
    hist = History()
    start_step = 0
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    perm: torch.Tensor = torch.randperm(cfg.n_train, generator=gen)
    cursor = 0
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state["config_hash"] != cfg.config_hash():
            raise ConfigError(
                f"checkpoint {ckpt} belongs to config {state['config_hash']}, not "
                f"{cfg.config_hash()}; delete it or point checkpoint_path elsewhere."
            )
        with torch.no_grad():
            theta.copy_(state["theta"])
        opt.load_state_dict(state["optimizer"])
        hist = state["history"]
        start_step, perm, cursor = state["step"], state["perm"], state["cursor"]
        gen.set_state(state["generator"])
        t_start -= hist.wall_seconds
    # THE sharpness tracker: Lanczos warm-started from the previous eigenvectors, seeded with the step
    tracker = curvature.SharpnessTracker(
        k=cfg.n_eigs, solver="lanczos", tol=cfg.eig_tol, max_iter=cfg.eig_max_iter, hvp_method="reverse"
    )
    if hist.eigvecs:
        tracker.vectors = torch.as_tensor(hist.eigvecs[-1], dtype=theta.dtype, device=theta.device)
    full_batch = cfg.batch_size is None or cfg.batch_size == cfg.n_train
    x, y = prob.data.x_train, prob.train_targets
    nc = prob.data.n_classes

    def evaluate_test() -> None:
        with torch.no_grad():
            out = prob.flat(theta.detach(), prob.data.x_test)
            hist.eval_step.append(step)
            hist.test_loss.append(float(loss_value(out, prob.test_targets, cfg.loss)))
            hist.test_acc.append(accuracy(out, prob.data.y_test, nc))

    step = start_step
    for step in range(start_step, cfg.steps + 1):
        # --- curvature tracking (before the step, at the current iterate) ---
        if cfg.eig_every and step % cfg.eig_every == 0:
            res = tracker(prob.hessian_objective, theta.detach(), seed=step)
            hist.eig_step.append(step)
            hist.eigs.append(res.values.tolist())
            hist.eig_residuals.append(res.residuals.tolist())
            hist.eig_matvecs.append(res.n_matvec)
            if cfg.store_eigvecs:
                hist.eigvecs.append(res.vectors.detach().cpu().numpy().astype(np.float32))
        if cfg.eval_every and step % cfg.eval_every == 0:
            evaluate_test()
        # --- loss on the full training set (logged every step) and the update ---
        opt.zero_grad(set_to_none=True)
        if full_batch:
            with torch.enable_grad():
                out = prob.flat(theta, x)
                loss = loss_value(out, y, cfg.loss)
            train_loss = float(loss.detach())
        else:
            with torch.no_grad():
                out = prob.flat(theta, x)
                train_loss = float(loss_value(out, y, cfg.loss))
        hist.step.append(step)
        hist.train_loss.append(train_loss)
        hist.train_acc.append(accuracy(out.detach(), prob.data.y_train, nc))
        if callbacks:
            ctx = StepContext(step, theta.detach(), hist, opt, prob)
            for cb in callbacks:
                cb(ctx)
        if not math.isfinite(train_loss) or train_loss > cfg.divergence_loss or not bool(torch.isfinite(theta).all()):
            hist.diverged, hist.diverged_step = True, step
            break
        if (
            step == cfg.steps
            or (cfg.stop_loss > 0 and train_loss < cfg.stop_loss)
            or hist.train_acc[-1] >= cfg.stop_acc
        ):
            break
        if not full_batch:
            if cursor + cfg.batch_size > cfg.n_train:
                perm, cursor = torch.randperm(cfg.n_train, generator=gen), 0
            idx = perm[cursor : cursor + cfg.batch_size].to(x.device)
            cursor += cfg.batch_size
            with torch.enable_grad():
                loss = loss_value(prob.flat(theta, x[idx]), y[idx], cfg.loss)
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step + 1, cfg.steps)
        if ckpt is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            hist.wall_seconds = time.perf_counter() - t_start
            atomic_torch_save(
                {
                    "config_hash": cfg.config_hash(),
                    "theta": theta.detach().clone(),
                    "optimizer": opt.state_dict(),
                    "history": hist,
                    "step": step + 1,
                    "perm": perm,
                    "cursor": cursor,
                    "generator": gen.get_state(),
                },
                ckpt,
            )
    if not cfg.eval_every or (hist.eval_step and hist.eval_step[-1] != step) or not hist.eval_step:
        if not hist.diverged:
            evaluate_test()
    hist.wall_seconds = time.perf_counter() - t_start
    if keep_theta:
        hist.theta_final = theta.detach().cpu().numpy()
    return hist
