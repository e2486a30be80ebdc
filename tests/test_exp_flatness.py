"""Configs of the flatness experiments validate, and tiny runs work end to end."""
import numpy as np
import pytest
import torch

from instabilities import experiments
from instabilities.experiments import flatness as ef
from instabilities.config import ConfigError


def test_registered_with_both_scales():
    for name in ("eigvec_rotation", "flatness_goldilocks"):
        exp = experiments.get(name)
        assert set(exp.configs) >= {"ci", "full"}
        assert exp.configs["ci"].config_hash() != exp.configs["full"].config_hash()


@pytest.mark.parametrize("bad", [dict(etas=()), dict(etas=(0.5, 0.1)), dict(etas=(-0.1,)), dict(widths=()),
                                 dict(dataset="imagenet"), dict(steps=0), dict(k=0), dict(eig_every=500)])
def test_rotation_config_rejects_bad_input(bad):
    with pytest.raises(ConfigError):
        ef.RotationConfig(**bad)


@pytest.mark.parametrize("bad", [dict(seeds=()), dict(steps=100, trace_every=30), dict(activation="swish2")])
def test_goldilocks_config_rejects_bad_input(bad):
    with pytest.raises(ConfigError):
        ef.GoldilocksConfig(**bad)


def test_rotation_between_on_known_vectors():
    e = np.eye(4)
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    v0 = e[:, [0, 1]]
    v1 = np.stack([c * e[:, 0] + s * e[:, 2], -e[:, 1]], 1)  # top vector turned by 30 degrees, 2nd flipped sign
    ang, sim = ef.rotation_between(np.stack([v0, v1, v1]))
    np.testing.assert_allclose(ang, [30.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(sim[1], 1.0, atol=1e-9)
    # principal angles (30, 0): cos(||.|| / sqrt 2)
    np.testing.assert_allclose(sim[0], np.cos(np.radians(30) / np.sqrt(2)), atol=1e-9)
    with pytest.raises(ConfigError):
        ef.rotation_between(v0[None])


def test_tiny_rotation_run_and_phase_split():
    torch.set_num_threads(1)
    cfg = ef.RotationConfig(n_train=60, n_test=50, widths=(8,), etas=(0.05, 1.0, 50.0), steps=20, k=2, eig_every=5)
    res = ef.run_eigvec_rotation(cfg)
    assert res["subspace_sim"].shape == (3, 4)
    assert res["diverged"].tolist() == [False, False, True]
    ok = np.isfinite(res["subspace_sim"][:2])
    assert ok.all() and np.all((res["subspace_sim"][:2] >= 0) & (res["subspace_sim"][:2] <= 1 + 1e-9))
    np.testing.assert_allclose(res["eta_sharpness"][0], 0.05 * res["sharpness"][0])
    split = ef.rotation_by_phase(res)
    assert split["count_stable"][0] == 4 and split["count_unstable"][0] == 0
    assert np.isnan(split["angle_unstable"][0])


def test_tiny_goldilocks_run_and_summary():
    torch.set_num_threads(1)
    cfg = ef.GoldilocksConfig(n_train=60, n_test=50, widths=(8,), etas=(0.1, 50.0), seeds=(0, 1), steps=20,
                              trace_every=10)
    res = ef.run_flatness_goldilocks(cfg)
    assert res["sharpness_trace"].shape == (2, 2, 3)
    assert res["diverged"][1].all() and not res["diverged"][0].any()
    assert np.isnan(res["test_acc"][1]).all() and np.isfinite(res["test_acc"][0]).all()
    np.testing.assert_allclose(res["final_sharpness"][0], res["sharpness_trace"][0, :, -1])
    summ = ef.summarise_goldilocks(res)
    np.testing.assert_allclose(summ["diverged_fraction"], [0.0, 1.0])
    np.testing.assert_allclose(summ["test_acc_mean"][0], res["test_acc"][0].mean())
    assert np.isnan(summ["test_acc_mean"][1])


def test_goldilocks_population_members_match_separate_runs():
    """Each (eta, seed) cell of the population equals the separate run of that step size and seed."""
    from instabilities.train import train

    torch.set_num_threads(1)
    cfg = ef.GoldilocksConfig(n_train=60, n_test=50, widths=(8,), etas=(0.1, 0.3, 0.6), seeds=(0, 5), steps=10,
                              trace_every=5)
    res = ef.run_flatness_goldilocks(cfg)
    for i, eta in enumerate(cfg.etas):
        for j, seed in enumerate(cfg.seeds):
            h = train(cfg.gd_config(eta, seed, eig_every=cfg.trace_every, n_eigs=1))
            np.testing.assert_allclose(res["train_loss"][i, j], h.train_loss[-1], rtol=1e-4)
            np.testing.assert_allclose(res["sharpness_trace"][i, j], h.sharpness, rtol=1e-3)
            np.testing.assert_allclose(res["test_acc"][i, j], h.test_acc[-1], atol=1e-6)


def test_goldilocks_full_scale_checkpoints_under_its_name(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path))
    cfg = ef.GoldilocksConfig(scale="full", n_train=60, n_test=50, widths=(8,), etas=(0.1,), seeds=(0,), steps=10,
                              trace_every=5)
    assert experiments.get("flatness_goldilocks").resumable
    first = experiments.run("flatness_goldilocks", cfg)
    assert experiments.checkpoint_path("flatness_goldilocks", cfg).exists()
    again = experiments.run("flatness_goldilocks", cfg)  # resumes from the finished checkpoint
    np.testing.assert_array_equal(again["sharpness_trace"], first["sharpness_trace"])
