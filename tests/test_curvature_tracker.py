"""THE sharpness tracker (curvature.tracker): block and Lanczos solvers, warm starts, audit, populations,
the preconditioned operator, and what training and the EoS sweep record with it."""

import numpy as np
import pytest
import torch

from instabilities import curvature
from instabilities.config import ConfigError
from instabilities.curvature import block as be
from instabilities.curvature.preconditioned import preconditioned_sharpness
from instabilities.experiments.eos import EosSweepConfig, run_eos_sweep
from instabilities.models import ModelSpec
from instabilities.train import TrainConfig, build_problem, train

from _problems import quadratic_with_spectrum


def test_tracker_warm_starts_and_verifies(small_net):
    objective, theta = small_net
    tracker = curvature.SharpnessTracker(solver="block", k=2, tol=1e-4, verify_every=2)
    g = torch.func.grad(objective)
    th = theta.clone()
    for _ in range(5):
        tracker(objective, th)
        th = th - 0.5 * g(th)
    assert len(tracker.values) == 5 and len(tracker.verify_errors) == 3
    assert max(tracker.verify_errors) < 1e-3
    assert tracker.matvecs[-1] <= tracker.matvecs[0]


@pytest.mark.parametrize("block_size", [1, 2, 3])
def test_amortised_tracker_converges_on_a_fixedquadratic_with_spectrum(block_size):
    # one block iteration per call on a fixed Hessian: the carried block keeps converging to lambda_1
    spectrum = [5.0, 4.8, 4.5, 3.0] + torch.linspace(-0.2, 2.0, 116).tolist()
    objective, A = quadratic_with_spectrum(spectrum, seed=3)
    theta = torch.zeros(120, dtype=torch.float64)
    tracker = curvature.SharpnessTracker(
        solver="block", k=1, block_size=block_size, amortised=True, max_iter=1, tol=1e-10
    )
    first = tracker(objective, theta)  # the first call is a converged solve
    assert abs(float(first.values[0]) - 5.0) < 1e-8
    tracker._carry[0]["X"] = be.start_block(120, block_size, seed=1)  # forget it: restart from random
    errors = []
    for _ in range(150):
        res = tracker(objective, theta)
        errors.append(abs(float(res.values[0]) - 5.0) / 5.0)
    assert all(m == block_size for m in tracker.matvecs[1:])  # exactly one block iteration per call
    assert errors[-1] < 1e-4 and errors[-1] < 1e-3 * errors[0]  # b = 1: power iteration, rate (4.8/5)^2
    assert max(errors) < 1.0  # Ritz values of a subspace never exceed lambda_1


def test_fused_tracked_step_matches_the_plain_tracker(small_net):
    objective, theta = small_net
    plain, fused = (
        curvature.SharpnessTracker(solver="block", k=1, tol=1e-6, block_size=2),
        curvature.SharpnessTracker(solver="block", k=1, tol=1e-6, block_size=2),
    )
    g_fn = torch.func.grad(objective)
    th_p = th_f = theta.clone()
    for _ in range(4):
        r_p = plain(objective, th_p)
        th_p = th_p - 0.3 * g_fn(th_p)
        r_f, loss, g = fused.step(objective, th_f)
        th_f = th_f - 0.3 * g
        torch.testing.assert_close(r_f.values, r_p.values, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(loss, objective(th_f + 0.3 * g))
    torch.testing.assert_close(th_f, th_p, rtol=1e-10, atol=1e-12)
    assert fused.matvecs == plain.matvecs


def test_train_records_exactly_what_inline_lanczos_computed():
    """train() tracks with the default (Lanczos) tracker: same numbers as the inline solve it replaced
    (lanczos warm-started from the previous eigenvectors, seed = step, tol/max_iter from the config)."""
    cfg = TrainConfig(
        dataset="digits",
        n_train=80,
        n_test=40,
        model=ModelSpec(widths=(8,)),
        lr=0.5,
        steps=12,
        eig_every=3,
        n_eigs=2,
        eig_tol=1e-6,
        eig_max_iter=150,
        dtype="float64",
    )
    seen = {}
    hist = train(cfg, callbacks=[lambda ctx: seen.setdefault(ctx.step, ctx.theta.clone())])
    prob = build_problem(cfg)
    prev = None
    for e, step in enumerate(hist.eig_step):
        op = curvature.HessianOperator(prob.hessian_objective, seen[step], "reverse")
        res = curvature.lanczos(op, 2, max_iter=150, tol=1e-6, v0=prev, seed=step)
        prev = res.vectors
        assert hist.eigs[e] == res.values.tolist(), f"step {step}: tracked {hist.eigs[e]} != inline {res.values}"
        assert hist.eig_matvecs[e] == res.n_matvec


def test_population_mode_warm_starts_each_member_from_its_own_rows(small_net):
    objective, theta = small_net
    Theta = torch.stack([theta, 1.1 * theta, 0.9 * theta])
    tracker = curvature.SharpnessTracker(k=1, tol=1e-8, max_iter=150)
    cold = tracker.track_population(objective, Theta, seed=0)
    assert tracker.vectors.shape == (3, theta.numel(), 1)
    rows = torch.tensor([0, 2])
    warm = tracker.track_population(objective, Theta[rows], rows=rows, size=3, seed=1)
    torch.testing.assert_close(warm.values, cold.values[rows], rtol=1e-7, atol=0)
    assert warm.n_matvec < cold.n_matvec  # warm-started from the rows' own eigenvectors
    assert len(tracker.values) == 2 and tracker.matvecs == [cold.n_matvec, warm.n_matvec]
    torch.testing.assert_close(tracker.vectors[1], cold.vectors[1])  # the member left out keeps its vectors


def test_preconditioned_operator_option_matches_preconditioned_sharpness(small_net):
    objective, theta = small_net
    P = torch.linspace(0.5, 2.0, theta.numel(), dtype=theta.dtype)
    tracker = curvature.SharpnessTracker(k=1, tol=1e-8)
    res = tracker(objective, theta, seed=4, precond=P)
    ref = preconditioned_sharpness(objective, theta, P, tol=1e-8, seed=4)
    assert res.values.tolist() == ref.values.tolist()
    plain = curvature.SharpnessTracker(k=1, tol=1e-8)(objective, theta)
    assert float(plain.values[0]) / 2.0 <= float(res.values[0]) * (1 + 1e-6)


def test_block_and_lanczos_trackers_agree(small_net):
    objective, theta = small_net
    lz = curvature.SharpnessTracker(k=2, tol=1e-8)(objective, theta)
    blk = curvature.SharpnessTracker(k=2, solver="block", tol=1e-8, max_iter=200)(objective, theta)
    torch.testing.assert_close(blk.values, lz.values, rtol=1e-6, atol=0)


def test_bad_tracker_settings_raise_config_errors(small_net):
    objective, theta = small_net
    with pytest.raises(ConfigError, match="solver"):
        curvature.SharpnessTracker(solver="power")
    with pytest.raises(ConfigError, match="amortised"):
        curvature.SharpnessTracker(amortised=True)
    with pytest.raises(ConfigError, match="block"):
        curvature.SharpnessTracker().step(objective, theta)
    with pytest.raises(ConfigError, match="lanczos"):
        curvature.SharpnessTracker(solver="block").track_population(objective, theta[None])
    with pytest.raises(ConfigError, match="warm_from"):
        curvature.SharpnessTracker(warm_from=0)


def test_eos_sweep_keeps_the_products_per_tracked_step():
    cfg = EosSweepConfig(
        dataset="digits",
        n_train=100,
        n_test=297,
        widths=(16,),
        activation="tanh",
        etas=(0.05, 0.1),
        steps=20,
        eig_every=10,
        n_eigs=1,
    )
    res = run_eos_sweep(cfg)
    assert "eig_matvecs" in res, "eos_sweep drops the Hessian-vector products per solve"
    assert res["eig_matvecs"].shape == res["eig_step"].shape == (3,)
    assert np.all(res["eig_matvecs"] >= 2 * 1 + 2)  # at least min_iter Krylov steps per solve
    # the count is what training records for one member with the same tracker settings
    one = train(cfg.gd_config(0.05))
    assert res["eig_matvecs"].max() >= min(one.eig_matvecs)
