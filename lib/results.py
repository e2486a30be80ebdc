"""Result files with provenance, written atomically, and stale-result detection.

A result is a set of named numpy arrays plus a provenance record:
``config`` (the full config dictionary), ``config_hash``, the code identity of the
experiment (``revision``, ``code_fingerprint``, see :mod:`instabilities.experiments.registry`),
``result_hash`` (of the config hash and the code identity), ``commit`` (git HEAD of
the repository, ``+dirty`` when uncommitted changes existed), ``device`` (exactly as
asked for, e.g. ``cuda:1``), ``device_name``, ``torch_version``, ``created`` (UTC ISO
time) and ``wall_seconds``. Both live in
one ``.npz`` file (provenance as a JSON string under ``__provenance__``) and a
human-readable ``.json`` sidecar. Writing goes to a temporary file followed by
``os.replace``, so a crash never leaves a half-written result.

Full-scale results are stored under ``results/full/<experiment>.npz`` in the
repository; :func:`load_stored` returns them with a status: ``current`` when both
the config hash and the code identity still match, ``stale`` when one does not
(``StoredResult.stale`` says which: ``config``, ``code``), ``missing``, or ``corrupt``
when the file cannot be read (truncated, empty). A chapter never shows an outdated
or unreadable result, and reading one never raises.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001 - no git, not a checkout, ...
        return "unknown"


def hardware_name(device: str | None = None) -> str:
    """The hardware behind a device string: the GPU's name for ``cuda[:i]``, else the CPU."""
    import torch

    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


def device_description(device: str | None = None) -> str:
    """A human-readable name of a device: the device string and its hardware, e.g. ``cuda:1 (NVIDIA H200)``."""
    return f"{device or 'cpu'} ({hardware_name(device)})"


def result_hash(config_hash: str, code: Mapping[str, Any] | None = None) -> str:
    """Short SHA-256 of a config hash and a code identity (``revision``, ``code_fingerprint``).

    Two results with the same value were computed by the same config and the same code.
    """
    blob = json.dumps({"config_hash": config_hash, **dict(code or {})}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def provenance(
    config: Config,
    device: str | None = None,
    wall_seconds: float | None = None,
    extra: Mapping[str, Any] | None = None,
    code: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Provenance record for a result computed from ``config`` on ``device`` by code ``code``.

    ``code`` is the experiment's code identity (``{"revision": ..., "code_fingerprint": ...}``);
    its entries are recorded, with the ``result_hash`` that :func:`load_stored` compares.
    """
    import torch

    record = {
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        **dict(code or {}),
        "result_hash": result_hash(config.config_hash(), code),
        "commit": git_commit(),
        "device": str(device or "cpu"),
        "device_name": hardware_name(device),
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
    """``torch.save`` through :func:`atomic_write_bytes` (temporary file + rename): never half written."""
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
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(summary, indent=2, sort_keys=True, default=str).encode())
    return path


@dataclasses.dataclass
class StoredResult:
    """A result read back from disk, with a status relative to the expected config."""

    status: str  # "current", "stale", "missing" or "corrupt"
    path: Path
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    expected_hash: str | None = None  # the config hash the result should have
    stale: tuple[str, ...] = ()  # what changed for a stale result: "config", "code" or both
    reason: str = ""  # why a corrupt result could not be read
    expected_code: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.status == "current"

    @property
    def label(self) -> str:
        """``current``, ``STALE (config)``, ``STALE (code)``, ``STALE (config, code)``, ``missing`` or ``CORRUPT``."""
        if self.status == "stale":
            return f"STALE ({', '.join(self.stale)})"
        return "CORRUPT" if self.status == "corrupt" else self.status

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def _where(self) -> str:
        return str(self.path.relative_to(REPO_ROOT) if self.path.is_relative_to(REPO_ROOT) else self.path)

    def announce(self) -> None:
        """Print :meth:`banner` unless the result is simply missing (reader-facing pages show no "missing"
        notes: the appendix "Reproducing at full scale" lists what exists). Stale and corrupt results are
        always announced, so an outdated result is never hidden silently."""
        if self.status != "missing":
            print(self.banner())

    def banner(self) -> str:
        """One paragraph for a chapter: where the result came from, or why it is not shown."""
        if self.status == "missing":
            return (
                f"No stored full-scale result at {self._where()}. "
                "Produce it on a GPU with the command in the 'Reproducing at full scale' appendix; "
                "the figure below uses the ci scale only."
            )
        if self.status == "corrupt":
            return (
                f"CORRUPT stored result at {self._where()} ({self.reason}): it cannot be read and is NOT shown; "
                f"recompute it with `python -m instabilities run {self.path.stem} --force`. "
                "The figure below uses the ci scale only."
            )
        p = self.provenance
        device = p.get("device") if not p.get("device_name") else f"{p.get('device')} ({p.get('device_name')})"
        code = "".join(f" | {k.replace('code_', '')} {p[k]}" for k in ("revision", "code_fingerprint") if k in p)
        where = (
            f"config {p.get('config_hash')}{code} | commit {str(p.get('commit'))[:12]} | {device} | "
            f"{p.get('created')} | {p.get('wall_seconds')} s"
        )
        if self.status == "stale":
            why = []
            if "config" in self.stale:
                why.append(
                    f"its config hash {p.get('config_hash')} does not match the current config {self.expected_hash}"
                )
            if "code" in self.stale:
                now = ", ".join(f"{k} {v}" for k, v in self.expected_code.items())
                why.append(f"it was computed by other code than the current one ({now})")
            return f"STALE stored result ({where}): {'; '.join(why)}. It is NOT shown; rerun the full-scale command."
        return f"Stored full-scale result ({where})."


def load_result(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read arrays and provenance from a result file written by :func:`save_result`."""
    with np.load(Path(path), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "__provenance__"}
        prov = json.loads(str(data["__provenance__"]))
    return arrays, prov


def load_stored(
    name: str, config: Config, scale: str | None = None, code: Mapping[str, Any] | None = None
) -> StoredResult:
    """Stored result of experiment ``name`` checked against ``config`` and the code identity ``code``.

    Status ``current`` (config hash and every entry of ``code`` match the provenance), ``stale``
    (``.stale`` names what changed), ``missing``, or ``corrupt`` (unreadable; ``.reason`` says why).
    Never raises for a bad file.
    """
    scale = scale or config.scale
    path = results_dir(scale) / f"{name}.npz"
    expected = config.config_hash()
    code = dict(code or {})
    if not path.exists():
        return StoredResult("missing", path, expected_hash=expected, expected_code=code)
    try:
        arrays, prov = load_result(path)
        if not isinstance(prov, dict):
            raise ValueError("its provenance is not a record")
    except Exception as err:  # noqa: BLE001 - truncated, empty, not a zip, no provenance, ...
        reason = f"{type(err).__name__}: {err}".strip().rstrip(":")
        return StoredResult("corrupt", path, expected_hash=expected, reason=reason, expected_code=code)
    stale = (("config",) if prov.get("config_hash") != expected else ()) + (
        ("code",) if any(prov.get(k) != v for k, v in code.items()) else ()
    )
    status = "stale" if stale else "current"
    return StoredResult(status, path, arrays if status == "current" else {}, prov, expected, stale, expected_code=code)
