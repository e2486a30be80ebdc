"""Populations of training runs executed as one batched computation (``torch.func.vmap``).

A learning-rate or seed sweep of full-batch GD on a small network is launch-bound on a GPU:
each run is a chain of small kernels. Stacking the parameters of ``P`` runs into one
``(P, dim)`` tensor and evaluating ``vmap(grad(loss))`` turns ``P`` small matrix products into
one batched product per layer, so the population costs little more than a single run.

* :func:`train_population` runs configs that differ only in ``lr``, ``seed`` and ``momentum``
  (same data, model, loss, steps) as one population. Each member follows exactly the update of
  :func:`instabilities.train.train` (same initialisation from ``seed``, same minibatch order for
  SGD, same divergence rule), so a member's trajectory equals the separate run up to float rounding.
* Divergent members are masked and recorded (``diverged``, ``diverged_step``); their later
  entries are NaN and they never contaminate the others.
* Sharpness tracking is batched too: :func:`batched_lanczos` keeps one Krylov basis per member,
  all on the device, with vmapped Hessian-vector products, warm starts from the previous
  eigenvectors and a host synchronisation only every ``check_every`` Krylov steps.
* :func:`train_sweep` splits an arbitrary list of configs (e.g. several batch sizes) into
  compatible populations and returns one merged result.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch.func import grad, grad_and_value, jvp, vmap

from .config import ConfigError
from .losses import loss_value
from .models import build_model, FlatModel
from .train import Problem, TrainConfig, build_problem, train

VARYING = ("lr", "seed", "momentum")  # fields that may differ inside one population
SUPPORTED_OPTIMIZERS = ("gd", "sgd", "momentum", "nesterov")


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class PopulationHistory:
    """What a population logged; arrays have one row per member (``P`` members, ``T+1`` steps).

    Entries after a member diverged or stopped are NaN. ``eigs[p, e, i]`` is the ``i``-th largest
    Hessian eigenvalue of member ``p`` at step ``eig_step[e]``.
    """

    lr: np.ndarray
    seed: np.ndarray
    momentum: np.ndarray
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

    @property
    def size(self) -> int:
        return len(self.lr)

    @property
    def sharpness(self) -> np.ndarray:
        """``(P, n_evals)`` top eigenvalue of every member at every tracked step."""
        return self.eigs[:, :, 0] if self.eigs.size else np.zeros((self.size, 0))

    def as_arrays(self) -> dict[str, np.ndarray]:
        out = {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return out

    @staticmethod
    def concatenate(parts: Sequence["PopulationHistory"], order: Sequence[int] | None = None) -> "PopulationHistory":
        """Stack populations along the member axis (optionally reordering the members)."""
        kw = {}
        for f in dataclasses.fields(PopulationHistory):
            if f.name in ("step", "eig_step"):
                kw[f.name] = getattr(parts[0], f.name)
            elif f.name == "eig_matvecs":
                kw[f.name] = np.sum([p.eig_matvecs for p in parts], axis=0)
            elif f.name == "wall_seconds":
                kw[f.name] = float(sum(p.wall_seconds for p in parts))
            else:
                kw[f.name] = np.concatenate([getattr(p, f.name) for p in parts], axis=0)
        if order is not None:
            idx = np.asarray(order)
            for name, v in kw.items():
                if name not in ("step", "eig_step", "eig_matvecs", "wall_seconds"):
                    kw[name] = v[idx]
        return PopulationHistory(**kw)


# --------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------
def population_configs(base: TrainConfig, lrs: Sequence[float] | None = None,
                       seeds: Sequence[int] | None = None) -> list[TrainConfig]:
    """The grid ``lrs x seeds`` around ``base`` (learning rate varies fastest within a seed)."""
    lrs = list(lrs) if lrs is not None else [base.lr]
    seeds = list(seeds) if seeds is not None else [base.seed]
    if not lrs or not seeds:
        raise ConfigError("give at least one learning rate and one seed.")
    return [base.replace(lr=float(lr), seed=int(s)) for s, lr in itertools.product(seeds, lrs)]


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
    if first.optimizer not in SUPPORTED_OPTIMIZERS:
        raise ConfigError(f"optimizer={first.optimizer!r} is not batched; populations support "
                          f"{SUPPORTED_OPTIMIZERS}. Run it with instabilities.train.train instead.")
    key = _shared_key(first)
    for c in configs[1:]:
        if c.device != first.device:
            raise ConfigError(f"all members must use one device; got {first.device!r} and {c.device!r}.")
        if _shared_key(c) != key:
            diff = sorted(k for k in key if _shared_key(c).get(k) != key.get(k))
            raise ConfigError(f"population members may differ only in {VARYING}; these fields differ: {diff}. "
                              "Use population.train_sweep to split such a list into populations.")


# --------------------------------------------------------------------------------------------
# batched Hessian-vector products and Lanczos
# --------------------------------------------------------------------------------------------
def population_hvp(objective: Callable[[torch.Tensor], torch.Tensor]):
    """``(Theta (P, dim), V (P, dim)) -> (P, dim)``: one Hessian-vector product per member, vmapped."""
    def one(theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return jvp(grad(objective), (theta,), (v,))[1]

    return vmap(one)


def population_hvp_block(objective: Callable[[torch.Tensor], torch.Tensor]):
    """``(Theta (P, dim), V (P, dim, k)) -> (P, dim, k)``: ``k`` products per member, vmapped twice."""
    def one(theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return jvp(grad(objective), (theta,), (v,))[1]

    return vmap(vmap(one, in_dims=(None, 1), out_dims=1))


@dataclasses.dataclass
class BatchedEigResult:
    """Top-``k`` eigenpairs of every member: ``values (P, k)``, ``vectors (P, dim, k)``, ``residuals (P, k)``.

    Rows of inactive members are NaN. ``n_matvec`` counts products per member.
    """

    values: torch.Tensor
    vectors: torch.Tensor
    residuals: torch.Tensor
    n_matvec: int
    converged: torch.Tensor


def _orthogonalise(w: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """Remove from each row ``w[p]`` its components along the rows of ``Q[p]`` (twice)."""
    for _ in range(2):
        w = w - torch.einsum("pm,pmd->pd", torch.einsum("pmd,pd->pm", Q, w), Q)
    return w


def batched_lanczos(objective: Callable[[torch.Tensor], torch.Tensor], Theta: torch.Tensor, k: int = 1,
                    max_iter: int = 100, tol: float = 1e-4, V0: torch.Tensor | None = None,
                    active: torch.Tensor | None = None, seed: int = 0, check_every: int = 5,
                    min_iter: int | None = None) -> BatchedEigResult:
    """Top-``k`` Hessian eigenpairs of ``objective`` at every row of ``Theta`` at once.

    One Lanczos recursion with full re-orthogonalisation per member; the Krylov bases live on the
    device in float64 as a ``(P, m, dim)`` tensor and every step costs one vmapped Hessian-vector
    product for the whole population. The stopping rule is the one of
    :func:`instabilities.curvature.lanczos` (Ritz residual estimate ``<= tol * |lambda_1|`` for every
    wanted pair) applied to every active member; it is checked every ``check_every`` steps, which
    is the only host synchronisation. ``V0`` (``(P, dim)`` or ``(P, dim, j)``) warm-starts.
    Members with ``active[p] == False`` (e.g. diverged) are skipped and get NaN rows.
    """
    if k < 1:
        raise ConfigError(f"k={k} must be >= 1.")
    P, n = Theta.shape
    dev, dtype = Theta.device, Theta.dtype
    active = torch.ones(P, dtype=torch.bool, device=dev) if active is None else active.to(dev)
    active = active & torch.isfinite(Theta).all(-1)
    safe_theta = torch.where(active[:, None], Theta, torch.zeros_like(Theta)).detach()
    max_iter = min(max_iter, n)
    min_iter = min(n, max(min_iter if min_iter is not None else 2 * k + 2, k))
    hv = population_hvp(objective)
    gen = torch.Generator(device=dev).manual_seed(seed)
    f64 = torch.float64

    def noise() -> torch.Tensor:
        z = torch.randn(P, n, dtype=f64, device=dev, generator=gen)
        return z / z.norm(dim=-1, keepdim=True)

    q = noise()
    if V0 is not None:
        v0 = V0.to(device=dev, dtype=f64)
        if v0.dim() == 3:
            weights = torch.linspace(1.0, 0.5, v0.shape[2], dtype=f64, device=dev)
            v0 = v0 @ weights
        v0 = torch.nan_to_num(v0)
        ok = v0.norm(dim=-1, keepdim=True) > 0
        start = v0 / v0.norm(dim=-1, keepdim=True).clamp_min(1e-300) + 1e-3 * q
        q = torch.where(ok, start / start.norm(dim=-1, keepdim=True), q)
    Q = torch.zeros(P, max_iter + 1, n, dtype=f64, device=dev)
    alpha = torch.zeros(P, max_iter, dtype=f64, device=dev)
    beta = torch.zeros(P, max_iter, dtype=f64, device=dev)
    Q[:, 0] = q
    m = 0
    converged = torch.zeros(P, dtype=torch.bool, device=dev)
    for j in range(max_iter):
        w = hv(safe_theta, Q[:, j].to(dtype)).to(f64)
        w = torch.nan_to_num(torch.where(active[:, None], w, torch.zeros_like(w)), nan=0.0, posinf=0.0, neginf=0.0)
        a = (w * Q[:, j]).sum(-1)
        w = w - a[:, None] * Q[:, j]
        if j > 0:
            w = w - beta[:, j - 1, None] * Q[:, j - 1]
        w = _orthogonalise(w, Q[:, : j + 1])
        b = w.norm(dim=-1)
        alpha[:, j] = a
        m = j + 1
        # breakdown (invariant subspace): restart with a fresh orthogonal direction and beta = 0
        small = b <= 1e-10 * a.abs().clamp_min(1.0)
        if j + 1 < max_iter:
            fresh = _orthogonalise(noise(), Q[:, : j + 1])
            fresh = fresh / fresh.norm(dim=-1, keepdim=True).clamp_min(1e-300)
            Q[:, j + 1] = torch.where(small[:, None], fresh, w / b.clamp_min(1e-300)[:, None])
        b = torch.where(small, torch.zeros_like(b), b)
        beta[:, j] = b
        if m >= min_iter and (m % check_every == 0 or m == max_iter):
            vals, vecs = torch.linalg.eigh(_batched_tridiag(alpha[:, :m], beta[:, : m - 1]))
            top = vals.flip(-1)[:, :k]
            est = (b[:, None] * vecs[:, -1, :].flip(-1)[:, :k]).abs()
            scale = top.abs().amax(-1).clamp_min(1e-12)
            converged = (est <= tol * scale[:, None]).all(-1) & (top.shape[-1] >= k)
            if bool((converged | ~active).all()):  # the only host synchronisation
                break
    vals, vecs = torch.linalg.eigh(_batched_tridiag(alpha[:, :m], beta[:, : m - 1]))
    order = torch.argsort(vals, dim=-1, descending=True)[:, :k]
    values = torch.gather(vals, 1, order)
    S = torch.gather(vecs, 2, order[:, None, :].expand(P, m, order.shape[1]))
    vectors = torch.einsum("pmd,pmk->pdk", Q[:, :m], S)
    vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-300)
    HV = population_hvp_block(objective)(safe_theta, vectors.to(dtype)).to(f64)
    residuals = (HV - vectors * values[:, None, :]).norm(dim=1)
    nan = torch.full_like(values, float("nan"))
    values = torch.where(active[:, None], values, nan)
    residuals = torch.where(active[:, None], residuals, nan)
    vectors = torch.where(active[:, None, None], vectors, torch.zeros_like(vectors))
    return BatchedEigResult(values.to(dtype), vectors.to(dtype), residuals.to(dtype), m + values.shape[1],
                            converged & active)


def _batched_tridiag(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    T = torch.diag_embed(alpha)
    if beta.shape[-1]:
        T = T + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    return T


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


def train_population(configs: Sequence[TrainConfig], progress: Callable[[int, int], None] | None = None,
                     problem: Problem | None = None) -> PopulationHistory:
    """Train every config in ``configs`` at once as one vmapped population (see the module docstring).

    All configs must share everything but ``lr``, ``seed`` and ``momentum`` (:func:`check_population`).
    Curvature tracking (``eig_every``, ``n_eigs``, ``eig_tol``, ``eig_max_iter``, ``n_hessian``) uses
    :func:`batched_lanczos`, warm-started from the previous eigenvectors of each member.
    """
    configs = list(configs)
    check_population(configs)
    t0 = time.perf_counter()
    c0 = configs[0]
    prob = problem or build_problem(c0)
    P = len(configs)
    dev = prob.flat.theta0.device
    dtype = prob.flat.theta0.dtype
    Theta = _init_thetas(configs, prob)
    lr = torch.tensor([c.lr for c in configs], dtype=dtype, device=dev)[:, None]
    mom = torch.tensor([c.momentum for c in configs], dtype=dtype, device=dev)[:, None]
    use_momentum = c0.optimizer in ("momentum", "nesterov")
    buf = torch.zeros_like(Theta)
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
    train_loss = np.full((P, T), np.nan)
    train_acc = np.full((P, T), np.nan)
    eig_steps = list(range(0, c0.steps + 1, c0.eig_every)) if c0.eig_every else []
    eigs = np.full((P, len(eig_steps), c0.n_eigs), np.nan)
    eig_res = np.full((P, len(eig_steps), c0.n_eigs), np.nan)
    eig_mv = np.zeros(len(eig_steps), dtype=np.int64)
    alive = torch.ones(P, dtype=torch.bool, device=dev)
    diverged = np.zeros(P, dtype=bool)
    diverged_step = np.full(P, -1, dtype=np.int64)
    stopped_step = np.full(P, -1, dtype=np.int64)
    prev_vecs: torch.Tensor | None = None
    e = 0
    for step in range(0, c0.steps + 1):
        if c0.eig_every and step % c0.eig_every == 0:
            res = batched_lanczos(prob.hessian_objective, Theta.detach(), c0.n_eigs, max_iter=c0.eig_max_iter,
                                  tol=c0.eig_tol, V0=prev_vecs, active=alive, seed=step)
            eigs[:, e] = res.values.double().cpu().numpy()
            eig_res[:, e] = res.residuals.double().cpu().numpy()
            eig_mv[e] = res.n_matvec
            prev_vecs = res.vectors
            e += 1
        safe = torch.where(alive[:, None], Theta, torch.zeros_like(Theta))
        if full_batch:
            G, (loss, out) = grad_full(safe)
        else:
            with torch.no_grad():
                loss, out = forward_full(safe)
        acc = ((out.argmax(-1) == labels).to(dtype).mean(-1) if nc > 0
               else torch.full((P,), float("nan"), dtype=dtype, device=dev))
        finite_theta = torch.isfinite(Theta).all(-1)
        loss_h = loss.detach().double().cpu().numpy()  # one transfer per step for the whole population
        acc_h = acc.double().cpu().numpy()
        alive_h = alive.cpu().numpy()
        fin_h = finite_theta.cpu().numpy()
        train_loss[alive_h, step] = loss_h[alive_h]
        train_acc[alive_h, step] = acc_h[alive_h]
        bad = alive_h & (~np.isfinite(loss_h) | (loss_h > c0.divergence_loss) | ~fin_h)
        diverged[bad], diverged_step[bad] = True, step
        done = alive_h & ~bad & (((c0.stop_loss > 0) & (loss_h < c0.stop_loss)) | (acc_h >= c0.stop_acc))
        stopped_step[done] = step
        alive_np = alive_h & ~bad & ~done
        alive = torch.as_tensor(alive_np, device=dev)
        if step == c0.steps or not alive_np.any():
            break
        if not full_batch:
            B = c0.batch_size
            if cursor + B > c0.n_train:
                perms, cursor = [torch.randperm(c0.n_train, generator=g) for g in gens], 0
            idx = torch.stack([p[cursor: cursor + B] for p in perms]).to(dev)
            cursor += B
            safe = torch.where(alive[:, None], Theta, torch.zeros_like(Theta))
            G = grad_batch(safe, x[idx], y[idx])
        G = G.detach()
        if use_momentum:
            buf = mom * buf + G
            G = G + mom * buf if c0.optimizer == "nesterov" else buf
        Theta = torch.where(alive[:, None], Theta - lr * G, Theta).detach()
        if progress is not None:
            progress(step + 1, c0.steps)
    # final test metrics of members that did not diverge
    with torch.no_grad():
        safe = torch.where(torch.as_tensor(~diverged, device=dev)[:, None], Theta, torch.zeros_like(Theta))
        out = vmap(lambda th: flat(th, prob.data.x_test))(safe)
        tl = vmap(lambda o: loss_value(o, prob.test_targets, c0.loss))(out).double().cpu().numpy()
        ta = ((out.argmax(-1) == prob.data.y_test).double().mean(-1).cpu().numpy() if nc > 0
              else np.full(P, np.nan))
    tl[diverged], ta[diverged] = np.nan, np.nan
    n_eval = e
    return PopulationHistory(
        lr=np.array([c.lr for c in configs]), seed=np.array([c.seed for c in configs]),
        momentum=np.array([c.momentum for c in configs]), step=np.arange(T),
        train_loss=train_loss, train_acc=train_acc, test_loss=tl, test_acc=ta,
        eig_step=np.array(eig_steps[:n_eval], dtype=np.int64), eigs=eigs[:, :n_eval], eig_residuals=eig_res[:, :n_eval],
        eig_matvecs=eig_mv[:n_eval], diverged=diverged, diverged_step=diverged_step, stopped_step=stopped_step,
        wall_seconds=time.perf_counter() - t0)


def train_sweep(configs: Sequence[TrainConfig], progress: Callable[[int, int], None] | None = None) -> PopulationHistory:
    """Run any list of configs as few populations as possible (e.g. one per batch size).

    All configs must share ``steps``, ``eig_every`` and ``n_eigs`` so that the results can be
    stacked; the members come back in the order of ``configs``.
    """
    configs = list(configs)
    if not configs:
        raise ConfigError("train_sweep needs at least one TrainConfig.")
    for c in configs:
        if (c.steps, c.eig_every, c.n_eigs) != (configs[0].steps, configs[0].eig_every, configs[0].n_eigs):
            raise ConfigError("train_sweep stacks results: give every config the same steps, eig_every and n_eigs.")
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(repr(sorted(_shared_key(c).items())), []).append(i)
    parts, order = [], []
    for idx in groups.values():
        parts.append(train_population([configs[i] for i in idx], progress))
        order += idx
    inverse = np.argsort(order)
    return PopulationHistory.concatenate(parts, inverse)


# --------------------------------------------------------------------------------------------
# measuring the gain
# --------------------------------------------------------------------------------------------
def time_loop_vs_population(configs: Sequence[TrainConfig]) -> dict[str, float]:
    """Wall time of ``configs`` as a Python loop of :func:`train` calls and as one population.

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
    return {"members": len(configs), "steps": configs[0].steps, "loop_seconds": t_loop,
            "population_seconds": t_pop, "speedup": t_loop / max(t_pop, 1e-12),
            "max_rel_loss_diff_first_10_steps": early, "max_rel_loss_diff_per_member": per_member,
            "lrs": [c.lr for c in configs]}
