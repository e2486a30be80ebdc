"""pytest plugin: keep the notebooks that nbval executed, so the website is built without running them again.

Used by ``scripts/execute_chapters.sh`` (``make book`` and, when needed, ``make test``): it runs
``pytest --nbval-lax -p nbval_save`` (``PYTHONPATH=scripts``) on groups of chapters in parallel. For
each chapter the plugin writes the executed notebook (the source with nbval's outputs) to
``--nbval-save-dir`` (``_build/executed/book/X.ipynb``) and its result, time and input fingerprint to
``--nbval-save-record``. ``python scripts/nbval_save.py merge`` then merges the groups' records into
``_build/executed/nbval.json`` and puts every chapter that passed into the jupyter-cache that
jupyter-book reads (``_build/.jupyter_cache``). The website is built with ``execute_notebooks: cache``:
a chapter whose code is unchanged since nbval ran it comes from the cache and is not executed again;
a changed or failed one is executed by the build.

The fingerprint covers everything a chapter's outputs depend on (the notebook, ``lib/``, the stored
full-scale results, ``requirements.txt``, ``pyproject.toml``). ``make test`` accepts the record
instead of executing the chapters again only when every chapter passed with today's fingerprints.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FINGERPRINT_GLOBS = ("lib/**/*.py", "results/full/*", "requirements.txt", "pyproject.toml")


def fingerprint(notebook: Path, root: Path = REPO) -> str:
    """SHA-256 over the notebook and everything shared that its outputs depend on."""
    h = hashlib.sha256()
    files = [Path(notebook)]
    for pattern in FINGERPRINT_GLOBS:
        files += sorted(p for p in root.glob(pattern) if p.is_file() and "__pycache__" not in p.parts)
    for f in files:
        h.update(str(f.relative_to(root) if f.is_relative_to(root) else f).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def record_is_current(record_path: Path, notebooks: list[Path], root: Path = REPO) -> tuple[bool, str]:
    """(True, summary) when ``record_path`` shows every notebook passed with today's fingerprints."""
    try:
        record = json.loads(Path(record_path).read_text())
    except (OSError, ValueError):
        return False, f"no record at {record_path}"
    chapters = record.get("chapters", {})
    for nb in notebooks:
        rel = str(Path(nb).resolve().relative_to(root))
        entry = chapters.get(rel)
        if entry is None:
            return False, f"{rel} not in the record"
        if entry.get("outcome") != "passed":
            return False, f"{rel} {entry.get('outcome')} in the recorded run"
        if entry.get("fingerprint") != fingerprint(Path(nb).resolve(), root):
            return False, f"{rel} or lib/results changed since the recorded run"
    total = sum(chapters[str(Path(nb).resolve().relative_to(root))]["seconds"] for nb in notebooks)
    return True, f"{len(notebooks)} chapters passed nbval at {record.get('finished', '?')} ({total:.0f} s)"


def pytest_addoption(parser):
    group = parser.getgroup("nbval_save")
    group.addoption(
        "--nbval-save-dir",
        default=str(REPO / "_build" / "executed"),
        help="folder that receives the executed notebooks (book/X.ipynb) ('' for none)",
    )
    group.addoption(
        "--nbval-save-record",
        default=str(REPO / "_build" / "executed" / "nbval.json"),
        help="JSON record of the chapters' results and fingerprints ('' for none)",
    )


class _Saver:
    def __init__(self, config) -> None:
        self.save_dir = config.getoption("nbval_save_dir")
        self.record_path = config.getoption("nbval_save_record")
        self.files: dict[str, dict] = {}  # notebook path -> {"parent":, "failed":, "t0":, "t1":}

    def _entry(self, item) -> dict | None:
        parent = getattr(item, "parent", None)
        if parent is None or not hasattr(item, "cell") or not hasattr(parent, "nb"):
            return None
        key = str(Path(str(parent.fspath)).resolve())
        entry = self.files.setdefault(
            key, {"parent": parent, "failed": False, "t0": time.time(), "t1": time.time(), "count": 0}
        )
        return entry

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        outcome = yield
        entry = self._entry(item)
        if entry is None:
            return
        outs = getattr(item, "test_outputs", None) or []
        entry["count"] += 1
        item.cell.outputs = [copy.deepcopy(o) for o in outs]
        item.cell.execution_count = entry["count"]
        for o in item.cell.outputs:
            if o.get("output_type") == "execute_result":
                o["execution_count"] = entry["count"]
        if outcome.excinfo is not None:
            entry["failed"] = True
        entry["t1"] = time.time()

    def pytest_runtest_logreport(self, report):
        if report.failed:
            for key, entry in self.files.items():
                if report.nodeid.split("::")[0] and key.endswith(report.nodeid.split("::")[0]):
                    entry["failed"] = True

    def pytest_sessionfinish(self, session, exitstatus):
        if not self.files:
            return
        record = {"finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "chapters": {}}
        old = {}
        if self.record_path and Path(self.record_path).is_file():
            try:
                old = json.loads(Path(self.record_path).read_text()).get("chapters", {})
            except ValueError:
                old = {}
        record["chapters"].update(old)
        for key, entry in self.files.items():
            path = Path(key)
            nb = entry["parent"].nb
            complete = all(c.get("execution_count") is not None for c in nb.cells if c.cell_type == "code")
            outcome = "passed" if complete and not entry["failed"] else "failed"
            seconds = round(entry["t1"] - entry["t0"], 1)
            try:
                rel = str(path.relative_to(REPO))
            except ValueError:
                rel = str(path)
            record["chapters"][rel] = {
                "outcome": outcome,
                "seconds": seconds,
                "fingerprint": fingerprint(path) if path.is_relative_to(REPO) else "",
            }
            if self.save_dir:
                import nbformat

                dest = Path(self.save_dir) / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, str(dest))
        if self.record_path:
            Path(self.record_path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.record_path).write_text(json.dumps(record, indent=1) + "\n")


def pytest_configure(config):
    config.pluginmanager.register(_Saver(config), "nbval_save_saver")


# ------------------------------------------------------------------------------------------------
# Command line: split the chapters into groups, merge the groups' records and fill the cache
# ------------------------------------------------------------------------------------------------
def split(n: int, notebooks: list[str], record_path: Path) -> list[list[str]]:
    """``n`` groups of about equal run time (times from an earlier record, else one minute each)."""
    try:
        times = {k: v.get("seconds", 60.0) for k, v in json.loads(Path(record_path).read_text())["chapters"].items()}
    except (OSError, ValueError, KeyError):
        times = {}
    groups: list[list[str]] = [[] for _ in range(max(1, n))]
    load = [0.0] * len(groups)
    for nb in sorted(notebooks, key=lambda x: -times.get(x, 60.0)):
        i = load.index(min(load))
        groups[i].append(nb)
        load[i] += times.get(nb, 60.0)
    return [g for g in groups if g]


def merge(save_dir: Path, cache_path: Path | None) -> dict:
    """Merge ``save_dir/record-*.json`` into ``save_dir/nbval.json``; cache the passed notebooks."""
    import nbformat

    save_dir = Path(save_dir)
    record = {"finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "chapters": {}}
    try:  # chapters not executed this time keep their earlier entry
        record["chapters"].update(json.loads((save_dir / "nbval.json").read_text()).get("chapters", {}))
    except (OSError, ValueError):
        pass
    fresh: set[str] = set()
    for part in sorted(save_dir.glob("record-*.json")):
        chapters = json.loads(part.read_text()).get("chapters", {})
        record["chapters"].update(chapters)
        fresh.update(chapters)
        part.unlink()
    (save_dir / "nbval.json").write_text(json.dumps(record, indent=1) + "\n")
    record["_fresh"] = sorted(fresh)
    if cache_path is not None:
        from jupyter_cache import get_cache
        from jupyter_cache.base import CacheBundleIn

        cache = get_cache(str(cache_path))
        for rel, entry in record["chapters"].items():
            if rel not in fresh:
                continue
            executed = save_dir / rel
            if entry["outcome"] == "passed" and executed.is_file():
                nb = nbformat.read(str(executed), as_version=4)
                cache.cache_notebook_bundle(
                    CacheBundleIn(nb, str(REPO / rel), data={"execution_seconds": entry["seconds"]}),
                    check_validity=False,
                    overwrite=True,
                )
    return record


def main(argv: list[str]) -> int:
    if argv[:1] == ["split"]:
        for group in split(int(argv[1]), argv[3:], Path(argv[2])):
            print(" ".join(group))
        return 0
    if argv[:1] == ["merge"]:
        record = merge(Path(argv[1]), Path(argv[2]) if len(argv) > 2 and argv[2] else None)
        failed = [k for k, v in record["chapters"].items() if v["outcome"] != "passed" and k in record["_fresh"]]
        for k, v in sorted(record["chapters"].items(), key=lambda kv: -kv[1]["seconds"]):
            if k not in record["_fresh"]:
                continue
            print(f"  {v['outcome']:6s} {v['seconds']:7.1f} s  {k}")
        return 1 if failed else 0
    if argv[:1] == ["stale"]:
        # the notebooks that must be executed: not in the record, failed, or changed since
        for nb in argv[2:]:
            ok, _ = record_is_current(Path(argv[1]), [Path(nb)])
            if not ok:
                print(nb)
        return 0
    if argv[:1] == ["current"]:
        ok, summary = record_is_current(Path(argv[1]), [Path(a) for a in argv[2:]])
        print(summary)
        return 0 if ok else 1
    print("usage: nbval_save.py split N RECORD NB... | merge DIR [CACHE] | current|stale RECORD NB...")
    return 2


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
