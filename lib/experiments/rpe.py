"""Causal network evidence for rotational polarity (chapter ``rotational_polarity``; Wang & Roberts §4.2).

``rpe_episodes``: a deep linear network ``W_3 W_2 W_1`` on a linear-teacher regression, trained by
full-batch GD at a step size with ``eta S(theta_0) < 2`` (the edge is reached by progressive sharpening,
not by a catapult at step 0) and, from the same initialisations, by gradient flow (GD with ``eta / m``
for ``m`` times as many steps: the same flow time). Every seed runs in one vmapped population. The model
is small (tens of parameters), so the Hessian is dense and exact at *every* step (the ``dense`` path of
:func:`instabilities.curvature.top_eigenpairs`, vmapped over seeds). Recorded per step and seed:

* loss, ``lambda_1``, ``lambda_2``, ``lambda_min`` and the cubic term ``nabla^3 L[u_1, u_1, u_1]``;
* the angle between consecutive top eigenvectors ``u_1`` (GD: step ``t`` to ``t + 1``; flow: flow time
  ``t eta`` to ``(t + 1) eta``) and the parameter displacement ``||theta_{t+1} - theta_t||``;
* the angle of ``u_1`` between steps ``t`` and ``t + 2`` (the net rotation over one period of an oscillation);
* the balancedness matrices' change ``||B_{t+1} - B_t||`` (exact identity of
  :mod:`instabilities.dynamics.balancedness`) and their drift ``||B_t - B_0||``.

The protocol is ours; the paper's own rotation measurements (its Fig. of rotations in MLPs, §4.2) were
not recovered.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.func import grad, hessian, jvp, vmap

from ..config import Config, ConfigError, require_positive, require_positive_int
from ..dynamics import balancedness as bal
from . import registry as experiments


@dataclasses.dataclass(frozen=True)
class EpisodeConfig(Config):
    """Teacher regression ``(n, d, teacher_norm)``, hidden ``widths``, per-layer init ``layer_scales``
    (unequal: the start is unbalanced, so gradient flow ends on a sharp minimiser); each seed's step size
    is ``eta_gfs / S_GFS(theta_0)``, so that the minimiser gradient flow would reach is unstable by the
    factor ``eta_gfs / 2``, while ``eta S(theta_0) < 2`` is checked (the edge is reached by progressive
    sharpening, not by a catapult at step 0); ``steps`` of GD; the flow takes ``flow_substeps``
    sub-steps per GD step; the sharpness of
    the gradient-flow solution (GFS) is measured every ``gfs_every`` steps (flow to convergence with
    step ``gfs_step`` for ``gfs_iters`` steps)."""

    n: int = 64
    d: int = 4
    widths: tuple[int, ...] = (8, 8)
    teacher_norm: float = 1.0
    layer_scales: tuple[float, ...] = (2.0, 0.4, 0.4)
    eta_gfs: float = 2.5
    steps: int = 120
    flow_substeps: int = 4
    gfs_every: int = 4
    gfs_step: float = 0.02
    gfs_iters: int = 1200
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    data_seed: int = 0

    def validate(self) -> None:
        super().validate()
        for name in ("n", "d", "steps", "flow_substeps", "gfs_every", "gfs_iters"):
            require_positive_int(name, getattr(self, name))
        for name in ("teacher_norm", "eta_gfs", "gfs_step"):
            require_positive(name, getattr(self, name))
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one seed, e.g. seeds=(0, 1, 2, 3, 4).")
        if not self.widths:
            raise ConfigError("widths is empty; give the hidden widths of the deep linear net, e.g. (8, 8).")
        if len(self.layer_scales) != len(self.widths) + 1:
            raise ConfigError(f"layer_scales needs {len(self.widths) + 1} entries (one per weight matrix).")

    def problem(self) -> bal.DeepLinear:
        return bal.teacher_problem(self.n, self.d, tuple(self.widths), self.teacher_norm, self.data_seed)


def _curvature(net: bal.DeepLinear, Theta: torch.Tensor, with_cubic: bool = True) -> dict[str, torch.Tensor]:
    """Dense eigen-decomposition of every member's Hessian and (``with_cubic``) the cubic term along ``u_1``."""
    H = vmap(hessian(net.loss))(Theta)
    vals, vecs = torch.linalg.eigh(H)  # ascending
    u1 = vecs[..., -1]

    def cubic(theta, u):  # d^3/ds^3 L(theta + s u) at s = 0, by nested forward-mode derivatives
        f0 = lambda s: net.loss(theta + s * u)  # noqa: E731
        f1 = lambda s: jvp(f0, (s,), (torch.ones_like(s),))[1]  # noqa: E731
        f2 = lambda s: jvp(f1, (s,), (torch.ones_like(s),))[1]  # noqa: E731
        s0 = torch.zeros((), dtype=theta.dtype)
        return jvp(f2, (s0,), (torch.ones_like(s0),))[1]

    return {
        "lam1": vals[:, -1],
        "lam2": vals[:, -2],
        "lam_min": vals[:, 0],
        "u1": u1,
        "cubic": vmap(cubic)(Theta, u1) if with_cubic else torch.full_like(u1[:, 0], float("nan")),
        "residual": (H @ u1[..., None])[..., 0].sub(vals[:, -1:] * u1).norm(dim=-1),
    }


def _line_angle_deg(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Angle in degrees between the lines spanned by rows of ``a`` and ``b`` (sign-insensitive)."""
    c = (a * b).sum(-1).abs() / (a.norm(dim=-1) * b.norm(dim=-1))
    return np.degrees(np.arccos(np.clip(c.numpy(), 0.0, 1.0)))


def _run(
    net: bal.DeepLinear,
    Theta: torch.Tensor,
    eta: torch.Tensor,
    steps: int,
    sub: int,
    progress=None,
    offset: int = 0,
    total: int = 1,
) -> dict[str, np.ndarray]:
    """GD with step ``eta / sub`` (``eta``: one per member) for ``steps * sub`` steps; curvature every
    ``sub`` steps (the cubic term only when ``sub == 1``)."""
    S, T = Theta.shape[0], steps
    g = vmap(grad(net.loss))
    lossf = vmap(net.loss)
    h = (eta / sub)[:, None]
    out = {
        key: np.full((S, T + 1), np.nan)
        for key in (
            "loss",
            "lam1",
            "lam2",
            "lam_min",
            "cubic",
            "residual",
            "b_drift",
            "step_norm",
            "b_change",
            "angle",
            "angle2",
        )
    }
    thetas = np.full((S, T + 1, Theta.shape[1]), np.nan)
    B0 = bal.balancedness(net, Theta)
    prev_u1 = prev2_u1 = None
    for t in range(T + 1):
        c = _curvature(net, Theta, with_cubic=sub == 1)
        out["loss"][:, t] = lossf(Theta).numpy()
        for key in ("lam1", "lam2", "lam_min", "cubic", "residual"):
            out[key][:, t] = c[key].numpy()
        thetas[:, t] = Theta.numpy()
        out["b_drift"][:, t] = bal.balancedness_norm([a - b for a, b in zip(bal.balancedness(net, Theta), B0)]).numpy()
        if prev_u1 is not None:
            out["angle"][:, t - 1] = _line_angle_deg(prev_u1, c["u1"])
        if prev2_u1 is not None:
            out["angle2"][:, t - 2] = _line_angle_deg(prev2_u1, c["u1"])
        prev2_u1, prev_u1 = prev_u1, c["u1"]
        if t == T:
            break
        start = Theta
        change = torch.zeros(S, dtype=Theta.dtype)
        for _ in range(sub):
            G = g(Theta)
            change = change + bal.balancedness_norm(bal.balancedness_change(net, G, h[:, 0]))
            Theta = Theta - h * G
        out["step_norm"][:, t] = (Theta - start).norm(dim=-1).numpy()
        out["b_change"][:, t] = change.numpy()
        if progress:
            progress(offset + t + 1, total)
    out["theta"] = thetas
    return out


def gfs_sharpness(net: bal.DeepLinear, Thetas: torch.Tensor, step: float, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Sharpness of the gradient-flow solution from every row of ``Thetas`` (flow approximated by GD
    with a small ``step`` for ``iters`` steps, all rows at once) and the loss reached there."""
    g = vmap(grad(net.loss))
    X = Thetas.clone()
    for _ in range(iters):
        X = X - step * g(X)
    ok = torch.isfinite(X).all(-1)  # rows that diverged have no gradient-flow solution: NaN
    X = torch.where(ok[:, None], X, torch.zeros_like(X))
    lam = torch.linalg.eigvalsh(vmap(hessian(net.loss))(X))[:, -1]
    nan = torch.full_like(lam, float("nan"))
    return torch.where(ok, lam, nan).numpy(), torch.where(ok, vmap(net.loss)(X), nan).numpy()


def run_rpe_episodes(cfg: EpisodeConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """GD (``gd_*``) and gradient flow (``flow_*``) arrays of shape ``(n_seeds, steps + 1)``; see the module
    docstring. ``angle[:, t]`` is the angle of ``u_1`` between measurements ``t`` and ``t + 1``;
    ``b_change[:, t]`` the summed ``||B^+ - B||`` of the step(s) from ``t`` to ``t + 1``; ``gd_gfs[:, j]``
    the GFS sharpness at step ``gfs_step_index[j]``."""
    if device != "cpu":
        raise ConfigError("rpe_episodes is a dense-Hessian CPU experiment; run it with device='cpu'.")
    net = cfg.problem()
    Theta0 = net.init(cfg.seeds, cfg.layer_scales)
    S0 = torch.linalg.eigvalsh(vmap(hessian(net.loss))(Theta0))[:, -1]
    gfs0 = torch.as_tensor(gfs_sharpness(net, Theta0, cfg.gfs_step, cfg.gfs_iters)[0])
    eta = cfg.eta_gfs / gfs0
    total = 2 * cfg.steps
    gd = _run(net, Theta0, eta, cfg.steps, 1, progress, 0, total)
    flow = _run(net, Theta0, eta, cfg.steps, cfg.flow_substeps, progress, cfg.steps, total)
    res = {f"gd_{key}": v for key, v in gd.items() if key != "theta"}
    res.update({f"flow_{key}": v for key, v in flow.items() if key != "theta"})
    idx = np.arange(0, cfg.steps + 1, cfg.gfs_every)
    th = torch.as_tensor(gd["theta"][:, idx].reshape(-1, net.n_params))
    gfs, gfs_loss = gfs_sharpness(net, th, cfg.gfs_step, cfg.gfs_iters)
    res["gd_gfs"] = gfs.reshape(len(cfg.seeds), len(idx))
    res["gd_gfs_loss"] = gfs_loss.reshape(len(cfg.seeds), len(idx))
    res["gfs_step_index"] = idx
    res["gd_theta_norm_change"] = np.linalg.norm(gd["theta"][:, 1:] - gd["theta"][:, :-1], axis=-1)
    res["eta"] = eta.numpy()
    res["included"] = (eta * S0 < 2.0).numpy()  # a seed with eta S(theta_0) >= 2 would start with a catapult
    res["seeds"] = np.asarray(cfg.seeds)
    res["n_params"] = np.asarray(net.n_params)
    return res


# -- analysis ------------------------------------------------------------------------------------------


def unstable_mask(res: dict[str, np.ndarray]) -> np.ndarray:
    """``(n_seeds, steps)``: GD step ``t -> t+1`` is *unstable* when ``eta lambda_1 > 2`` at ``theta_t`` or at
    ``theta_{t+1}``. (Along a period-two oscillation the sharpness alternates between the two sides of
    the valley, so the one-point test would call every other step of an instability stable.) Seeds not
    ``included`` (``eta S(theta_0) >= 2``) have no unstable steps here and are left out of every summary."""
    over = res["eta"][:, None] * res["gd_lam1"] > 2.0
    mask = over[:, :-1] | over[:, 1:]
    return mask & res.get("included", np.ones(len(mask), bool))[:, None]


def episodes(mask_row: np.ndarray, min_len: int = 2) -> list[tuple[int, int]]:
    """Maximal runs ``[start, end)`` of ``True`` in a boolean row, at least ``min_len`` long."""
    out, start = [], None
    for t, m in enumerate(np.append(mask_row, False)):
        if m and start is None:
            start = t
        elif not m and start is not None:
            if t - start >= min_len:
                out.append((start, t))
            start = None
    return out


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval ``(mean, lo, hi)`` over the finite entries of ``values``."""
    from scipy.stats import t as student_t

    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return (float(v.mean()) if len(v) else float("nan")), float("nan"), float("nan")
    m = float(v.mean())
    half = float(student_t.ppf(0.5 + level / 2, len(v) - 1)) * float(v.std(ddof=1)) / np.sqrt(len(v))
    return m, m - half, m + half


def longest_episode(res: dict[str, np.ndarray], i: int) -> tuple[int, int] | None:
    """The longest instability episode ``[start, end)`` of seed ``i`` (``None`` if it never became unstable)."""
    eps = episodes(unstable_mask(res)[i])
    return max(eps, key=lambda e: e[1] - e[0]) if eps else None


def episode_profile(res: dict[str, np.ndarray], i: int) -> dict[str, float]:
    """Higher-order curvature through the longest episode of seed ``i``: ``|lambda_min|`` and the magnitude of
    the cubic term along ``u_1`` at the episode's start, their peaks inside it and their values at its end,
    and the sharpness of the gradient-flow solution (GFS) before and after it."""
    ep = longest_episode(res, i)
    if ep is None:
        return {}
    a, b = ep
    lm, cu = np.abs(res["gd_lam_min"][i]), np.abs(res["gd_cubic"][i])
    g_idx = res["gfs_step_index"]
    before = int(np.searchsorted(g_idx, a, side="right")) - 1
    after = min(int(np.searchsorted(g_idx, b, side="left")), len(g_idx) - 1)
    return {
        "start": a,
        "end": b,
        "lam_min_start": float(lm[a]),
        "lam_min_peak": float(lm[a : b + 1].max()),
        "lam_min_end": float(lm[min(b, len(lm) - 1)]),
        "cubic_start": float(cu[a]),
        "cubic_peak": float(cu[a : b + 1].max()),
        "gfs_before": float(res["gd_gfs"][i, before]),
        "gfs_after": float(res["gd_gfs"][i, after]),
        "two_over_eta": 2.0 / float(res["eta"][i]),
    }


def rotation_summary(res: dict[str, np.ndarray], transient: int = 5) -> dict[str, np.ndarray]:
    """Per seed: rotation of ``u_1`` per unit flow time (degrees per unit of ``eta t``) in the GD window
    after the edge is first reached, for GD and for the flow over the same flow-time window; the same
    per unit parameter displacement; the two-step (net) rotation of GD; the fraction of the total
    balancedness change made in unstable steps and the flow's total change; the balancedness change per
    unit flow time in unstable GD steps, in stable GD steps after the first ``transient`` steps (at least
    five of them, else ``nan``) and under the flow."""
    mask = unstable_mask(res)
    n = mask.shape[0]
    out = {
        k: np.full(n, np.nan)
        for k in (
            "onset",
            "gd_rate",
            "flow_rate",
            "gd_rate_disp",
            "flow_rate_disp",
            "gd_net_rate",
            "unstable_fraction_steps",
            "b_change_unstable_fraction",
            "gd_b_total",
            "flow_b_total",
            "stable_gd_rate",
            "stable_flow_rate",
            "b_rate_unstable",
            "b_rate_stable",
            "b_rate_flow",
        )
    }
    for i in range(n):
        eta = float(res["eta"][i])
        idx = np.flatnonzero(mask[i])
        if len(idx) == 0:
            continue
        t0 = int(idx[0])
        win = slice(t0, mask.shape[1])
        out["onset"][i] = t0
        ang_gd, ang_fl = res["gd_angle"][i, win], res["flow_angle"][i, win]
        out["gd_rate"][i] = np.nanmean(ang_gd) / eta
        out["flow_rate"][i] = np.nanmean(ang_fl) / eta
        out["gd_rate_disp"][i] = np.nansum(ang_gd) / np.nansum(res["gd_step_norm"][i, win])
        out["flow_rate_disp"][i] = np.nansum(ang_fl) / np.nansum(res["flow_step_norm"][i, win])
        out["gd_net_rate"][i] = np.nanmean(res["gd_angle2"][i, t0:]) / (2 * eta)
        pre = slice(0, t0)
        if t0 > 1:
            out["stable_gd_rate"][i] = np.nanmean(res["gd_angle"][i, pre]) / eta
            out["stable_flow_rate"][i] = np.nanmean(res["flow_angle"][i, pre]) / eta
        out["unstable_fraction_steps"][i] = mask[i].mean()
        bc = res["gd_b_change"][i, :-1]
        out["b_change_unstable_fraction"][i] = bc[mask[i]].sum() / bc.sum()
        late = np.arange(len(bc)) >= transient
        if mask[i].any():
            out["b_rate_unstable"][i] = bc[mask[i]].mean() / eta
        if (~mask[i] & late).sum() >= 5:
            out["b_rate_stable"][i] = bc[~mask[i] & late].mean() / eta
        out["b_rate_flow"][i] = res["flow_b_change"][i, :-1].mean() / eta
        out["gd_b_total"][i] = res["gd_b_drift"][i, -1]
        out["flow_b_total"][i] = res["flow_b_drift"][i, -1]
    return out


_CI = EpisodeConfig(scale="ci")
_FULL = EpisodeConfig(
    scale="full", steps=400, flow_substeps=16, gfs_every=4, gfs_iters=2000, gfs_step=0.015, seeds=tuple(range(20))
)

experiments.register(
    "rpe_episodes",
    chapter="rotational_polarity",
    description="Deep linear net: per-step eigenvectors, lambda_min, cubic term and balancedness "
    "through instability episodes, GD vs gradient flow over the same flow time",
    configs={"ci": _CI, "full": _FULL},
    run=run_rpe_episodes,
)
