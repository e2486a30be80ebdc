"""Rotational polarity of eigenvectors (RPE) in the two-parameter linear network (our derivation).

The model is a depth-2, width-1 linear network: the output is ``z = theta0 * theta1`` and the loss is
``L(theta) = l(z)`` for a scalar loss ``l`` (:class:`ScalarLoss`: ``l = z^2`` or ``l = (z - y)^2 / 2``).
Everything here is closed form and vectorised over a leading batch axis (for instance one row per
step size), in float64 numpy:

* GD steps and trajectories (:func:`simulate`), with divergence recorded, not raised;
* the exact Hessian, its top eigenvalue and the angle of its leading eigenvector;
* the layer imbalance ``beta = |theta0^2 - theta1^2| / (4 |theta0 theta1|)`` and its exact per-step
  factor ``gamma_beta(x, k) = |(1 - x^2) / (1 - k x + x^2)|`` with ``x = eta l'(z)`` and
  ``k = theta0/theta1 + theta1/theta0``;
* the phase boundaries ``|x| = 2/|k|`` and ``|x| = |k|/2`` where the sign of ``log gamma_beta`` (the
  "polarity" of the rotation) flips;
* the depth-``D`` imbalance identity.

These identities are our derivation; the interpretation of "polarity" as the sign of
``log gamma_beta`` is our reconstruction of Wang & Roberts' notion (their full text was not available).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from ..config import ConfigError, require_positive, require_positive_int

LOSS_KINDS = ("square", "target")


@dataclasses.dataclass(frozen=True)
class ScalarLoss:
    """The scalar loss ``l(z)``: ``kind="square"`` is ``z^2``; ``kind="target"`` is ``(z - target)^2 / 2``."""

    kind: str = "square"
    target: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ConfigError(f"loss kind {self.kind!r} is unknown; choose one of {LOSS_KINDS}.")
        if not math.isfinite(self.target):
            raise ConfigError(f"target={self.target!r} must be a finite number.")
        if self.kind == "square" and self.target != 0.0:
            raise ConfigError("kind='square' is l(z)=z^2 with no target; use kind='target' for (z - y)^2 / 2.")

    def value(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=float)
        return z**2 if self.kind == "square" else 0.5 * (z - self.target) ** 2

    def d1(self, z: np.ndarray) -> np.ndarray:
        """First derivative ``l'(z)``."""
        z = np.asarray(z, dtype=float)
        return 2.0 * z if self.kind == "square" else z - self.target

    def d2(self, z: np.ndarray) -> np.ndarray:
        """Second derivative ``l''(z)``."""
        z = np.asarray(z, dtype=float)
        return np.full_like(z, 2.0 if self.kind == "square" else 1.0)

    @property
    def minimiser_output(self) -> float:
        """The output ``z*`` with ``l'(z*) = 0``."""
        return 0.0 if self.kind == "square" else float(self.target)


SQUARE = ScalarLoss("square")


def _theta(theta: np.ndarray | Sequence[float]) -> np.ndarray:
    t = np.asarray(theta, dtype=float)
    if t.shape[-1:] != (2,):
        raise ConfigError(f"theta must have a last axis of length 2 (theta0, theta1), got shape {t.shape}.")
    return t


# -- closed forms --------------------------------------------------------------------------------


def output(theta: np.ndarray) -> np.ndarray:
    """The network output ``z = theta0 * theta1``."""
    t = _theta(theta)
    return t[..., 0] * t[..., 1]


def loss_value(theta: np.ndarray, loss: ScalarLoss = SQUARE) -> np.ndarray:
    """``L(theta) = l(theta0 theta1)``."""
    return loss.value(output(theta))


def gradient(theta: np.ndarray, loss: ScalarLoss = SQUARE) -> np.ndarray:
    """``grad L = l'(z) (theta1, theta0)``."""
    t = _theta(theta)
    g = loss.d1(output(t))[..., None]
    return g * t[..., ::-1]


def hessian(theta: np.ndarray, loss: ScalarLoss = SQUARE) -> np.ndarray:
    """Exact Hessian ``l''(z) v v^T + l'(z) [[0, 1], [1, 0]]`` with ``v = (theta1, theta0)``; shape ``(..., 2, 2)``."""
    t = _theta(theta)
    z = output(t)
    l1, l2 = loss.d1(z), loss.d2(z)
    H = np.empty(t.shape[:-1] + (2, 2))
    H[..., 0, 0] = l2 * t[..., 1] ** 2
    H[..., 1, 1] = l2 * t[..., 0] ** 2
    H[..., 0, 1] = H[..., 1, 0] = l2 * z + l1
    return H


def sharpness(theta: np.ndarray, loss: ScalarLoss = SQUARE) -> np.ndarray:
    """Largest Hessian eigenvalue ``S(theta)`` in closed form."""
    H = hessian(theta, loss)
    a, b, c = H[..., 0, 0], H[..., 0, 1], H[..., 1, 1]
    return 0.5 * (a + c) + np.sqrt(0.25 * (a - c) ** 2 + b**2)


def leading_eigvec_angle(theta: np.ndarray, loss: ScalarLoss = SQUARE) -> np.ndarray:
    """Angle in degrees, in ``(-90, 90]``, of the leading Hessian eigenvector from the ``theta0`` axis.

    For a symmetric ``[[a, b], [b, c]]`` the top eigenvector has angle ``phi = atan2(2b, a - c) / 2``,
    so ``cot(2 phi) = (a - c) / (2 b)``; for ``l = z^2`` this gives ``|cot 2 phi| = beta``.
    """
    H = hessian(theta, loss)
    a, b, c = H[..., 0, 0], H[..., 0, 1], H[..., 1, 1]
    return np.degrees(0.5 * np.arctan2(2.0 * b, a - c))


def line_angle(phi_a: np.ndarray, phi_b: np.ndarray) -> np.ndarray:
    """Angle in degrees, in ``[0, 90]``, between two lines with direction angles ``phi_a``, ``phi_b`` (degrees)."""
    d = np.mod(np.abs(np.asarray(phi_a, float) - np.asarray(phi_b, float)), 180.0)
    return np.minimum(d, 180.0 - d)


def imbalance(theta: np.ndarray) -> np.ndarray:
    """Layer imbalance ``beta = |theta0^2 - theta1^2| / (4 |theta0 theta1|)`` (``inf`` when ``z = 0``)."""
    t = _theta(theta)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.abs(t[..., 0] ** 2 - t[..., 1] ** 2) / (4.0 * np.abs(t[..., 0] * t[..., 1]))


def step_variables(
    theta: np.ndarray, eta: float | np.ndarray, loss: ScalarLoss = SQUARE
) -> tuple[np.ndarray, np.ndarray]:
    """``x = eta l'(z)`` and ``k = theta0/theta1 + theta1/theta0 = (theta0^2 + theta1^2) / z``."""
    t = _theta(theta)
    z = output(t)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = (t[..., 0] ** 2 + t[..., 1] ** 2) / z
    return np.asarray(eta, float) * loss.d1(z), k


def imbalance_factor(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``gamma_beta(x, k) = |(1 - x^2) / (1 - k x + x^2)|``: the exact ratio ``beta_{t+1} / beta_t`` of one GD step."""
    x, k = np.asarray(x, float), np.asarray(k, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs((1.0 - x**2) / (1.0 - k * x + x**2))


def polarity(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Sign of ``log gamma_beta``: ``+1`` the eigenvector turns towards a layer axis (``beta`` grows),
    ``-1`` it turns towards the balanced diagonal (``beta`` shrinks), ``0`` no change."""
    with np.errstate(divide="ignore"):
        return np.sign(np.log(imbalance_factor(x, k)))


def phase_boundaries(k: float) -> tuple[float, float]:
    """The two nonzero roots of ``gamma_beta(x, k) = 1`` in ``|x|`` (for ``x k > 0``): ``2/|k|`` and ``|k|/2``.

    ``gamma_beta > 1`` for ``0 < |x| < 2/|k|`` (except at its pole), ``< 1`` for ``2/|k| < |x| < |k|/2``.
    """
    if not (math.isfinite(k) and abs(k) >= 2.0):
        raise ConfigError(f"k={k!r}: k = theta0/theta1 + theta1/theta0 satisfies |k| >= 2 for real nonzero parameters.")
    return 2.0 / abs(k), abs(k) / 2.0


def minimiser_sharpness(beta: np.ndarray, loss: ScalarLoss) -> np.ndarray:
    """Sharpness at a minimiser with output ``z*`` and imbalance ``beta``: ``2 l''(z*) |z*| sqrt(4 beta^2 + 1)``."""
    zs = loss.minimiser_output
    if zs == 0.0:
        raise ConfigError("at z* = 0 (the loss l = z^2) beta is infinite; use kind='target' with target != 0.")
    return 2.0 * float(loss.d2(zs)) * abs(zs) * np.sqrt(4.0 * np.asarray(beta, float) ** 2 + 1.0)


def gd_step(theta: np.ndarray, eta: float | np.ndarray, loss: ScalarLoss = SQUARE) -> np.ndarray:
    """One GD step ``theta - eta l'(z) (theta1, theta0)``; ``eta`` may be an array matching the batch."""
    t = _theta(theta)
    return t - np.asarray(eta, float)[..., None] * gradient(t, loss)


# -- depth D ---------------------------------------------------------------------------------------


def _others_product(theta: np.ndarray, skip: Sequence[int]) -> np.ndarray:
    mask = np.ones(theta.shape[-1], bool)
    mask[list(skip)] = False
    return np.prod(theta[..., mask], axis=-1)


def depth_gd_step(theta: np.ndarray, eta: float, loss: ScalarLoss = SQUARE) -> np.ndarray:
    """GD on ``l(theta_1 ... theta_D)``: ``theta_i <- theta_i - eta l'(z) prod_{j != i} theta_j``."""
    t = np.asarray(theta, dtype=float)
    if t.ndim < 1 or t.shape[-1] < 2:
        raise ConfigError("depth_gd_step needs a last axis of length D >= 2 (one scalar weight per layer).")
    z = np.prod(t, axis=-1)
    partial = np.stack([_others_product(t, [i]) for i in range(t.shape[-1])], axis=-1)
    return t - eta * loss.d1(z)[..., None] * partial


def depth_imbalance_factor(theta: np.ndarray, eta: float, i: int, j: int, loss: ScalarLoss = SQUARE) -> np.ndarray:
    """``(theta_i^{+2} - theta_j^{+2}) / (theta_i^2 - theta_j^2) = 1 - eta^2 l'(z)^2 z^2 / (theta_i^2 theta_j^2)``.

    Written as ``1 - eta^2 l'(z)^2 prod_{m != i, j} theta_m^2`` (no division).
    """
    t = np.asarray(theta, dtype=float)
    if i == j:
        raise ConfigError("depth_imbalance_factor compares two different layers; pass i != j.")
    z = np.prod(t, axis=-1)
    return 1.0 - eta**2 * loss.d1(z) ** 2 * _others_product(t, [i, j]) ** 2


# -- trajectories ----------------------------------------------------------------------------------


@dataclasses.dataclass
class RPETrajectory:
    """GD trajectories for a batch of step sizes; arrays have shape ``(n_eta, steps + 1, ...)``.

    Iterates after a divergence are ``nan``; ``diverged[i]`` and ``diverged_step[i]`` record it.
    """

    etas: np.ndarray
    theta: np.ndarray
    loss: ScalarLoss
    diverged: np.ndarray
    diverged_step: np.ndarray

    @property
    def z(self) -> np.ndarray:
        return output(self.theta)

    @property
    def loss_values(self) -> np.ndarray:
        return loss_value(self.theta, self.loss)

    @property
    def sharpness(self) -> np.ndarray:
        return sharpness(self.theta, self.loss)

    @property
    def beta(self) -> np.ndarray:
        return imbalance(self.theta)

    @property
    def angle(self) -> np.ndarray:
        """Leading-eigenvector direction (degrees from the ``theta0`` axis)."""
        return leading_eigvec_angle(self.theta, self.loss)

    @property
    def rotation(self) -> np.ndarray:
        """Angle (degrees) between the leading eigenvector at step ``t`` and at step 0."""
        a = self.angle
        return line_angle(a, a[:, :1])

    def step_variables(self) -> tuple[np.ndarray, np.ndarray]:
        return step_variables(self.theta, self.etas[:, None], self.loss)

    def gamma(self) -> np.ndarray:
        """``gamma_beta`` of every step (shape ``(n_eta, steps + 1)``; the last entry is the next, unused step)."""
        return imbalance_factor(*self.step_variables())


def simulate(
    theta0: Sequence[float], etas: Sequence[float] | float, steps: int, loss: ScalarLoss = SQUARE, blowup: float = 1e8
) -> RPETrajectory:
    """Run GD from ``theta0`` for every step size in ``etas`` (vectorised); record divergence."""
    t0 = _theta(theta0)
    if t0.shape != (2,):
        raise ConfigError(f"theta0 must be one point (theta0, theta1), got shape {t0.shape}.")
    etas = np.atleast_1d(np.asarray(etas, dtype=float))
    for e in etas:
        require_positive("eta", float(e))
    require_positive_int("steps", steps)
    require_positive("blowup", blowup)
    n = len(etas)
    theta = np.full((n, steps + 1, 2), np.nan)
    theta[:, 0] = t0
    diverged = np.zeros(n, bool)
    dstep = np.full(n, -1)
    cur = np.broadcast_to(t0, (n, 2)).copy()
    with np.errstate(over="ignore", invalid="ignore"):
        for s in range(steps):
            nxt = gd_step(cur, etas, loss)
            bad = ~np.isfinite(nxt).all(-1) | (np.abs(nxt).max(-1) > blowup)
            new_bad = bad & ~diverged
            dstep[new_bad] = s + 1
            diverged |= bad
            nxt[diverged] = np.nan
            theta[:, s + 1] = nxt
            cur = nxt
    return RPETrajectory(etas, theta, loss, diverged, dstep)


def eta_sweep(
    theta0: Sequence[float], etas: Sequence[float], steps: int, loss: ScalarLoss = SQUARE
) -> dict[str, np.ndarray]:
    """Summaries of :func:`simulate` per step size: initial ``eta S``, maximal rotation of the leading
    eigenvector (degrees), final sharpness, smallest and final imbalance, final loss and divergence."""
    tr = simulate(theta0, etas, steps, loss)
    rot = tr.rotation
    with np.errstate(invalid="ignore"):
        return {
            "etas": tr.etas,
            "eta_s0": tr.etas * float(sharpness(np.asarray(theta0, float), loss)),
            "max_rotation_deg": np.where(tr.diverged, np.nan, np.nanmax(rot, axis=1)),
            "final_sharpness": tr.sharpness[:, -1],
            "min_beta": np.nanmin(tr.beta, axis=1),
            "final_beta": tr.beta[:, -1],
            "final_loss": tr.loss_values[:, -1],
            "diverged": tr.diverged,
        }


def loss_grid(
    loss: ScalarLoss, lim0: tuple[float, float], lim1: tuple[float, float], n: int = 200
) -> tuple[np.ndarray, ...]:
    """``(T0, T1, L)`` on an ``n x n`` grid of ``theta0 in lim0`` and ``theta1 in lim1`` (for contour plots)."""
    require_positive_int("n", n)
    T0, T1 = np.meshgrid(np.linspace(*lim0, n), np.linspace(*lim1, n))
    return T0, T1, loss.value(T0 * T1)


def explorer_figure(
    theta0: Sequence[float],
    eta: float,
    steps: int,
    loss: ScalarLoss,
    lim0: tuple[float, float],
    lim1: tuple[float, float],
    arrow: float = 0.25,
):
    """Loss contours, the GD path and the leading Hessian eigenvector at every iterate (one figure).

    Left: the parameter plane; right: the eigenvector angle from the ``theta0`` axis and ``eta S`` per step.
    """
    import matplotlib.pyplot as plt

    tr = simulate(theta0, [eta], steps, loss)
    th = tr.theta[0]
    ok = np.isfinite(th).all(-1)
    th = th[ok]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.8), gridspec_kw={"width_ratios": [1.1, 1]})
    T0, T1, L = loss_grid(loss, lim0, lim1, 160)
    ax.contour(T0, T1, np.log10(L + 1e-3), levels=14, cmap="Greys", linewidths=0.6)
    zs = loss.minimiser_output
    if zs != 0.0:
        g = np.linspace(*lim0, 400)
        g = np.where(np.abs(g) < 1e-2 * (lim0[1] - lim0[0]), np.nan, g)  # no line across the asymptote
        with np.errstate(divide="ignore"):
            ax.plot(g, zs / g, color="0.5", lw=1.0, ls=":", label="minimisers $z=y$")
    ax.plot(th[:, 0], th[:, 1], "-", color="0.35", lw=0.7)
    ax.plot(th[:, 0], th[:, 1], "o", color="k", ms=2.5, label="GD iterates")
    phi = np.radians(tr.angle[0][ok])
    scale = arrow * max(lim0[1] - lim0[0], lim1[1] - lim1[0]) / 4
    u, v = np.cos(phi) * scale, np.sin(phi) * scale
    ax.quiver(
        th[:, 0],
        th[:, 1],
        u,
        v,
        angles="xy",
        scale_units="xy",
        scale=1,
        color="tab:blue",
        width=0.004,
        headwidth=0,
        headlength=0,
        pivot="middle",
        label="leading eigenvector $u_1$",
    )
    ax.set_xlim(*lim0)
    ax.set_ylim(*lim1)
    ax.set_xlabel(r"$\theta_0$ (first layer)")
    ax.set_ylabel(r"$\theta_1$ (second layer)")
    ax.set_title(
        rf"$\eta={eta:.3g}$, $\eta S(\theta_0)={eta * float(sharpness(np.asarray(theta0), loss)):.2f}$"
        + (" (diverged)" if tr.diverged[0] else "")
    )
    ax.legend(loc="upper right", fontsize=7)
    steps_idx = np.flatnonzero(ok)
    ax2.plot(
        steps_idx, np.abs(tr.angle[0][ok]), "-o", ms=2.5, color="tab:blue", label=r"angle of $u_1$ from $\theta_0$ axis"
    )
    ax2.set_xlabel("step $t$")
    ax2.set_ylabel("angle of $u_1$ (degrees)")
    ax3 = ax2.twinx()
    ax3.plot(steps_idx, eta * tr.sharpness[0][ok], "--s", ms=2.5, color="0.3", label=r"$\eta S(\theta_t)$")
    ax3.axhline(2.0, color="k", ls=":", lw=1.0)
    ax3.set_ylabel(r"$\eta S(\theta_t)$ (threshold 2, dotted)")
    h1, l1 = ax2.get_legend_handles_labels()
    h2, l2 = ax3.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=7)
    fig.tight_layout()
    return fig


# -- diagonal linear networks of any depth (Wang & Roberts 2026, §4.1.2 / App. E) ---------------------------
#
# f_DLN(theta_1, ..., theta_n) = prod_i theta_i = Theta and L = z(Theta). With w = (1 / theta_i)_i,
# dTheta/dtheta_i = Theta w_i and d^2 Theta / dtheta_i dtheta_j = Theta w_i w_j (i != j), 0 (i = j), so
#     H = (z'' Theta^2 + z' Theta) w w^T - z' Theta diag(w^2).


def dln_output(theta: np.ndarray) -> np.ndarray:
    """``Theta = prod_i theta_i`` over the last axis."""
    return np.prod(np.asarray(theta, float), axis=-1)


def dln_hessian(theta: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """Hessian of ``z(prod theta_i)`` given ``z'`` (``d1``) and ``z''`` (``d2``) at ``Theta``; shape ``(..., n, n)``:
    ``(z'' Theta^2 + z' Theta) w w^T - z' Theta diag(w^2)`` with ``w_i = 1 / theta_i``."""
    t = np.asarray(theta, float)
    if t.shape[-1] < 2:
        raise ConfigError("a diagonal linear network needs n >= 2 parameters (last axis).")
    Th = dln_output(t)
    w = 1.0 / t
    a = (np.asarray(d2, float) * Th**2 + np.asarray(d1, float) * Th)[..., None, None]
    H = a * w[..., :, None] * w[..., None, :]
    idx = np.arange(t.shape[-1])
    H[..., idx, idx] -= (np.asarray(d1, float) * Th)[..., None] * w**2
    return H


def dln_top_eigvec(H: np.ndarray) -> np.ndarray:
    """Unit top eigenvector of symmetric ``H`` (``(..., n, n)``), sign fixed so that its largest-magnitude
    component is positive."""
    vals, vecs = np.linalg.eigh(H)
    v = vecs[..., -1]
    k = np.argmax(np.abs(v), axis=-1)
    s = np.sign(np.take_along_axis(v, k[..., None], axis=-1))
    return v * s


def dln_first_order_tilt(theta: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """First-order relative change ``eps_k`` of the top eigenvector away from ``w / |w|`` caused by ``z' != 0``:
    ``eps_k = -(z' Theta / A) (w_k^2 - sum_j w_hat_j^2 w_j^2)``, ``A = (z'' Theta^2 + z' Theta) |w|^2``
    (our perturbation expansion)."""
    t = np.asarray(theta, float)
    Th = dln_output(t)
    w = 1.0 / t
    wn2 = (w**2).sum(-1)
    A = (np.asarray(d2, float) * Th**2 + np.asarray(d1, float) * Th) * wn2
    mean_w2 = (w**4).sum(-1) / wn2
    return -(np.asarray(d1, float) * Th / A)[..., None] * (w**2 - mean_w2[..., None])


def polarity_ratio(phi1: np.ndarray, phi2: np.ndarray) -> np.ndarray:
    """``R(phi1, phi2) = |v_11 / v_12| = |phi2| / (phi1 + sqrt(phi1^2 + phi2^2)) = sqrt(1 + beta^2) - sign(phi1) beta``
    with ``beta = |phi1 / phi2|``: the tilt of the top eigenvector of the two-parameter DLN (``z'' > 0``),
    ``phi1 = theta_1^2 - theta_2^2`` and ``phi2 = 2 (z' + z'' Theta) / z''``."""
    phi1, phi2 = np.asarray(phi1, float), np.asarray(phi2, float)
    h = np.hypot(phi1, phi2)
    with np.errstate(divide="ignore", invalid="ignore"):  # the two algebraically equal forms, each without cancellation
        return np.where(phi1 >= 0, np.abs(phi2) / (phi1 + h), (h - phi1) / np.abs(phi2))


def polarity_variables(theta: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(phi1, phi2) = (theta_1^2 - theta_2^2, 2 (z' + z'' Theta) / z'')`` of a two-parameter DLN."""
    t = _theta(theta)
    return t[..., 0] ** 2 - t[..., 1] ** 2, 2.0 * (
        np.asarray(d1, float) + np.asarray(d2, float) * output(t)
    ) / np.asarray(d2, float)


def balanced_dln_map(Theta: np.ndarray, eta: float, target: float, n: int) -> np.ndarray:
    """One GD step of the balanced depth-``n`` DLN (all ``theta_i = Theta^{1/n} > 0``)
    on ``z = (Theta - target)^2 / 2``,
    written for ``Theta``: ``Theta^+ = Theta (1 - eta (Theta - target) Theta^{1 - 2/n})^n``."""
    Th = np.asarray(Theta, float)
    return Th * (1.0 - eta * (Th - target) * Th ** (1.0 - 2.0 / n)) ** n


def orbit_period(xs: np.ndarray, tol: float = 1e-9, max_period: int = 8) -> int:
    """Smallest ``T <= max_period`` with ``|x_{t+T} - x_t| <= tol (1 + |x_t|)`` over the last ``2 max_period``
    entries of a converged sequence; ``0`` when none (chaotic or not converged)."""
    xs = np.asarray(xs, float)
    tail = xs[-2 * max_period - 1 :]
    for T in range(1, max_period + 1):
        if np.all(np.abs(tail[T:] - tail[:-T]) <= tol * (1.0 + np.abs(tail[:-T]))):
            return T
    return 0


# -- a multilayer perceptron as a sum of products (§4.1.1 / App. E.1) -------------------------------------


def path_sum(weights: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Output of the bias-free ReLU MLP ``W_D relu(... relu(W_1 x))`` written as a sum over input-to-output
    paths ``(m_0, m_1, ..., m_D)`` of the product of the path's weights, times its input ``x_{m_0}`` and the
    on/off gates of its hidden units: every path is a diagonal linear network ``prod_i theta_i``."""
    import itertools

    Ws = [np.asarray(W, float) for W in weights]
    x = np.asarray(x, float)
    acts, h = [], x
    for W in Ws[:-1]:  # gates of the hidden units at this input
        pre = W @ h
        acts.append(pre > 0)
        h = np.maximum(pre, 0.0)
    dims = [Ws[0].shape[1]] + [W.shape[0] for W in Ws]
    out = np.zeros(dims[-1])
    for path in itertools.product(*[range(d) for d in dims]):
        prod = x[path[0]]
        for layer, W in enumerate(Ws):
            prod *= W[path[layer + 1], path[layer]]
            if layer < len(Ws) - 1:
                prod *= acts[layer][path[layer + 1]]
        out[path[-1]] += prod
    return out


def relu_mlp(weights: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Forward pass of the bias-free ReLU MLP (for checking :func:`path_sum`)."""
    h = np.asarray(x, float)
    for W in weights[:-1]:
        h = np.maximum(np.asarray(W, float) @ h, 0.0)
    return np.asarray(weights[-1], float) @ h


def balanced_dln_orbit(Theta0: float, eta: float, target: float, n: int, steps: int) -> np.ndarray:
    """The sequence ``Theta_0, ..., Theta_steps`` of :func:`balanced_dln_map` (``nan`` after a blow-up)."""
    require_positive_int("steps", steps)
    require_positive("eta", eta)
    xs = np.full(steps + 1, np.nan)
    xs[0] = Theta0
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            nxt = float(balanced_dln_map(xs[t], eta, target, n))
            if not math.isfinite(nxt) or abs(nxt) > 1e8:
                break
            xs[t + 1] = nxt
    return xs


def monotone_basin(F, p: float, lo: float, n_grid: int = 4001) -> float:
    """The left end ``a`` of the largest interval ``[a, p)`` (``a >= lo``) on which the map ``F`` (vectorised)
    is increasing with ``x < F(x) < p``: there the hypotheses of the two-step monotonicity lemma hold.
    ``nan`` when no such interval touches ``p`` (e.g. ``F`` decreasing at ``p``: the approach oscillates)."""
    grid = np.linspace(lo, p, n_grid)[:-1]
    Fg = F(grid)
    ok = (Fg > grid) & (Fg < p)
    inc = np.append(np.diff(Fg) > 0, True)
    good = ok & inc
    bad = np.flatnonzero(~good)
    if len(bad) and bad[-1] >= len(grid) - 2:
        return float("nan")
    return float(grid[bad[-1] + 1]) if len(bad) else float(lo)
