import dataclasses

import numpy as np
import pytest

from instabilities import experiments
from instabilities.config import Config, ConfigError


@dataclasses.dataclass(frozen=True)
class DummyConfig(Config):
    n: int = 3


calls = []


def run_dummy(cfg, device="cpu", progress=None):
    calls.append(cfg.n)
    if progress:
        progress(1, 1)
    return {"values": np.arange(cfg.n)}


@pytest.fixture
def dummy(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path))
    experiments.register("dummy_test", "none", "a test experiment",
                         {"ci": DummyConfig(scale="ci", n=2), "full": DummyConfig(scale="full", n=4)}, run_dummy)
    calls.clear()
    yield
    experiments._REGISTRY.pop("dummy_test", None)


def test_run_and_store_then_skip(dummy):
    assert experiments.stored("dummy_test").status == "missing"
    res, computed = experiments.run_and_store("dummy_test", "full")
    assert computed and res.available and list(res["values"]) == [0, 1, 2, 3]
    res2, computed2 = experiments.run_and_store("dummy_test", "full")
    assert not computed2 and calls == [4]
    assert res2.provenance["experiment"] == "dummy_test" and res2.provenance["scale"] == "full"


def test_config_change_makes_result_stale(dummy):
    experiments.run_and_store("dummy_test", "full")
    exp = experiments.get("dummy_test")
    experiments.register("dummy_test", "none", "changed", {"ci": exp.configs["ci"],
                         "full": DummyConfig(scale="full", n=5)}, run_dummy)
    st = experiments.stored("dummy_test")
    assert st.status == "stale" and "STALE" in st.banner()
    res, computed = experiments.run_and_store("dummy_test", "full")
    assert computed and res.available and len(res["values"]) == 5


def test_run_uses_ci_by_default(dummy):
    assert list(experiments.run("dummy_test")["values"]) == [0, 1]


def test_registry_errors(dummy):
    with pytest.raises(ConfigError, match="unknown"):
        experiments.get("no_such_experiment")
    with pytest.raises(ConfigError, match="scale"):
        experiments.config("dummy_test", "huge")
    with pytest.raises(ConfigError, match="lacks configs"):
        experiments.register("bad", "x", "y", {"ci": DummyConfig()}, run_dummy)
    with pytest.raises(ConfigError, match="has scale"):
        experiments.register("bad", "x", "y", {"ci": DummyConfig(), "full": DummyConfig(scale="ci")}, run_dummy)


def test_every_registered_experiment_has_valid_configs():
    for name in experiments.names():
        exp = experiments.get(name)
        assert exp.configs["ci"].scale == "ci" and exp.configs["full"].scale == "full"
        assert exp.configs["ci"].config_hash() != exp.configs["full"].config_hash()
        assert exp.description and exp.chapter
