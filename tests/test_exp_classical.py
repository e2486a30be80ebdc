import numpy as np
import pytest
import torch

from instabilities import curvature, experiments
from instabilities.experiments import classical as ec
from instabilities.config import ConfigError
from instabilities.losses import make_objective
from instabilities.models import FlatModel, mlp


def tiny_problem(seed: int = 0):
    """A tanh MLP 5-6-3 (P = 57) on random data, in float64."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    torch.manual_seed(seed)
    fm = FlatModel(mlp(5, [6], 3).double())
    return make_objective(fm, x, y, "mse"), fm.theta0


def test_registered_configs_validate_and_hash():
    for name in ("sharpness_two_lrs", "solver_accuracy"):
        exp = experiments.get(name)
        assert exp.chapter == "measuring_sharpness"
        ci, full = experiments.config(name, "ci"), experiments.config(name, "full")
        assert ci.scale == "ci" and full.scale == "full"
        assert ci.config_hash() != full.config_hash()


@pytest.mark.parametrize("changes,word", [
    ({"lrs": ()}, "lrs"), ({"lrs": (0.1, -0.2)}, "lrs"), ({"eig_every": 0}, "eig_every"),
    ({"steps": 10, "eig_every": 20}, "eig_every"), ({"dataset": "imagenet"}, "dataset"),
    ({"activation": "swish"}, "activation")])
def test_sharpness_config_rejects_bad_input(changes, word):
    with pytest.raises(ConfigError, match=word):
        ec.SharpnessTwoLrsConfig(**changes)


@pytest.mark.parametrize("changes,word", [
    ({"lr": 0.0}, "lr"), ({"k": 0}, "k"), ({"k": 30, "n_dense_top": 20}, "n_dense_top"),
    ({"power_tol": -1.0}, "power_tol")])
def test_solver_config_rejects_bad_input(changes, word):
    with pytest.raises(ConfigError, match=word):
        ec.SolverAccuracyConfig(**changes)


def test_blocked_dense_hessian_matches_torch_func():
    objective, theta = tiny_problem()
    op = curvature.HessianOperator(objective, theta)
    H = ec.dense_hessian_blocked(op, block=10)
    ref = torch.func.hessian(objective)(theta)
    torch.testing.assert_close(H, 0.5 * (ref + ref.T), rtol=1e-10, atol=1e-12)
    assert op.n_matvec == theta.numel()


def test_solvers_vs_dense_spectrum():
    objective, theta = tiny_problem(1)
    r = ec.solvers_vs_dense_spectrum(objective, theta, k=3, n_dense_top=10, block=16)
    dense = torch.linalg.eigvalsh(torch.func.hessian(objective)(theta)).flip(0).numpy()
    np.testing.assert_allclose(r["reference_spectrum"], dense, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r["lanczos_values"], dense[:3], rtol=1e-4)
    assert np.all(r["lanczos_residuals"] <= 1e-4 * abs(dense[0]))
    assert r["power_values"][0] <= dense[0] * (1 + 1e-9)  # a Rayleigh quotient never exceeds lambda_max
    assert r["tiny_matvecs"] == 6 and not bool(r["tiny_converged"])
    for key in ("lanczos", "power", "tiny"):
        assert r[f"{key}_values"].shape == (3,) and r[f"{key}_residuals"].shape == (3,)


def test_solvers_vs_dense_spectrum_lanczos_reference_when_not_dense():
    objective, theta = tiny_problem(2)
    r = ec.solvers_vs_dense_spectrum(objective, theta, k=2, n_dense_top=4, dense=False)
    dense = torch.linalg.eigvalsh(torch.func.hessian(objective)(theta)).flip(0).numpy()
    np.testing.assert_allclose(r["reference_values"], dense[:4], rtol=1e-6)
    assert not bool(r["reference_is_dense"])


def test_warm_start_matvecs_shapes_and_values():
    objective, theta = tiny_problem(3)
    w = ec.warm_start_matvecs(objective, theta, lr=0.05, steps=3, k=2, tol=1e-8)
    assert w["cold_matvecs"].shape == (3,) and w["warm_values"].shape == (3, 2)
    np.testing.assert_allclose(w["warm_values"], w["cold_values"], rtol=1e-5)
    assert w["loss"][-1] < w["loss"][0]  # small steps on a smooth loss decrease it


def test_sharpness_two_lrs_reduced_run_shapes():
    cfg = ec.SharpnessTwoLrsConfig(dataset="digits", n_train=60, widths=(8,), lrs=(0.1, 0.2), steps=12, eig_every=4, n_eigs=2)
    r = experiments.run("sharpness_two_lrs", cfg)
    assert r["train_loss"].shape == (2, 13) and r["eigs"].shape == (2, 4, 2)
    assert r["sharpness"].shape == (2, 4) and r["eig_step"].tolist() == [0, 4, 8, 12]
    assert np.all(np.isfinite(r["sharpness"])) and np.all(r["eigs"][..., 0] >= r["eigs"][..., 1] - 1e-4)
    assert not r["diverged"].any()


def test_sharpness_two_lrs_records_divergence():
    cfg = ec.SharpnessTwoLrsConfig(dataset="digits", n_train=60, widths=(8,), lrs=(50.0,), steps=40, eig_every=4)
    r = ec.run_sharpness_two_lrs(cfg)
    assert r["diverged"][0] and 0 <= r["diverged_step"][0] < 40
    assert np.isnan(r["train_loss"][0, -1])


def test_solver_accuracy_reduced_run():
    cfg = ec.SolverAccuracyConfig(dataset="digits", n_train=60, widths=(6,), train_steps=20, track_every=10, k=2,
                                  n_dense_top=5, tiny_krylov=4, warm_steps=2)
    r = experiments.run("solver_accuracy", cfg)
    P = int(r["n_params"])
    assert r["reference_spectrum"].shape == (P,) and r["train_loss"].shape == (21,)
    np.testing.assert_allclose(r["lanczos_values"], r["reference_values"][:2], rtol=1e-4)
    assert r["warm_cold_matvecs"].shape == (2,) and r["track_sharpness"].shape == (3,)


def test_sharpness_two_lrs_full_scale_checkpoints_under_its_name(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path))
    cfg = ec.SharpnessTwoLrsConfig(scale="full", dataset="digits", n_train=60, widths=(8,), lrs=(0.1, 0.2), steps=8,
                                   eig_every=4)
    assert experiments.get("sharpness_two_lrs").resumable
    r = experiments.run("sharpness_two_lrs", cfg)
    assert experiments.checkpoint_path("sharpness_two_lrs", cfg).exists()
    assert r["eig_matvecs"].shape == (2, 3) and np.all(r["eig_matvecs"] > 0)
