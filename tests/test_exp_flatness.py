"""Configs of the flatness experiments validate, and tiny runs work end to end."""

import numpy as np
import pytest
import torch

from instabilities import experiments
from instabilities.config import ConfigError
from instabilities.experiments import flatness as ef


def test_registered_with_both_scales():
    for name in ("gfs_descent", "flatness_goldilocks"):
        exp = experiments.get(name)
        assert exp.chapter == "flatness_bias"
        assert set(exp.configs) >= {"ci", "full"}
        assert exp.configs["ci"].config_hash() != exp.configs["full"].config_hash()


@pytest.mark.parametrize(
    "bad",
    [
        dict(seeds=(0,)),
        dict(etas=()),
        dict(etas=(0.5, 0.1)),
        dict(max_steps=100, trace_every=30),
        dict(activation="swish2"),
        dict(stop_loss=0.0),
        dict(trace_samples=0),
    ],
)
def test_goldilocks_config_rejects_bad_input(bad):
    with pytest.raises(ConfigError):
        ef.GoldilocksConfig(**bad)


@pytest.mark.parametrize("bad", [dict(eta_gfs_values=()), dict(eta_gfs_values=(-1.0,)), dict(steps=15, gfs_every=10)])
def test_gfs_config_rejects_bad_input(bad):
    with pytest.raises(ConfigError):
        ef.GfsDescentConfig(**bad)


def test_tiny_gfs_descent_flattens_only_when_unstable():
    torch.set_num_threads(1)
    cfg = ef.GfsDescentConfig(eta_gfs_values=(1.5, 2.6), steps=60, gfs_every=20, seeds=(0, 3), gfs_iters=800)
    res = ef.run_gfs_descent(cfg)
    assert res["x"].shape == (2, 2, 4) and res["basin_distance"].shape == (2, 2, 4)
    np.testing.assert_allclose(res["x"][:, :, 0], np.log(res["eta_gfs_values"])[:, None] * np.ones((1, 2)), atol=1e-6)
    assert np.all(res["eta_s0"] < 2)
    drop = res["x"][:, :, 0] - res["x"][:, :, -1]
    assert np.all(drop[1] > 0.1) and np.all(drop[0] < 0.1)
    q = ef.seed_quantiles(res["x"], (0.5,))
    np.testing.assert_allclose(q[0.5], np.median(res["x"], axis=1))


def test_tiny_goldilocks_run_reaches_common_loss_and_summarizes():
    torch.set_num_threads(1)
    cfg = ef.GoldilocksConfig(
        dataset="digits",
        n_train=80,
        n_test=297,
        widths=(8,),
        etas=(0.2, 0.5),
        seeds=(0, 1),
        stop_loss=0.2,
        max_steps=400,
        trace_every=50,
        trace_samples=4,
    )
    res = ef.run_flatness_goldilocks(cfg)
    assert res["reached"].all() and not res["diverged"].any()
    assert np.all(res["final_loss"] < 0.2)
    assert np.all(res["steps_to_loss"][1] < res["steps_to_loss"][0])  # larger steps reach the loss sooner
    assert int(res["n_test"]) == 297 and np.all((res["test_acc"] > 0) & (res["test_acc"] <= 1))
    assert np.all(res["hessian_trace"] > res["final_sharpness"] * 0.5)
    summ = ef.summarize_goldilocks(res)
    np.testing.assert_allclose(summ["test_acc_mean"], res["test_acc"].mean(1))
    assert np.all(summ["test_acc_lo"] <= summ["test_acc_mean"]) and np.all(summ["test_acc_mean"] <= summ["test_acc_hi"])
    m, lo, hi = ef.paired_difference(res, "final_sharpness", 0, 1)
    np.testing.assert_allclose(m, (res["final_sharpness"][1] - res["final_sharpness"][0]).mean())
    assert lo <= m <= hi


def test_goldilocks_full_scale_checkpoints_under_its_name(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path))
    cfg = ef.GoldilocksConfig(
        scale="full",
        dataset="digits",
        n_train=60,
        n_test=50,
        widths=(8,),
        etas=(0.1,),
        seeds=(0, 1),
        stop_loss=0.01,
        max_steps=10,
        trace_every=5,
        trace_samples=2,
    )
    assert experiments.get("flatness_goldilocks").resumable
    first = experiments.run("flatness_goldilocks", cfg)
    assert experiments.checkpoint_path("flatness_goldilocks", cfg).exists()
    again = experiments.run("flatness_goldilocks", cfg)  # resumes from the finished checkpoint
    np.testing.assert_array_equal(again["sharpness_trace"], first["sharpness_trace"])
