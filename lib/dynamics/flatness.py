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
system was not available to us; :func:`instabilities.toys.self_stabilization_map` is the classical
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
    return 1.0 - eta * gn_sharpness(z, d) + eta ** 2 * np.asarray(r, float) * z


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
    v = 4.0 / eta ** 2 - 4.0 * y ** 2
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
