import math

import numpy as np
import pytest

from instabilities import experiments
from instabilities.config import ConfigError
from instabilities.experiments.adaptive import (
    AdaptiveEoSConfig,
    GeneralizationConfig,
    clipped_sharpness_cap,
    run_adam_aeos,
    run_adaptive_generalization,
)


def test_registered_with_both_scales():
    for name in ("adam_aeos", "adaptive_generalization"):
        exp = experiments.get(name)
        assert set(exp.configs) == {"ci", "full"}
        assert exp.configs["full"].dataset in ("digits", "mnist1d", "cifar10")


def test_bad_configs_raise():
    with pytest.raises(ConfigError, match="preconditioner"):
        AdaptiveEoSConfig(runs=(("gd", 0.1, math.inf),))
    with pytest.raises(ConfigError, match="finite clip"):
        AdaptiveEoSConfig(runs=(("clipped_ada", 0.1, math.inf),))
    with pytest.raises(ConfigError, match="triple"):
        AdaptiveEoSConfig(runs=(("adam", 0.1),))
    with pytest.raises(ConfigError, match="batch_size"):
        GeneralizationConfig(n_train=16, batch_size=32)
    with pytest.raises(ConfigError, match="beta1"):
        GeneralizationConfig(beta1=1.0)


def test_cap_formula():
    assert clipped_sharpness_cap(0.01, 0.9, 1e-3) == pytest.approx(1e-3 * 3800)
    assert math.isinf(clipped_sharpness_cap(0.01, 0.9, math.inf))


def test_tiny_aeos_run_satisfies_bounds():
    cfg = AdaptiveEoSConfig(
        n_train=40,
        n_test=40,
        widths=(5,),
        steps=20,
        track_every=10,
        eig_tol=1e-6,
        runs=(("adam", 0.01, math.inf), ("clipped_ada", 0.01, 0.1)),
    )
    res = run_adam_aeos(cfg)
    assert res["sharpness"].shape == (2, 3)
    assert np.isnan(res["precond_sharpness"][:, 0]).all()  # no preconditioner before the first step
    S, PS, pmax, pmin = (res[k][:, 1:] for k in ("sharpness", "precond_sharpness", "precond_max", "precond_min"))
    assert (PS >= S / pmax * (1 - 1e-3)).all() and (PS <= S / pmin * (1 + 1e-3)).all()
    assert not res["diverged"].any()
    assert (res["precond_max"][1, 1:] <= 0.1 + 1e-8 + 1e-12).all()  # the clip holds
    np.testing.assert_allclose(res["thresholds"], 3.8 / (0.1 * 0.01))


def test_tiny_generalization_run():
    cfg = GeneralizationConfig(
        n_train=40, n_test=40, widths=(5,), batch_size=8, clips=(1e-2,), seeds=(0, 1), max_steps=15, stop_loss=1e-4
    )
    res = run_adaptive_generalization(cfg)
    assert res["test_acc"].shape == (4, 2)
    assert list(res["optimizers"]) == ["gd", "sgd", "adam", "clipped_ada"]
    ok = ~res["diverged"]
    assert ((res["test_acc"][ok] >= 0) & (res["test_acc"][ok] <= 1)).all()
    assert (res["steps"][ok] == 15).all() and not res["reached"].any()


def test_full_and_cifar10_registrations():
    for name in ("adam_aeos", "adaptive_generalization"):
        full, cifar = experiments.config(name, "full"), experiments.config(f"{name}_cifar10", "full")
        # full: digits sized for two CPU cores; the CIFAR-10 variant keeps the papers' sizes
        assert (full.dataset, full.n_train) == ("digits", 1500) and full.widths == (32, 32)
        assert (cifar.dataset, cifar.n_train, cifar.n_test) == ("cifar10", 5120, 2000) and cifar.widths == (256, 256)
        ci = experiments.config(f"{name}_cifar10", "ci")
        assert ci.dataset == "cifar10" and ci.replace(dataset="digits") == experiments.config(name, "ci")
    assert experiments.get("adaptive_generalization").resumable
    assert experiments.get("adaptive_generalization_cifar10").resumable


class _Interrupt(Exception):
    pass


def test_generalization_matches_separate_runs_and_resumes(tmp_path, monkeypatch):
    import instabilities.experiments.adaptive as exp_adaptive
    from instabilities.train import train

    cfg = GeneralizationConfig(
        scale="full",
        n_train=40,
        n_test=40,
        widths=(5,),
        batch_size=8,
        clips=(1e-2, 0.1),
        seeds=(0, 1),
        max_steps=15,
        stop_loss=1e-4,
    )
    monkeypatch.setattr(exp_adaptive, "CHECKPOINT_EVERY", 4)
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path / "whole"))
    whole = run_adaptive_generalization(cfg)
    for i, (opt, lr, clip) in enumerate(cfg.methods()):
        for k, seed in enumerate(cfg.seeds):
            hist = train(
                cfg.method_config(
                    opt,
                    lr,
                    clip,
                    batch_size=None if opt == "gd" else cfg.batch_size,
                    steps=cfg.max_steps,
                    seed=seed,
                    stop_loss=cfg.stop_loss,
                )
            )
            assert whole["train_loss"][i, k] == pytest.approx(hist.train_loss[-1], rel=1e-4)
            assert whole["test_acc"][i, k] == pytest.approx(hist.test_acc[-1], abs=1e-6)
    assert whole["train_loss"][-2, 0] != whole["train_loss"][-1, 0]  # the two clips are two different runs
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path / "resumed"))

    def interrupt(done, total):
        if done == 2 * cfg.max_steps + 6:  # inside the third population (Adam)
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run_adaptive_generalization(cfg, progress=interrupt)
    resumed = run_adaptive_generalization(cfg)
    for key in whole:
        np.testing.assert_array_equal(resumed[key], whole[key], err_msg=key)


# -- Clipped-Ada in the q^thresh form ---------------------------------------------------------------
from instabilities.curvature.preconditioned import adam_threshold  # noqa: E402
from instabilities.experiments.adaptive import (  # noqa: E402
    ClippedAdaQConfig,
    cap_riding_fraction,
    clip_for_q,
    run_clipped_ada_q,
)


def test_clip_for_q_sets_the_ceiling():
    for q in (0.5, 1.0, 3.0):
        c = clip_for_q(q, 0.005, 0.9, 4.0, eps=1e-8)
        assert (c + 1e-8) * adam_threshold(0.005, 0.9) == pytest.approx(q * 4.0, rel=1e-12)
        assert clipped_sharpness_cap(0.005, 0.9, c, 1e-8) == pytest.approx(q * 4.0, rel=1e-12)
    assert clip_for_q(1.0, 0.01, 0.0, 2 / 0.01) == pytest.approx(1.0)  # paper's convention: c = q
    assert clip_for_q(math.inf, 0.005, 0.9, 4.0) > 1e300  # Adam: min(sqrt(v_hat), c) = sqrt(v_hat)
    with pytest.raises(ConfigError, match="q="):
        clip_for_q(0.0, 0.005, 0.9, 4.0)
    with pytest.raises(ConfigError, match="<= 0"):
        clip_for_q(1e-9, 0.005, 0.9, 4.0, eps=1e-8)


def test_cap_riding_fraction():
    cap = 2.0
    assert cap_riding_fraction(np.array([1.0, 1.9, 1.5, 2.1, np.nan]), cap) == (2 / 3, 1)
    assert cap_riding_fraction(np.array([1.0, 1.2]), cap) == (0.0, -1)
    assert cap_riding_fraction(np.array([5.0]), math.inf) == (0.0, -1)


def test_q_config_validation():
    with pytest.raises(ConfigError, match="end with"):
        ClippedAdaQConfig(qs=(0.85, 1.0))
    with pytest.raises(ConfigError, match="at least one"):
        ClippedAdaQConfig(seeds=())
    cfg = ClippedAdaQConfig()
    assert cfg.reference_sharpness == pytest.approx(4.0)
    assert [cfg.run_config(q, 0.99, 0).optimizer for q in cfg.qs] == ["clipped_ada_q"] * len(cfg.qs)
    assert experiments.get("clipped_ada_q").chapter == "adaptive_methods"
    assert set(experiments.get("clipped_ada_q").configs) == {"ci", "full"}


def test_clipped_ada_q_rule_is_clipped_ada_with_a_warm_up():
    import torch

    from instabilities.optim import init_state, update

    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(7, dtype=torch.float64, generator=gen)
    h = dict(lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, clip=0.05)
    s_q, s_c = init_state("clipped_ada_q", theta), init_state("clipped_ada", theta)
    th_q, th_c = theta.clone(), theta.clone()
    for t in range(1, 60):
        g = torch.randn(7, dtype=torch.float64, generator=gen)
        new_q = update("clipped_ada_q", th_q, g, s_q, h)
        new_c = update("clipped_ada", th_c, g, s_c, {**h, "lr": h["lr"] * min(1.0, t / 50)})
        torch.testing.assert_close(new_q, new_c, rtol=0, atol=0)  # the warm-up is the only difference
        th_q, th_c = new_q, new_c


def test_tiny_clipped_ada_q_run():
    cfg = ClippedAdaQConfig(
        n_train=40,
        n_test=40,
        widths=(5,),
        qs=(0.85, math.inf),
        beta2s=(0.99,),
        seeds=(0, 1),
        max_steps=30,
        stop_loss=1e-6,
        track_every=10,
        trace_every=10,
        eig_tol=1e-6,
    )
    res = run_clipped_ada_q(cfg)
    assert res["sharpness"].shape == (1, 2, 2) and res["sharp_traj"].shape == (1, 2, 2, 4)
    assert not res["diverged"].any()
    # the traced run of seed 0 is the population's member (same rule in train.train and in the population)
    np.testing.assert_allclose(res["trace_sharp"][:, ::1][:, :4], res["sharp_traj"][0, :, 0], rtol=1e-3)
    assert np.all(res["trace_clipped"][-1][np.isfinite(res["trace_clipped"][-1])] == 0)  # Adam never clips
    np.testing.assert_allclose(res["caps"][0], 0.85 * cfg.reference_sharpness)
