import numpy as np
import pytest

from instabilities import experiments
from instabilities.config import ConfigError
from instabilities.experiments import classical as ec


def test_registered_configs_validate_and_hash():
    for name in ("sharpness_two_etas", "solver_accuracy"):
        exp = experiments.get(name)
        assert exp.chapter == "measuring_sharpness"
        ci, full = experiments.config(name, "ci"), experiments.config(name, "full")
        assert ci.scale == "ci" and full.scale == "full"
        assert ci.config_hash() != full.config_hash()


@pytest.mark.parametrize(
    "changes,word",
    [
        ({"etas": ()}, "etas"),
        ({"etas": (0.1, -0.2)}, "etas"),
        ({"eig_every": 0}, "eig_every"),
        ({"steps": 10, "eig_every": 20}, "eig_every"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"activation": "swish"}, "activation"),
    ],
)
def test_sharpness_config_rejects_bad_input(changes, word):
    with pytest.raises(ConfigError, match=word):
        ec.SharpnessTwoEtasConfig(**changes)


@pytest.mark.parametrize(
    "changes,word",
    [
        ({"eta": 0.0}, "eta"),
        ({"k": 0}, "k"),
        ({"k": 30, "n_dense_top": 20}, "n_dense_top"),
        ({"power_tol": -1.0}, "power_tol"),
    ],
)
def test_solver_config_rejects_bad_input(changes, word):
    with pytest.raises(ConfigError, match=word):
        ec.SolverAccuracyConfig(**changes)


def test_sharpness_two_etas_reduced_run_shapes():
    cfg = ec.SharpnessTwoEtasConfig(
        dataset="digits", n_train=60, widths=(8,), etas=(0.1, 0.2), steps=12, eig_every=4, n_eigs=2
    )
    r = experiments.run("sharpness_two_etas", cfg)
    assert r["train_loss"].shape == (2, 13) and r["eigs"].shape == (2, 4, 2)
    assert r["sharpness"].shape == (2, 4) and r["eig_step"].tolist() == [0, 4, 8, 12]
    assert np.all(np.isfinite(r["sharpness"])) and np.all(r["eigs"][..., 0] >= r["eigs"][..., 1] - 1e-4)
    assert not r["diverged"].any()


def test_sharpness_two_etas_records_divergence():
    cfg = ec.SharpnessTwoEtasConfig(dataset="digits", n_train=60, widths=(8,), etas=(50.0,), steps=40, eig_every=4)
    r = ec.run_sharpness_two_etas(cfg)
    assert r["diverged"][0] and 0 <= r["diverged_step"][0] < 40
    assert np.isnan(r["train_loss"][0, -1])


def test_solver_accuracy_reduced_run():
    cfg = ec.SolverAccuracyConfig(
        dataset="digits",
        n_train=60,
        widths=(6,),
        train_steps=20,
        track_every=10,
        k=2,
        n_dense_top=5,
        tiny_krylov=4,
        warm_steps=2,
    )
    r = experiments.run("solver_accuracy", cfg)
    P = int(r["n_params"])
    assert r["reference_spectrum"].shape == (P,) and r["train_loss"].shape == (21,)
    np.testing.assert_allclose(r["lanczos_values"], r["reference_values"][:2], rtol=1e-4)
    assert r["warm_cold_matvecs"].shape == (2,) and r["track_sharpness"].shape == (3,)


def test_sharpness_two_etas_full_scale_checkpoints_under_its_name(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path))
    cfg = ec.SharpnessTwoEtasConfig(
        scale="full", dataset="digits", n_train=60, widths=(8,), etas=(0.1, 0.2), steps=8, eig_every=4
    )
    assert experiments.get("sharpness_two_etas").resumable
    r = experiments.run("sharpness_two_etas", cfg)
    assert experiments.checkpoint_path("sharpness_two_etas", cfg).exists()
    assert r["eig_matvecs"].shape == (2, 3) and np.all(r["eig_matvecs"] > 0)
