"""The population_sweep experiment: configs, errors, and agreement of loop, population and dense Hessian."""

import numpy as np
import pytest
import torch

from instabilities import experiments
from instabilities.config import ConfigError
from instabilities.experiments.full_scale import PopulationSweepConfig, loop_indices, run_population_sweep
from instabilities.train import build_problem, train

TINY = PopulationSweepConfig(
    etas=(0.05, 0.3, 0.8, 400.0),
    steps=12,
    n_train=64,
    widths=(8, 8),
    dtype="float64",
    dataset="digits",
    loop_members=3,
    eig_tol=1e-5,
    eig_max_iter=80,
)


def test_registered_configs_validate_and_match_the_issue_setting():
    ci, full = (experiments.config("population_sweep", s) for s in ("ci", "full"))
    assert ci.scale == "ci" and full.scale == "full" and ci.config_hash() != full.config_hash()
    assert len(full.etas) == 64 and full.steps == 1000 and full.widths == (100, 100)
    assert (full.dataset, full.n_train, full.activation, full.loss) == ("mnist1d", 1000, "tanh", "mse")
    assert full.loop_members == 0  # the loop is timed on every member, not extrapolated
    assert experiments.get("population_sweep").chapter == "full_scale"


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(etas=()), "non-empty"),
        (dict(etas=(0.1, -1.0)), "step sizes"),
        (dict(loop_members=5), "loop_members"),
        (dict(steps=0), "steps"),
        (dict(dataset="imagenet"), "dataset"),
        (dict(widths=(0,)), "width"),
    ],
)
def test_bad_config_raises_config_error_naming_the_fix(changes, match):
    with pytest.raises(ConfigError, match=match):
        PopulationSweepConfig(**changes)


def test_loop_indices():
    assert loop_indices(5, 0).tolist() == [0, 1, 2, 3, 4]
    assert loop_indices(64, 4).tolist() == [0, 21, 42, 63]
    assert loop_indices(3, 3).tolist() == [0, 1, 2]


def test_tiny_run_loop_equals_population_and_sharpness_equals_dense_hessian():
    res = run_population_sweep(TINY)
    P = len(TINY.etas)
    for key in ("etas", "final_loss", "initial_sharpness", "final_sharpness", "diverged"):
        assert res[key].shape == (P,), key
    assert res["loop_index"].tolist() == [0, 2, 3] and bool(res["loop_extrapolated"])
    np.testing.assert_allclose(res["loop_seconds"], res["loop_seconds_measured"] * P / 3)
    np.testing.assert_allclose(res["speedup"], res["loop_seconds"] / res["population_seconds"])
    # float64: the population reproduces the separate runs to rounding
    assert res["max_rel_loss_diff"].max() < 1e-9
    # the huge step diverges and is recorded, not raised; the others do not
    assert res["diverged"].tolist() == [False, False, False, True]
    assert np.isnan(res["final_loss"][3]) and np.isnan(res["final_sharpness"][3])
    # all members start from the same initialisation, hence the same sharpness
    np.testing.assert_allclose(res["initial_sharpness"], res["initial_sharpness"][0], rtol=1e-8)
    # final sharpness of a member = top eigenvalue of the dense Hessian at that member's final parameters
    base = TINY.train_config()
    prob = build_problem(base)
    for i in (0, 1, 2):  # 0 and 2 were looped, 1 was re-run as a tracked population
        hist = train(base.replace(lr=TINY.etas[i]), keep_theta=True)
        np.testing.assert_allclose(res["final_loss"][i], hist.train_loss[-1], rtol=1e-9)
        theta = torch.as_tensor(hist.theta_final, dtype=torch.float64)
        dense = torch.autograd.functional.hessian(prob.hessian_objective, theta)
        top = torch.linalg.eigvalsh(dense)[-1].item()
        np.testing.assert_allclose(res["final_sharpness"][i], top, rtol=1e-6)


def test_loop_on_every_member_is_measured_not_extrapolated():
    res = run_population_sweep(TINY.replace(etas=(0.05, 0.3), loop_members=0, steps=5))
    assert res["loop_index"].tolist() == [0, 1] and not bool(res["loop_extrapolated"])
    assert res["loop_seconds"] == res["loop_seconds_measured"]
    for key in ("loop_seconds", "population_seconds", "speedup"):  # sanity only: speed is not a test's business
        assert np.isfinite(res[key]) and res[key] > 0, key
    assert res["max_rel_loss_diff"].max() < 1e-9 and not res["diverged"].any()
