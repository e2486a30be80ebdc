import numpy as np
import pytest

from instabilities import experiments
from instabilities.config import ConfigError
from instabilities.exp_sgd import SGDSweepConfig, effect_sizes, run_sgd_batch_sweep
from instabilities.sgd_stability import second_moment_factor

TINY = SGDSweepConfig(n_train=64, n_test=50, widths=(6,), etas=(0.2, 1.0), batch_sizes=(64, 8), seeds=(0,),
                      max_steps=40, stop_loss=1e-3, eig_every=20, eig_tol=1e-6)


def test_registered_with_both_scales():
    exp = experiments.get("sgd_batch_sweep")
    assert set(exp.configs) == {"ci", "full"}
    assert exp.configs["ci"].config_hash() != exp.configs["full"].config_hash()
    assert exp.configs["full"].batch_sizes[0] == exp.configs["full"].n_train


@pytest.mark.parametrize("change, fragment", [
    (dict(batch_sizes=(64, 128)), "exceeds n_train"), (dict(batch_sizes=(8, 64)), "start with n_train"),
    (dict(etas=(1.0, 0.2)), "increasing"), (dict(etas=()), "at least one"), (dict(dataset="imagenet"), "dataset"),
])
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
