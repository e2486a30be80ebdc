import dataclasses

import numpy as np
import pytest

from instabilities import experiments
from instabilities.config import Config, ConfigError
from instabilities.experiments import registry as registry_mod


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
    experiments.register(
        "dummy_test",
        "none",
        "a test experiment",
        {"ci": DummyConfig(scale="ci", n=2), "full": DummyConfig(scale="full", n=4)},
        run_dummy,
    )
    calls.clear()
    yield
    registry_mod._REGISTRY.pop("dummy_test", None)


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
    experiments.register(
        "dummy_test", "none", "changed", {"ci": exp.configs["ci"], "full": DummyConfig(scale="full", n=5)}, run_dummy
    )
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


# -- code-aware staleness -------------------------------------------------------------------------
import importlib.util  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

from instabilities.experiments import fingerprint  # noqa: E402

PROBE = '''
"""A module posing as part of the package, for fingerprint tests."""
import math

from instabilities import _fp_probe_sub as sub

SCALE = 2.0


def helper(x):
    """Doubles."""
    return x * SCALE  # a comment


def unrelated(x):
    return x - 1


def inner(x):
    return math.sqrt(x) + 1


class Model:
    """A class whose method calls ``inner``."""

    def forward(self, x):
        return inner(x)


def run(cfg, device="cpu", progress=None):
    return {"y": helper(cfg.n) + Model().forward(1.0) + sub.leaf(1.0)}
'''
SUB = """
def leaf(x):
    return 3 * x


def other(x):
    return 4 * x
"""


def _load(tmp_path, monkeypatch, name: str, source: str, tag: str):
    """Write ``source`` to a fresh file and import it as ``instabilities.<name>`` (as an edit would)."""
    path = tmp_path / f"{name}_{tag}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(f"instabilities.{name}", path)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, f"instabilities.{name}", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def probe(tmp_path, monkeypatch):
    counter = iter(range(1000))

    def load(source: str = PROBE, sub: str = SUB):
        n = next(counter)
        subm = _load(tmp_path, monkeypatch, "_fp_probe_sub", sub, str(n))
        import instabilities

        monkeypatch.setattr(instabilities, "_fp_probe_sub", subm, raising=False)
        return _load(tmp_path, monkeypatch, "_fp_probe", source, str(n)), subm

    return load


def test_fingerprint_ignores_comments_docstrings_formatting_and_unrelated_code(probe):
    mod, _ = probe()
    base = fingerprint.code_fingerprint(mod.run)
    assert fingerprint.code_fingerprint(probe()[0].run) == base  # same code in another file: same fingerprint
    for edit in (
        PROBE.replace('"""Doubles."""', '"""Multiplies by SCALE."""'),
        PROBE.replace("# a comment", "# another comment"),
        PROBE.replace("return x * SCALE", "return (x *\n            SCALE)"),
        PROBE.replace("return x - 1", "return x - 2"),
        PROBE.replace('"""A class whose method calls ``inner``."""', ""),
    ):
        assert fingerprint.code_fingerprint(probe(edit)[0].run) == base, edit
    assert fingerprint.code_fingerprint(probe(sub=SUB.replace("4 * x", "5 * x"))[0].run) == base
    reached = fingerprint.reachable(mod.run)
    assert "instabilities._fp_probe.helper" in reached and "instabilities._fp_probe.inner" in reached
    assert "instabilities._fp_probe_sub.leaf" in reached and not any("unrelated" in r for r in reached)


@pytest.mark.parametrize(
    "old,new",
    [
        ("return x * SCALE", "return x * SCALE + 1"),  # a function the run calls
        ("SCALE = 2.0", "SCALE = 3.0"),  # a module constant it uses
        ("return math.sqrt(x) + 1", "return math.sqrt(x) + 2"),  # reached through a class's method
    ],
)
def test_fingerprint_sees_edits_of_reachable_code(probe, old, new):
    base = fingerprint.code_fingerprint(probe()[0].run)
    assert fingerprint.code_fingerprint(probe(PROBE.replace(old, new))[0].run) != base


def test_fingerprint_sees_monkeypatched_functions(probe, monkeypatch):
    mod, sub = probe()
    base = fingerprint.code_fingerprint(mod.run)
    edited, edited_sub = probe(PROBE.replace("return x * SCALE", "return x * SCALE * 2"), SUB.replace("3 * x", "6 * x"))
    mod, sub = probe()
    assert fingerprint.code_fingerprint(mod.run) == base
    monkeypatch.setattr(mod, "helper", edited.helper)  # a global of the run's module
    assert fingerprint.code_fingerprint(mod.run) != base
    monkeypatch.setattr(mod, "helper", probe()[0].helper)
    assert fingerprint.code_fingerprint(mod.run) == base
    monkeypatch.setattr(sub, "leaf", edited_sub.leaf)  # a module attribute (sub.leaf)
    assert fingerprint.code_fingerprint(mod.run) != base


def test_fingerprint_of_registered_experiments_is_stable_across_processes():
    here = {name: experiments.get(name).code_fingerprint for name in experiments.names()}
    assert all(len(fp) == 16 for fp in here.values())
    script = (
        "import json; from instabilities import experiments; "
        "print(json.dumps({n: experiments.get(n).code_fingerprint for n in experiments.names()}))"
    )
    import json
    import os

    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True).stdout
    assert json.loads(out) == here


def test_fingerprint_follows_partials_and_the_package():
    exp = experiments.get("eos_sweep")  # functools.partial(run_eos_sweep, name=...)
    reached = fingerprint.reachable(exp.run)
    assert "instabilities.experiments.eos.run_eos_sweep" in reached
    assert any(r.startswith("instabilities.train.") for r in reached)
    assert "instabilities.data._mnist1d_arrays" in reached  # through functools.lru_cache
    assert not any(r.startswith(("instabilities.plotting", "instabilities.results", "torch", "numpy")) for r in reached)


def run_dummy_v2(cfg, device="cpu", progress=None):
    calls.append(cfg.n)
    return {"values": np.arange(cfg.n) * 2}  # computes something else


def test_code_change_makes_result_stale(dummy):
    experiments.run_and_store("dummy_test", "full")
    prov = experiments.stored("dummy_test").provenance
    exp = experiments.get("dummy_test")
    assert prov["code_fingerprint"] == exp.code_fingerprint and prov["revision"] == 0 and prov["result_hash"]
    experiments.register("dummy_test", "none", "a test experiment", exp.configs, run_dummy_v2)
    st = experiments.stored("dummy_test")
    assert st.status == "stale" and st.stale == ("code",) and st.label == "STALE (code)" and not st.available
    assert "other code" in st.banner()
    res, computed = experiments.run_and_store("dummy_test", "full")
    assert computed and res.available and list(res["values"]) == [0, 2, 4, 6]
    # an explicit revision bump does the same without a code change
    experiments.register("dummy_test", "none", "a test experiment", exp.configs, run_dummy_v2, revision=1)
    assert experiments.stored("dummy_test").label == "STALE (code)"
    with pytest.raises(ConfigError, match="revision"):
        experiments.register("dummy_test", "none", "x", exp.configs, run_dummy_v2, revision=-1)


def test_result_without_code_identity_loads_as_stale(dummy):
    from instabilities import results

    cfg = experiments.config("dummy_test", "full")  # as stored before code fingerprints existed
    results.save_result(
        results.results_dir("full") / "dummy_test.npz", {"values": np.arange(4)}, results.provenance(cfg, "cpu")
    )
    st = experiments.stored("dummy_test")
    assert st.label == "STALE (code)" and st.arrays == {} and "STALE" in st.banner()


def test_code_identity_is_not_remembered_across_a_patch_and_its_undo(monkeypatch):
    """A module constant patched (as tests do) and restored must not leave its fingerprint behind."""
    from instabilities.experiments import common

    exp = experiments.get("eos_sweep")
    before = exp.code_identity()
    with monkeypatch.context() as m:
        m.setattr(common, "CHECKPOINT_EVERY", common.CHECKPOINT_EVERY + 1)
        patched = exp.code_identity()
    assert patched != before
    assert exp.code_identity() == before
