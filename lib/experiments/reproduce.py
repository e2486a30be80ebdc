"""Reproduction machinery: storing results, checkpoints, interrupted attempts, the plan, TIMINGS.md.

Used by ``python -m instabilities run/reproduce`` (:mod:`instabilities.cli`, which adds argument
parsing and the time budget) and by experiments that checkpoint (:func:`checkpoint_path`). Chapters
need none of it: they call the registry (``experiments.config/run/stored``).

* :func:`run_and_store` runs an experiment and writes ``results/<scale>/<name>.npz`` with provenance
  (config hash, code identity, device, seconds of all its parts);
* :func:`checkpoint_path` / :func:`checkpoint_dir` / :func:`clear_checkpoints`: where a resumable
  experiment keeps its checkpoints, tied to its config hash; :func:`attempts`: the seconds and number
  of interrupted parts so far;
* :func:`missing_data`: datasets a config needs that are not on this machine (:mod:`instabilities.data`);
* :func:`plan`: what ``reproduce`` would do; :func:`write_timings`: ``results/<scale>/TIMINGS.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..config import Config, require_device
from ..data import LOCAL_FILES, data_root, missing_local_files
from ..results import (
    REPO_ROOT,
    StoredResult,
    atomic_write_bytes,
    device_description,
    git_commit,
    provenance,
    results_dir,
    save_result,
)
from .registry import Progress, config, get, names, stored


class CorruptResultError(RuntimeError):
    """A stored result cannot be read; ``--force`` (``force=True``) overwrites it."""


def run_and_store(
    name: str, scale: str = "full", device: str = "cpu", progress: Progress | None = None, force: bool = False
) -> tuple[StoredResult, bool]:
    """Run ``name`` at ``scale`` and store the result with provenance unless a current one exists.

    Returns the stored result and whether it was (re)computed. A corrupt stored file is not
    overwritten unless ``force`` (it may be the only copy of a long run): :class:`CorruptResultError`.
    """
    require_device(device)
    cfg = config(name, scale)
    exp = get(name)
    existing = stored(name, scale)
    if existing.available and not force:
        return existing, False
    if existing.status == "corrupt" and not force:
        raise CorruptResultError(
            f"the stored result {_shown(existing.path)} is CORRUPT ({existing.reason}); "
            f"`python -m instabilities run {name} --scale {scale} --force` overwrites it."
        )
    earlier = attempts(name, cfg) if exp.resumable else {"seconds": 0.0, "parts": 0}
    t0 = time.perf_counter()
    try:
        arrays = exp.run(cfg, device, progress)
    except BaseException:
        if exp.resumable:  # the time spent so far is part of the result's cost once it resumes and finishes
            _record_attempt(name, cfg, earlier, time.perf_counter() - t0)
        raise
    wall = earlier["seconds"] + time.perf_counter() - t0
    prov = provenance(
        cfg,
        device,
        wall_seconds=round(wall, 2),
        code=exp.code_identity(),
        extra={"experiment": name, "scale": scale, "parts": earlier["parts"] + 1},
    )
    save_result(results_dir(scale) / f"{name}.npz", arrays, prov)
    return stored(name, scale), True


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)


# -- data -------------------------------------------------------------------------------------
def _datasets_in(value: Any) -> set[str]:
    """Every ``dataset`` field found anywhere in a (nested) config dictionary."""
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("dataset", "datasets") and isinstance(v, (str, list)):
                found.update([v] if isinstance(v, str) else [x for x in v if isinstance(x, str)])
            else:
                found |= _datasets_in(v)
    elif isinstance(value, list):
        for v in value:
            found |= _datasets_in(v)
    return found


def missing_data(cfg: Config) -> list[str]:
    """Messages for datasets ``cfg`` needs that are not present locally (empty when all are there).

    CIFAR-10 and Fashion-MNIST are never downloaded: they must sit under ``data.data_root()``
    (which files: ``data.local_files``).
    """
    out = []
    for name in sorted(_datasets_in(cfg.to_dict())):
        if missing_local_files(name):
            folder = data_root() / LOCAL_FILES[name][0]
            out.append(
                f"{name} not found under {folder} (needs {', '.join(LOCAL_FILES[name][1])}); put a local "
                f"copy there or set INSTABILITIES_DATA to the folder that contains {folder.name}/"
            )
    return out


# -- checkpoints and interrupted attempts ------------------------------------------------------
def checkpoint_dir(name: str, scale: str = "full") -> Path:
    """Folder for the checkpoints of a long experiment (deleted once its result is stored).

    ``$INSTABILITIES_RESULTS/checkpoints/<scale>/<name>`` when that variable is set, else
    ``<repo>/checkpoints/<scale>/<name>`` (ignored by git).
    """
    root = os.environ.get("INSTABILITIES_RESULTS")
    base = Path(root) / "checkpoints" if root else REPO_ROOT / "checkpoints"
    return base / scale / name


def checkpoint_path(name: str, cfg: Config, part: str = "run") -> Path:
    """Checkpoint file for one part of experiment ``name`` run with ``cfg`` (tied to its config hash).

    A resumable experiment passes it to ``train.train(..., checkpoint_path=..., checkpoint_every=...)``
    (one ``part`` per training run) and registers with ``resumable=True``; an interrupted
    ``reproduce`` then continues inside the experiment instead of starting it again.
    """
    return checkpoint_dir(name, cfg.scale) / f"{part}-{cfg.config_hash()}.pt"


def _attempts_file(name: str, cfg: Config) -> Path:
    return checkpoint_dir(name, cfg.scale) / f"attempts-{cfg.config_hash()}.json"


def attempts(name: str, cfg: Config) -> dict[str, Any]:
    """Seconds and number of the interrupted attempts (parts) so far of a resumable experiment with ``cfg``."""
    path = _attempts_file(name, cfg)
    try:
        data = json.loads(path.read_text())
        return {"seconds": float(data.get("seconds", 0.0)), "parts": int(data.get("parts", 0))}
    except (OSError, ValueError, TypeError, AttributeError):  # none yet, or unreadable: count from zero
        return {"seconds": 0.0, "parts": 0}


def _record_attempt(name: str, cfg: Config, earlier: dict[str, Any], seconds: float) -> None:
    record = {"seconds": round(earlier["seconds"] + seconds, 2), "parts": earlier["parts"] + 1}
    atomic_write_bytes(_attempts_file(name, cfg), json.dumps(record).encode())


def clear_checkpoints(name: str, scale: str = "full") -> None:
    """Remove the checkpoints of ``name`` (after its result has been stored)."""
    shutil.rmtree(checkpoint_dir(name, scale), ignore_errors=True)


# -- plan and timing table ---------------------------------------------------------------------
def plan(scale: str = "full", only: list[str] | None = None, force: bool = False) -> list[dict[str, Any]]:
    """What ``reproduce`` would do: one row per experiment with ``action`` run / skip and the reason."""
    rows = []
    for name in only or names():
        cfg = config(name, scale)
        st = stored(name, scale)
        missing = missing_data(cfg)
        has_ckpt = checkpoint_dir(name, scale).exists() and any(checkpoint_dir(name, scale).iterdir())
        if missing:
            action, why = "skip", "data missing: " + "; ".join(missing)
        elif st.available and not force:
            action, why = "skip", "stored result is current"
        elif st.status == "corrupt" and not force:
            action, why = "skip", f"stored result is CORRUPT ({st.reason}); `run {name} --force` overwrites it"
        else:
            action = "run"
            why = {
                "missing": "no stored result",
                "stale": f"stored result is {st.label}",
                "corrupt": "stored result is CORRUPT, forced",
                "current": "forced",
            }[st.status]
            if has_ckpt and get(name).resumable:
                why += "; resumes from checkpoint"
        rows.append(
            {
                "name": name,
                "status": st.status,
                "label": st.label,
                "action": action,
                "reason": why,
                "resumable": get(name).resumable,
                "config_hash": cfg.config_hash(),
            }
        )
    return rows


def _device_of(result: StoredResult) -> str:
    p = result.provenance
    return f"{p.get('device', '')} ({p['device_name']})" if p.get("device_name") else str(p.get("device", ""))


def write_timings(scale: str, device: str, rows: list[tuple[str, str, float]], total: float) -> str:
    """Write ``results/<scale>/TIMINGS.md``: this invocation's rows, then every other experiment whose
    stored result is current (with the seconds and device recorded in its provenance), so that a
    reproduction done in several invocations, or partly on other machines, keeps one complete table.

    ``rows`` are ``(name, status, seconds)``; an interrupted experiment's seconds are the running total
    of all its parts so far (see :func:`attempts`)."""
    out = results_dir(scale) / "TIMINGS.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    seen = {n for n, _, _ in rows}
    others = []
    for name in names():
        if name in seen:
            continue
        st = stored(name, scale)
        if st.available:
            others.append(
                (name, "current, not run by this invocation", float(st.provenance.get("wall_seconds") or 0.0))
            )

    def where(name: str, status: str) -> str:
        if status.startswith(("current", "computed")):
            st = stored(name, scale)
            if st.available:
                return _device_of(st)
        if status.startswith("interrupted"):
            return device
        return ""

    all_rows = rows + others
    lines = [
        f"# Timings of `python -m instabilities reproduce --scale {scale}`",
        "",
        f"Last invocation: {device_description(device)}; commit {git_commit()[:12]}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "Seconds are those of all parts of a run added up: for a result not computed by the last invocation, "
        "as recorded in its provenance, on the device named in the row; for an interrupted experiment, "
        "the running total of its parts so far.",
        "",
        "| experiment | status | seconds | device |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {st} | {d:.1f} | {where(n, st)} |" for n, st, d in all_rows]
    lines += [
        "",
        f"Sum of the seconds above: {sum(d for _, _, d in all_rows):.1f} s. "
        f"Total wall time of the last invocation: {total:.1f} s",
    ]
    atomic_write_bytes(out, ("\n".join(lines) + "\n").encode())
    return str(out)
