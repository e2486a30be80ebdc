"""Classical toy models of unstable gradient descent, in plain numpy.

* :func:`self_stabilization_map` - the two-dimensional reduction of the self-stabilization
  dynamics of Damian, Nichani & Lee (2023): ``x`` is the displacement along the top Hessian
  eigenvector, ``y`` the (rescaled) excess sharpness ``S - 2/eta`` seen along ``grad S``.
* the *uv model* of the catapult phase (Lewkowycz et al., 2020): a two-layer linear network
  ``f = u.v / sqrt(m)`` fitted to one example with ``L = f^2 / 2``, simulated both with the actual
  vectors (:func:`uv_gd`) and with the exact two-variable recurrences (:func:`uv_recurrence`).
* two-parameter "minimalist" losses of the edge of stability: ``1/4 (x^2 y^2 - 1)^2``
  (Zhu et al., 2023) and ``log cosh(x y)`` (Song & Yun, 2023), with exact gradients and Hessians.

Diverging runs are recorded (``diverged=True`` and the step), never raised.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..config import ConfigError, require_positive, require_positive_int

# --------------------------------------------------------------------------------------------
# Self-stabilization: the 2-D reduction
# --------------------------------------------------------------------------------------------

#: The four stages of the self-stabilization cycle, in order (Damian et al., 2023).
STAGE_NAMES = ("progressive sharpening", "blow-up", "self-stabilization", "return to stability")


def _check_finite(**values: float) -> None:
    for name, v in values.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise ConfigError(f"{name}={v!r} must be a finite number.")


def self_stabilization_map(
    x0: float, y0: float, eta: float, alpha: float, beta: float, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Iterate ``x_{t+1} = -(1 + eta y_t) x_t``, ``y_{t+1} = y_t + eta (alpha - beta x_t^2 / 2)``.

    Returns the arrays ``x`` and ``y`` of length ``steps + 1`` (the initial point included).
    ``alpha > 0`` is the progressive-sharpening rate, ``beta > 0`` the self-stabilization strength.
    The reduction is meaningful while ``eta |y| << 1``. Non-finite values (an orbit that escaped)
    are left in the arrays as ``inf``/``nan`` after the escape; see :func:`self_stabilization_escaped`.
    """
    _check_finite(x0=x0, y0=y0)
    require_positive("eta", eta)
    require_positive("alpha", alpha)
    require_positive("beta", beta)
    require_positive_int("steps", steps)
    x = np.empty(steps + 1)
    y = np.empty(steps + 1)
    x[0], y[0] = x0, y0
    xt, yt = float(x0), float(y0)
    half_beta = 0.5 * beta
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            xt, yt = -(1.0 + eta * yt) * xt, yt + eta * (alpha - half_beta * xt * xt)
            x[t + 1], y[t + 1] = xt, yt
    return x, y


def self_stabilization_equilibrium(alpha: float, beta: float) -> float:
    """Predicted equilibrium oscillation ``<x^2> = 2 alpha / beta`` (the fixed point of the averaged y-dynamics)."""
    require_positive("alpha", alpha)
    require_positive("beta", beta)
    return 2.0 * alpha / beta


def self_stabilization_escaped(x: np.ndarray, y: np.ndarray, eta: float) -> bool:
    """True when the orbit left the regime of the reduction (non-finite values or ``eta |y| >= 1``)."""
    return bool(not np.all(np.isfinite(x)) or not np.all(np.isfinite(y)) or np.max(eta * np.abs(y)) >= 1.0)


def time_average_x2(x: np.ndarray, burn_in: float = 0.25) -> float:
    """Time average of ``x_t^2`` after dropping the first ``burn_in`` fraction of the orbit."""
    if not 0.0 <= burn_in < 1.0:
        raise ConfigError(f"burn_in={burn_in!r} must lie in [0, 1).")
    x = np.asarray(x, dtype=float)
    return float(np.mean(x[int(burn_in * len(x)) :] ** 2))


def self_stabilization_stages(x: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Stage index 0..3 of every iterate (names in :data:`STAGE_NAMES`).

    The four stages are the four quadrants of the ``(y, x^2 - 2 alpha/beta)`` plane:
    0 progressive sharpening (``y < 0``, ``x^2 < delta^2``: ``|x|`` shrinks, ``y`` rises),
    1 blow-up (``y >= 0``, ``x^2 < delta^2``: ``|x|`` grows, ``y`` rises),
    2 self-stabilization (``y >= 0``, ``x^2 >= delta^2``: ``|x|`` grows, ``y`` falls),
    3 return to stability (``y < 0``, ``x^2 >= delta^2``: ``|x|`` shrinks, ``y`` falls).
    """
    delta2 = self_stabilization_equilibrium(alpha, beta)
    big = np.asarray(x) ** 2 >= delta2
    up = np.asarray(y) >= 0
    return np.where(~big & ~up, 0, np.where(~big & up, 1, np.where(big & up, 2, 3))).astype(int)


def stage_sequence(stages: np.ndarray, min_run: int = 2) -> list[int]:
    """The order in which an orbit visits the stages: consecutive repeats collapsed, runs shorter than
    ``min_run`` steps dropped first (a measured orbit flickers across a boundary for a step or two)."""
    st = np.asarray(stages, dtype=int)
    if st.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(st)) + 1
    runs = [(int(r[0]), len(r)) for r in np.split(st, cuts)]
    kept = [v for v, n in runs if n >= min_run]
    return [v for i, v in enumerate(kept) if i == 0 or v != kept[i - 1]]


def is_stage_cycle(seq: list[int]) -> bool:
    """True when every transition of ``seq`` goes to the next stage (0 -> 1 -> 2 -> 3 -> 0 ...)."""
    return len(seq) >= 2 and all((b - a) % 4 == 1 for a, b in zip(seq, seq[1:]))


def cycle_average_x2(x: np.ndarray, y: np.ndarray, skip_cycles: int = 1) -> float:
    """Average of ``x_t^2`` over whole cycles: from the ``skip_cycles``-th to the last upward zero crossing of ``y``.

    Averaging over complete cycles removes the bias of cutting a cycle in the middle.
    Falls back to the plain average when there are fewer than ``skip_cycles + 2`` crossings.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    s = np.sign(y)
    ups = np.flatnonzero((s[:-1] < 0) & (s[1:] >= 0)) + 1
    if len(ups) < skip_cycles + 2:
        return float(np.mean(x**2))
    return float(np.mean(x[ups[skip_cycles] : ups[-1]] ** 2))


def count_cycles(y: np.ndarray) -> int:
    """Number of upward zero crossings of ``y`` (one per edge-of-stability cycle)."""
    s = np.sign(np.asarray(y, dtype=float))
    return int(np.sum((s[:-1] < 0) & (s[1:] >= 0)))


# --------------------------------------------------------------------------------------------
# Catapult: the uv model
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class UVRun:
    """A gradient-descent run of the uv model: output ``f_t``, NTK ``lambda_t``, loss ``f_t^2/2``."""

    eta: float
    m: int
    f: np.ndarray
    lam: np.ndarray
    diverged: bool
    diverged_step: int  # -1 when the run did not diverge

    @property
    def loss(self) -> np.ndarray:
        return 0.5 * self.f**2

    @property
    def eta_lambda(self) -> np.ndarray:
        """The normalised curvature ``eta * lambda_t`` (2 is the stability threshold)."""
        return self.eta * self.lam


def uv_init(m: int, seed: int = 0, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal initial vectors ``u, v`` of width ``m`` (times ``scale``); ``lambda_0 ~ 2 scale^2``."""
    require_positive_int("m (the width)", m)
    require_positive("scale", scale)
    rng = np.random.default_rng(seed)
    return scale * rng.standard_normal(m), scale * rng.standard_normal(m)


def uv_output(u: np.ndarray, v: np.ndarray) -> float:
    """Network output ``f = u.v / sqrt(m)`` on the single input ``x = 1``."""
    return float(np.dot(u, v) / math.sqrt(len(u)))


def uv_ntk(u: np.ndarray, v: np.ndarray) -> float:
    """Neural tangent kernel ``lambda = (|u|^2 + |v|^2) / m``, the Hessian's top eigenvalue at a minimum."""
    return float((np.dot(u, u) + np.dot(v, v)) / len(u))


def _check_uv(eta: float, steps: int, blowup: float) -> None:
    require_positive("eta", eta)
    require_positive_int("steps", steps)
    require_positive("blowup", blowup)


def uv_gd(u0: np.ndarray, v0: np.ndarray, eta: float, steps: int, blowup: float = 1e8) -> UVRun:
    """Gradient descent on ``L = f^2/2`` with the actual vectors (target ``y = 0``).

    ``u <- u - eta f v / sqrt(m)``, ``v <- v - eta f u / sqrt(m)``. A run whose ``|f|`` exceeds
    ``blowup`` (or becomes non-finite) stops and is recorded as diverged.
    """
    _check_uv(eta, steps, blowup)
    u, v = np.array(u0, dtype=float), np.array(v0, dtype=float)
    if u.shape != v.shape or u.ndim != 1:
        raise ConfigError(f"u and v must be vectors of one length, got shapes {u.shape} and {v.shape}.")
    root_m = math.sqrt(len(u))
    fs, lams = [uv_output(u, v)], [uv_ntk(u, v)]
    diverged, div_step = False, -1
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            f = fs[-1]
            u, v = u - eta * f * v / root_m, v - eta * f * u / root_m
            fs.append(uv_output(u, v))
            lams.append(uv_ntk(u, v))
            if not (math.isfinite(fs[-1]) and abs(fs[-1]) <= blowup and math.isfinite(lams[-1])):
                diverged, div_step = True, t + 1
                break
    return UVRun(eta, len(u), np.asarray(fs), np.asarray(lams), diverged, div_step)


def uv_recurrence(f0: float, lam0: float, eta: float, m: int, steps: int, blowup: float = 1e8) -> UVRun:
    """The exact closed recurrences of the uv model (our derivation, see the catapult chapter):

    ``f_{t+1} = f_t (1 - eta lambda_t + eta^2 f_t^2 / m)``,
    ``lambda_{t+1} = lambda_t + (eta f_t^2 / m)(eta lambda_t - 4)``.
    """
    _check_uv(eta, steps, blowup)
    require_positive_int("m (the width)", m)
    _check_finite(f0=f0, lam0=lam0)
    fs, lams = [float(f0)], [float(lam0)]
    diverged, div_step = False, -1
    for t in range(steps):
        f, lam = fs[-1], lams[-1]
        f2m = f * f / m
        fs.append(f * (1.0 - eta * lam + eta * eta * f2m))
        lams.append(lam + eta * f2m * (eta * lam - 4.0))
        if not (math.isfinite(fs[-1]) and abs(fs[-1]) <= blowup and math.isfinite(lams[-1])):
            diverged, div_step = True, t + 1
            break
    return UVRun(eta, m, np.asarray(fs), np.asarray(lams), diverged, div_step)


def catapult_phase(eta_lambda0: float) -> str:
    """Predicted phase of the uv model for large width: ``lazy`` (< 2), ``catapult`` (2..4), ``divergent`` (> 4)."""
    _check_finite(eta_lambda0=eta_lambda0)
    if eta_lambda0 < 2.0:
        return "lazy"
    if eta_lambda0 <= 4.0:
        return "catapult"
    return "divergent"


def catapult_sweep(
    eta_lambda0: np.ndarray, m: int = 1000, steps: int = 1000, seed: int = 0, tol: float = 1e-6
) -> dict[str, np.ndarray]:
    """Phase diagram of the uv model over the normalised step size ``eta * lambda_0``.

    For each value, runs :func:`uv_gd` from one initialisation and returns ``max_loss_ratio``
    (largest loss over initial loss), ``final_eta_lambda`` (``eta lambda`` at the end),
    ``converged`` (final loss below ``tol``), ``diverged`` and ``diverged_step``.
    """
    ratios = np.asarray(eta_lambda0, dtype=float)
    if ratios.ndim != 1 or len(ratios) == 0 or np.any(ratios <= 0):
        raise ConfigError("eta_lambda0 must be a non-empty 1-D array of positive numbers.")
    u0, v0 = uv_init(m, seed)
    lam0 = uv_ntk(u0, v0)
    out = {k: np.zeros(len(ratios)) for k in ("max_loss_ratio", "final_eta_lambda", "final_loss")}
    conv = np.zeros(len(ratios), bool)
    div = np.zeros(len(ratios), bool)
    div_step = -np.ones(len(ratios), int)
    for i, r in enumerate(ratios):
        run = uv_gd(u0, v0, r / lam0, steps)
        loss = run.loss
        out["max_loss_ratio"][i] = np.max(loss) / loss[0]
        out["final_eta_lambda"][i] = run.eta_lambda[-1] if not run.diverged else np.nan
        out["final_loss"][i] = loss[-1] if not run.diverged else np.inf
        div[i], div_step[i] = run.diverged, run.diverged_step
        conv[i] = (not run.diverged) and loss[-1] < tol
    return {
        "eta_lambda0": ratios,
        "lambda0": np.asarray(lam0),
        "converged": conv,
        "diverged": div,
        "diverged_step": div_step,
        **out,
    }


# --------------------------------------------------------------------------------------------
# Minimalist two-parameter models
# --------------------------------------------------------------------------------------------

TWO_PARAM_LOSSES = ("zhu", "logcosh")


def two_param_loss(name: str, x: float, y: float) -> float:
    """``zhu``: ``1/4 (x^2 y^2 - 1)^2`` (Zhu et al.); ``logcosh``: ``log cosh(x y)`` (Song & Yun)."""
    if name == "zhu":
        return 0.25 * (x * x * y * y - 1.0) ** 2
    if name == "logcosh":
        z = abs(x * y)
        return z + math.log1p(math.exp(-2.0 * z)) - math.log(2.0)  # stable log cosh
    raise ConfigError(f"loss {name!r} unknown; choose one of {TWO_PARAM_LOSSES}.")


def _dphi(name: str, z: float) -> tuple[float, float]:
    """First and second derivative of the loss as a function of ``z = x y``."""
    if name == "zhu":  # phi(z) = (z^2 - 1)^2 / 4
        return z * (z * z - 1.0), 3.0 * z * z - 1.0
    if name == "logcosh":
        th = math.tanh(z)
        return th, 1.0 - th * th
    raise ConfigError(f"loss {name!r} unknown; choose one of {TWO_PARAM_LOSSES}.")


def two_param_grad_hessian(name: str, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact gradient and Hessian of :func:`two_param_loss` at ``(x, y)``."""
    d1, d2 = _dphi(name, x * y)
    g = np.array([d1 * y, d1 * x])
    h = np.array([[d2 * y * y, d2 * x * y + d1], [d2 * x * y + d1, d2 * x * x]])
    return g, h


def two_param_gd(name: str, x0: float, y0: float, eta: float, steps: int, blowup: float = 1e6) -> dict[str, np.ndarray]:
    """GD on a two-parameter loss; returns ``x``, ``y``, ``loss``, ``sharpness`` per step and ``diverged``."""
    require_positive("eta", eta)
    require_positive_int("steps", steps)
    _check_finite(x0=x0, y0=y0)
    xs, ys, losses, sharp = [float(x0)], [float(y0)], [], []
    diverged = False
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps + 1):
            g, h = two_param_grad_hessian(name, xs[-1], ys[-1])
            losses.append(two_param_loss(name, xs[-1], ys[-1]))
            sharp.append(float(np.linalg.eigvalsh(h)[-1]))
            if len(xs) == steps + 1:
                break
            xn, yn = xs[-1] - eta * g[0], ys[-1] - eta * g[1]
            if not (math.isfinite(xn) and math.isfinite(yn) and max(abs(xn), abs(yn)) <= blowup):
                diverged = True
                break
            xs.append(xn)
            ys.append(yn)
    return {
        "x": np.asarray(xs),
        "y": np.asarray(ys),
        "loss": np.asarray(losses),
        "sharpness": np.asarray(sharp),
        "diverged": np.asarray(diverged),
    }


# --------------------------------------------------------------------------------------------
# A 1-D loss whose curvature falls away from the minimum: log cosh
# --------------------------------------------------------------------------------------------


def logcosh_gd(x0: float, eta: float, steps: int) -> np.ndarray:
    """GD iterates ``x_0..x_T`` on ``L(x) = log cosh x`` (curvature ``1/cosh^2 x``, equal to 1 at the minimum):
    ``x <- x - eta tanh x``."""
    _check_finite(x0=x0)
    require_positive("eta", eta)
    require_positive_int("steps", steps)
    x = np.empty(steps + 1)
    x[0] = x0
    for t in range(steps):
        x[t + 1] = x[t] - eta * math.tanh(x[t])
    return x


def logcosh_two_cycle(eta: float) -> float:
    """Amplitude ``x* > 0`` of the period-2 orbit ``+-x*`` of GD on ``log cosh`` (the root of ``2x = eta tanh x``);
    it exists iff ``eta > 2`` (``eta lambda > 2`` with ``lambda = 1`` at the minimum), else 0."""
    require_positive("eta", eta)
    if eta <= 2.0:
        return 0.0
    lo, hi = 1e-12, eta / 2.0 + 1.0  # g(x) = eta tanh x - 2x: g(lo) > 0 > g(hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if eta * math.tanh(mid) - 2 * mid > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def logcosh_two_cycle_multiplier(eta: float) -> float:
    """Derivative of the two-step map at the period-2 orbit, ``(1 - eta / cosh^2 x*)^2``; below 1 means attracting."""
    xs = logcosh_two_cycle(eta)
    return (1.0 - eta / math.cosh(xs) ** 2) ** 2
