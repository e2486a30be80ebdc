"""The central flow of gradient descent (after Cohen, Damian, Talwalkar, Kolter & Lee, 2025; our implementation).

At the edge of stability GD oscillates along the top Hessian eigenvectors. The central flow is a
differential equation for the *time-averaged* iterate ``w(t)`` (time in steps)::

    dw/dt = -eta [ grad L(w) + 1/2 grad <H(w), Sigma(t)> ],

where ``Sigma(t)`` (the covariance of the oscillation) is supported on the eigenvectors whose
eigenvalue has reached ``2/eta`` and is the smallest positive semidefinite matrix that keeps them from
rising above ``2/eta``. With one critical eigenvector ``u`` it is ``Sigma = sigma^2 u u^T`` with
``sigma^2 = max(0, 2 <-grad L, grad S> / ||grad S||^2)`` (so that ``dS/dt = 0``). In general, with the
critical eigenvectors ``U = [u_1..u_k]`` and ``Sigma = U X U^T``, one Euler substep of length ``dt``
chooses ``X`` by the complementarity problem

    X >= 0,   A + B[X] >= 0,   <X, A + B[X]> = 0,
    A = (2/eta) I - (diag(lambda) + dt dH/dt|_stable),   B[X] = dt * (eta/2) * G[X],

with ``G[X]_{ij} = sum_ab X_ab <grad(u_i^T H u_j), grad(u_a^T H u_b)>``, i.e. the convex problem
``min_{X >= 0} 1/2 <X, B[X]> + <A, X>`` (solved here by projected gradient on the PSD cone; closed
form for ``k = 1``). The predicted time-averaged loss is ``L(w) + tr(Sigma)/eta`` (the oscillation adds
``1/2 sum_i lambda_i sigma_i^2`` with ``lambda_i = 2/eta``).

The gradients of ``u_i^T H(w) u_j`` (third derivatives, eigenvectors held fixed) are computed by
reverse-mode autograd three levels deep: write the loss by hand (no ``F.mse_loss``), and avoid
``nn.LayerNorm`` (whose third derivative PyTorch gets wrong, as the central-flow authors report).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from .. import curvature
from ..config import ConfigError, require_positive, require_positive_int
from ..curvature.operator import differentiable_hvps
from ..losses import Objective

__all__ = ["CentralFlowResult", "central_flow", "solve_psd_complementarity", "sharpness_gradients"]


@dataclasses.dataclass
class CentralFlowResult:
    """The central flow at integer times ``0, record_every, ...`` (in steps of GD)."""

    time: np.ndarray
    loss: np.ndarray  # L(w(t))
    predicted_loss: np.ndarray  # L(w(t)) + tr(Sigma)/eta: the predicted time average of GD's loss
    eigs: np.ndarray  # (len(time), n_eigs) top Hessian eigenvalues at w(t)
    sigma2: np.ndarray  # tr(Sigma(t)), the predicted mean squared oscillation
    n_critical: np.ndarray  # number of eigenvalues at 2/eta
    thetas: torch.Tensor  # (len(time), dim)
    n_substeps: int
    diverged: bool = False


def solve_psd_complementarity(A: np.ndarray, B: np.ndarray, iters: int = 5000, tol: float = 1e-13) -> np.ndarray:
    """``argmin_{X PSD} 1/2 <X, B[X]> + <A, X>`` for symmetric ``A`` (k, k) and a PSD operator ``B`` given as a
    (k, k, k, k) array (``B[X]_{ij} = sum_ab B[i,j,a,b] X_ab``). Its optimality conditions are the
    complementarity problem ``X >= 0, A + B[X] >= 0, <X, A + B[X]> = 0``. Closed form for ``k = 1``,
    accelerated projected gradient (step ``1/||B||``) on the PSD cone otherwise."""
    A = np.asarray(A, float)
    k = A.shape[0]
    B = np.asarray(B, float).reshape(k, k, k, k)
    if k == 1:
        b = B[0, 0, 0, 0]
        return np.array([[max(0.0, -A[0, 0] / b)]]) if b > 0 else np.zeros((1, 1))
    Bm = B.reshape(k * k, k * k)
    Bm = 0.5 * (Bm + Bm.T)
    L = max(float(np.linalg.eigvalsh(Bm).max()), 1e-300)
    X = Z = np.zeros((k, k))
    t = 1.0
    for _ in range(iters):  # accelerated projected gradient (FISTA) on the PSD cone
        Y = Z - (A + (Bm @ Z.ravel()).reshape(k, k)) / L
        w, V = np.linalg.eigh(0.5 * (Y + Y.T))
        Xn = (V * np.maximum(w, 0.0)) @ V.T
        t_next = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        Z = Xn + ((t - 1) / t_next) * (Xn - X)
        done = np.abs(Xn - X).max() <= tol * max(1.0, np.abs(Xn).max())
        X, t = Xn, t_next
        if done:
            break
    return X


def sharpness_gradients(
    objective: Objective, w: torch.Tensor, U: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, gradient and ``grad_w (u_i^T H(w) u_j)`` for ``i <= j`` (rows in the order of
    ``torch.triu_indices``) with the columns of ``U`` held fixed: third derivatives by autograd, one more
    backward pass through the products of :func:`~instabilities.curvature.operator.differentiable_hvps`."""
    k = U.shape[1]
    leaf = w.detach().clone().requires_grad_(True)
    loss, g, HU = differentiable_hvps(objective, leaf, U)  # the products H u_j, graphs kept
    with torch.enable_grad():
        rows = []
        iu = torch.triu_indices(k, k)
        for i, j in zip(iu[0].tolist(), iu[1].tolist()):
            rows.append(torch.autograd.grad(HU[j] @ U[:, i], leaf, retain_graph=True)[0])
    return loss.detach(), g.detach(), torch.stack(rows)


def central_flow(
    objective: Objective,
    theta0: torch.Tensor,
    eta: float,
    steps: int,
    substeps: int = 2,
    n_eigs: int = 3,
    critical: float = 1.95,
    record_every: int = 1,
    eig_tol: float = 1e-5,
    hessian_objective: Objective | None = None,
    max_eigs: int | None = None,
    stable_eig_every: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> CentralFlowResult:
    """Integrate the GD central flow for ``steps`` units of time (GD steps) with ``substeps`` Euler substeps
    per unit. Eigenvalues above ``critical / eta`` (of the top ``n_eigs``, by warm-started Lanczos at every
    substep) are treated as being at the edge of stability; see the module docstring. A non-finite
    iterate stops the integration (``diverged``; later rows NaN)."""
    require_positive("eta", eta)
    require_positive_int("steps", steps)
    require_positive_int("substeps", substeps)
    require_positive_int("n_eigs", n_eigs)
    require_positive_int("record_every", record_every)
    require_positive_int("stable_eig_every", stable_eig_every)
    if not 0 < critical <= 2:
        raise ConfigError(
            f"critical={critical!r} must lie in (0, 2]; eigenvalues above critical/eta count as at 2/eta."
        )
    hess_obj = hessian_objective or objective
    dt = 1.0 / substeps
    w = theta0.detach().clone()
    n_rec = steps // record_every + 1
    out_t = np.arange(n_rec) * record_every
    loss_r, pred_r = np.full(n_rec, np.nan), np.full(n_rec, np.nan)
    eig_r, sig_r = np.full((n_rec, n_eigs), np.nan), np.full(n_rec, np.nan)
    crit_r = np.zeros(n_rec, np.int64)
    th_r = torch.full((n_rec, w.numel()), float("nan"), dtype=w.dtype)
    v0 = None
    diverged = False
    max_eigs = max(max_eigs or 2 * n_eigs, n_eigs)
    k_track = n_eigs
    lam = None
    for s in range(steps * substeps + 1):
        record = s % substeps == 0 and (s // substeps) % record_every == 0
        far = lam is not None and float(lam[0]) < 0.85 * critical / eta
        if not far or record or s % stable_eig_every == 0:
            op = curvature.HessianOperator(hess_obj, w, "reverse")
            r = curvature.lanczos(op, k_track, max_iter=300, tol=eig_tol, v0=v0, seed=s)
            v0 = r.vectors
            lam = r.values.double()
        crit = lam > critical / eta
        kc = int(crit.sum())
        if kc == k_track and k_track < max_eigs:
            k_track += 1
        if kc:
            U = r.vectors[:, :kc]
            loss, g, Gs = sharpness_gradients(objective, w, U)
            Gs64 = Gs.double()
            iu = torch.triu_indices(kc, kc)
            full = torch.zeros(kc, kc, Gs.shape[1], dtype=torch.float64)  # grad of u_i^T H u_j for all (i, j)
            full[iu[0], iu[1]] = Gs64
            full[iu[1], iu[0]] = Gs64
            flat = full.reshape(kc * kc, -1)
            dH_stable = (flat @ (-eta * g.double())).reshape(kc, kc)
            A = (2.0 / eta) * np.eye(kc) - (np.diag(lam[:kc].numpy()) + dt * dH_stable.numpy())
            A = 0.5 * (A + A.T)
            B = dt * 0.5 * eta * (flat @ flat.T).numpy()
            X = solve_psd_complementarity(A, B)
            drift = (torch.as_tensor(X.ravel(), dtype=torch.float64) @ flat).to(w.dtype)
            sigma2 = float(np.trace(X))
        else:
            leaf = w.clone().requires_grad_(True)
            with torch.enable_grad():
                loss = objective(leaf)
                (g,) = torch.autograd.grad(loss, leaf)
            loss = loss.detach()
            drift = torch.zeros_like(w)
            sigma2 = 0.0
        if record:
            i = (s // substeps) // record_every
            loss_r[i], pred_r[i] = float(loss), float(loss) + sigma2 / eta
            eig_r[i], sig_r[i], crit_r[i] = lam[:n_eigs].numpy(), sigma2, kc
            th_r[i] = w
        if s == steps * substeps:
            break
        w = w - dt * eta * (g + 0.5 * drift)
        if not bool(torch.isfinite(w).all()):
            diverged = True
            break
        if progress is not None and (s + 1) % substeps == 0:
            progress((s + 1) // substeps, steps)
    return CentralFlowResult(out_t, loss_r, pred_r, eig_r, sig_r, crit_r, th_r, steps * substeps, diverged)
