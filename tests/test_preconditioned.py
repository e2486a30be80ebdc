import numpy as np
import pytest
import torch

from instabilities import curvature
from instabilities.config import ConfigError
from instabilities.curvature.preconditioned import (
    PreconditionedHessianOperator,
    PreconditionedSharpnessTracker,
    adam_threshold,
    gd_threshold,
    momentum_threshold,
    optimizer_preconditioner,
    preconditioned_sharpness,
    preconditioned_sharpness_bounds,
)
from instabilities.losses import make_objective
from instabilities.models import FlatModel, ModelSpec, mlp
from instabilities.optim import ClippedAda
from instabilities.train import TrainConfig, train


def _tiny_problem():
    torch.manual_seed(0)
    fm = FlatModel(mlp(3, [5], 2, "tanh").double())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(20, 2, generator=gen, dtype=torch.float64)
    return make_objective(fm, x, y, "mse"), fm.theta0.double()


def test_preconditioned_sharpness_matches_dense_eigensolver():
    obj, theta = _tiny_problem()
    gen = torch.Generator().manual_seed(2)
    P = torch.rand(theta.numel(), generator=gen, dtype=torch.float64) * 3 + 0.05
    H = curvature.dense_hessian(obj, theta).double()
    M = torch.diag(P.rsqrt()) @ H @ torch.diag(P.rsqrt())
    dense_top = float(torch.linalg.eigvalsh(M)[-1])
    # the same number from the non-symmetric P^{-1} H
    nonsym = np.linalg.eigvals((torch.diag(1 / P) @ H).numpy())
    assert dense_top == pytest.approx(float(nonsym.real.max()), rel=1e-8)
    res = preconditioned_sharpness(obj, theta, P, tol=1e-8, max_iter=200)
    assert float(res.values[0]) == pytest.approx(dense_top, rel=1e-6)
    assert float(res.residuals[0]) < 1e-5 * dense_top
    # the operator's dense form is the symmetric matrix
    torch.testing.assert_close(PreconditionedHessianOperator(obj, theta, P).dense(), M)


def test_bounds_hold():
    obj, theta = _tiny_problem()
    P = torch.linspace(0.1, 2.0, theta.numel(), dtype=torch.float64)
    S = curvature.sharpness(obj, theta, tol=1e-8)
    lo, hi = preconditioned_sharpness_bounds(S, P)
    val = float(preconditioned_sharpness(obj, theta, P, tol=1e-8).values[0])
    assert lo <= val * (1 + 1e-6) and val <= hi * (1 + 1e-6)


def test_identity_preconditioner_gives_plain_sharpness():
    obj, theta = _tiny_problem()
    P = torch.ones(theta.numel(), dtype=torch.float64)
    assert float(preconditioned_sharpness(obj, theta, P, tol=1e-8).values[0]) == pytest.approx(
        curvature.sharpness(obj, theta, tol=1e-8), rel=1e-6
    )


def test_bad_preconditioner_rejected():
    obj, theta = _tiny_problem()
    with pytest.raises(ConfigError, match="> 0"):
        PreconditionedHessianOperator(obj, theta, torch.zeros(theta.numel(), dtype=torch.float64))
    with pytest.raises(ConfigError, match="entries"):
        PreconditionedHessianOperator(obj, theta, torch.ones(3, dtype=torch.float64))


def test_thresholds_closed_forms():
    assert gd_threshold(0.1) == pytest.approx(20.0)
    assert momentum_threshold(0.1, 0.9) == pytest.approx(38.0)
    assert adam_threshold(0.01, 0.9) == pytest.approx(3800.0)
    assert adam_threshold(1.0, 0.0) == pytest.approx(2.0)  # beta1 = 0: GD in the P-geometry
    with pytest.raises(ConfigError):
        adam_threshold(0.1, 1.0)
    with pytest.raises(ConfigError):
        gd_threshold(-1.0)


def _heavy_ball_peak(lam, eta, beta, steps=3000):
    w, v = 1.0, 0.0
    peak = 0.0
    for _ in range(steps):
        v = beta * v - eta * lam * w
        w = w + v
        peak = max(peak, abs(w))
        if peak > 1e6:
            break
    return abs(w), peak


def _frozen_adam_final(lam_over_p, eta, beta1, steps=3000):
    # frozen preconditioner p: w <- w - eta * m / p, m <- beta1 m + (1 - beta1) * lam w
    w, m = 1.0, 0.0
    for _ in range(steps):
        m = beta1 * m + (1 - beta1) * lam_over_p * w
        w = w - eta * m
        if abs(w) > 1e6:
            break
    return abs(w)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_momentum_threshold_separates_stable_from_unstable(beta):
    eta = 0.1
    thr = momentum_threshold(eta, beta)
    assert _heavy_ball_peak(0.98 * thr, eta, beta)[0] < 1.0
    assert _heavy_ball_peak(1.02 * thr, eta, beta)[0] > 1e3


@pytest.mark.parametrize("beta1", [0.0, 0.9, 0.99])
def test_adam_threshold_separates_stable_from_unstable(beta1):
    eta = 0.01
    thr = adam_threshold(eta, beta1)
    assert _frozen_adam_final(0.98 * thr, eta, beta1, steps=20000) < 1.0
    assert _frozen_adam_final(1.02 * thr, eta, beta1, steps=20000) > 1e3


@pytest.mark.parametrize("clip", [None, 0.05])
def test_preconditioner_read_from_optimizer_state(clip):
    gen = torch.Generator().manual_seed(0)
    w = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    opt = (
        torch.optim.Adam([w], lr=0.01, betas=(0.9, 0.99), eps=1e-6)
        if clip is None
        else ClippedAda([w], lr=0.01, betas=(0.9, 0.99), eps=1e-6, c=clip)
    )
    assert optimizer_preconditioner(opt) is None
    grads = [torch.randn(8, generator=gen, dtype=torch.float64) for _ in range(3)]
    for g in grads:
        w.grad = g.clone()
        opt.step()
    v = sum((0.99 ** (2 - i)) * 0.01 * g**2 for i, g in enumerate(grads))
    d = (v / (1 - 0.99**3)).sqrt()
    if clip is not None:
        d = d.clamp(max=clip)
    torch.testing.assert_close(optimizer_preconditioner(opt), d + 1e-6)
    with pytest.raises(ConfigError, match="no diagonal preconditioner"):
        optimizer_preconditioner(torch.optim.SGD([w], lr=0.1))


def test_tracker_logs_during_training():
    cfg = TrainConfig(
        dataset="digits",
        n_train=100,
        n_test=100,
        model=ModelSpec(widths=(8,)),
        optimizer="adam",
        lr=0.01,
        steps=6,
        eig_every=3,
        dtype="float64",
    )
    tracker = PreconditionedSharpnessTracker(every=3, tol=1e-6)
    hist = train(cfg, callbacks=[tracker])
    assert hist.extra["precond_step"] == [3, 6]
    S = hist.sharpness[1:]
    for s, val, pmin, pmax in zip(
        S, hist.extra["precond_sharpness"], hist.extra["precond_min"], hist.extra["precond_max"]
    ):
        assert s / pmax <= val * (1 + 1e-4) and val <= s / pmin * (1 + 1e-4)
