"""Tests of the label-noise experiments: registry, configs, small runs."""

import dataclasses

import numpy as np
import pytest
import torch

from instabilities import experiments
from instabilities.config import ConfigError
from instabilities.dynamics import label_noise as ln
from instabilities.experiments.label_noise import (
    TRAJECTORY_KEYS,
    ArchConfig,
    ChainBaseConfig,
    ChainConfig,
    ChainConvergenceConfig,
    GeneralTheoremConfig,
    InterventionConfig,
    RelaxedChainConfig,
    SweepConfig,
    architecture_summary,
    chain_convergence_summary,
    drift_path_deviation,
    extrapolated,
    extrapolated_bracket,
    extrapolated_sem,
    general_schedule,
    general_summary,
    intervention_summary,
    relaxation_schedule,
    run_architectures,
    run_chain,
    run_general,
    run_intervention,
    run_relaxed_chain,
    stationary_mean,
    stationary_sem,
    sweep_summary,
)

NAMES = (
    "label_noise_chain",
    "label_noise_sweep",
    "label_noise_reconcile",
    "label_noise_architectures",
    "label_noise_general",
    "label_noise_intervention",
)


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
    cfg = ChainConfig(
        ratios=(1.0, 9.0), etas=(0.05, 0.1), init_hidden_sq=(1.0,), replicas=2, steps=400, record_every=100
    )
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
    cfg = ArchConfig(
        archs=("mlp",),
        ratios=(1.0, 4.0),
        seeds=(0, 1),
        steps=100,
        anneal_steps=50,
        snapshot_every=50,
        final_window=1,
        width=6,
        n_eval=32,
    )
    res = run_architectures(cfg)
    assert res["final_sharpness"].shape == (1, 2, 2, 2) and res["final_trace"].shape == (1, 2, 2, 2)
    assert np.isfinite(res["final_sharpness"]).all() and np.all(res["final_trace"] > 0)
    assert res["clean_loss"].shape == (3, 1, 2, 2, 2)
    summ = architecture_summary(res)
    assert summ["gap"].shape == (1, 2)
    assert np.all(summ["gap_lo"] <= summ["gap"]) and np.all(summ["gap"] <= summ["gap_hi"])
    with pytest.raises(ConfigError, match="two seeds"):
        ArchConfig(seeds=(0,))


def test_gauss_newton_trace_matches_dense_hessian_at_a_minimum():
    """At the teacher's own parameters (a global minimum of the clean loss) tr E[J^T J] = tr H."""

    from instabilities import curvature, sequence_models as sm
    from instabilities.models import FlatModel

    model = sm.build_sequence_model("mlp", 2, 3, 2, width=4, seed=0)
    x = torch.randn(16, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x)
    fm = FlatModel(model)
    obj = lambda th: 0.5 * (fm(th, x) - y).pow(2).sum(-1).mean()  # noqa: E731
    dense = float(torch.trace(curvature.dense_hessian(obj, fm.theta0)))
    params = {k: v.detach() for k, v in model.named_parameters()}
    assert sm.gauss_newton_trace(model, params, x) == pytest.approx(dense, rel=1e-8)


def test_general_and_intervention_small_runs():
    cfg = GeneralTheoremConfig(
        depths=(2,), sigmas=(1.0, 3.0), etas=(0.04, 0.08), replicas=3, relaxation_times=1.0, records=4
    )
    tau, steps = general_schedule(cfg)
    assert tau.shape == steps.shape == (1, 2, 2) and np.all(steps >= tau)
    res = run_general(cfg)
    assert res["trace_hessian_stat"].shape == (1, 2, 2, 2) and res["conditions"].shape == (1, 2, 2, 2)
    summ = general_summary(res)
    assert summ["value"].shape == (1, 2) and np.allclose(summ["predicted_ratio"][0, 0], 1.0)
    assert res["predicted_trace"][0, 1] == pytest.approx(9.5406, abs=1e-4)
    icfg = InterventionConfig(replicas=2, phase_steps=(200, 200, 200), records_per_phase=2)
    ires = run_intervention(icfg)
    isum = intervention_summary(ires)
    assert abs(isum["sgd_gd_drift2"]) < 1e-3 and isum["gd_start_change"] < 1e-9
    with pytest.raises(ConfigError, match="distinct"):
        GeneralTheoremConfig(etas=(0.1, 0.1))
    with pytest.raises(ConfigError, match="phase_steps"):
        InterventionConfig(phase_steps=(10, 10))


def test_aggregates_equal_the_per_replica_statistics():
    """The compact result reproduces the statistics of the raw per-replica trajectories it summarises."""
    cfg = ChainConfig(
        ratios=(4.0,), etas=(0.05, 0.1), init_hidden_sq=(0.3, 1.0), replicas=3, steps=600, record_every=100
    )
    res = run_chain(cfg)
    net = ln.chain_point(1.0, cfg.teacher, cfg.depth)[0]
    thetas = [ln.chain_point(t, cfg.teacher, cfg.depth)[1] for t in cfg.init_hidden_sq]
    thetas = torch.stack([thetas[j] for _ in cfg.etas for j in range(2) for _ in range(3)])
    lrs = [eta for eta in cfg.etas for _ in range(2) for _ in range(3)]
    cov = ln.noise_covariance(4.0, cfg.noise_trace, 2)
    raw = ln.label_noise_sgd(
        net,
        thetas,
        torch.tensor([[1.0], [0.0]], dtype=torch.float64),
        torch.eye(1, dtype=torch.float64),
        cov.expand(len(lrs), 2, 2).clone(),
        lrs,
        cfg.steps,
        cfg.batch_size,
        cfg.record_every,
        cfg.seed,
    )
    for key in TRAJECTORY_KEYS:
        x = np.asarray(raw[key]).reshape(-1, 1, 2, 2, 3)
        np.testing.assert_allclose(res[f"{key}_mean"], x.mean(axis=-1), rtol=1e-6)
        averages = x[x.shape[0] // 2 :].mean(axis=0)
        np.testing.assert_allclose(stationary_mean(res, key), averages.mean(axis=-1), rtol=1e-6)
        np.testing.assert_allclose(stationary_sem(res, key), averages.std(axis=-1, ddof=1) / np.sqrt(3), rtol=1e-5)


def test_extrapolated_sem_is_linear_error_propagation():
    """Two step sizes: intercept = 2 v(eta) - v(2 eta), so its error is sqrt(4 e1^2 + e2^2) (pooled inits)."""
    sem = np.array([[[0.3, 0.4], [0.1, 0.2]]])  # [ratio, eta, init]
    res = {"etas": np.array([0.05, 0.1]), "flow_sharpness_sem": sem}
    e1, e2 = np.hypot(0.3, 0.4) / 2, np.hypot(0.1, 0.2) / 2
    np.testing.assert_allclose(extrapolated_sem(res), [np.sqrt(4 * e1**2 + e2**2)], rtol=1e-9)


def test_diverging_replicas_are_counted_not_averaged():
    cfg = ChainConfig(ratios=(4.0,), etas=(0.05, 3.0), init_hidden_sq=(1.0,), replicas=2, steps=200, record_every=50)
    res = run_chain(cfg)
    assert res["n_diverged"][0, 1, 0] == 2 and res["n_diverged"][0, 0, 0] == 0
    assert np.isnan(stationary_mean(res)[0, 1, 0]) and np.isfinite(stationary_mean(res)[0, 0, 0])


def test_chain_configs_share_a_base_and_reconcile_uses_tau():
    """Chain, sweep and reconcile run lengths come from tau; all chain configs share ChainBaseConfig."""
    assert type(experiments.config("label_noise_chain", "full")) is ChainConvergenceConfig
    assert type(experiments.config("label_noise_reconcile", "full")) is RelaxedChainConfig
    assert type(experiments.config("label_noise_sweep", "full")) is SweepConfig
    for cls in (ChainConfig, RelaxedChainConfig, SweepConfig, ChainConvergenceConfig):
        assert issubclass(cls, ChainBaseConfig)
    # same fields, different experiments: the class name keeps their hashes apart
    assert SweepConfig().config_hash() != ChainConvergenceConfig().config_hash()
    assert [f.name for f in dataclasses.fields(ChainConfig)] == [
        "scale",
        "depth",
        "teacher",
        "noise_trace",
        "ratios",
        "etas",
        "init_hidden_sq",
        "replicas",
        "batch_size",
        "seed",
        "steps",
        "record_every",
    ]
    for name in NAMES:  # step sizes are eta / etas in every config
        fields = {f.name for f in dataclasses.fields(experiments.config(name, "full"))}
        assert "lr" not in fields and ("eta" in fields or "etas" in fields)


def test_sweep_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match="distinct"):
        SweepConfig(etas=(0.1, 0.1))
    with pytest.raises(ConfigError, match="burn_in"):
        SweepConfig(burn_in=1.0)
    with pytest.raises(ConfigError, match="relaxation_times"):
        SweepConfig(relaxation_times=0.0)
    with pytest.raises(ConfigError, match="2 outputs"):
        SweepConfig(teacher=(1.0,))


def test_sweep_schedule_scales_with_the_relaxation_time():
    """tau = (2 + r) / (4 eta^2) for the default chain; a cell runs relaxation_times * tau steps (>= min_steps)."""
    cfg = SweepConfig(ratios=(1.0, 100.0), etas=(0.01, 0.02), relaxation_times=3.0, records=7, min_steps=30000)
    tau, steps = relaxation_schedule(cfg)
    np.testing.assert_allclose(tau, [[3 / 4e-4, 3 / 16e-4], [102 / 4e-4, 102 / 16e-4]], rtol=1e-12)
    assert np.all(steps % 7 == 0) and np.all(steps >= 3.0 * tau) and np.all(steps - 7 < np.maximum(3.0 * tau, 30000))
    assert steps[0, 1] == 30002  # min_steps = 30000 rounded up to a multiple of 7


def test_sweep_bracket_narrows_with_run_length_and_contains_the_closed_form():
    """Starts on both sides of the attracting balance bracket the eta -> 0 value: wide after 2 tau, narrow after 10."""
    base = SweepConfig(
        ratios=(4.0,), etas=(0.04, 0.08), init_hidden_sq=(0.1, 1.0), replicas=4, records=12, min_steps=100
    )
    widths = []
    for n_tau in (2.0, 10.0):
        res = run_relaxed_chain(base.replace(relaxation_times=n_tau))
        assert res["flow_sharpness_mean"].shape == (13, 1, 2, 2) and res["steps"].shape == (13, 1, 2)
        np.testing.assert_array_equal(res["steps"][-1], res["run_steps"])
        assert int(res["n_diverged"].sum()) == 0 and float(res["burn_in"]) == 0.75
        # the stored burn-in is the default of the stationary statistics
        np.testing.assert_allclose(stationary_mean(res), stationary_mean(res, burn_in=0.75))
        assert not np.allclose(stationary_mean(res), stationary_mean(res, burn_in=0.5))
        lo, hi = extrapolated_bracket(res)
        slack = 2 * extrapolated_sem(res)
        assert lo[0] - slack[0] <= res["predicted_sharpness"][0] <= hi[0] + slack[0]
        assert lo[0] <= extrapolated(res)[0] <= hi[0]
        widths.append(float(hi[0] - lo[0]) / res["predicted_sharpness"][0])
    assert widths[0] > 0.2 and widths[1] < 0.03
    assert extrapolated(res)[0] == pytest.approx(res["predicted_sharpness"][0], rel=0.02)


def test_bracket_swaps_ends_for_negative_weights():
    """Two step sizes: the eta -> 0 value 2 v(eta) - v(2 eta) is bracketed by [2 lo_1 - hi_2, 2 hi_1 - lo_2]."""
    m = np.array([[[1.0, 1.2], [0.9, 1.0]]])[..., None]  # [ratio, eta, init] as a one-record trajectory
    res = {"etas": np.array([0.05, 0.1]), "flow_sharpness_mean": np.moveaxis(m, -1, 0)}
    lo, hi = extrapolated_bracket(res, burn_in=0.0)
    np.testing.assert_allclose([lo[0], hi[0]], [2 * 1.0 - 1.0, 2 * 1.2 - 0.9])


def test_per_start_extrapolation_and_its_error():
    """Per start: intercept 2 v(eta) - v(2 eta) with error sqrt(4 e1^2 + e2^2); their mean is the pooled value."""
    m = np.array([[[1.0, 1.3, 0.7], [0.8, 1.2, 0.4]]])  # [ratio, eta, init]
    sem = np.array([[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]])
    res = {"etas": np.array([0.05, 0.1]), "flow_sharpness_mean": m[None], "flow_sharpness_sem": sem}
    per = extrapolated(res, burn_in=0.0, per_start=True)
    np.testing.assert_allclose(per, [[1.2, 1.4, 1.0]])
    np.testing.assert_allclose(per.mean(axis=1), extrapolated(res, burn_in=0.0))
    np.testing.assert_allclose(extrapolated_sem(res, per_start=True), np.sqrt(4 * sem[:, 0] ** 2 + sem[:, 1] ** 2))
    # three step sizes, parabola: exact on v = 2 + eta - 3 eta^2 for every start
    e = np.array([0.01, 0.02, 0.04])
    res3 = {"etas": e, "flow_sharpness_mean": np.broadcast_to((2 + e - 3 * e**2)[None, :, None], (1, 3, 2))[None]}
    np.testing.assert_allclose(extrapolated(res3, burn_in=0.0, degree=2, per_start=True), [[2.0, 2.0]], rtol=1e-10)
    assert abs(extrapolated(res3, burn_in=0.0, degree=1, per_start=True)[0, 0] - 2.0) > 1e-4


def test_drift_path_deviation_falls_with_run_length_and_has_the_sign_of_the_start():
    """Starts below t* (sharper) approach S* from above, starts in (t*, 1) from below; 15 tau is enough."""
    base = ChainConvergenceConfig(ratios=(16.0,), etas=(0.01, 0.02), init_hidden_sq=(0.05, 0.5, 0.2425356), records=40)
    short, long = (
        drift_path_deviation(base.replace(relaxation_times=2.0)),
        drift_path_deviation(base.replace(relaxation_times=15.0)),
    )
    assert short.shape == (1, 2, 3)
    assert short[0, 0, 0] > 0.2 and short[0, 0, 1] < -0.003  # t* = 1/sqrt(17) = 0.2425
    assert abs(short[0, 0, 2]) < 1e-5  # the start at t* stays there
    assert np.all(np.abs(long) < 1e-4) and np.all(np.abs(long) <= np.abs(short))
    np.testing.assert_allclose(long[0, 0], long[0, 1], atol=1e-6)  # in units of tau the path does not depend on eta


def test_chain_convergence_run_forgets_its_start():
    """Three starting minima (S from 2 to 10) reach the same stationary sharpness in every cell; cells have their own
    length (steps / tau ends at relaxation_times), and each start extrapolates to the closed form."""
    cfg = ChainConvergenceConfig(
        ratios=(4.0,), etas=(0.04, 0.08), init_hidden_sq=(0.1, 1.0, 4.0), replicas=6, relaxation_times=12.0, records=24
    )
    res = run_relaxed_chain(cfg)
    assert int(res["n_diverged"].sum()) == 0
    assert res["flow_sharpness_mean"].shape == (25, 1, 2, 3)
    x = res["steps"][:, 0] / res["relaxation_steps"][0]  # [record, eta] in relaxation times
    np.testing.assert_allclose(x[-1], 12.0, rtol=0.01)
    assert res["steps"][-1, 0, 0] > 3 * res["steps"][-1, 0, 1]  # half the step size: four times the steps
    start = res["flow_sharpness_mean"][0, 0, 0]
    assert start.max() - start.min() > 5.0
    stat, sem = stationary_mean(res)[0], stationary_sem(res)[0]  # [eta, init]
    spread = stat.max(axis=1) - stat.min(axis=1)
    assert np.all(spread < 4 * np.sqrt(2) * sem.max(axis=1) + 0.01 * res["predicted_sharpness"][0])
    per = extrapolated(res, per_start=True)[0]
    err = extrapolated_sem(res, per_start=True)[0]
    assert np.all(np.abs(per - res["predicted_sharpness"][0]) < 4 * err + 0.01 * res["predicted_sharpness"][0])


def _synthetic_chain_result(values, sems, etas, predicted):
    """A result dict whose stationary means are ``values [ratio, eta, start]`` exactly."""
    values = np.asarray(values, dtype=float)
    rec = np.broadcast_to(values, (6, *values.shape)).astype(np.float32)
    return {
        "flow_sharpness_mean": rec,
        "flow_sharpness_sem": np.asarray(sems, dtype=np.float32),
        "etas": np.asarray(etas),
        "predicted_sharpness": np.asarray(predicted, dtype=float),
        "burn_in": np.asarray(0.5),
        "run_steps": np.full(values.shape[:2], 1000),
        "relaxation_steps": np.full(values.shape[:2], 100.0),
    }


def test_sweep_summary_on_a_known_parabola():
    etas = np.array([0.005, 0.01, 0.02])
    S_star = 10.0
    v = S_star * (1 - 1.1 * etas * S_star + 3.0 * etas**2)  # offset -1.1 eta S* + O(eta^2)
    values = np.stack([v - 0.01, v + 0.01], axis=-1)[None]  # two starts bracket the stationary value
    res = _synthetic_chain_result(values, np.full((1, 3, 2), 0.004), etas, [S_star])
    sw = sweep_summary(res)
    assert sw["parabola"][0] == pytest.approx(S_star, rel=1e-5)
    assert sw["bracket_lo"][0] < S_star < sw["bracket_hi"][0] and bool(sw["inside"][0])
    np.testing.assert_allclose(sw["offset"][0], (v / S_star - 1) / (etas * S_star), rtol=1e-5)
    w = (etas[2] - etas[1]) / (etas[2] - etas[0])
    err = 0.004 * np.sqrt(2) / 2
    expected = (v[1] - w * v[0] - (1 - w) * v[2]) / (err * np.sqrt(1 + w**2 + (1 - w) ** 2))
    assert sw["misfit"][0] == pytest.approx(expected, rel=1e-4)
    assert sw["start_gap"][0] == pytest.approx(0.02 / S_star, rel=1e-4)


def test_chain_convergence_summary_per_start():
    etas = np.array([0.01, 0.02, 0.04])
    S_star = 4.0
    v = S_star * (1 - etas * S_star)
    values = np.stack([v, v * 1.001, v * 0.999], axis=-1)[None]
    res = _synthetic_chain_result(values, np.full((1, 3, 3), 0.01), etas, [S_star])
    cs = chain_convergence_summary(res)
    assert int(cs["degree"]) == 2 and cs["per_start"].shape == (1, 3)
    assert cs["per_start_rel"][0, 0] == pytest.approx(0.0, abs=1e-6)
    assert np.all(cs["per_start_z"] >= 0) and float(cs["n_tau"]) == pytest.approx(10.0)
    np.testing.assert_allclose(cs["stationary_rel"][0, :, 0], -etas * S_star, rtol=1e-5)
