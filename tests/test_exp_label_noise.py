"""Tests of the label-noise experiments: registry, configs, small runs."""
import numpy as np
import pytest
import torch

from instabilities import experiments
from instabilities.config import ConfigError
from instabilities import label_noise as ln
from instabilities.exp_label_noise import (TRAJECTORY_KEYS, ArchConfig, ChainConfig, extrapolated, extrapolated_sem,
                                           run_architectures, run_chain, stationary_mean, stationary_sem)

NAMES = ("label_noise_chain", "label_noise_sweep", "label_noise_reconcile", "label_noise_architectures")


def test_registered_with_both_scales():
    for name in NAMES:
        assert name in experiments.names()
        assert experiments.config(name, "ci").scale == "ci"
        assert experiments.config(name, "full").scale == "full"
        assert experiments.config(name, "ci").config_hash() != experiments.config(name, "full").config_hash()


def test_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match="positive"):
        ChainConfig(ratios=(0.0,))
    with pytest.raises(ConfigError, match="2 outputs"):
        ChainConfig(teacher=(1.0,))
    with pytest.raises(ConfigError, match="depth"):
        ChainConfig(depth=1)
    with pytest.raises(ConfigError, match="arch"):
        ArchConfig(archs=("lstm",))


def test_small_chain_run_shapes_and_prediction_order():
    cfg = ChainConfig(ratios=(1.0, 9.0), etas=(0.05, 0.1), init_hidden_sq=(1.0,), replicas=2, steps=400,
                      record_every=100)
    res = run_chain(cfg)
    assert res["flow_sharpness_mean"].shape == (5, 2, 2, 1)
    assert res["flow_sharpness_mean"].dtype == np.float32 and res["predicted_sharpness"].dtype == np.float64
    assert res["n_diverged"].shape == (2, 2, 1) and int(res["n_diverged"].sum()) == 0
    assert stationary_mean(res).shape == (2, 2, 1)
    assert extrapolated(res).shape == (2,)
    assert np.all(stationary_sem(res) > 0) and np.all(extrapolated_sem(res) > 0)
    assert res["predicted_sharpness"][1] > res["predicted_sharpness"][0]
    np.testing.assert_allclose(res["init_sharpness"], [2.0])  # t = 1 is the flattest minimum: S = 2 s |a|


def test_small_architecture_run():
    cfg = ArchConfig(archs=("mlp",), ratios=(1.0, 4.0), seeds=(0,), steps=100, snapshot_every=50, final_window=1,
                     width=6, n_eval=32)
    res = run_architectures(cfg)
    assert res["final_sharpness"].shape == (1, 2, 1)
    assert np.isfinite(res["final_sharpness"]).all()


def test_aggregates_equal_the_per_replica_statistics():
    """The compact result reproduces the statistics of the raw per-replica trajectories it summarises."""
    cfg = ChainConfig(ratios=(4.0,), etas=(0.05, 0.1), init_hidden_sq=(0.3, 1.0), replicas=3, steps=600,
                      record_every=100)
    res = run_chain(cfg)
    net = ln.chain_point(1.0, cfg.teacher, cfg.depth)[0]
    thetas = [ln.chain_point(t, cfg.teacher, cfg.depth)[1] for t in cfg.init_hidden_sq]
    thetas = torch.stack([thetas[j] for _ in cfg.etas for j in range(2) for _ in range(3)])
    lrs = [eta for eta in cfg.etas for _ in range(2) for _ in range(3)]
    cov = ln.noise_covariance(4.0, cfg.noise_trace, 2)
    raw = ln.label_noise_sgd(net, thetas, torch.tensor([[1.0], [0.0]], dtype=torch.float64),
                             torch.eye(1, dtype=torch.float64), cov.expand(len(lrs), 2, 2).clone(), lrs, cfg.steps,
                             cfg.batch_size, cfg.record_every, cfg.seed)
    for key in TRAJECTORY_KEYS:
        x = np.asarray(raw[key]).reshape(-1, 1, 2, 2, 3)
        np.testing.assert_allclose(res[f"{key}_mean"], x.mean(axis=-1), rtol=1e-6)
        averages = x[x.shape[0] // 2:].mean(axis=0)
        np.testing.assert_allclose(stationary_mean(res, key), averages.mean(axis=-1), rtol=1e-6)
        np.testing.assert_allclose(stationary_sem(res, key), averages.std(axis=-1, ddof=1) / np.sqrt(3), rtol=1e-5)


def test_extrapolated_sem_is_linear_error_propagation():
    """Two step sizes: intercept = 2 v(eta) - v(2 eta), so its error is sqrt(4 e1^2 + e2^2) (pooled inits)."""
    sem = np.array([[[0.3, 0.4], [0.1, 0.2]]])  # [ratio, eta, init]
    res = {"etas": np.array([0.05, 0.1]), "flow_sharpness_sem": sem}
    e1, e2 = np.hypot(0.3, 0.4) / 2, np.hypot(0.1, 0.2) / 2
    np.testing.assert_allclose(extrapolated_sem(res), [np.sqrt(4 * e1 ** 2 + e2 ** 2)], rtol=1e-9)


def test_diverging_replicas_are_counted_not_averaged():
    cfg = ChainConfig(ratios=(4.0,), etas=(0.05, 3.0), init_hidden_sq=(1.0,), replicas=2, steps=200, record_every=50)
    res = run_chain(cfg)
    assert res["n_diverged"][0, 1, 0] == 2 and res["n_diverged"][0, 0, 0] == 0
    assert np.isnan(stationary_mean(res)[0, 1, 0]) and np.isfinite(stationary_mean(res)[0, 0, 0])
