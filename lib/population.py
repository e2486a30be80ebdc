"""Populations of training runs executed as one batched computation (``torch.func.vmap``).

A learning-rate or seed sweep of full-batch GD on a small network is launch-bound on a GPU:
each run is a chain of small kernels. Stacking the parameters of ``P`` runs into one
``(P, dim)`` tensor and evaluating ``vmap(grad(loss))`` turns ``P`` small matrix products into
one batched product per layer, so the population costs little more than a single run.

* :func:`train_population` runs configs that differ only in ``lr``, ``seed``, ``momentum``,
  ``clip``, ``beta1``, ``beta2`` and ``eps`` (same data, model, loss, optimizer, steps) as one
  population. Each member follows exactly the update of :func:`instabilities.train.train` (same
  initialisation from ``seed``, same minibatch order for SGD, same divergence rule, the update
  rules of :mod:`instabilities.optim` for GD/SGD, heavy ball, Nesterov, Adam, RMSProp and
  Clipped-Ada with per-member hyper-parameters), so a member's trajectory equals the separate
  run up to float rounding. Optimizer state is elementwise, one ``(P, dim)`` tensor per buffer.
* Divergent members are masked and recorded (``diverged``, ``diverged_step``); their later
  entries are NaN and they never contaminate the others.
* Sharpness tracking is batched too: :func:`~instabilities.curvature.batched_lanczos` keeps one Krylov basis per member,
  all on the device, with one Hessian-vector product per Krylov step for the whole population
  (double backward through a vmapped forward pass, or vmapped ``jvp`` of ``grad``), warm starts
  from the previous eigenvectors and a host synchronisation only every ``check_every`` Krylov steps.
* Members that stopped (``stop_loss``/``stop_acc``) or diverged drop out of the batch: later steps
  compute only the members still training.
* :func:`train_sweep` splits an arbitrary list of configs (e.g. several batch sizes) into
  compatible populations and returns one merged result.
* Long runs checkpoint atomically (``checkpoint_path``, ``checkpoint_every``, as in
  :func:`instabilities.train.train`) and resume bit for bit: the checkpoint holds the parameters,
  the optimizer buffers, the minibatch generators, permutations and cursor, everything recorded so
  far, the alive / diverged / stopped state and the warm-start eigenvectors, and is tied to a hash
  of the whole config list.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.func import grad, grad_and_value, vmap

from .config import ConfigError
from .curvature import SharpnessTracker
from .losses import loss_value
from .models import FlatModel, build_model
from .optim import OPTIMIZERS, init_state, update
from .results import atomic_torch_save
from .train import Problem, TrainConfig, build_problem, train

# fields that may differ inside one population
VARYING = ("lr", "seed", "momentum", "clip", "beta1", "beta2", "eps")
_HYPER = ("lr", "momentum", "clip", "beta1", "beta2", "eps")  # per-member (P, 1) tensors


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class PopulationHistory:
    """What a population logged; arrays have one row per member (``P`` members, ``T+1`` steps).

    Entries after a member diverged or stopped are NaN. ``eigs[p, e, i]`` is the ``i``-th largest
    Hessian eigenvalue of member ``p`` at step ``eig_step[e]``. ``theta`` (only with
    ``keep_theta=True``) holds every member's final parameters, ``(P, dim)``: where it stopped
    (``stopped_step``) or at the last step; rows of diverged members are NaN.
    """

    lr: np.ndarray
    seed: np.ndarray
    momentum: np.ndarray
    clip: np.ndarray
    beta1: np.ndarray
    beta2: np.ndarray
    eps: np.ndarray
    step: np.ndarray
    train_loss: np.ndarray
    train_acc: np.ndarray
    test_loss: np.ndarray
    test_acc: np.ndarray
    eig_step: np.ndarray
    eigs: np.ndarray
    eig_residuals: np.ndarray
    eig_matvecs: np.ndarray
    diverged: np.ndarray
    diverged_step: np.ndarray
    stopped_step: np.ndarray
    wall_seconds: float = 0.0
    theta: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.lr)

    @property
    def sharpness(self) -> np.ndarray:
        """``(P, n_evals)`` top eigenvalue of every member at every tracked step."""
        return self.eigs[:, :, 0] if self.eigs.size else np.zeros((self.size, 0))

    @property
    def final_step(self) -> np.ndarray:
        """``(P,)`` the last step each member logged (diverged, stopped or the last step)."""
        last = np.full(self.size, len(self.step) - 1, dtype=np.int64)
        last = np.where(self.stopped_step >= 0, self.stopped_step, last)
        return np.where(self.diverged, self.diverged_step, last)

    @property
    def final_train_loss(self) -> np.ndarray:
        """``(P,)`` the training loss at :attr:`final_step` (the last value logged by each member)."""
        return self.train_loss[np.arange(self.size), self.final_step]

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {
            f.name: np.asarray(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }

    def padded(self, eig_step: np.ndarray) -> PopulationHistory:
        """A copy whose curvature arrays cover the tracked steps ``eig_step`` (which extends this
        population's): NaN eigenvalues and 0 products where it did not evaluate (a population stops
        tracking once every member stopped or diverged)."""
        missing = len(eig_step) - len(self.eig_step)
        if missing <= 0:
            return self
        pad = np.full((self.size, missing) + self.eigs.shape[2:], np.nan)
        return dataclasses.replace(
            self,
            eig_step=np.asarray(eig_step, dtype=np.int64),
            eigs=np.concatenate([self.eigs, pad], 1),
            eig_residuals=np.concatenate([self.eig_residuals, pad], 1),
            eig_matvecs=np.concatenate([self.eig_matvecs, np.zeros(missing, np.int64)]),
        )

    @staticmethod
    def concatenate(parts: Sequence[PopulationHistory], order: Sequence[int] | None = None) -> PopulationHistory:
        """Stack populations along the member axis (optionally reordering the members).

        Populations that stopped tracking curvature early (all members stopped) are padded to the
        longest ``eig_step``."""
        longest = parts[int(np.argmax([len(p.eig_step) for p in parts]))].eig_step
        parts = [p.padded(longest) for p in parts]
        kw: dict[str, Any] = {}
        shared = ("step", "eig_step", "eig_matvecs", "wall_seconds")
        for f in dataclasses.fields(PopulationHistory):
            if f.name in ("step", "eig_step"):
                kw[f.name] = getattr(parts[0], f.name)
            elif f.name == "eig_matvecs":
                kw[f.name] = np.sum([p.eig_matvecs for p in parts], axis=0)
            elif f.name == "wall_seconds":
                kw[f.name] = float(sum(p.wall_seconds for p in parts))
            elif f.name == "theta" and any(p.theta is None for p in parts):
                kw[f.name] = None
            else:
                kw[f.name] = np.concatenate([getattr(p, f.name) for p in parts], axis=0)
        if order is not None:
            idx = np.asarray(order)
            for name, v in kw.items():
                if name not in shared and v is not None:
                    kw[name] = v[idx]
        return PopulationHistory(**kw)


# --------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------
def population_configs(
    base: TrainConfig, etas: Sequence[float] | None = None, seeds: Sequence[int] | None = None
) -> list[TrainConfig]:
    """The grid ``etas x seeds`` around ``base`` (the step size varies fastest within a seed;
    each member's ``TrainConfig.lr`` is its ``eta``)."""
    etas = list(etas) if etas is not None else [base.lr]
    seeds = list(seeds) if seeds is not None else [base.seed]
    if not etas or not seeds:
        raise ConfigError("give at least one step size and one seed.")
    return [base.replace(lr=float(eta), seed=int(s)) for s, eta in itertools.product(seeds, etas)]


def _shared_key(cfg: TrainConfig) -> dict:
    d = cfg.to_dict()
    for k in VARYING + ("device",):
        d.pop(k, None)
    return d


def check_population(configs: Sequence[TrainConfig]) -> None:
    """Raise :class:`ConfigError` unless ``configs`` can run as one population."""
    if not configs:
        raise ConfigError("a population needs at least one TrainConfig.")
    first = configs[0]
    if first.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"optimizer={first.optimizer!r} is not batched; populations support "
            f"{OPTIMIZERS}. Run it with instabilities.train.train instead."
        )
    key = _shared_key(first)
    for c in configs[1:]:
        if c.device != first.device:
            raise ConfigError(f"all members must use one device; got {first.device!r} and {c.device!r}.")
        if _shared_key(c) != key:
            diff = sorted(k for k in key if _shared_key(c).get(k) != key.get(k))
            raise ConfigError(
                f"population members may differ only in {VARYING}; these fields differ: {diff}. "
                "Use population.train_sweep to split such a list into populations."
            )


# --------------------------------------------------------------------------------------------
# the population training loop
# --------------------------------------------------------------------------------------------
def _init_thetas(configs: Sequence[TrainConfig], prob: Problem) -> torch.Tensor:
    first = prob.flat.theta0
    thetas = []
    for c in configs:
        if c.seed == configs[0].seed:
            thetas.append(first)
            continue
        module = build_model(c.model, prob.data.in_shape, prob.data.out_dim, seed=c.seed)
        thetas.append(FlatModel(module).theta0.to(device=first.device, dtype=first.dtype))
    return torch.stack(thetas).clone()


def population_hash(configs: Sequence[TrainConfig]) -> str:
    """Short SHA-256 of the ordered list of member config hashes (identifies a population's checkpoint)."""
    blob = ",".join(c.config_hash() for c in configs)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _hyper(configs: Sequence[TrainConfig], dev: torch.device) -> dict[str, torch.Tensor]:
    """Per-member hyper-parameters as ``(P, 1)`` float64 tensors (the rules of :mod:`optim` take them as such)."""
    return {
        k: torch.tensor([float(getattr(c, k)) for c in configs], dtype=torch.float64, device=dev)[:, None]
        for k in _HYPER
    }


def _rows(t: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """The rows ``idx`` of ``t`` (all of ``t`` when ``idx`` is None)."""
    return t if idx is None else t.index_select(0, idx)


def _put_rows(t: torch.Tensor, idx: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
    """``t`` with its rows ``idx`` replaced by ``rows`` (``rows`` itself when ``idx`` is None)."""
    return rows if idx is None else t.index_copy(0, idx, rows)


def _update(
    optimizer: str,
    Theta: torch.Tensor,
    G: torch.Tensor,
    state: dict[str, Any],
    h: dict[str, torch.Tensor],
    idx: torch.Tensor | None,
) -> torch.Tensor:
    """Update the members ``idx`` with :func:`instabilities.optim.update` (``G`` holds their gradients,
    in that order); the others keep their parameters and optimizer buffers. Every alive member has
    made the same number of steps, so the step counter of the adaptive rules is shared."""
    sub = {k: (_rows(v, idx) if torch.is_tensor(v) else v) for k, v in state.items()}
    new = update(optimizer, _rows(Theta, idx), G, sub, {k: _rows(v, idx) for k, v in h.items()})
    for k, v in sub.items():
        state[k] = _put_rows(state[k], idx, v) if torch.is_tensor(v) else v
    return _put_rows(Theta, idx, new)


def train_population(
    configs: Sequence[TrainConfig],
    progress: Callable[[int, int], None] | None = None,
    problem: Problem | None = None,
    keep_theta: bool = False,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 0,
) -> PopulationHistory:
    """Train every config in ``configs`` at once as one vmapped population (see the module docstring).

    All configs must share everything but the fields in ``VARYING`` (:func:`check_population`).
    Curvature tracking (``eig_every``, ``n_eigs``, ``eig_tol``, ``eig_max_iter``, ``n_hessian``) uses
    :func:`~instabilities.curvature.batched_lanczos`, warm-started from the previous eigenvectors of each member.
    ``keep_theta`` returns every member's final parameters (``history.theta``; NaN rows for
    diverged members). With ``checkpoint_path`` and ``checkpoint_every > 0`` the population saves
    its whole state atomically every ``checkpoint_every`` steps (and once more when it is done) and
    resumes from an existing checkpoint of the same config list, giving exactly the arrays of an
    uninterrupted run; a checkpoint of another config list is refused with a :class:`ConfigError`.
    """
    configs = list(configs)
    check_population(configs)
    if not (isinstance(checkpoint_every, int) and checkpoint_every >= 0):
        raise ConfigError(f"checkpoint_every={checkpoint_every!r} must be an integer >= 0 (0: never save).")
    t0 = time.perf_counter()
    c0 = configs[0]
    prob = problem or build_problem(c0)
    P = len(configs)
    dev = prob.flat.theta0.device
    dtype = prob.flat.theta0.dtype
    Theta = _init_thetas(configs, prob)
    hyper = _hyper(configs, dev)
    opt_state = init_state(c0.optimizer, Theta)
    x, y = prob.data.x_train, prob.train_targets
    nc = prob.data.n_classes
    labels = prob.data.y_train
    full_batch = c0.batch_size is None or c0.batch_size == c0.n_train
    flat = prob.flat

    def objective_xy(theta: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor):
        out = flat(theta, xb)
        return loss_value(out, yb, c0.loss), out

    grad_full = vmap(grad_and_value(lambda th: objective_xy(th, x, y), has_aux=True))
    grad_batch = vmap(grad(lambda th, xb, yb: objective_xy(th, xb, yb)[0]))
    forward_full = vmap(lambda th: objective_xy(th, x, y))
    gens = [torch.Generator().manual_seed(c.seed + 1) for c in configs]
    perms = [torch.randperm(c0.n_train, generator=g) for g in gens]
    cursor = 0  # every member has the same batch size, hence the same cursor

    T = c0.steps + 1
    eig_steps = list(range(0, c0.steps + 1, c0.eig_every)) if c0.eig_every else []
    rec = {
        "train_loss": np.full((P, T), np.nan),
        "train_acc": np.full((P, T), np.nan),
        "eigs": np.full((P, len(eig_steps), c0.n_eigs), np.nan),
        "eig_residuals": np.full((P, len(eig_steps), c0.n_eigs), np.nan),
        "eig_matvecs": np.zeros(len(eig_steps), dtype=np.int64),
        "diverged": np.zeros(P, dtype=bool),
        "diverged_step": np.full(P, -1, dtype=np.int64),
        "stopped_step": np.full(P, -1, dtype=np.int64),
    }
    alive = torch.ones(P, dtype=torch.bool, device=dev)
    prev_vecs: torch.Tensor | None = None
    # THE sharpness tracker in population mode: batched Lanczos, each member warm-started from its own vectors
    tracker = SharpnessTracker(k=c0.n_eigs, solver="lanczos", tol=c0.eig_tol, max_iter=c0.eig_max_iter)
    e = 0
    start_step = 0
    key = population_hash(configs)
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state.get("population_hash") != key:
            raise ConfigError(
                f"checkpoint {ckpt} belongs to another population (hash {state.get('population_hash')}, "
                f"this one is {key}: the config list differs); delete it or point checkpoint_path "
                "elsewhere."
            )
        Theta = state["Theta"].to(dev)
        legacy = {"t": "step", "buf": "momentum_buffer"}  # names of checkpoints written before optim's rules
        opt_state = {legacy.get(k, k): (v.to(dev) if torch.is_tensor(v) else v) for k, v in state["opt_state"].items()}
        perms, cursor = state["perms"], state["cursor"]
        for g, s in zip(gens, state["generators"]):
            g.set_state(s)
        rec = state["recorded"]
        alive = state["alive"].to(dev)
        prev_vecs = state["prev_vecs"].to(dev) if state["prev_vecs"] is not None else None
        e, start_step = state["e"], state["step"]
        t0 -= state["wall_seconds"]

    def save(next_step: int) -> None:
        atomic_torch_save(
            {
                "population_hash": key,
                "step": next_step,
                "Theta": Theta.detach().cpu(),
                "opt_state": {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in opt_state.items()},
                "perms": perms,
                "cursor": cursor,
                "generators": [g.get_state() for g in gens],
                "recorded": rec,
                "alive": alive.cpu(),
                "prev_vecs": prev_vecs.cpu() if prev_vecs is not None else None,
                "e": e,
                "wall_seconds": time.perf_counter() - t0,
            },
            ckpt,
        )

    train_loss, train_acc = rec["train_loss"], rec["train_acc"]
    diverged, diverged_step, stopped_step = rec["diverged"], rec["diverged_step"], rec["stopped_step"]
    alive_np = alive.cpu().numpy()
    for step in range(start_step, c0.steps + 1):
        # only the alive members are computed (stopped and diverged ones drop out of the batch)
        rows = np.flatnonzero(alive_np)
        idx = None if rows.size == P else torch.as_tensor(rows, device=dev)
        Theta_a = _rows(Theta, idx)
        if c0.eig_every and step % c0.eig_every == 0:
            tracker.vectors = prev_vecs  # (restored from a checkpoint, or the last tracked step's)
            res = tracker.track_population(prob.hessian_objective, Theta_a.detach(), rows=idx, size=P, seed=step)
            rec["eigs"][rows, e] = res.values.double().cpu().numpy()
            rec["eig_residuals"][rows, e] = res.residuals.double().cpu().numpy()
            rec["eig_matvecs"][e] = res.n_matvec
            prev_vecs = tracker.vectors
            e += 1
        if full_batch:
            G, (loss, out) = grad_full(Theta_a)
        else:
            with torch.no_grad():
                loss, out = forward_full(Theta_a)
        acc = (
            (out.argmax(-1) == labels).to(dtype).mean(-1)
            if nc > 0
            else torch.full((rows.size,), float("nan"), dtype=dtype, device=dev)
        )
        loss_h = loss.detach().double().cpu().numpy()  # one transfer per step for the whole population
        acc_h = acc.double().cpu().numpy()
        fin_h = torch.isfinite(Theta_a).all(-1).cpu().numpy()
        train_loss[rows, step] = loss_h
        train_acc[rows, step] = acc_h
        bad = ~np.isfinite(loss_h) | (loss_h > c0.divergence_loss) | ~fin_h
        diverged[rows[bad]], diverged_step[rows[bad]] = True, step
        done = ~bad & (((c0.stop_loss > 0) & (loss_h < c0.stop_loss)) | (acc_h >= c0.stop_acc))
        stopped_step[rows[done]] = step
        keep = ~bad & ~done
        alive_np = np.zeros(P, dtype=bool)
        alive_np[rows[keep]] = True
        alive = torch.as_tensor(alive_np, device=dev)
        if step == c0.steps or not keep.any():
            break
        rows_next = rows[keep]
        idx_next = None if rows_next.size == P else torch.as_tensor(rows_next, device=dev)
        if full_batch:
            G = G if keep.all() else G.index_select(0, torch.as_tensor(np.flatnonzero(keep), device=dev))
        else:
            B = c0.batch_size
            if cursor + B > c0.n_train:
                perms, cursor = [torch.randperm(c0.n_train, generator=g) for g in gens], 0
            batch = torch.stack([perms[p][cursor : cursor + B] for p in rows_next]).to(dev)
            cursor += B
            G = grad_batch(_rows(Theta, idx_next), x[batch], y[batch])
        Theta = _update(c0.optimizer, Theta, G.detach(), opt_state, hyper, idx_next).detach()
        if progress is not None:
            progress(step + 1, c0.steps)
        if ckpt is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            save(step + 1)
    if ckpt is not None and checkpoint_every and start_step <= c0.steps:
        save(c0.steps + 1)  # the loop is done: a resumed call goes straight to the final evaluation
    # final test metrics of members that did not diverge
    with torch.no_grad():
        safe = torch.where(torch.as_tensor(~diverged, device=dev)[:, None], Theta, torch.zeros_like(Theta))
        out = vmap(lambda th: flat(th, prob.data.x_test))(safe)
        tl = vmap(lambda o: loss_value(o, prob.test_targets, c0.loss))(out).double().cpu().numpy()
        ta = (out.argmax(-1) == prob.data.y_test).double().mean(-1).cpu().numpy() if nc > 0 else np.full(P, np.nan)
    tl[diverged], ta[diverged] = np.nan, np.nan
    theta = None
    if keep_theta:
        theta = Theta.detach().cpu().numpy().copy()
        theta[diverged] = np.nan
    n_eval = e
    return PopulationHistory(
        lr=np.array([c.lr for c in configs]),
        seed=np.array([c.seed for c in configs]),
        momentum=np.array([c.momentum for c in configs]),
        clip=np.array([c.clip for c in configs]),
        beta1=np.array([c.beta1 for c in configs]),
        beta2=np.array([c.beta2 for c in configs]),
        eps=np.array([c.eps for c in configs]),
        step=np.arange(T),
        train_loss=train_loss,
        train_acc=train_acc,
        test_loss=tl,
        test_acc=ta,
        eig_step=np.array(eig_steps[:n_eval], dtype=np.int64),
        eigs=rec["eigs"][:, :n_eval],
        eig_residuals=rec["eig_residuals"][:, :n_eval],
        eig_matvecs=rec["eig_matvecs"][:n_eval],
        diverged=diverged,
        diverged_step=diverged_step,
        stopped_step=stopped_step,
        wall_seconds=time.perf_counter() - t0,
        theta=theta,
    )


def sweep_checkpoint_paths(checkpoint_path: str | Path, n_groups: int) -> list[Path]:
    """One checkpoint file per population of a sweep: ``<stem>-pop<k><suffix>`` next to ``checkpoint_path``."""
    path = Path(checkpoint_path)
    return [path.with_name(f"{path.stem}-pop{k}{path.suffix}") for k in range(n_groups)]


def sweep_groups(configs: Sequence[TrainConfig]) -> list[list[int]]:
    """Indices of ``configs`` grouped into populations (first appearance order; see :func:`train_sweep`)."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(repr(sorted(_shared_key(c).items())), []).append(i)
    return list(groups.values())


def train_sweep(
    configs: Sequence[TrainConfig],
    progress: Callable[[int, int], None] | None = None,
    keep_theta: bool = False,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 0,
) -> PopulationHistory:
    """Run any list of configs as few populations as possible (e.g. one per batch size or optimizer).

    All configs must share ``steps``, ``eig_every`` and ``n_eigs`` so that the results can be
    stacked; the members come back in the order of ``configs``. ``progress(done, total)`` counts
    steps over all populations. ``keep_theta``, ``checkpoint_path`` and ``checkpoint_every`` are
    those of :func:`train_population`; each population gets its own checkpoint file
    (:func:`sweep_checkpoint_paths`).
    """
    configs = list(configs)
    if not configs:
        raise ConfigError("train_sweep needs at least one TrainConfig.")
    for c in configs:
        if (c.steps, c.eig_every, c.n_eigs) != (configs[0].steps, configs[0].eig_every, configs[0].n_eigs):
            raise ConfigError("train_sweep stacks results: give every config the same steps, eig_every and n_eigs.")
    groups = sweep_groups(configs)
    paths = sweep_checkpoint_paths(checkpoint_path, len(groups)) if checkpoint_path else [None] * len(groups)
    steps = configs[0].steps
    parts, order = [], []
    for g, idx in enumerate(groups):
        report = None
        if progress is not None:

            def report(s: int, _n: int, g: int = g) -> None:
                progress(g * steps + s, len(groups) * steps)

        parts.append(
            train_population(
                [configs[i] for i in idx],
                report,
                keep_theta=keep_theta,
                checkpoint_path=paths[g],
                checkpoint_every=checkpoint_every,
            )
        )
        order += idx
    inverse = np.argsort(order)
    return PopulationHistory.concatenate(parts, inverse)


# --------------------------------------------------------------------------------------------
# measuring the gain
# --------------------------------------------------------------------------------------------
def time_loop_vs_population(configs: Sequence[TrainConfig]) -> dict[str, float]:
    """Wall time of ``configs`` as a Python loop of :func:`~instabilities.train.train` calls and as one population.

    Both variants share the data set-up. The result reports the largest relative difference of the
    two variants' training losses over the first 10 steps (float rounding) and over each member's
    whole run: at the edge of stability the dynamics is unstable along the top eigenvector, so
    rounding differences grow and long chaotic runs agree only statistically.
    """
    configs = list(configs)
    check_population(configs)
    prob = build_problem(configs[0])
    for c in configs[:1]:  # warm-up (allocations, lazy imports)
        train(c.replace(steps=2, eig_every=0), problem=prob)
        train_population([c.replace(steps=2, eig_every=0)], problem=prob)
    t0 = time.perf_counter()
    loop_losses = []
    for c in configs:
        prob_c = prob if c.seed == configs[0].seed else None
        loop_losses.append(train(c, problem=prob_c).train_loss)
    t_loop = time.perf_counter() - t0
    if str(configs[0].device).startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    pop = train_population(configs, problem=prob)
    if str(configs[0].device).startswith("cuda"):
        torch.cuda.synchronize()
    t_pop = time.perf_counter() - t0
    per_member, early = [], 0.0
    for i, ll in enumerate(loop_losses):
        a = np.asarray(ll, dtype=float)
        b = pop.train_loss[i, : len(a)]
        ok = np.isfinite(a) & np.isfinite(b)
        rel = np.abs(a[ok] - b[ok]) / np.maximum(np.abs(a[ok]), 1e-12)
        per_member.append(float(rel.max()) if rel.size else 0.0)
        early = max(early, float(rel[:10].max()) if rel.size else 0.0)
    return {
        "members": len(configs),
        "steps": configs[0].steps,
        "loop_seconds": t_loop,
        "population_seconds": t_pop,
        "speedup": t_loop / max(t_pop, 1e-12),
        "max_rel_loss_diff_first_10_steps": early,
        "max_rel_loss_diff_per_member": per_member,
        "etas": [c.lr for c in configs],
    }
