import math

import numpy as np
import pytest

from instabilities import experiments
from instabilities.config import ConfigError
from instabilities.experiments.adaptive import (AdaptiveEoSConfig, GeneralisationConfig, clipped_sharpness_cap,
                                        run_adam_aeos, run_adaptive_generalisation)


def test_registered_with_both_scales():
    for name in ("adam_aeos", "adaptive_generalisation"):
        exp = experiments.get(name)
        assert set(exp.configs) == {"ci", "full"}
        assert exp.configs["full"].dataset in ("mnist1d", "cifar10")


def test_bad_configs_raise():
    with pytest.raises(ConfigError, match="preconditioner"):
        AdaptiveEoSConfig(runs=(("gd", 0.1, math.inf),))
    with pytest.raises(ConfigError, match="finite clip"):
        AdaptiveEoSConfig(runs=(("clipped_ada", 0.1, math.inf),))
    with pytest.raises(ConfigError, match="triple"):
        AdaptiveEoSConfig(runs=(("adam", 0.1),))
    with pytest.raises(ConfigError, match="batch_size"):
        GeneralisationConfig(n_train=16, batch_size=32)
    with pytest.raises(ConfigError, match="beta1"):
        GeneralisationConfig(beta1=1.0)


def test_cap_formula():
    assert clipped_sharpness_cap(0.01, 0.9, 1e-3) == pytest.approx(1e-3 * 3800)
    assert math.isinf(clipped_sharpness_cap(0.01, 0.9, math.inf))


def test_tiny_aeos_run_satisfies_bounds():
    cfg = AdaptiveEoSConfig(n_train=40, n_test=40, widths=(5,), steps=20, track_every=10, eig_tol=1e-6,
                            runs=(("adam", 0.01, math.inf), ("clipped_ada", 0.01, 0.1)))
    res = run_adam_aeos(cfg)
    assert res["sharpness"].shape == (2, 3)
    assert np.isnan(res["precond_sharpness"][:, 0]).all()  # no preconditioner before the first step
    S, PS, pmax, pmin = (res[k][:, 1:] for k in ("sharpness", "precond_sharpness", "precond_max", "precond_min"))
    assert (PS >= S / pmax * (1 - 1e-3)).all() and (PS <= S / pmin * (1 + 1e-3)).all()
    assert not res["diverged"].any()
    assert (res["precond_max"][1, 1:] <= 0.1 + 1e-8 + 1e-12).all()  # the clip holds
    np.testing.assert_allclose(res["thresholds"], 3.8 / (0.1 * 0.01))


def test_tiny_generalisation_run():
    cfg = GeneralisationConfig(n_train=40, n_test=40, widths=(5,), batch_size=8, clips=(1e-2,), seeds=(0, 1),
                               max_steps=15, stop_loss=1e-4)
    res = run_adaptive_generalisation(cfg)
    assert res["test_acc"].shape == (4, 2)
    assert list(res["optimizers"]) == ["gd", "sgd", "adam", "clipped_ada"]
    ok = ~res["diverged"]
    assert ((res["test_acc"][ok] >= 0) & (res["test_acc"][ok] <= 1)).all()
    assert (res["steps"][ok] == 15).all() and not res["reached"].any()


def test_full_and_cifar10_registrations():
    for name in ("adam_aeos", "adaptive_generalisation"):
        full, cifar = experiments.config(name, "full"), experiments.config(f"{name}_cifar10", "full")
        assert full.dataset == "mnist1d" and (cifar.dataset, cifar.n_train, cifar.n_test) == ("cifar10", 5120, 2000)
        assert cifar.replace(dataset="mnist1d", n_train=4000, n_test=1000) == full
        ci = experiments.config(f"{name}_cifar10", "ci")
        assert ci.dataset == "cifar10" and ci.replace(dataset="digits") == experiments.config(name, "ci")
    assert experiments.get("adaptive_generalisation").resumable
    assert experiments.get("adaptive_generalisation_cifar10").resumable


class _Interrupt(Exception):
    pass


def test_generalisation_matches_separate_runs_and_resumes(tmp_path, monkeypatch):
    import instabilities.experiments.adaptive as exp_adaptive
    from instabilities.train import train

    cfg = GeneralisationConfig(scale="full", n_train=40, n_test=40, widths=(5,), batch_size=8, clips=(1e-2, 0.1),
                               seeds=(0, 1), max_steps=15, stop_loss=1e-4)
    monkeypatch.setattr(exp_adaptive, "CHECKPOINT_EVERY", 4)
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path / "whole"))
    whole = run_adaptive_generalisation(cfg)
    for i, (opt, lr, clip) in enumerate(cfg.methods()):
        for k, seed in enumerate(cfg.seeds):
            hist = train(cfg.method_config(opt, lr, clip, batch_size=None if opt == "gd" else cfg.batch_size,
                                           steps=cfg.max_steps, seed=seed, stop_loss=cfg.stop_loss))
            assert whole["train_loss"][i, k] == pytest.approx(hist.train_loss[-1], rel=1e-4)
            assert whole["test_acc"][i, k] == pytest.approx(hist.test_acc[-1], abs=1e-6)
    assert whole["train_loss"][-2, 0] != whole["train_loss"][-1, 0]  # the two clips are two different runs
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path / "resumed"))

    def interrupt(done, total):
        if done == 2 * cfg.max_steps + 6:  # inside the third population (Adam)
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run_adaptive_generalisation(cfg, progress=interrupt)
    resumed = run_adaptive_generalisation(cfg)
    for key in whole:
        np.testing.assert_array_equal(resumed[key], whole[key], err_msg=key)
