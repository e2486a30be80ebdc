"""Batched populations: same trajectories as separate runs, batched sharpness = per-member Lanczos."""
import numpy as np
import pytest
import torch

from instabilities import curvature, population as pop
from instabilities.config import ConfigError
from instabilities.models import ModelSpec
from instabilities.train import TrainConfig, build_problem, train

BASE = TrainConfig(dataset="digits", n_train=64, n_test=32, model=ModelSpec(widths=(12, 12)), steps=20,
                   lr=0.1, dtype="float64")


def _max_rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-12)))


@pytest.mark.parametrize("changes", [dict(), dict(optimizer="sgd", batch_size=16),
                                     dict(optimizer="momentum", momentum=0.5)])
def test_population_matches_separate_runs(changes):
    base = BASE.replace(**changes)
    cfgs = pop.population_configs(base, lrs=[0.05, 0.3, 0.8], seeds=[0, 3])
    hist = pop.train_population(cfgs)
    assert hist.train_loss.shape == (6, base.steps + 1)
    for i, c in enumerate(cfgs):
        ref = train(c)
        assert ref.diverged == hist.diverged[i] and ref.diverged_step == hist.diverged_step[i]
        n = len(ref.train_loss)
        assert _max_rel(ref.train_loss, hist.train_loss[i, :n]) < 1e-9
        assert _max_rel(ref.train_acc, hist.train_acc[i, :n]) < 1e-12
        if not ref.diverged:
            assert _max_rel(ref.test_loss, [hist.test_loss[i]]) < 1e-9
    # different seeds really give different runs (the test would be vacuous otherwise)
    assert _max_rel(hist.train_loss[0], hist.train_loss[3]) > 1e-3


def test_float32_population_matches_to_float_tolerance():
    cfgs = pop.population_configs(BASE.replace(dtype="float32"), lrs=[0.1, 0.3])
    hist = pop.train_population(cfgs)
    for i, c in enumerate(cfgs):
        assert _max_rel(train(c).train_loss, hist.train_loss[i]) < 1e-4


def test_divergent_member_is_masked_and_recorded():
    cfgs = pop.population_configs(BASE.replace(eig_every=5, eig_max_iter=40), lrs=[0.1, 200.0])
    hist = pop.train_population(cfgs)
    ref = train(cfgs[1])
    assert ref.diverged and hist.diverged[1] and not hist.diverged[0]
    assert hist.diverged_step[1] == ref.diverged_step
    assert np.isnan(hist.train_loss[1, ref.diverged_step + 1:]).all()
    assert np.isfinite(hist.train_loss[0]).all()
    assert np.isfinite(hist.eigs[0]).all() and np.isnan(hist.test_loss[1])
    # the healthy member is unaffected by its diverging neighbour
    assert _max_rel(train(cfgs[0]).train_loss, hist.train_loss[0]) < 1e-9


def test_batched_lanczos_matches_per_member_lanczos_and_dense():
    prob = build_problem(BASE)
    cfgs = pop.population_configs(BASE, seeds=[0, 1, 2])
    theta = pop._init_thetas(cfgs, prob)
    res = pop.batched_lanczos(prob.hessian_objective, theta, k=3, max_iter=120, tol=1e-8)
    assert bool(res.converged.all())
    for p in range(3):
        op = curvature.HessianOperator(prob.hessian_objective, theta[p])
        one = curvature.lanczos(op, 3, max_iter=120, tol=1e-8)
        dense = torch.linalg.eigvalsh(op.dense()).flip(0)[:3]
        assert torch.allclose(res.values[p], one.values, rtol=1e-7)
        assert torch.allclose(res.values[p], dense, rtol=1e-7)
        assert float(res.residuals[p].max()) < 1e-5 * float(dense[0])


def test_batched_lanczos_warm_start_and_inactive_member():
    prob = build_problem(BASE)
    theta = pop._init_thetas(pop.population_configs(BASE, seeds=[0, 1]), prob)
    cold = pop.batched_lanczos(prob.hessian_objective, theta, k=1, max_iter=120, tol=1e-6, check_every=1)
    warm = pop.batched_lanczos(prob.hessian_objective, theta, k=1, max_iter=120, tol=1e-6, check_every=1,
                               V0=cold.vectors)
    assert warm.n_matvec < cold.n_matvec
    assert torch.allclose(warm.values, cold.values, rtol=1e-6)
    theta_bad = theta.clone()
    theta_bad[1] = float("nan")
    res = pop.batched_lanczos(prob.hessian_objective, theta_bad, k=1, max_iter=60, tol=1e-6)
    assert torch.isnan(res.values[1]).all() and torch.allclose(res.values[0], cold.values[0], rtol=1e-6)


def test_tracked_population_sharpness_matches_train():
    c = BASE.replace(eig_every=10, n_eigs=2, eig_tol=1e-8, eig_max_iter=120)
    hist = pop.train_population([c])
    ref = train(c)
    assert np.allclose(hist.eigs[0], np.asarray(ref.eigs), rtol=1e-6)


def test_sweep_over_batch_sizes_keeps_order():
    cfgs = [BASE.replace(optimizer="sgd", batch_size=b, lr=lr) for b in (16, 32) for lr in (0.1, 0.2)]
    cfgs = [cfgs[2], cfgs[0], cfgs[3], cfgs[1]]
    hist = pop.train_sweep(cfgs)
    for i, c in enumerate(cfgs):
        assert _max_rel(train(c).train_loss, hist.train_loss[i]) < 1e-9


def test_bad_populations_raise_config_errors():
    with pytest.raises(ConfigError, match="differ only"):
        pop.train_population([BASE, BASE.replace(n_train=32)])
    with pytest.raises(ConfigError, match="train.train"):
        pop.train_population([BASE.replace(optimizer="adam")])
    with pytest.raises(ConfigError, match="same steps"):
        pop.train_sweep([BASE, BASE.replace(steps=3)])
    with pytest.raises(ConfigError):
        pop.train_population([])
