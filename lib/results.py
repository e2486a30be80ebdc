"""Result files with provenance, written atomically, and stale-result detection.

A result is a set of named numpy arrays plus a provenance record:
``config`` (the full config dictionary), ``config_hash``, ``commit`` (git HEAD of
the repository, ``+dirty`` when uncommitted changes existed), ``device``,
``torch_version``, ``created`` (UTC ISO time) and ``wall_seconds``. Both live in
one ``.npz`` file (provenance as a JSON string under ``__provenance__``) and a
human-readable ``.json`` sidecar. Writing goes to a temporary file followed by
``os.replace``, so a crash never leaves a half-written result.

Full-scale results are stored under ``results/full/<experiment>.npz`` in the
repository; :func:`load_stored` returns them with a status that says whether
their config hash still matches the code's config (``current``) or not
(``stale``), so a chapter never shows an outdated result silently.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent


def results_dir(scale: str = "full") -> Path:
    """Folder holding stored results of a scale (``results/<scale>`` in the repository)."""
    root = os.environ.get("INSTABILITIES_RESULTS")
    base = Path(root) if root else REPO_ROOT / "results"
    return base / scale


def git_commit() -> str:
    """Current git commit of the repository (``unknown`` outside a checkout)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001 - no git, not a checkout, ...
        return "unknown"


def device_description(device: str | None = None) -> str:
    """A human-readable name of the device that produced a result."""
    import torch

    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(torch.device(device))}"
    return f"cpu:{platform.processor() or platform.machine()} x{os.cpu_count()}"


def provenance(config: Config, device: str | None = None, wall_seconds: float | None = None,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Provenance record for a result computed from ``config`` on ``device``."""
    import torch

    record = {
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "commit": git_commit(),
        "device": device_description(device),
        "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": wall_seconds,
    }
    if extra:
        record.update(dict(extra))
    return record


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_write_bytes` (temporary file + rename): checkpoints are never half written."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def save_result(path: str | Path, arrays: Mapping[str, Any], prov: Mapping[str, Any]) -> Path:
    """Write arrays + provenance atomically to ``path`` (``.npz``) and a ``.json`` sidecar."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    bad = [k for k in arrays if k.startswith("__")]
    if bad:
        raise ValueError(f"array names may not start with '__': {bad}")
    buf = io.BytesIO()
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload["__provenance__"] = np.array(json.dumps(dict(prov), sort_keys=True, default=str))
    np.savez_compressed(buf, **payload)
    atomic_write_bytes(path, buf.getvalue())
    summary = dict(prov)
    summary["arrays"] = {k: list(np.shape(v)) for k, v in payload.items() if k != "__provenance__"}
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(summary, indent=2, sort_keys=True,
                                                              default=str).encode())
    return path


@dataclasses.dataclass
class StoredResult:
    """A result read back from disk, with a status relative to the expected config."""

    status: str  # "current", "stale" or "missing"
    path: Path
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    expected_hash: str | None = None

    @property
    def available(self) -> bool:
        return self.status == "current"

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def banner(self) -> str:
        """One paragraph for a chapter: where the result came from, or why it is not shown."""
        if self.status == "missing":
            return (f"No stored full-scale result at {self.path.relative_to(REPO_ROOT) if self.path.is_relative_to(REPO_ROOT) else self.path}. "
                    "Produce it on a GPU with the command in the 'Reproducing at full scale' appendix; "
                    "the figure below uses the ci scale only.")
        p = self.provenance
        where = (f"config {p.get('config_hash')} | commit {str(p.get('commit'))[:12]} | "
                 f"{p.get('device')} | {p.get('created')} | {p.get('wall_seconds')} s")
        if self.status == "stale":
            return (f"STALE stored result ({where}): its config hash {p.get('config_hash')} does not match "
                    f"the current config {self.expected_hash}. It is NOT shown; rerun the full-scale command.")
        return f"Stored full-scale result ({where})."


def load_result(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read arrays and provenance from a result file written by :func:`save_result`."""
    with np.load(Path(path), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "__provenance__"}
        prov = json.loads(str(data["__provenance__"]))
    return arrays, prov


def load_stored(name: str, config: Config, scale: str | None = None) -> StoredResult:
    """Stored result of experiment ``name`` checked against ``config`` (status current/stale/missing)."""
    scale = scale or config.scale
    path = results_dir(scale) / f"{name}.npz"
    expected = config.config_hash()
    if not path.exists():
        return StoredResult("missing", path, expected_hash=expected)
    arrays, prov = load_result(path)
    status = "current" if prov.get("config_hash") == expected else "stale"
    return StoredResult(status, path, arrays if status == "current" else {}, prov, expected)
