"""The rpe_episodes experiment: dense curvature, exact balancedness bookkeeping, episode analysis."""

import numpy as np
import pytest
import torch

from instabilities import experiments
from instabilities.config import ConfigError
from instabilities.experiments import rpe as er


def test_registered_with_both_scales():
    exp = experiments.get("rpe_episodes")
    assert exp.chapter == "rotational_polarity"
    assert exp.configs["ci"].config_hash() != exp.configs["full"].config_hash()


@pytest.mark.parametrize(
    "bad",
    [
        dict(seeds=()),
        dict(widths=()),
        dict(layer_scales=(1.0, 1.0)),
        dict(eta_gfs=0.0),
        dict(steps=0),
        dict(gfs_every=0),
    ],
)
def test_config_rejects_bad_input(bad):
    with pytest.raises(ConfigError):
        er.EpisodeConfig(**bad)


def test_episodes_and_intervals():
    assert er.episodes(np.array([0, 1, 1, 0, 1, 0, 1, 1, 1], bool)) == [(1, 3), (6, 9)]
    assert er.episodes(np.array([0, 1, 0], bool), min_len=1) == [(1, 2)]
    m, lo, hi = er.t_interval(np.array([1.0, 2.0, 3.0]))
    assert m == 2.0 and lo < 2.0 < hi and np.isclose(hi - m, 4.302652729749464 * 1.0 / np.sqrt(3))


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    cfg = er.EpisodeConfig(steps=40, flow_substeps=2, gfs_every=10, gfs_iters=600, seeds=(0, 3))
    return cfg, er.run_rpe_episodes(cfg)


def test_tiny_run_shapes_and_exact_curvature(tiny):
    cfg, res = tiny
    assert res["gd_lam1"].shape == (2, 41) and res["gd_angle2"].shape == (2, 41)
    assert np.all(np.isfinite(res["gd_angle2"][:, :-2])) and np.all(np.isnan(res["gd_angle2"][:, -2:]))
    assert np.nanmax(res["gd_residual"]) < 1e-10
    assert np.all(res["gd_lam_min"] <= res["gd_lam2"]) and np.all(res["gd_lam2"] <= res["gd_lam1"])
    assert np.all(np.isfinite(res["gd_cubic"][:, :-1])) and np.all(np.isnan(res["flow_cubic"]))
    np.testing.assert_allclose(res["eta"] * res["gd_gfs"][:, 0], cfg.eta_gfs, rtol=1e-6)
    assert res["included"].all()


def test_balancedness_bookkeeping_matches_drift(tiny):
    _, res = tiny
    # the per-step changes are exact, so the drift after one step equals the first change
    np.testing.assert_allclose(res["gd_b_drift"][:, 1], res["gd_b_change"][:, 0], rtol=1e-9)
    assert np.all(res["flow_b_drift"][:, -1] < res["gd_b_drift"][:, -1])


def test_rotation_summary_and_profile(tiny):
    _, res = tiny
    s = er.rotation_summary(res)
    ok = np.isfinite(s["onset"])
    assert ok.any()
    assert np.all(s["gd_rate"][ok] > s["flow_rate"][ok])
    p = er.episode_profile(res, int(np.flatnonzero(ok)[0]))
    assert p["gfs_after"] < p["gfs_before"] and p["lam_min_peak"] >= p["lam_min_start"]
