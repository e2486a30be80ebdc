"""Edge-of-stability experiments: config validation, registration and tiny runs."""

import numpy as np
import pytest

from instabilities import experiments
from instabilities.config import ConfigError
from instabilities.experiments.eos import EosFlowConfig, EosSweepConfig, run_eos_flow, run_eos_sweep

TINY = dict(dataset="digits", n_train=100, n_test=297, widths=(16,), activation="tanh")


def test_registered_with_both_scales():
    for name in ("eos_sweep", "eos_sweep_ce", "eos_cifar10", "eos_flow"):
        exp = experiments.get(name)
        assert exp.chapter == "edge_of_stability"
        assert exp.configs["ci"].scale == "ci" and exp.configs["full"].scale == "full"
        assert exp.configs["ci"].config_hash() != exp.configs["full"].config_hash()
    assert experiments.config("eos_cifar10", "full").dataset == "cifar10"
    assert experiments.config("eos_cifar10", "full").n_train == 5000
    assert experiments.config("eos_sweep_ce", "ci").loss == "ce"


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(etas=()), "etas"),
        (dict(etas=(0.1, -0.2)), "eta"),
        (dict(dataset="imagenet"), "dataset"),
        (dict(loss="hinge"), "loss"),
        (dict(widths=()), "widths"),
        (dict(eig_every=0), "eig_every"),
        (dict(n_eigs=0), "n_eigs"),
        (dict(dataset="teacher", loss="ce"), "regression"),
    ],
)
def test_sweep_config_validation(bad, match):
    with pytest.raises(ConfigError, match=match):
        EosSweepConfig(**bad)


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(eta=0.0), "eta"),
        (dict(compare_every=500, steps=100), "compare_every"),
        (dict(flow_alpha=3.0), "unstable"),
        (dict(activation="swish"), "activation"),
    ],
)
def test_flow_config_validation(bad, match):
    with pytest.raises(ConfigError, match=match):
        EosFlowConfig(**bad)


def test_dataset_is_part_of_the_hash():
    a = EosSweepConfig(dataset="mnist1d")
    assert a.config_hash() != a.replace(dataset="digits").config_hash()


def test_tiny_sweep_records_divergence_and_eigenvalues():
    cfg = EosSweepConfig(etas=(0.05, 50.0), steps=30, eig_every=10, n_eigs=2, **TINY)
    res = run_eos_sweep(cfg)
    assert res["train_loss"].shape == (2, 31) and res["eigs"].shape == (2, 4, 2)
    np.testing.assert_array_equal(res["eig_step"], [0, 10, 20, 30])
    assert not res["diverged"][0] and np.all(np.isfinite(res["train_loss"][0]))
    assert res["diverged"][1] and res["diverged_step"][1] > 0  # eta = 50 blows up, recorded not raised
    # both runs start from one initialisation: same loss and eigenvalues at step 0
    assert res["train_loss"][0, 0] == res["train_loss"][1, 0]
    np.testing.assert_allclose(res["eigs"][0, 0], res["eigs"][1, 0], rtol=1e-4)
    assert np.all(res["eigs"][0, :, 0] >= res["eigs"][0, :, 1] - 1e-6)  # sorted
    assert np.all(res["eig_residuals"][0] < 1e-2 * res["eigs"][0, :, :1])


def test_tiny_flow_run():
    cfg = EosFlowConfig(eta=0.05, steps=20, compare_every=5, **TINY)
    res = run_eos_flow(cfg)
    np.testing.assert_array_equal(res["compare_step"], [0, 5, 10, 15, 20])
    np.testing.assert_allclose(res["time"], 0.05 * res["compare_step"])
    assert res["distance"][0] == 0.0
    # a small stable step: GD is a good discretisation of the flow
    assert np.all(res["distance"] < 0.01 * res["gd_norm"])
    np.testing.assert_allclose(res["flow_sharpness"][0], res["gd_sharpness"][0], rtol=1e-3)
    assert res["flow_loss"][-1] < res["flow_loss"][0]


def test_cifar10_without_local_copy_raises_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTABILITIES_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        experiments.run("eos_cifar10", experiments.config("eos_cifar10", "ci"))


def test_summarize_sweep_on_synthetic_arrays():
    from instabilities.experiments.eos import first_crossing, summarize_sweep

    eig_step = np.arange(0, 101, 10)
    s = np.array([1, 2, 3, 4, 5.2, 4.8, 5.1, 4.9, 5.0, 5.3, 4.7])  # eta = 0.4: 2/eta = 5
    loss = np.linspace(1.0, 0.5, 101)
    loss[60] = 0.9  # one spike: two changes after the crossing (up, then down)
    res = {
        "etas": np.array([0.4]),
        "eig_step": eig_step,
        "eigs": s[None, :, None],
        "train_loss": loss[None],
        "diverged": np.array([False]),
    }
    assert first_crossing(eig_step, s, 5.0) == 40 and first_crossing(eig_step, s, 9.0) == -1
    row = summarize_sweep(res, settle=20)[0]
    assert row["crossing_step"] == 40 and row["S0"] == 1.0
    assert row["plateau_min"] == pytest.approx(0.4 * 4.7 / 2) and row["plateau_max"] == pytest.approx(0.4 * 5.3 / 2)
    assert row["frac_loss_up"] == pytest.approx(1 / 60)
    assert row["loss_at_crossing"] == pytest.approx(loss[40]) and row["loss_final"] == pytest.approx(0.5)


def test_sweep_members_stopped_early_keep_full_length_arrays():
    cfg = EosSweepConfig(etas=(0.05, 0.1), steps=20, eig_every=10, n_eigs=1, stop_acc=0.0, **TINY)
    res = run_eos_sweep(cfg)  # accuracy >= 0 at step 0: every member stops there
    assert res["train_loss"].shape == (2, 21) and res["eigs"].shape == (2, 3, 1)
    assert np.all(np.isfinite(res["eigs"][:, 0])) and np.all(np.isnan(res["eigs"][:, 1:]))
    assert np.all(np.isnan(res["train_loss"][:, 1:])) and not res["diverged"].any()
    assert np.all(np.isfinite(res["test_acc"]))  # test metrics at the iterate where the member stopped


def test_full_scale_sweep_checkpoints_and_resumes_exactly(tmp_path, monkeypatch):
    from instabilities.experiments import common as exp_common

    monkeypatch.setattr(exp_common, "CHECKPOINT_EVERY", 5)
    cfg = EosSweepConfig(scale="full", etas=(0.05, 0.4), steps=20, eig_every=5, n_eigs=1, **TINY)
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path / "a"))
    ref = experiments.run("eos_sweep", cfg)
    assert experiments.checkpoint_path("eos_sweep", cfg).exists()

    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path / "b"))

    def stop_at_12(step, total):
        if step == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        experiments.run("eos_sweep", cfg, progress=stop_at_12)
    assert experiments.checkpoint_path("eos_sweep", cfg).exists()  # saved at step 10
    resumed = experiments.run("eos_sweep", cfg)
    for key in ref:
        np.testing.assert_array_equal(resumed[key], ref[key], err_msg=key)


def test_ci_scale_and_direct_calls_write_no_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path))
    cfg = EosSweepConfig(scale="ci", etas=(0.05,), steps=5, eig_every=5, n_eigs=1, **TINY)
    experiments.run("eos_sweep_ce", cfg.replace(loss="ce"))
    run_eos_sweep(cfg.replace(scale="full"))  # no experiment name: nothing to checkpoint under
    assert not (tmp_path / "checkpoints").exists()
    for name in ("eos_sweep", "eos_sweep_ce", "eos_cifar10"):
        exp = experiments.get(name)
        assert exp.resumable and exp.run.keywords["name"] == name


# -- Cohen et al.'s controls and the dense crossing ----------------------------------------------
from instabilities.experiments.eos import (  # noqa: E402
    EosCrossingConfig,
    EosMomentumConfig,
    EosSwitchConfig,
    fit_self_stabilization,
    run_eos_crossing,
    run_eos_momentum,
    run_eos_switch,
    self_stabilization_measures,
    summarize_momentum,
    summarize_switch,
)


def test_controls_registered_with_both_scales():
    for name, chapter in (
        ("eos_switch", "eos_controls"),
        ("eos_momentum", "eos_controls"),
        ("eos_relu", "eos_controls"),
        ("eos_crossing", "catapults_self_stabilization"),
    ):
        exp = experiments.get(name)
        assert exp.chapter == chapter
        assert exp.configs["ci"].scale == "ci" and exp.configs["full"].scale == "full"
    assert len(experiments.config("eos_relu", "ci").etas) >= 4
    assert experiments.config("eos_relu", "ci").activation == "relu"


@pytest.mark.parametrize(
    "cls,bad,match",
    [
        (EosSwitchConfig, dict(switch_step=0), "switch_step"),
        (EosSwitchConfig, dict(eta_after=-1.0), "eta_after"),
        (EosMomentumConfig, dict(beta=1.0), "beta"),
        (EosMomentumConfig, dict(etas_heavy_ball=(), etas_nesterov=()), "at least one"),
        (EosCrossingConfig, dict(dense_from=1.5), "dense_from"),
        (EosCrossingConfig, dict(dense_steps=0), "dense_steps"),
    ],
)
def test_control_config_validation(cls, bad, match):
    with pytest.raises(ConfigError, match=match):
        cls(**bad)


def test_tiny_switch_changes_the_step_size():
    cfg = EosSwitchConfig(eta=0.05, eta_after=0.1, switch_step=10, steps=20, eig_every=5, **TINY)
    res = run_eos_switch(cfg)
    assert res["eta_t"][9] == 0.05 and res["eta_t"][10] == 0.1
    ref = run_eos_sweep(EosSweepConfig(etas=(0.05,), steps=10, eig_every=5, n_eigs=1, **TINY))
    np.testing.assert_allclose(res["train_loss"][:11], ref["train_loss"][0], rtol=1e-5)  # same run until the switch
    s = summarize_switch(res, settle=0)
    assert set(s) >= {"ratio_after", "steps_to_resettle", "crossing_step"}


def test_tiny_momentum_predicted_thresholds():
    cfg = EosMomentumConfig(beta=0.5, etas_heavy_ball=(0.1,), etas_nesterov=(0.1,), steps=10, eig_every=5, **TINY)
    res = run_eos_momentum(cfg)
    np.testing.assert_allclose(res["predicted_threshold"], [3.0 / 0.1, 1.5 / 0.1])
    assert list(res["method"]) == ["heavy_ball", "nesterov"] and res["sharpness"].shape == (2, 3)
    assert len(summarize_momentum(res, settle=0)) == 2


def test_self_stabilization_measures_on_a_period_two_orbit():
    import torch

    u = torch.zeros(5, dtype=torch.float64)
    u[0] = 1.0
    thetas = torch.stack([torch.full((5,), 0.3, dtype=torch.float64) + ((-1) ** t) * 0.2 * u for t in range(6)])
    m = self_stabilization_measures(thetas, u.repeat(6, 1), np.full(6, 10.5), eta=0.2)
    np.testing.assert_allclose(np.abs(m["x"]), 0.2)
    np.testing.assert_allclose(m["y"], 0.5)
    # the fit recovers the constants of the 2-D map
    from instabilities.dynamics import toys

    x, y = toys.self_stabilization_map(0.01, -2.0, 0.001, 1.0, 2.0, 50_000)
    f = fit_self_stabilization(x, y, 0.001)
    assert f["alpha"] == pytest.approx(1.0, rel=1e-6) and f["beta"] == pytest.approx(2.0, rel=1e-6)
    assert f["x_growth_pos"] > 0 > f["x_growth_neg"] and f["x_slope"] == pytest.approx(1.0, rel=1e-3)


def test_tiny_crossing_tracks_every_step_after_the_trigger():
    cfg = EosCrossingConfig(eta=1.0, steps=30, coarse_every=10, dense_from=0.01, dense_steps=8, **TINY)
    res = run_eos_crossing(cfg)
    np.testing.assert_array_equal(res["dense_step"], np.arange(8))  # dense from step 0 on (threshold tiny)
    assert len(res["train_loss"]) == 9 and len(res["x"]) == 6 and len(res["y"]) == 6
