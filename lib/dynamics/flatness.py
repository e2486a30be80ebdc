"""The coupled instability dynamics of the two-layer scalar network, in reduced variables (our derivation).

For ``L(theta) = (theta0 theta1 - y)^2 / 2`` gradient descent is *exactly* a two-dimensional map in

* the residual ``r = z - y`` (``z = theta0 theta1``): the oscillation amplitude in output space,
* the imbalance ``d = theta0^2 - theta1^2`` (conserved by gradient flow),

with the Gauss-Newton sharpness ``s = theta0^2 + theta1^2 = sqrt(d^2 + 4 z^2)`` as a derived variable::

    r_{t+1} = r_t (1 - eta s_t + eta^2 r_t z_t)        # instability: |r| grows when eta s > 2
    d_{t+1} = d_t (1 - eta^2 r_t^2)                      # oscillation shrinks the imbalance
    s_{t+1} = sqrt(d_{t+1}^2 + 4 z_{t+1}^2)              # smaller imbalance, flatter point

A minimiser reached with imbalance ``d`` has sharpness ``sqrt(d^2 + 4 y^2)``, so the product
``prod_t |1 - eta^2 r_t^2|`` measures how much flatter GD ends than gradient flow. We use this map as our
reconstruction of a "coupled instability dynamics" in the spirit of Wang & Roberts (2025), whose own
system was not available to us; :func:`instabilities.dynamics.toys.self_stabilization_map` is the classical
counterpart (Damian et al., 2023).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..config import ConfigError, require_positive, require_positive_int


def _finite(name: str, v: float) -> None:
    if not (isinstance(v, (int, float)) and math.isfinite(v)):
        raise ConfigError(f"{name}={v!r} must be a finite number.")


def reduce_state(theta: np.ndarray, y: float) -> tuple[np.ndarray, np.ndarray]:
    """``(r, d) = (theta0 theta1 - y, theta0^2 - theta1^2)`` of parameters ``theta[..., 2]``."""
    t = np.asarray(theta, dtype=float)
    if t.shape[-1:] != (2,):
        raise ConfigError(f"theta must have a last axis of length 2, got shape {t.shape}.")
    return t[..., 0] * t[..., 1] - y, t[..., 0] ** 2 - t[..., 1] ** 2


def gn_sharpness(z: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Gauss-Newton sharpness ``s = theta0^2 + theta1^2 = sqrt(d^2 + 4 z^2)``."""
    return np.sqrt(np.asarray(d, float) ** 2 + 4.0 * np.asarray(z, float) ** 2)


def exact_sharpness(r: np.ndarray, d: np.ndarray, y: float) -> np.ndarray:
    """Largest Hessian eigenvalue from reduced variables: ``s/2 + sqrt(d^2/4 + (z + r)^2)``."""
    z = np.asarray(r, float) + y
    return 0.5 * gn_sharpness(z, d) + np.sqrt(0.25 * np.asarray(d, float) ** 2 + (z + r) ** 2)


def amplitude_factor(r: np.ndarray, d: np.ndarray, eta: float, y: float) -> np.ndarray:
    """Exact ``r_{t+1} / r_t = 1 - eta s + eta^2 r z``."""
    z = np.asarray(r, float) + y
    return 1.0 - eta * gn_sharpness(z, d) + eta**2 * np.asarray(r, float) * z


def coupled_step(r: np.ndarray, d: np.ndarray, eta: float, y: float) -> tuple[np.ndarray, np.ndarray]:
    """One step of the reduced map (exactly one GD step of the two-layer scalar network)."""
    r, d = np.asarray(r, float), np.asarray(d, float)
    return r * amplitude_factor(r, d, eta, y), d * (1.0 - (eta * r) ** 2)


def minimiser_sharpness(d: np.ndarray, y: float) -> np.ndarray:
    """Sharpness ``sqrt(d^2 + 4 y^2)`` of the minimiser (``z = y``) with imbalance ``d``."""
    return gn_sharpness(y, d)


def stable_imbalance_bound(eta: float, y: float) -> float:
    """Largest ``|d|`` of a minimiser with ``eta S <= 2``: ``sqrt(4/eta^2 - 4 y^2)`` (``nan`` if ``eta |y| > 1``:
    then no minimiser is linearly stable and GD cannot converge)."""
    require_positive("eta", eta)
    v = 4.0 / eta**2 - 4.0 * y**2
    return math.sqrt(v) if v >= 0 else float("nan")


def flattening_factor(r: np.ndarray, eta: float) -> float:
    """``prod_t |1 - eta^2 r_t^2|`` over a residual sequence: ``|d_T| / |d_0|``."""
    r = np.asarray(r, float)
    return float(np.prod(np.abs(1.0 - (eta * r[np.isfinite(r)]) ** 2)))


@dataclasses.dataclass
class CoupledRun:
    """A trajectory of the reduced map; arrays of length ``steps + 1`` (``nan`` after a divergence)."""

    eta: float
    y: float
    r: np.ndarray
    d: np.ndarray
    diverged: bool
    diverged_step: int

    @property
    def z(self) -> np.ndarray:
        return self.r + self.y

    @property
    def gn_sharpness(self) -> np.ndarray:
        return gn_sharpness(self.z, self.d)

    @property
    def sharpness(self) -> np.ndarray:
        return exact_sharpness(self.r, self.d, self.y)

    @property
    def beta(self) -> np.ndarray:
        """Imbalance ratio ``beta = |d| / (4 |z|)`` (the cotangent of twice the eigenvector angle, for ``l=z^2``)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(self.d) / (4.0 * np.abs(self.z))

    @property
    def unstable(self) -> np.ndarray:
        """Steps with ``eta S(theta_t) > 2``."""
        with np.errstate(invalid="ignore"):
            return self.eta * self.sharpness > 2.0

    @property
    def predicted_final_sharpness(self) -> float:
        """``sqrt(d_T^2 + 4 y^2)``: the sharpness of the minimiser GD settles on, given its final imbalance."""
        return float(minimiser_sharpness(self.d[-1], self.y))

    @property
    def gradient_flow_sharpness(self) -> float:
        """Sharpness of the minimiser gradient flow reaches from the same start (``d`` conserved)."""
        return float(minimiser_sharpness(self.d[0], self.y))


def coupled_map(r0: float, d0: float, eta: float, y: float, steps: int, blowup: float = 1e8) -> CoupledRun:
    """Iterate :func:`coupled_step` from ``(r0, d0)``; divergence (``|r| > blowup`` or non-finite) is recorded."""
    _finite("r0", r0)
    _finite("d0", d0)
    _finite("y", y)
    require_positive("eta", eta)
    require_positive_int("steps", steps)
    r = np.full(steps + 1, np.nan)
    d = np.full(steps + 1, np.nan)
    r[0], d[0] = r0, d0
    rt, dt = float(r0), float(d0)
    diverged, dstep = False, -1
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            rt, dt = coupled_step(rt, dt, eta, y)
            rt, dt = float(rt), float(dt)
            if not (math.isfinite(rt) and math.isfinite(dt)) or abs(rt) > blowup:
                diverged, dstep = True, t + 1
                break
            r[t + 1], d[t + 1] = rt, dt
    return CoupledRun(float(eta), float(y), r, d, diverged, dstep)


def coupled_map_from_theta(theta0: tuple[float, float], eta: float, y: float, steps: int) -> CoupledRun:
    """:func:`coupled_map` started from parameters ``theta0 = (theta0, theta1)``."""
    r0, d0 = reduce_state(np.asarray(theta0, float), y)
    return coupled_map(float(r0), float(d0), eta, y, steps)


def eta_sweep(theta0: tuple[float, float], etas: np.ndarray, y: float, steps: int) -> dict[str, np.ndarray]:
    """Per step size: final sharpness, gradient-flow sharpness, flattening factor, unstable steps, divergence."""
    runs = [coupled_map_from_theta(theta0, float(e), y, steps) for e in etas]
    return {
        "etas": np.asarray(etas, float),
        "final_sharpness": np.array([np.nan if r.diverged else r.sharpness[-1] for r in runs]),
        "predicted_final_sharpness": np.array([np.nan if r.diverged else r.predicted_final_sharpness for r in runs]),
        "gradient_flow_sharpness": np.array([r.gradient_flow_sharpness for r in runs]),
        "flattening_factor": np.array([np.nan if r.diverged else flattening_factor(r.r, r.eta) for r in runs]),
        "unstable_steps": np.array([int(np.nansum(r.unstable)) for r in runs]),
        "diverged": np.array([r.diverged for r in runs]),
    }


# -- the flatness dynamical system of Wang & Roberts (2026, §5) ----------------------------------------
#
# X_t = log U_t is the log of a latent curvature state (the sharpness of the valley GD is in); during an
# instability it moves by X_{t+1} = X_t + xi_t alpha(X_t) with random signs xi_t in {-1, +1} and a
# nondecreasing step alpha > 0 (the recovered formulas of the paper). The functions below simulate it and
# evaluate the bounds of our proofs in the chapter ``flatness_bias``: the potential
# Phi(x) = int_0^x dz / alpha(z) turns the walk into one dominated by the simple random walk S_t.


@dataclasses.dataclass(frozen=True)
class SigmoidDrift:
    """``alpha(x) = scale / (1 + exp(-beta x))`` (the drift of the paper's App. F.11 simulation, ``scale=1``).

    Nondecreasing, ``0 < alpha < scale``; its potential ``Phi(x) = int_0^x dz / alpha(z)`` has the closed
    form ``(x + (1 - exp(-beta x)) / beta) / scale``."""

    beta: float = 5.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        require_positive("beta", self.beta)
        require_positive("scale", self.scale)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return self.scale / (1.0 + np.exp(-self.beta * np.asarray(x, float)))

    def potential(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, float)
        with np.errstate(over="ignore"):
            return (x + (1.0 - np.exp(-self.beta * x)) / self.beta) / self.scale

    def inverse_potential(self, y: np.ndarray, lo: float = -60.0, hi: float = 200.0, iters: int = 200) -> np.ndarray:
        """``Phi^{-1}(y)`` by bisection (``Phi`` is strictly increasing); values outside ``Phi([lo, hi])`` clip."""
        y = np.asarray(y, float)
        a, b = np.full_like(y, lo), np.full_like(y, hi)
        for _ in range(iters):
            m = 0.5 * (a + b)
            below = self.potential(m) < y
            a, b = np.where(below, m, a), np.where(below, b, m)
        return 0.5 * (a + b)


@dataclasses.dataclass(frozen=True)
class LinearDrift:
    """``alpha(x) = c1 x`` on ``x > 0`` (``0 < c1 < 1``): the walk is multiplicative,
    ``X_{t+1} = X_t (1 + c1 xi_t)``, and the bounds of the strict-drift lemma hold with equality."""

    c1: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 < self.c1 < 1.0:
            raise ConfigError(f"c1={self.c1!r} must lie in (0, 1) so that X stays positive.")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.c1 * np.asarray(x, float)

    def potential(self, x: np.ndarray) -> np.ndarray:
        return np.log(np.asarray(x, float)) / self.c1

    def inverse_potential(self, y: np.ndarray) -> np.ndarray:
        return np.exp(self.c1 * np.asarray(y, float))


def simulate_log_curvature(alpha, x0: float, steps: int, n_paths: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Paths of ``X_{t+1} = X_t + xi_t alpha(X_t)`` with independent signs ``xi_t = +-1`` (probability 1/2).

    Returns ``(X, S)``, both ``(n_paths, steps + 1)``: the states and the sign sums ``S_t = sum_{i<t} xi_i``."""
    _finite("x0", x0)
    require_positive_int("steps", steps)
    require_positive_int("n_paths", n_paths)
    rng = np.random.default_rng(seed)
    xi = rng.choice(np.array([-1.0, 1.0]), size=(n_paths, steps))
    X = np.empty((n_paths, steps + 1))
    X[:, 0] = x0
    for t in range(steps):
        X[:, t + 1] = X[:, t] + xi[:, t] * alpha(X[:, t])
    S = np.concatenate([np.zeros((n_paths, 1)), np.cumsum(xi, axis=1)], axis=1)
    return X, S


def two_step_outcomes(alpha, x: float) -> dict[str, float]:
    """The four equally likely values of ``X_{t+2}`` from ``X_t = x`` (sign pairs ``++, +-, -+, --``)."""
    a = float(alpha(np.asarray(x)))
    up, down = x + a, x - a
    return {
        "++": up + float(alpha(np.asarray(up))),
        "+-": up - float(alpha(np.asarray(up))),
        "-+": down + float(alpha(np.asarray(down))),
        "--": down - float(alpha(np.asarray(down))),
    }


def random_walk_quantile(t: np.ndarray, q: float) -> np.ndarray:
    """The ``q``-quantile of the simple random walk ``S_t = 2 B - t``, ``B ~ Binomial(t, 1/2)`` (exact)."""
    from scipy.stats import binom

    if not 0.0 < q < 1.0:
        raise ConfigError(f"q={q!r} must lie in (0, 1).")
    t = np.asarray(t)
    return 2.0 * binom.ppf(q, t, 0.5) - t


def quantile_bound(drift, x0: float, t: np.ndarray, q: float) -> np.ndarray:
    """Upper bound on the ``q``-quantile of ``X_t`` from a point mass at ``x0``: ``Phi^{-1}(Phi(x0) + s_q(t))``
    with ``s_q(t)`` the ``q``-quantile of ``S_t`` (the domination ``Phi(X_t) <= Phi(x0) + S_t``)."""
    return drift.inverse_potential(drift.potential(np.asarray(x0, float)) + random_walk_quantile(t, q))
