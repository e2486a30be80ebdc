import json
import os

import numpy as np
import pytest

from instabilities import results
from instabilities.config import Config


def test_roundtrip_with_provenance(tmp_path):
    cfg = Config(scale="full")
    prov = results.provenance(cfg, "cpu", wall_seconds=1.5, extra={"experiment": "x"})
    for key in ("config", "config_hash", "commit", "device", "created", "torch_version", "wall_seconds"):
        assert key in prov
    path = results.save_result(tmp_path / "x.npz", {"a": np.arange(5), "b": np.eye(2)}, prov)
    arrays, back = results.load_result(path)
    np.testing.assert_array_equal(arrays["a"], np.arange(5))
    assert back["config_hash"] == cfg.config_hash() and back["experiment"] == "x"
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["arrays"]["b"] == [2, 2]


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "r.npz"
    results.save_result(target, {"a": np.zeros(3)}, {"config_hash": "old"})

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(RuntimeError):
        results.save_result(target, {"a": np.ones(3)}, {"config_hash": "new"})
    arrays, prov = results.load_result(target)  # the old file is intact
    assert prov["config_hash"] == "old" and arrays["a"].sum() == 0
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_stale_and_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path))
    cfg = Config(scale="full")
    missing = results.load_stored("exp", cfg)
    assert missing.status == "missing" and not missing.available and "No stored" in missing.banner()
    results.save_result(results.results_dir("full") / "exp.npz", {"a": np.ones(2)}, results.provenance(cfg, "cpu"))
    cur = results.load_stored("exp", cfg)
    assert cur.status == "current" and cur.available and cur["a"].shape == (2,)
    # a stored result made with another config is stale: not shown, announced
    results.save_result(
        results.results_dir("full") / "exp.npz",
        {"a": np.ones(2)},
        {**results.provenance(cfg, "cpu"), "config_hash": "0123456789abcdef"},
    )
    stale = results.load_stored("exp", cfg)
    assert stale.status == "stale" and not stale.available and stale.arrays == {}
    assert "STALE" in stale.banner()


def test_reserved_names(tmp_path):
    with pytest.raises(ValueError):
        results.save_result(tmp_path / "x.npz", {"__provenance__": np.ones(1)}, {})


def test_result_files_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        path = results.save_result(tmp_path / "p.npz", {"a": np.zeros(1)}, {"config_hash": "x"})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.with_suffix(".json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", "half"])
def test_corrupt_file_is_reported_not_raised(tmp_path, monkeypatch, content):
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path))
    cfg = Config(scale="full")
    path = results.save_result(
        results.results_dir("full") / "exp.npz", {"a": np.ones(1000)}, results.provenance(cfg, "cpu")
    )
    path.write_bytes(path.read_bytes()[:200] if content == "half" else content)
    st = results.load_stored("exp", cfg)
    assert st.status == "corrupt" and not st.available and st.arrays == {} and st.label == "CORRUPT"
    assert st.reason and st.reason in st.banner() and "run exp --force" in st.banner()


def test_npz_without_provenance_is_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path))
    (tmp_path / "full").mkdir()
    np.savez(tmp_path / "full" / "exp.npz", a=np.ones(2))
    assert results.load_stored("exp", Config(scale="full")).status == "corrupt"


def test_code_identity_enters_status_and_provenance(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path))
    cfg = Config(scale="full")
    code = {"revision": 0, "code_fingerprint": "aaaa"}
    prov = results.provenance(cfg, "cpu", code=code)
    assert prov["revision"] == 0 and prov["code_fingerprint"] == "aaaa" and prov["config_hash"] == cfg.config_hash()
    assert prov["result_hash"] == results.result_hash(cfg.config_hash(), code) != results.result_hash(cfg.config_hash())
    assert prov["device"] == "cpu" and prov["device_name"]
    results.save_result(results.results_dir("full") / "exp.npz", {"a": np.ones(2)}, prov)
    assert results.load_stored("exp", cfg, code=code).available
    st = results.load_stored("exp", cfg, code={**code, "code_fingerprint": "bbbb"})
    assert st.label == "STALE (code)" and "other code" in st.banner()
    st = results.load_stored("exp", Config(scale="ci"), "full", code={**code, "revision": 1})
    assert st.label == "STALE (config, code)"
