"""Gradient descent (with and without momentum) on quadratics: trajectories, closed forms, thresholds.

On :math:`L(x)=\\tfrac12 x^\\top A x` gradient descent is the linear map
:math:`x_{t+1}=(I-\\eta A)x_t`, so along the eigenvector :math:`u_i` of :math:`A` the error is
multiplied by :math:`1-\\eta\\lambda_i` every step. Everything in this module is exact linear
algebra in float64 and serves as ground truth for the book's first chapter:

* :func:`trajectory` iterates GD / heavy ball / Nesterov on any symmetric ``A``, vectorised over
  step sizes; :func:`gd_closed_form` gives the GD iterates from the eigendecomposition;
* :func:`iteration_matrix`, :func:`spectral_radius`, :func:`stability_threshold` and
  :func:`threshold_by_bisection` give the stability of the three methods on one eigen-direction;
* :func:`classify` names the regime of one direction: converge / oscillate / neutral / diverge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..config import ConfigError

METHODS = ("gd", "heavy_ball", "nesterov")
REGIMES = ("converge", "oscillate", "neutral", "diverge")

ArrayLike = float | Sequence[float] | np.ndarray


# --------------------------------------------------------------------------- validation
def check_eta(eta: ArrayLike) -> np.ndarray:
    """Step size(s) as a float64 array; every entry must be finite and > 0."""
    arr = np.asarray(eta, dtype=np.float64)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ConfigError(
            f"step size eta={eta!r} must be finite and > 0 (e.g. eta=0.1); "
            "gradient descent with eta <= 0 does not descend."
        )
    return arr


def check_beta(beta: float) -> float:
    """Momentum coefficient; must lie in [0, 1)."""
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and 0.0 <= beta < 1.0):
        raise ConfigError(f"momentum beta={beta!r} must lie in [0, 1) (e.g. beta=0.9).")
    return float(beta)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is unknown; choose one of {METHODS}.")
    return method


def check_symmetric(A: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """``A`` as a float64 symmetric matrix (a 1-D array is read as the diagonal)."""
    A = np.asarray(A, dtype=np.float64)
    if A.ndim == 1:
        A = np.diag(A)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ConfigError(f"A must be a square matrix (or a vector of diagonal entries), got shape {A.shape}.")
    if not np.all(np.isfinite(A)):
        raise ConfigError("A contains NaN or inf; pass a finite matrix.")
    if not np.allclose(A, A.T, rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(A).max(initial=0.0)))):
        raise ConfigError("A must be symmetric (the Hessian of a quadratic is); use (A + A.T) / 2.")
    return A


# --------------------------------------------------------------------------- losses and trajectories
def quadratic_loss(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """:math:`\\tfrac12 x^\\top A x` for ``x`` of shape ``(..., d)`` (vectorised over leading axes)."""
    A = check_symmetric(A)
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * np.einsum("...i,ij,...j->...", x, A, x)


def trajectory(
    A: np.ndarray | Sequence[float],
    x0: Sequence[float] | np.ndarray,
    eta: ArrayLike,
    steps: int,
    method: str = "gd",
    beta: float = 0.0,
) -> np.ndarray:
    """Iterates ``x_0, ..., x_steps`` of ``method`` on :math:`\\tfrac12 x^\\top A x`.

    * ``gd``: :math:`x_{t+1} = x_t - \\eta A x_t`;
    * ``heavy_ball``: :math:`x_{t+1} = x_t - \\eta A x_t + \\beta (x_t - x_{t-1})`;
    * ``nesterov``: :math:`y_t = x_t + \\beta(x_t - x_{t-1})`, :math:`x_{t+1} = y_t - \\eta A y_t`;

    both momentum methods start with :math:`x_{-1}=x_0`. ``eta`` may be a scalar (result of shape
    ``(steps+1, d)``) or a 1-D array of step sizes (result ``(len(eta), steps+1, d)``). Diverging
    iterates are kept (they overflow to ``inf`` rather than raising).
    """
    A = check_symmetric(A)
    check_method(method)
    beta = check_beta(beta) if method != "gd" else 0.0
    etas = check_eta(eta)
    if not (isinstance(steps, (int, np.integer)) and steps >= 0):
        raise ConfigError(f"steps={steps!r} must be an integer >= 0.")
    x0 = np.asarray(x0, dtype=np.float64)
    if x0.shape != (A.shape[0],):
        raise ConfigError(f"x0 has shape {x0.shape}; it must be a vector of length {A.shape[0]} (A is {A.shape}).")
    scalar = etas.ndim == 0
    e = etas.reshape(-1, 1)
    out = np.empty((e.shape[0], steps + 1, A.shape[0]))
    x = np.repeat(x0[None, :], e.shape[0], axis=0)
    x_prev = x.copy()
    out[:, 0] = x
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            if method == "gd":
                x_new = x - e * (x @ A)
            elif method == "heavy_ball":
                x_new = x - e * (x @ A) + beta * (x - x_prev)
            else:
                y = x + beta * (x - x_prev)
                x_new = y - e * (y @ A)
            x_prev, x = x, x_new
            out[:, t + 1] = x
    return out[0] if scalar else out


def gd_closed_form(
    A: np.ndarray | Sequence[float], x0: Sequence[float] | np.ndarray, eta: float, t: int | Sequence[int] | np.ndarray
) -> np.ndarray:
    """GD iterate(s) :math:`x_t = U\\,\\mathrm{diag}((1-\\eta\\lambda_i)^t)\\,U^\\top x_0` from the eigendecomposition.

    ``t`` may be an integer (result ``(d,)``) or an array of step indices (result ``(len(t), d)``).
    """
    A = check_symmetric(A)
    eta = float(check_eta(eta))
    lam, U = np.linalg.eigh(A)
    coeff = U.T @ np.asarray(x0, dtype=np.float64)
    ts = np.asarray(t)
    with np.errstate(over="ignore", invalid="ignore"):
        factors = np.power.outer(1.0 - eta * lam, ts).T  # (len(t), d) or (d,)
        return (factors * coeff) @ U.T


# --------------------------------------------------------------------------- stability of one direction
def iteration_matrix(method: str, eta: float, lam: float, beta: float = 0.0) -> np.ndarray:
    """Matrix of the linear map on one eigen-direction with curvature ``lam``.

    GD: the 1x1 matrix ``[[1 - eta*lam]]``. Momentum methods act on the state ``(x_t, x_{t-1})``:
    heavy ball ``[[1 + beta - eta*lam, -beta], [1, 0]]``, Nesterov
    ``[[(1 - eta*lam)(1 + beta), -(1 - eta*lam) beta], [1, 0]]``.
    """
    check_method(method)
    eta = float(check_eta(eta))
    h = eta * float(lam)
    if method == "gd":
        return np.array([[1.0 - h]])
    beta = check_beta(beta)
    if method == "heavy_ball":
        return np.array([[1.0 + beta - h, -beta], [1.0, 0.0]])
    return np.array([[(1.0 - h) * (1.0 + beta), -(1.0 - h) * beta], [1.0, 0.0]])


def spectral_radius(method: str, eta: ArrayLike, lam: ArrayLike, beta: float = 0.0) -> np.ndarray:
    """Largest modulus of the eigenvalues of :func:`iteration_matrix`, vectorised over ``eta`` and ``lam``.

    The two eigenvalues of the 2x2 companion matrix ``[[a, b], [1, 0]]`` are the roots of
    :math:`z^2 - a z - b`; they are computed in closed form with a complex square root.
    """
    check_method(method)
    h = check_eta(eta) * np.asarray(lam, dtype=np.float64)
    if method == "gd":
        return np.abs(1.0 - h)
    beta = check_beta(beta)
    if method == "heavy_ball":
        a, b = 1.0 + beta - h, -beta * np.ones_like(h)
    else:
        a, b = (1.0 - h) * (1.0 + beta), -(1.0 - h) * beta
    disc = np.sqrt((a * a + 4.0 * b).astype(np.complex128))
    return np.maximum(np.abs((a + disc) / 2.0), np.abs((a - disc) / 2.0))


def stability_threshold(method: str = "gd", beta: float = 0.0) -> float:
    """The value of :math:`\\eta\\lambda` below which ``method`` is stable on a direction with :math:`\\lambda>0`.

    GD: 2; heavy ball: :math:`2+2\\beta`; Nesterov: :math:`(2+2\\beta)/(1+2\\beta)`.
    Divide by :math:`\\lambda` for the largest stable step size, or by :math:`\\eta` for the
    largest curvature a step size tolerates (:math:`2/\\eta` for GD).
    """
    check_method(method)
    if method == "gd":
        return 2.0
    beta = check_beta(beta)
    return 2.0 + 2.0 * beta if method == "heavy_ball" else (2.0 + 2.0 * beta) / (1.0 + 2.0 * beta)


def threshold_by_bisection(method: str = "gd", beta: float = 0.0, lam: float = 1.0, tol: float = 1e-12) -> float:
    """The smallest step size :math:`\\eta` with spectral radius >= 1 on curvature ``lam``, times ``lam``.

    Found numerically by bisection on :func:`spectral_radius` (independent of the closed form
    in :func:`stability_threshold`, which it checks).
    """
    if not (math.isfinite(lam) and lam > 0):
        raise ConfigError(f"lam={lam!r} must be > 0: on a direction with lam <= 0 no step size is stable.")
    stable = lambda eta: bool(spectral_radius(method, eta, lam, beta) < 1.0)  # noqa: E731
    lo = 1e-9 / lam
    if not stable(lo):
        raise ConfigError(f"{method} is unstable even for tiny steps with beta={beta}; use beta in [0, 1).")
    hi = 1.0 / lam
    while stable(hi):
        hi *= 2.0
    while hi - lo > tol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if stable(mid) else (lo, mid)
    return 0.5 * (lo + hi) * lam


def classify(eta: ArrayLike, lam: ArrayLike, atol: float = 1e-12) -> np.ndarray:
    """Regime of GD on one direction, from the factor :math:`r = 1-\\eta\\lambda`.

    ``converge`` (:math:`0 \\le r < 1`: monotone decay), ``oscillate`` (:math:`-1 < r < 0`: decay
    with alternating sign), ``neutral`` (:math:`|r| = 1`: :math:`\\eta\\lambda=2`, a period-2 orbit,
    or :math:`\\lambda=0`), ``diverge`` (:math:`|r| > 1`: :math:`\\eta\\lambda > 2` or :math:`\\lambda < 0`).
    Returns an array of strings (a 0-d array for scalar input).
    """
    r = 1.0 - check_eta(eta) * np.asarray(lam, dtype=np.float64)
    out = np.where(
        np.abs(np.abs(r) - 1.0) <= atol,
        "neutral",
        np.where(np.abs(r) > 1.0, "diverge", np.where(r >= 0.0, "converge", "oscillate")),
    )
    return out.astype("<U9")


# --------------------------------------------------------------------------- descent lemma
def guaranteed_decrease(eta: ArrayLike, smoothness: float) -> np.ndarray:
    """The descent-lemma coefficient :math:`c(\\eta) = \\eta(1-\\eta\\beta/2)` for a :math:`\\beta`-smooth loss.

    One GD step satisfies :math:`L(\\theta-\\eta\\nabla L) \\le L(\\theta) - c(\\eta)\\lVert\\nabla L\\rVert^2`;
    the guarantee is a decrease iff :math:`c > 0`, i.e. :math:`\\eta < 2/\\beta`, and it is largest at
    :math:`\\eta = 1/\\beta`. On :math:`\\tfrac12 \\beta x^2` the bound holds with equality.
    """
    if not (math.isfinite(smoothness) and smoothness > 0):
        raise ConfigError(f"smoothness={smoothness!r} must be > 0 (the Lipschitz constant of the gradient).")
    eta = check_eta(eta)
    return eta * (1.0 - eta * smoothness / 2.0)
