"""Tests of the label-noise experiments: registry, configs, small runs."""
import numpy as np
import pytest

from instabilities import experiments
from instabilities.config import ConfigError
from instabilities.exp_label_noise import (ArchConfig, ChainConfig, extrapolated, run_architectures, run_chain,
                                           stationary_mean)

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
    assert res["flow_sharpness"].shape == (5, 2, 2, 1, 2)
    assert stationary_mean(res).shape == (2, 2, 1)
    assert extrapolated(res).shape == (2,)
    assert res["predicted_sharpness"][1] > res["predicted_sharpness"][0]
    np.testing.assert_allclose(res["init_sharpness"], [2.0])  # t = 1 is the flattest minimum: S = 2 s |a|


def test_small_architecture_run():
    cfg = ArchConfig(archs=("mlp",), ratios=(1.0, 4.0), seeds=(0,), steps=100, snapshot_every=50, final_window=1,
                     width=6, n_eval=32)
    res = run_architectures(cfg)
    assert res["final_sharpness"].shape == (1, 2, 1)
    assert np.isfinite(res["final_sharpness"]).all()
