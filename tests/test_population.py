"""Batched populations: same trajectories as separate runs, batched sharpness = per-member Lanczos."""

import numpy as np
import pytest
import torch

from instabilities import curvature, population as pop
from instabilities.config import ConfigError
from instabilities.models import ModelSpec
from instabilities.train import TrainConfig, build_problem, train

BASE = TrainConfig(
    dataset="digits", n_train=64, n_test=32, model=ModelSpec(widths=(12, 12)), steps=20, lr=0.1, dtype="float64"
)


def _max_rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-12)))


@pytest.mark.parametrize(
    "changes, lrs",
    [
        (dict(), [0.05, 0.3, 0.8]),
        (dict(optimizer="sgd", batch_size=16), [0.05, 0.3, 0.8]),
        (dict(optimizer="momentum", momentum=0.5), [0.05, 0.3, 0.8]),
        (dict(optimizer="adam"), [1e-3, 0.01, 0.05]),
        (dict(optimizer="adam", batch_size=16, beta1=0.8, beta2=0.99), [1e-3, 0.01, 0.05]),
        (dict(optimizer="rmsprop", beta2=0.9), [1e-3, 0.01]),
        (dict(optimizer="clipped_ada", clip=0.01), [1e-3, 0.01, 0.05]),
    ],
)
def test_population_matches_separate_runs(changes, lrs):
    base = BASE.replace(**changes)
    cfgs = pop.population_configs(base, etas=lrs, seeds=[0, 3])
    hist = pop.train_population(cfgs)
    assert hist.train_loss.shape == (len(cfgs), base.steps + 1)
    for i, c in enumerate(cfgs):
        ref = train(c)
        assert ref.diverged == hist.diverged[i] and ref.diverged_step == hist.diverged_step[i]
        n = len(ref.train_loss)
        assert _max_rel(ref.train_loss, hist.train_loss[i, :n]) < 1e-9
        assert _max_rel(ref.train_acc, hist.train_acc[i, :n]) < 1e-12
        if not ref.diverged:
            assert _max_rel(ref.test_loss, [hist.test_loss[i]]) < 1e-9
    # different seeds really give different runs (the test would be vacuous otherwise)
    assert _max_rel(hist.train_loss[0], hist.train_loss[len(lrs)]) > 1e-3


def test_clip_and_betas_vary_across_members():
    """Clipped-Ada members with different clips (and Adam members with different betas) in one population."""
    base = BASE.replace(optimizer="clipped_ada", lr=0.01)
    cfgs = [base.replace(clip=c, seed=s) for s in (0, 1) for c in (1e-3, 0.02, 10.0)]
    hist = pop.train_population(cfgs)
    np.testing.assert_array_equal(hist.clip, [1e-3, 0.02, 10.0] * 2)
    for i, c in enumerate(cfgs):
        ref = train(c)
        assert ref.diverged == hist.diverged[i]
        assert _max_rel(ref.train_loss, hist.train_loss[i, : len(ref.train_loss)]) < 1e-9
    # the clip is active: tighter clips give larger effective steps (here the tightest one diverges)
    assert hist.diverged[0] and not hist.diverged[1:3].any()
    assert _max_rel(hist.train_loss[1], hist.train_loss[2]) > 1e-3
    # a clip above every sqrt(v_hat) is plain Adam
    adam = train(base.replace(optimizer="adam"))
    assert _max_rel(adam.train_loss, hist.train_loss[2]) < 1e-9
    cfgs = [
        BASE.replace(optimizer="adam", lr=0.003, beta1=b1, beta2=b2, eps=eps)
        for b1, b2, eps in ((0.9, 0.999, 1e-8), (0.5, 0.99, 1e-3), (0.0, 0.999, 1e-8))
    ]
    hist = pop.train_population(cfgs)
    for i, c in enumerate(cfgs):
        ref = train(c).train_loss
        assert _max_rel(ref, hist.train_loss[i, : len(ref)]) < 1e-9
    assert not hist.diverged.any()
    assert min(_max_rel(hist.train_loss[0], hist.train_loss[i]) for i in (1, 2)) > 1e-3


def test_float32_population_matches_to_float_tolerance():
    cfgs = pop.population_configs(BASE.replace(dtype="float32"), etas=[0.1, 0.3])
    hist = pop.train_population(cfgs)
    for i, c in enumerate(cfgs):
        assert _max_rel(train(c).train_loss, hist.train_loss[i]) < 1e-4


@pytest.mark.parametrize(
    "changes, lrs",
    [
        (dict(), [0.1, 200.0]),
        (dict(optimizer="adam"), [0.01, 300.0]),
        (dict(optimizer="clipped_ada", clip=0.01), [0.01, 300.0]),
    ],
)
def test_divergent_member_is_masked_and_recorded(changes, lrs):
    cfgs = pop.population_configs(BASE.replace(eig_every=5, eig_max_iter=40, **changes), etas=lrs)
    hist = pop.train_population(cfgs)
    ref = train(cfgs[1])
    assert ref.diverged and hist.diverged[1] and not hist.diverged[0]
    assert hist.diverged_step[1] == ref.diverged_step
    assert np.isnan(hist.train_loss[1, ref.diverged_step + 1 :]).all()
    assert np.isfinite(hist.train_loss[0]).all()
    assert np.isfinite(hist.eigs[0]).all() and np.isnan(hist.test_loss[1])
    # the healthy member is unaffected by its diverging neighbour
    assert _max_rel(train(cfgs[0]).train_loss, hist.train_loss[0]) < 1e-9


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
    with pytest.raises(ConfigError, match="differ only"):
        pop.train_population([BASE.replace(optimizer="adam"), BASE.replace(optimizer="clipped_ada")])
    with pytest.raises(ConfigError, match="hvp_method"):
        curvature.batched_lanczos(lambda th: (th**2).sum(), torch.zeros(1, 3), hvp_method="dense")
    with pytest.raises(ConfigError, match="checkpoint_every"):
        pop.train_population([BASE], checkpoint_every=-1)
    with pytest.raises(ConfigError, match="same steps"):
        pop.train_sweep([BASE, BASE.replace(steps=3)])
    with pytest.raises(ConfigError):
        pop.train_population([])


def test_keep_theta_matches_separate_runs_and_stopping():
    base = BASE.replace(steps=40, stop_loss=0.3)
    cfgs = pop.population_configs(base, etas=[0.05, 0.5, 200.0])
    hist = pop.train_population(cfgs, keep_theta=True)
    assert hist.theta.shape == (3, build_problem(base).flat.theta0.numel())
    assert hist.stopped_step[1] > 0 and hist.stopped_step[0] == -1  # one member stops early, one runs on
    for i, c in enumerate(cfgs):
        ref = train(c, keep_theta=True)
        assert hist.final_step[i] == ref.step[-1] and hist.final_train_loss[i] == pytest.approx(ref.train_loss[-1])
        if ref.diverged:
            assert hist.diverged[i] and np.isnan(hist.theta[i]).all()
        else:
            assert _max_rel(ref.theta_final, hist.theta[i]) < 1e-8
    assert pop.train_population(cfgs).theta is None


def _assert_same_history(a: pop.PopulationHistory, b: pop.PopulationHistory) -> None:
    for name, value in a.as_arrays().items():
        if name != "wall_seconds":
            np.testing.assert_array_equal(value, b.as_arrays()[name], err_msg=name)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("changes", [dict(optimizer="sgd", batch_size=24), dict(optimizer="adam", batch_size=24)])
def test_interrupted_population_resumes_exactly(tmp_path, changes):
    base = BASE.replace(steps=30, eig_every=10, eig_max_iter=40, stop_loss=0.2, **changes)
    lrs = [0.1, 0.5, 500.0] if changes["optimizer"] == "sgd" else [0.005, 0.05, 500.0]
    cfgs = pop.population_configs(base, etas=lrs, seeds=[0, 1])
    whole = pop.train_population(cfgs, keep_theta=True)
    assert whole.diverged.any() and not whole.diverged.all()
    ck = tmp_path / "pop.pt"

    def interrupt(step, total):
        if step == 17:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        pop.train_population(cfgs, keep_theta=True, checkpoint_path=ck, checkpoint_every=5, progress=interrupt)
    assert ck.exists()
    seen = []
    resumed = pop.train_population(
        cfgs, keep_theta=True, checkpoint_path=ck, checkpoint_every=5, progress=lambda s, n: seen.append(s)
    )
    assert seen[0] == 16  # it continued from the checkpoint of step 15, it did not start again
    _assert_same_history(whole, resumed)
    # a finished checkpoint gives the same result without training again
    seen.clear()
    again = pop.train_population(
        cfgs, keep_theta=True, checkpoint_path=ck, checkpoint_every=5, progress=lambda s, n: seen.append(s)
    )
    assert not seen
    _assert_same_history(whole, again)
    with pytest.raises(ConfigError, match="another population"):
        pop.train_population(cfgs[:-1], checkpoint_path=ck, checkpoint_every=5)


def test_sweep_keeps_theta_and_checkpoints_every_population(tmp_path):
    cfgs = [
        BASE.replace(optimizer=o, batch_size=b, lr=lr) for o, b in (("sgd", 16), ("adam", 32)) for lr in (0.01, 0.05)
    ]
    cfgs = [cfgs[2], cfgs[0], cfgs[3], cfgs[1]]
    whole = pop.train_sweep(cfgs, keep_theta=True)
    ck = tmp_path / "sweep.pt"
    calls = []

    def interrupt(step, total):
        calls.append((step, total))
        if step == BASE.steps + 7:  # inside the second population
            raise _Interrupt

    with pytest.raises(_Interrupt):
        pop.train_sweep(cfgs, keep_theta=True, checkpoint_path=ck, checkpoint_every=5, progress=interrupt)
    assert calls[-1] == (BASE.steps + 7, 2 * BASE.steps)
    paths = pop.sweep_checkpoint_paths(ck, 2)
    assert all(p.exists() for p in paths) and paths[0].name == "sweep-pop0.pt"
    resumed = pop.train_sweep(cfgs, keep_theta=True, checkpoint_path=ck, checkpoint_every=5)
    _assert_same_history(whole, resumed)
    for i, c in enumerate(cfgs):
        assert _max_rel(train(c, keep_theta=True).theta_final, whole.theta[i]) < 1e-8


def test_sweep_pads_curvature_of_a_population_that_stopped_early():
    fast = BASE.replace(lr=0.5, stop_loss=0.3, eig_every=4, eig_max_iter=40)  # GD stops after a few steps
    slow = fast.replace(optimizer="sgd", batch_size=16, lr=0.01)
    hist = pop.train_sweep([fast, slow])
    assert 0 < hist.stopped_step[0] < 8 and hist.stopped_step[1] == -1
    np.testing.assert_array_equal(hist.eig_step, np.arange(0, BASE.steps + 1, 4))
    n_fast = hist.stopped_step[0] // 4 + 1  # evaluations up to and including the stopping step
    assert np.isfinite(hist.eigs[0, :n_fast]).all() and np.isnan(hist.eigs[0, n_fast:]).all()
    assert np.isfinite(hist.eigs[1]).all()
    one = pop.train_population([fast])
    assert len(one.eig_step) == n_fast and one.padded(hist.eig_step).eigs.shape == hist.eigs[:1].shape
