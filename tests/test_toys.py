"""Toy models: self-stabilization map, uv catapult model, two-parameter minimalist losses."""

import math

import numpy as np
import pytest
import torch

from instabilities.config import ConfigError
from instabilities.dynamics import toys


def test_self_stabilization_map_first_steps_by_hand():
    x, y = toys.self_stabilization_map(0.5, 0.2, eta=0.1, alpha=1.0, beta=2.0, steps=2)
    assert x.shape == y.shape == (3,)
    x1, y1 = -(1 + 0.1 * 0.2) * 0.5, 0.2 + 0.1 * (1.0 - 0.5 * 2.0 * 0.25)
    x2, y2 = -(1 + 0.1 * y1) * x1, y1 + 0.1 * (1.0 - 0.5 * 2.0 * x1**2)
    np.testing.assert_allclose(x, [0.5, x1, x2])
    np.testing.assert_allclose(y, [0.2, y1, y2])


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (2.0, 0.5)])
def test_self_stabilization_time_average_matches_prediction(alpha, beta):
    # the settings of the research notes: eta=0.001, x0=0.01, y0=-2, 200k steps (about 0.1 s)
    x, y = toys.self_stabilization_map(0.01, -2.0, 0.001, alpha, beta, 200_000)
    pred = toys.self_stabilization_equilibrium(alpha, beta)
    assert pred == pytest.approx(2 * alpha / beta)
    assert not toys.self_stabilization_escaped(x, y, 0.001)
    assert toys.count_cycles(y) >= 10
    assert toys.time_average_x2(x, burn_in=0.0) == pytest.approx(pred, rel=0.05)
    assert toys.cycle_average_x2(x, y) == pytest.approx(pred, rel=0.01)
    # the orbit is not trivially at the equilibrium: it oscillates strongly around it
    assert np.max(x**2) > 5 * pred and np.min(np.abs(x[len(x) // 2 :])) < 1e-3 * math.sqrt(pred)


def test_self_stabilization_stages_visit_all_quadrants_in_order():
    x, y = toys.self_stabilization_map(0.01, -2.0, 0.001, 1.0, 1.0, 60_000)
    st = toys.self_stabilization_stages(x, y, 1.0, 1.0)
    assert set(np.unique(st)) == {0, 1, 2, 3}
    changes = st[1:][st[1:] != st[:-1]]
    prev = st[:-1][st[1:] != st[:-1]]
    # apart from sign flips of x around the threshold, stages advance cyclically 0->1->2->3->0
    assert np.mean((changes - prev) % 4 == 1) > 0.9


def test_self_stabilization_rejects_bad_input():
    with pytest.raises(ConfigError, match="eta"):
        toys.self_stabilization_map(0.1, 0.0, -1.0, 1.0, 1.0, 10)
    with pytest.raises(ConfigError, match="steps"):
        toys.self_stabilization_map(0.1, 0.0, 0.1, 1.0, 1.0, 0)
    with pytest.raises(ConfigError, match="x0"):
        toys.self_stabilization_map(float("nan"), 0.0, 0.1, 1.0, 1.0, 10)


@pytest.mark.parametrize("ratio", [1.0, 1.9, 2.5, 3.5, 3.9])
def test_uv_recurrence_agrees_with_direct_simulation(ratio):
    u, v = toys.uv_init(500, seed=3)
    lam0 = toys.uv_ntk(u, v)
    direct = toys.uv_gd(u, v, ratio / lam0, 400)
    rec = toys.uv_recurrence(direct.f[0], direct.lam[0], ratio / lam0, 500, 400)
    assert not direct.diverged and not rec.diverged
    np.testing.assert_allclose(rec.f, direct.f, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(rec.lam, direct.lam, rtol=1e-10)


def test_uv_phases():
    u, v = toys.uv_init(1000, seed=0)
    lam0 = toys.uv_ntk(u, v)
    lazy = toys.uv_gd(u, v, 1.0 / lam0, 500)
    assert abs(lazy.lam[-1] - lam0) / lam0 < 0.01 and lazy.loss[-1] < 1e-10
    assert np.all(np.diff(lazy.loss) <= 1e-15)  # monotone in the lazy phase
    cat = toys.uv_gd(u, v, 3.0 / lam0, 1000)
    assert not cat.diverged and cat.loss.max() > 10 * cat.loss[0]  # the loss spikes ...
    assert cat.eta_lambda[-1] < 2.0 and cat.loss[-1] < 1e-10  # ... and GD lands at a flatter point
    div = toys.uv_gd(u, v, 4.5 / lam0, 1000)
    assert div.diverged and 0 < div.diverged_step < 1000 and len(div.f) == div.diverged_step + 1
    assert [toys.catapult_phase(r) for r in (1.0, 3.0, 4.5)] == ["lazy", "catapult", "divergent"]


def test_catapult_sweep_matches_phases():
    res = toys.catapult_sweep(np.array([0.5, 1.5, 2.5, 3.5, 4.5]), m=1000, steps=1000)
    np.testing.assert_array_equal(res["diverged"], [False, False, False, False, True])
    assert np.all(res["converged"][:4])
    assert np.all(res["final_eta_lambda"][:4] < 2.0)
    assert np.all(res["max_loss_ratio"][2:4] > 10) and np.all(res["max_loss_ratio"][:2] <= 1 + 1e-12)
    with pytest.raises(ConfigError):
        toys.catapult_sweep(np.array([]))


@pytest.mark.parametrize("name", toys.TWO_PARAM_LOSSES)
def test_two_param_grad_hessian_against_autograd(name):
    def f(p):
        z = p[0] * p[1]
        return 0.25 * (z**2 - 1) ** 2 if name == "zhu" else torch.log(torch.cosh(z))

    for x, y in [(0.7, -1.3), (2.0, 0.4), (-0.2, 3.0)]:
        p = torch.tensor([x, y], dtype=torch.float64)
        g, h = toys.two_param_grad_hessian(name, x, y)
        np.testing.assert_allclose(g, torch.func.grad(f)(p).numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(h, torch.func.hessian(f)(p).numpy(), rtol=1e-10, atol=1e-12)
        assert toys.two_param_loss(name, x, y) == pytest.approx(float(f(p)), rel=1e-12, abs=1e-14)


def test_zhu_converges_to_edge_of_stability_minimum():
    eta = 0.1
    run = toys.two_param_gd("zhu", 4.0, 0.3, eta, 3000)
    assert not bool(run["diverged"])
    assert run["x"][-1] * run["y"][-1] == pytest.approx(1.0, abs=1e-4)
    # on the minimum set xy = 1 the sharpness is 2 (x^2 + y^2); GD ends just below 2/eta
    assert 0.95 * 2 / eta < run["sharpness"][-1] < 2 / eta
    with pytest.raises(ConfigError, match="unknown"):
        toys.two_param_loss("nope", 1.0, 1.0)


def test_stage_sequence_and_cycle():
    from instabilities.dynamics.toys import is_stage_cycle, stage_sequence

    assert stage_sequence([0, 0, 0, 1, 1, 2, 1, 2, 2, 3, 3, 0, 0]) == [0, 1, 2, 3, 0]
    assert is_stage_cycle([0, 1, 2, 3, 0]) and is_stage_cycle([2, 3, 0, 1])
    assert not is_stage_cycle([0, 2, 3]) and not is_stage_cycle([1])
    assert stage_sequence([]) == []
    # the map itself goes round the stages in order
    x, y = toys.self_stabilization_map(0.01, -2.0, 0.001, 1.0, 1.0, 40_000)
    seq = stage_sequence(toys.self_stabilization_stages(x, y, 1.0, 1.0), min_run=5)
    assert len(seq) >= 5 and is_stage_cycle(seq)


def test_logcosh_period_two_orbit():
    assert toys.logcosh_two_cycle(1.9) == 0.0
    for eta in (2.05, 2.5, 4.0):
        xs = toys.logcosh_two_cycle(eta)
        assert xs > 0 and abs(2 * xs - eta * math.tanh(xs)) < 1e-12
        assert toys.logcosh_two_cycle_multiplier(eta) < 1  # attracting
        x = toys.logcosh_gd(0.3, eta, 4000)
        assert np.all(np.isfinite(x)) and abs(abs(x[-1]) - xs) < 1e-6 and x[-1] == pytest.approx(-x[-2], abs=1e-6)
    assert abs(toys.logcosh_gd(1.0, 1.9, 2000)[-1]) < 1e-12  # below the threshold: converges
    # near the threshold x*^2 ~ 3 (eta - 2) / 2
    assert toys.logcosh_two_cycle(2.001) ** 2 == pytest.approx(1.5e-3, rel=2e-3)
