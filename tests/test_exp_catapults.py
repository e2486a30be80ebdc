"""Catapults in a network and the central flow experiment: validation, registration and tiny runs."""

import numpy as np
import pytest

from instabilities import experiments
from instabilities.config import ConfigError
from instabilities.experiments import catapults as C

TINY = dict(dataset="digits", n_train=64, n_test=297)


def test_registered_with_both_scales():
    for name in ("catapult_net", "central_flow"):
        exp = experiments.get(name)
        assert exp.chapter == "catapults_self_stabilization"
        assert exp.configs["ci"].scale == "ci" and exp.configs["full"].scale == "full"
        assert exp.configs["ci"].config_hash() != exp.configs["full"].config_hash()


@pytest.mark.parametrize(
    "cls,bad,match",
    [
        (C.CatapultNetConfig, dict(eta_lambda0=()), "eta_lambda0"),
        (C.CatapultNetConfig, dict(eta_lambda0=(1.0, -2.0)), "eta_lambda0"),
        (C.CentralFlowConfig, dict(substeps=0), "substeps"),
        (C.CentralFlowConfig, dict(record_every=500, steps=100), "record_every"),
    ],
)
def test_config_validation(cls, bad, match):
    with pytest.raises(ConfigError, match=match):
        cls(**bad)


def test_tiny_catapult_sweep_phases():
    cfg = C.CatapultNetConfig(widths=(256,), eta_lambda0=(0.5, 3.0, 40.0), steps=40, eig_every=10, **TINY)
    res = C.run_catapult_net(cfg)
    np.testing.assert_allclose(res["etas"] * res["lambda0"], [0.5, 3.0, 40.0])
    np.testing.assert_allclose(res["sharpness"][:, 0], res["lambda0"], rtol=1e-3)  # one initialisation
    s = C.summarize_catapult(res)
    assert s["loss_ratio"][0] == pytest.approx(1.0) and not s["diverged"][0]
    assert s["diverged"][2] and s["upper_boundary"] == 40.0


def test_moving_average():
    x = np.arange(10.0)
    np.testing.assert_allclose(C.moving_average(x, 1), x)
    np.testing.assert_allclose(C.moving_average(np.ones(7), 4), 1.0)
    assert C.moving_average(x, 4)[5] == pytest.approx(np.mean(x[3:7]))


def test_tiny_central_flow_run():
    cfg = C.CentralFlowConfig(widths=(8,), eta=0.05, steps=8, record_every=4, avg_window=2, n_eigs=1, **TINY)
    res = C.run_central_flow(cfg)
    np.testing.assert_array_equal(res["time"], [0, 4, 8])
    assert res["distance"][0] == 0 and res["cf_n_critical"].max() == 0  # small eta: the flow is gradient flow
    assert res["distance"][-1] < 1e-2
