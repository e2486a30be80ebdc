import numpy as np
import pytest

from instabilities import experiments
from instabilities.config import ConfigError
from instabilities.dynamics.sgd_stability import second_moment_factor
from instabilities.experiments.sgd import SGDSweepConfig, effect_sizes, run_sgd_batch_sweep

TINY = SGDSweepConfig(
    n_train=64,
    n_test=50,
    widths=(6,),
    etas=(0.2, 1.0),
    batch_sizes=(64, 8),
    seeds=(0,),
    max_steps=40,
    stop_loss=1e-3,
    eig_every=20,
    eig_tol=1e-6,
)


def test_registered_with_both_scales():
    exp = experiments.get("sgd_batch_sweep")
    assert set(exp.configs) == {"ci", "full"}
    assert exp.configs["ci"].config_hash() != exp.configs["full"].config_hash()
    assert exp.configs["full"].batch_sizes[0] == exp.configs["full"].n_train


@pytest.mark.parametrize(
    "change, fragment",
    [
        (dict(batch_sizes=(64, 128)), "exceeds n_train"),
        (dict(batch_sizes=(8, 64)), "start with n_train"),
        (dict(etas=(1.0, 0.2)), "increasing"),
        (dict(etas=()), "at least one"),
        (dict(dataset="imagenet"), "dataset"),
    ],
)
def test_bad_configs_raise(change, fragment):
    with pytest.raises(ConfigError, match=fragment):
        TINY.replace(**change)


def test_tiny_sweep_invariants():
    res = run_sgd_batch_sweep(TINY)
    assert res["sharpness"].shape == (2, 2, 1)
    assert res["sharp_traj"].shape == (2, 2, 1, 3)
    ok = ~res["diverged"]
    # the mean of the per-example curvatures along the top eigenvector is the sharpness
    np.testing.assert_allclose(res["dir_a"][ok], res["sharpness"][ok], rtol=1e-3)
    # q is the closed-form factor of each run's (eta, a, s, B)
    for i, eta in enumerate(TINY.etas):
        for j, b in enumerate(TINY.batch_sizes):
            if ok[i, j, 0]:
                q = second_moment_factor(eta, res["dir_a"][i, j, 0], res["dir_s"][i, j, 0], b, TINY.n_train)
                assert res["q"][i, j, 0] == pytest.approx(q)
                assert res["max_eta_s"][i, j, 0] >= eta * res["sharpness"][i, j, 0] * (1 - 1e-9)
    eff = effect_sizes(res)
    assert eff["instability"][0] == 0.0 and eff["noise"][0] == 0.0
    np.testing.assert_allclose(eff["both"][:, 0], eff["instability"])
    np.testing.assert_allclose(eff["both"][0, :], eff["noise"])


def test_full_and_cifar10_registrations(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTABILITIES_DATA", str(tmp_path))  # no CIFAR-10 here: reproduce skips the experiment
    assert experiments.missing_data(experiments.config("sgd_batch_sweep_cifar10", "full"))
    assert not experiments.missing_data(experiments.config("sgd_batch_sweep", "full"))
    full = experiments.config("sgd_batch_sweep", "full")
    cifar = experiments.config("sgd_batch_sweep_cifar10", "full")
    # full: digits sized for two CPU cores, full batch first; the CIFAR-10 variant keeps the papers' sizes
    assert (full.dataset, full.n_train) == ("digits", 1500) and full.batch_sizes[0] == full.n_train
    assert (cifar.dataset, cifar.n_train, cifar.n_test) == ("cifar10", 5120, 2000) and cifar.batch_sizes[0] == 5120
    assert cifar.widths == (256, 256) and full.widths == (64, 64)
    assert all(eta * 2.5 < 2 for eta in full.etas), "full step sizes must keep eta S(theta_0) < 2 (S(theta_0) ~ 2.4)"
    ci = experiments.config("sgd_batch_sweep_cifar10", "ci")
    assert ci.dataset == "cifar10" and ci.replace(dataset="digits") == experiments.config("sgd_batch_sweep", "ci")
    assert experiments.get("sgd_batch_sweep").resumable and experiments.get("sgd_batch_sweep_cifar10").resumable
    assert experiments.get("sgd_batch_sweep_cifar10").chapter == "sgd_instabilities"


def test_population_sweep_matches_separate_runs():
    """The grid trains as populations; every run is the separate train.train run (float32 rounding)."""
    from instabilities.train import train

    res = run_sgd_batch_sweep(TINY)
    for i, eta in enumerate(TINY.etas):
        for j, b in enumerate(TINY.batch_sizes):
            hist = train(TINY.run_config(eta, b, TINY.seeds[0]))
            assert res["steps"][i, j, 0] == hist.step[-1] and res["diverged"][i, j, 0] == hist.diverged
            assert res["train_loss"][i, j, 0] == pytest.approx(hist.train_loss[-1], rel=1e-4)
            np.testing.assert_allclose(res["sharp_traj"][i, j, 0, : len(hist.sharpness)], hist.sharpness, rtol=1e-3)


class _Interrupt(Exception):
    pass


def test_full_scale_sweep_resumes_exactly(tmp_path, monkeypatch):
    import instabilities.experiments.sgd as exp_sgd

    monkeypatch.setattr(exp_sgd, "CHECKPOINT_EVERY", 5)
    cfg = TINY.replace(scale="full")
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path / "ci"))
    run_sgd_batch_sweep(TINY)
    assert not (tmp_path / "ci" / "checkpoints").exists()  # ci runs (the chapters) never checkpoint
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path / "whole"))
    whole = run_sgd_batch_sweep(cfg)
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path / "resumed"))

    def interrupt(done, total):
        if done == cfg.max_steps + 12:  # step 12 of the second population (batch size 8)
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run_sgd_batch_sweep(cfg, progress=interrupt)
    assert len(list(experiments.checkpoint_dir("sgd_batch_sweep", "full").iterdir())) == 2
    seen = []
    resumed = run_sgd_batch_sweep(cfg, progress=lambda d, t: seen.append(d))
    assert seen[0] == cfg.max_steps + 11  # the first population was done, the second resumed at step 10
    assert set(resumed) == set(whole)
    for key in whole:
        np.testing.assert_array_equal(resumed[key], whole[key], err_msg=key)


# -- intervals, paired effects, SGD against its matched SDE -----------------------------------------
from instabilities.experiments.sgd import (  # noqa: E402
    SDEContrastConfig,
    paired_effects,
    run_sgd_sde_contrast,
    sde_contrast_summary,
    seed_interval,
)


def test_seed_interval_is_the_student_t_interval():
    m, lo, hi = seed_interval(np.array([[1.0, 2.0, 3.0, np.nan], [5.0, np.nan, np.nan, np.nan]]))
    np.testing.assert_allclose(m, [2.0, 5.0])
    np.testing.assert_allclose(hi[0] - m[0], 4.302652729749464 * 1.0 / np.sqrt(3))  # t_{0.975, 2}
    assert np.isnan(lo[1]) and np.isnan(hi[1])  # one value: no interval
    with pytest.raises(ConfigError, match="level"):
        seed_interval(np.ones(3), level=1.5)


def test_paired_effects_pair_by_seed():
    S = np.array([[[3.0, 4.0], [2.0, 3.5]], [[2.5, 3.0], [1.0, 2.0]]])  # (eta, b, seed)
    eff = paired_effects({"sharpness": S})
    np.testing.assert_allclose(eff["instability"][0], [0.0, 0.75])
    np.testing.assert_allclose(eff["noise"][0], [0.0, 0.75])
    np.testing.assert_allclose(eff["batch_drop"][0], [[0.0, 0.75], [0.0, 1.25]])


TINY_SDE = SDEContrastConfig(
    n_train=64,
    n_test=50,
    widths=(6,),
    eta=0.3,
    batch_sizes=(8,),
    seeds=(0, 1),
    max_steps=60,
    stop_loss=1e-4,
    eig_tol=1e-6,
)


def test_sde_contrast_registered_and_validated():
    exp = experiments.get("sgd_sde_contrast")
    assert set(exp.configs) == {"ci", "full"} and exp.chapter == "sgd_instabilities"
    with pytest.raises(ConfigError, match="must be < n_train"):
        TINY_SDE.replace(batch_sizes=(64,))
    with pytest.raises(ConfigError, match="at least one"):
        TINY_SDE.replace(seeds=())


def test_tiny_sde_contrast_is_reproducible_and_consistent():
    a, b = run_sgd_sde_contrast(TINY_SDE), run_sgd_sde_contrast(TINY_SDE)
    for key in ("sharpness", "test_acc", "steps"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert list(a["kinds"]) == ["gd", "sgd", "sde"] and a["sharpness"].shape == (3, 2)
    assert not a["diverged"].any() and np.all(a["steps"] == TINY_SDE.max_steps)
    summ = sde_contrast_summary(a)
    np.testing.assert_allclose(summ["sharpness"][8][0], np.mean(a["sharpness"][1] - a["sharpness"][2]))


def test_trace_probes_validated_and_recorded():
    with pytest.raises(ConfigError, match="trace_probes"):
        TINY.replace(trace_probes=1)
    res = run_sgd_batch_sweep(TINY.replace(trace_probes=0))
    assert np.isnan(res["trace"]).all()  # 0: no trace
    eff = paired_effects(run_sgd_batch_sweep(TINY), measure="trace")
    assert np.isfinite(eff["sharpness"][0]).all()
