"""The general theorem of Xu, Beneventano, Chuang & Ziyin (2026) for deep linear networks, in closed form.

Model (the paper's Sec. 3.1): ``f(x) = W_D ... W_1 x``, teacher ``y = V x + eps`` with ``E[x x^T] = Sigma_x``,
``E[eps eps^T] = Sigma_eps``, per-example loss ``1/2 |y - f(x)|^2``, online SGD. With
``A_k = W_D ... W_{k+1}`` and ``B_k = W_{k-1} ... W_1``:

* the paper's sharpness (its Definition 1) is the Hessian trace ``T = tr E[nabla^2 l]``, and for linear
  networks ``T = sum_k tr(A_k^T A_k) tr(B_k Sigma_x B_k^T)`` at *every* theta (eq. 44; exact, because the
  diagonal blocks of the second derivative of ``f`` vanish) -- :func:`trace_hessian`;
* at a global minimum the residual is ``-eps``, so the per-example gradient fluctuation is
  ``tr C = E|grad l|^2 = sum_k tr(A_k^T Sigma_eps A_k) tr(B_k Sigma_x B_k^T)`` -- :func:`fluctuation`. It is the
  Hessian trace of the *noise-whitened* problem (``W_D -> Sigma_eps^{1/2} W_D``);
* the minimiser of ``tr C`` over the minima (Lemma 5, eqs. 65-66) -- :func:`minimal_fluctuation_weights` --
  has Hessian trace eq. 14 (:func:`predicted_trace`); the flattest minimum (Lemma 4, eq. 52) --
  :func:`minimal_trace_weights` -- has ``T_min`` of eq. 15 (:func:`minimal_trace`);
* the paper's 2 x 2 example (``V = Sigma_x = I``, ``Sigma_eps = diag(1, sigma^2)``): eq. 18
  (:func:`two_by_two_trace`) and eq. 21 (:func:`two_by_two_sharpness`, ``lambda_max``).

Weights are lists ``[W_1, ..., W_D]`` of numpy arrays ``(..., d_{k+1}, d_k)``; leading dimensions are replicas.
Formulas are the paper's (checked against dense Hessians in ``tests/test_deep_linear.py``); the errata of the
printed paper that matter here: ``T_min = D d^2`` after eq. 17 (printed ``D d^{(D+2)/D}``), and the inequality of
Theorem 2 (eq. 28) runs ``lambda_min(Sigma_eps) T <= tr C <= lambda_max(Sigma_eps) T`` (printed inverted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..config import ConfigError


def _sym_sqrt(M: np.ndarray, inverse: bool = False) -> np.ndarray:
    w, U = np.linalg.eigh(M)
    if inverse:
        if w.min() <= 0:
            raise ConfigError("a covariance is singular; Sigma_x and Sigma_eps must be positive definite here.")
        w = 1.0 / w
    return (U * np.sqrt(np.clip(w, 0.0, None))) @ U.T


def _check(V: np.ndarray, Sx: np.ndarray, Se: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    V, Sx = np.atleast_2d(np.asarray(V, dtype=float)), np.atleast_2d(np.asarray(Sx, dtype=float))
    dy, dx = V.shape
    if Sx.shape != (dx, dx):
        raise ConfigError(f"Sigma_x has shape {Sx.shape}; it must be ({dx}, {dx}) for a teacher V of shape {V.shape}.")
    mats = [("Sigma_x", Sx)]
    if Se is not None:
        Se = np.atleast_2d(np.asarray(Se, dtype=float))
        if Se.shape != (dy, dy):
            raise ConfigError(f"Sigma_eps has shape {Se.shape}; it must be ({dy}, {dy}), one row per output.")
        mats.append(("Sigma_eps", Se))
    for name, M in mats:
        if not np.allclose(M, M.T) or np.linalg.eigvalsh(M).min() <= 0:
            raise ConfigError(f"{name} must be symmetric positive definite (the theorem inverts it).")
    return (V, Sx) if Se is None else (V, Sx, Se)


def _check_depth(depth: int) -> int:
    if not (isinstance(depth, (int, np.integer)) and not isinstance(depth, bool) and depth >= 2):
        raise ConfigError(f"depth={depth!r}: a deep linear network needs D >= 2 weight matrices.")
    return int(depth)


def whitened_teacher(V, Sx, Se) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compact SVD ``L diag(s) R`` of ``V' = Sigma_eps^{1/2} V Sigma_x^{1/2}`` (the paper's Theorem 1)."""
    V, Sx, Se = _check(V, Sx, Se)
    L, s, R = np.linalg.svd(_sym_sqrt(Se) @ V @ _sym_sqrt(Sx), full_matrices=False)
    r = int(np.sum(s > 1e-12 * max(s.max(), 1e-300)))
    if r == 0:
        raise ConfigError("the teacher V is zero; the theorem needs rank V >= 1.")
    return L[:, :r], s[:r], R[:r]


# ----------------------------------------------------------------------------- exact formulas at any theta
def _partial_products(Ws: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    D = len(Ws)
    lead = Ws[0].shape[:-2]
    dy, dx = Ws[-1].shape[-2], Ws[0].shape[-1]
    A = [None] * D
    B = [None] * D
    A[D - 1] = np.broadcast_to(np.eye(dy), (*lead, dy, dy))
    for k in range(D - 2, -1, -1):
        A[k] = A[k + 1] @ Ws[k + 1]
    B[0] = np.broadcast_to(np.eye(dx), (*lead, dx, dx))
    for k in range(1, D):
        B[k] = Ws[k - 1] @ B[k - 1]
    return A, B


def _metric_trace(A: np.ndarray, M: np.ndarray | None) -> np.ndarray:
    """``tr(A^T M A)`` over the last two axes (``M = I`` if None)."""
    if M is None:
        return np.sum(A * A, axis=(-2, -1))
    return np.einsum("...ij,ik,...kj->...", A, M, A)


def trace_hessian(Ws: Sequence[np.ndarray], Sx) -> np.ndarray:
    """The paper's sharpness ``T = tr E[nabla^2 l]`` (eq. 44), exact at any theta, one value per replica."""
    A, B = _partial_products(Ws)
    Sx = np.asarray(Sx, dtype=float)
    return sum(_metric_trace(a, None) * np.einsum("...ij,jk,...ik->...", b, Sx, b) for a, b in zip(A, B))


def fluctuation(Ws: Sequence[np.ndarray], Sx, Se) -> np.ndarray:
    """``tr C = E|grad l|^2`` of one example at a global minimum (residual ``= -eps``), one value per replica.

    ``sum_k tr(A_k^T Sigma_eps A_k) tr(B_k Sigma_x B_k^T)``: eq. 44 with the output metric ``Sigma_eps``. The
    paper's fluctuation term of the entropic loss (eq. 12) is ``(eta / 4) tr C / B`` for batch size ``B``.
    """
    A, B = _partial_products(Ws)
    Sx, Se = np.asarray(Sx, dtype=float), np.asarray(Se, dtype=float)
    return sum(_metric_trace(a, Se) * np.einsum("...ij,jk,...ik->...", b, Sx, b) for a, b in zip(A, B))


def gauss_newton(Ws: Sequence[np.ndarray], Sx, metric=None) -> np.ndarray:
    """Dense ``E[J^T M J]`` (``M = I``: the Hessian at a minimum; ``M = Sigma_eps``: ``C``) for ONE network.

    Parameters are ordered like ``label_noise.DeepLinearNet.flatten`` (layer by layer, row-major ``W_k``).
    Block ``(k, l)`` is ``(A_k^T M A_l) (x) (B_k Sigma_x B_l^T)``.
    """
    if Ws[0].ndim != 2:
        raise ConfigError("gauss_newton takes the weights of one network (2-D arrays), not replicas.")
    A, B = _partial_products(Ws)
    Sx = np.asarray(Sx, dtype=float)
    M = np.eye(A[-1].shape[0]) if metric is None else np.asarray(metric, dtype=float)
    blocks = [[np.kron(A[k].T @ M @ A[l], B[k] @ Sx @ B[l].T) for l in range(len(Ws))] for k in range(len(Ws))]
    return np.block(blocks)


def sharpness(Ws: Sequence[np.ndarray], Sx) -> float:
    """``lambda_max`` of the Gauss-Newton matrix ``E[J^T J]`` (the Hessian at a minimum) of one network."""
    return float(np.linalg.eigvalsh(gauss_newton(Ws, Sx))[-1])


def noise_balance_residual(Ws: Sequence[np.ndarray], Sx, Se) -> float:
    """Largest relative violation of the noise-balance condition at the junctions of one network.

    Gradient flow conserves ``W_{k+1}^T W_{k+1} - W_k W_k^T``; one SGD step changes it exactly by
    ``eta^2 (g_{k+1}^T g_{k+1} - g_k g_k^T)``, in expectation at a minimum by ``eta^2 / B`` times
    ``tr(A_{k+1}^T Sigma_eps A_{k+1}) B_{k+1} Sigma_x B_{k+1}^T - tr(B_k Sigma_x B_k^T) A_k^T Sigma_eps A_k``
    (our derivation). It vanishes at every junction exactly at the minimiser of ``tr C`` (noise equilibrium).
    Returns ``max_k |difference| / |first term|`` (Frobenius norms).
    """
    A, B = _partial_products(Ws)
    Sx, Se = np.asarray(Sx, dtype=float), np.asarray(Se, dtype=float)
    worst = 0.0
    for k in range(len(Ws) - 1):
        down = np.trace(A[k + 1].T @ Se @ A[k + 1]) * (B[k + 1] @ Sx @ B[k + 1].T)
        up = np.trace(B[k] @ Sx @ B[k].T) * (A[k].T @ Se @ A[k])
        worst = max(worst, float(np.linalg.norm(down - up) / np.linalg.norm(down)))
    return worst


def layer_conditions(Ws: Sequence[np.ndarray], rank: int | None = None) -> np.ndarray:
    """Condition number ``sigma_1 / sigma_rank`` of every layer (``rank``: the teacher's rank; default all),
    ``[..., layer]``. Lemma 5: only the first and the last layer carry the noise anisotropy."""
    out = []
    for W in Ws:
        s = np.linalg.svd(W, compute_uv=False)
        k = s.shape[-1] if rank is None else rank
        out.append(s[..., 0] / s[..., k - 1])
    return np.stack(out, axis=-1)


def population_gradient(Ws: Sequence[np.ndarray], V, Sx) -> list[np.ndarray]:
    """Exact gradient of the population loss ``1/2 tr[(W - V) Sigma_x (W - V)^T]`` (gradient descent's step)."""
    A, B = _partial_products(Ws)
    W = Ws[-1] @ B[-1]
    G = (W - np.asarray(V, dtype=float)) @ np.asarray(Sx, dtype=float)
    return [np.swapaxes(a, -1, -2) @ G @ np.swapaxes(b, -1, -2) for a, b in zip(A, B)]


# ----------------------------------------------------------------------------- the theorem (eqs. 14-15, Lemmas 4-5)
def _solution(
    depth: int,
    L: np.ndarray,
    s: np.ndarray,
    R: np.ndarray,
    Sx: np.ndarray,
    tr_e: float,
    white_out: np.ndarray,
    widths: Sequence[int] | None,
    seed: int | None,
) -> list[np.ndarray]:
    """The weights of eqs. 52/66 for ``white_out W_D ... W_1 Sigma_x^{1/2} = L diag(s) R`` (``U_i`` from ``seed``)."""
    D, r = depth, s.size
    widths = [r] * (D - 1) if widths is None else list(widths)
    if len(widths) != D - 1 or any(not (isinstance(w, int) and w >= r) for w in widths):
        raise ConfigError(
            f"widths={widths!r}: give D - 1 = {D - 1} hidden widths, each >= rank of the "
            f"whitened teacher ({r}) (the paper's condition d >= rank V')."
        )
    rng = None if seed is None else np.random.default_rng(seed)
    Us = []
    for w in widths:
        if rng is None:
            Us.append(np.eye(w)[:, :r])
        else:
            Us.append(np.linalg.qr(rng.standard_normal((w, r)))[0])
    tS, tX = float(s.sum()), float(np.trace(Sx))
    sig1 = tS ** (-(D - 2) / (2 * D)) * tX ** ((D - 1) / (2 * D)) / tr_e ** (1 / (2 * D)) * np.sqrt(s)
    sigD = tS ** (-(D - 2) / (2 * D)) * tr_e ** ((D - 1) / (2 * D)) / tX ** (1 / (2 * D)) * np.sqrt(s)
    mid = tS ** (1 / D) * (tr_e * tX) ** (-1 / (2 * D))
    Ws = [Us[0] @ np.diag(sig1) @ R @ _sym_sqrt(Sx, inverse=True)]
    for i in range(1, D - 1):
        Ws.append(mid * Us[i] @ Us[i - 1].T)
    Ws.append(white_out @ L @ np.diag(sigD) @ Us[-1].T)
    return Ws


def minimal_fluctuation_weights(
    depth: int, V, Sx, Se, widths: Sequence[int] | None = None, seed: int | None = None
) -> list[np.ndarray]:
    """Lemma 5 (eqs. 65-66): a global minimum that minimises ``tr C``, i.e. where SGD goes as ``eta -> 0``.

    ``sqrt(Sigma_eps) W_D = L Sigma_D U_{D-1}^T``, ``W_i = U_i Sigma_i U_{i-1}^T``,
    ``W_1 sqrt(Sigma_x) = U_1 Sigma_1 R``
    with ``L S R`` the compact SVD of the whitened teacher; the ``U_i`` (orthonormal columns; the first ``r``
    unit vectors, or random with ``seed``) are the remaining freedom, which changes neither ``T`` nor the spectrum.
    Middle layers are multiples of partial isometries (condition number 1).
    """
    depth = _check_depth(depth)
    V, Sx, Se = _check(V, Sx, Se)
    L, s, R = whitened_teacher(V, Sx, Se)
    return _solution(depth, L, s, R, Sx, float(np.trace(Se)), _sym_sqrt(Se, inverse=True), widths, seed)


def minimal_trace_weights(
    depth: int, V, Sx, widths: Sequence[int] | None = None, seed: int | None = None
) -> list[np.ndarray]:
    """Lemma 4 (eq. 52): the flattest global minimum (smallest ``T``); Lemma 5 with ``Sigma_eps = I``."""
    depth = _check_depth(depth)
    V, Sx = _check(V, Sx)
    L, s, R = whitened_teacher(V, Sx, np.eye(V.shape[0]))
    return _solution(depth, L, s, R, Sx, float(V.shape[0]), np.eye(V.shape[0]), widths, seed)


def predicted_trace(depth: int, V, Sx, Se) -> float:
    """Eq. 14: the Hessian trace ``T`` at the minimal-fluctuation minima (every one has the same spectrum)."""
    depth = _check_depth(depth)
    V, Sx, Se = _check(V, Sx, Se)
    L, s, _ = whitened_teacher(V, Sx, Se)
    D, tS, tE, tX, dy = depth, float(s.sum()), float(np.trace(Se)), float(np.trace(Sx)), V.shape[0]
    first = (D - 1) * tS ** ((D - 2) / D) * (tE * tX) ** (1 / D) * np.trace(np.linalg.inv(Se) @ L @ np.diag(s) @ L.T)
    return float(first + dy * tS ** (2 * (D - 1) / D) * tX ** (1 / D) / tE ** ((D - 1) / D))


def minimal_trace(depth: int, V, Sx) -> float:
    """Eq. 15: ``T_min = D (tr S_hat)^{2(D-1)/D} (d_y tr Sigma_x)^{1/D}``, ``S_hat`` the singular values of
    ``V Sigma_x^{1/2}``."""
    depth = _check_depth(depth)
    V, Sx = _check(V, Sx)
    s = np.linalg.svd(V @ _sym_sqrt(Sx), compute_uv=False)
    return float(depth * s.sum() ** (2 * (depth - 1) / depth) * (V.shape[0] * np.trace(Sx)) ** (1 / depth))


def predicted_fluctuation(depth: int, V, Sx, Se) -> float:
    """The minimal ``tr C`` over the global minima (the fluctuation at Lemma 5's weights)."""
    return float(fluctuation(minimal_fluctuation_weights(depth, V, Sx, Se), Sx, Se))


def two_by_two_trace(sigma: float | np.ndarray, depth: int) -> np.ndarray:
    """Eq. 18: ``T`` for ``V = Sigma_x = I_2``, ``Sigma_eps = diag(1, sigma^2)``
    (``T_min = 4 D``; ``T(1/sigma) = T(sigma)``)."""
    D = _check_depth(depth)
    s = np.asarray(sigma, dtype=float)
    return (D - 1) * 2 ** (1 / D) * (1 + s) ** ((D - 2) / D) * (1 + s**2) ** (1 / D) * (1 + 1 / s) + 2 ** (
        (D + 1) / D
    ) * (1 + s) ** (2 * (D - 1) / D) * (1 + s**2) ** (-(D - 1) / D)


def two_by_two_sharpness(sigma: float | np.ndarray, depth: int) -> np.ndarray:
    """Eq. 21: ``lambda_max`` of the Hessian in the same example (exact there; the general eqs. 71-72 are not)."""
    D = _check_depth(depth)
    s = np.asarray(sigma, dtype=float)
    hi, lo = np.maximum(1, s), np.maximum(1, 1 / s)
    return (
        (D - 2) * 2 ** (1 / D) * (1 + s) ** (-2 / D) * (1 + s**2) ** (1 / D) * lo * hi
        + 2 ** (1 / D) * (1 + s) ** ((D - 2) / D) * (1 + s**2) ** (-(D - 1) / D) * hi
        + 2 ** (-(D - 1) / D) * (1 + s) ** ((D - 2) / D) * (1 + s**2) ** (1 / D) * lo
    )


def diagonal_relaxation_time(noise_diag: Sequence[float], eta: float, batch_size: int = 1) -> float:
    """Relaxation time (SGD steps) of the slowest layer balance, ``D = 2``, ``V = Sigma_x = I_d``, diagonal noise.

    Channel ``i`` of the diagonal minima ``W_1 = diag(sqrt t_i)``, ``W_2 = diag(1/sqrt t_i)`` moves by
    ``dt_i/dn = -(eta^2/B) t_i (t_i^2 tr Sigma_eps - d sigma_i^2) / (1 + t_i^2)`` (our derivation, as for the chain);
    linearised at ``t_i*^2 = d sigma_i^2 / tr Sigma_eps`` the time is ``B (1 + t_i*^2) / (2 eta^2 d sigma_i^2)``; the
    largest over ``i`` (the quietest output) is returned. Used to set run lengths; deeper networks take longer.
    """
    n = np.asarray(noise_diag, dtype=float)
    if n.ndim != 1 or n.size < 1 or np.any(n <= 0):
        raise ConfigError(f"noise_diag={noise_diag!r} must list the positive noise variances of the outputs.")
    if not (math.isfinite(eta) and eta > 0) or not (isinstance(batch_size, int) and batch_size > 0):
        raise ConfigError(f"eta={eta!r} must be > 0 and batch_size={batch_size!r} a positive integer.")
    d, tr = n.size, float(n.sum())
    t2 = d * n / tr
    return float(np.max(batch_size * (1 + t2) / (2 * eta**2 * d * n)))


# ----------------------------------------------------------------------------- SGD and GD runs with exact records
def _network(Ws: Sequence[np.ndarray]):
    from .label_noise import DeepLinearNet

    dims = [Ws[0].shape[-1]] + [W.shape[-2] for W in Ws]
    return DeepLinearNet(dims[0], tuple(dims[1:-1]), dims[-1])


def train(
    starts: Sequence[Sequence[np.ndarray]],
    V,
    Sx,
    Se,
    eta: float,
    phases: Sequence[tuple[str, int]],
    records_per_phase: int = 20,
    batch_size: int = 1,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Online SGD (``"sgd"``: ``label_noise.label_noise_sgd``, fresh inputs and label noise) and gradient descent
    on the population loss (``"gd"``: :func:`population_gradient`) in consecutive phases, on replicas.

    ``starts``: one weight list per replica (all of one architecture). ``phases``: e.g. ``[("sgd", 20000),
    ("gd", 5000), ("sgd", 20000)]``. Every phase is recorded ``records_per_phase`` times at equal spacing (plus
    step 0): the exact ``trace_hessian`` (eq. 44), ``fluctuation`` (``tr C`` with the iterate's weights),
    ``sharpness`` (``lambda_max`` of ``E[J^T J]``), the layers' condition numbers and the excess loss, each
    ``[record, replica]`` (conditions ``[record, replica, layer]``). A replica that diverges is NaN from then on
    (``diverged``).
    """
    import torch

    from .label_noise import label_noise_sgd

    V, Sx, Se = _check(V, Sx, Se)
    if not (math.isfinite(eta) and eta > 0):
        raise ConfigError(f"eta={eta!r} must be a finite number > 0.")
    if not (isinstance(records_per_phase, int) and records_per_phase > 0):
        raise ConfigError(f"records_per_phase={records_per_phase!r} must be a positive integer.")
    for kind, n in phases:
        if kind not in ("sgd", "gd") or not (isinstance(n, int) and n >= records_per_phase):
            raise ConfigError(f"phase {(kind, n)!r}: use ('sgd' or 'gd', steps) with steps >= records_per_phase.")
    net = _network(starts[0])
    theta = torch.stack([net.flatten([torch.as_tensor(W, dtype=torch.float64) for W in s]) for s in starts])
    R = theta.shape[0]
    Vt, Sxt, Set = (torch.as_tensor(M, dtype=torch.float64) for M in (V, Sx, Se))
    rank = whitened_teacher(V, Sx, Se)[1].size
    dead = np.zeros(R, dtype=bool)
    keys = ("trace_hessian", "fluctuation", "sharpness", "conditions", "excess_loss")
    recs: dict[str, list] = {k: [] for k in keys}
    steps_done, rec_steps, rec_phase = 0, [], []

    def record(phase: int) -> None:
        Ws = [W.numpy() for W in net.layers(theta)]
        W = Ws[-1]
        for Wk in Ws[-2::-1]:
            W = W @ Wk
        with np.errstate(all="ignore"):
            E = W - V
            vals = {
                "trace_hessian": trace_hessian(Ws, Sx),
                "fluctuation": fluctuation(Ws, Sx, Se),
                "excess_loss": 0.5 * np.einsum("rij,jk,rik->r", E, Sx, E),
            }
            ok = ~dead & np.all(np.isfinite(theta.numpy()), axis=1)
            safe = [np.where(ok[:, None, None], w, 1.0) for w in Ws]
            vals["sharpness"] = np.array([sharpness([w[i] for w in safe], Sx) for i in range(R)])
            vals["conditions"] = layer_conditions(safe, rank)
        for k in keys:
            v = vals[k]
            recs[k].append(np.where(ok.reshape(-1, *[1] * (v.ndim - 1)), v, np.nan))
        rec_steps.append(steps_done)
        rec_phase.append(phase)

    record(0)
    rng = np.random.default_rng(seed)
    for p, (kind, n) in enumerate(phases):
        every = n // records_per_phase
        for j in range(records_per_phase):
            m = every if j < records_per_phase - 1 else n - every * (records_per_phase - 1)
            if kind == "sgd":
                out = label_noise_sgd(
                    net, theta, Vt, Sxt, Set, eta, m, batch_size, m, int(rng.integers(2**31)), track=False
                )
                dead |= np.asarray(out["diverged"], dtype=bool)
                theta = torch.from_numpy(out["theta_final"])
            else:
                Ws = [W.numpy().copy() for W in net.layers(theta)]
                with np.errstate(all="ignore"):
                    for _ in range(m):
                        G = population_gradient(Ws, V, Sx)
                        Ws = [W - eta * g for W, g in zip(Ws, G)]
                theta = net.flatten([torch.from_numpy(W) for W in Ws])
                bad = ~np.all(np.isfinite(theta.numpy()), axis=1) | (np.abs(theta.numpy()).max(1) > 1e8)
                dead |= bad
                theta[torch.from_numpy(bad)] = 0.0
            steps_done += m
            record(p)
    out = {k: np.stack(v) for k, v in recs.items()}
    out.update(steps=np.asarray(rec_steps), phase=np.asarray(rec_phase), diverged=dead)
    return out
