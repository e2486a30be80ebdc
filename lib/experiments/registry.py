"""Registry of the book's experiments: one code path, two scales.

An experiment has a config for each scale (``ci``: CPU, seconds to a minute; ``full``: one GPU,
the papers' sizes) and a ``run(config, device, progress)`` function returning a dict of numpy
arrays. Chapters call::

    cfg = experiments.config("eos_sweep", "ci")
    res = experiments.run("eos_sweep", cfg)             # computed now (CI always recomputes ci)
    full = experiments.stored("eos_sweep")              # results/full/eos_sweep.npz, checked
    print(full.banner())                                # current / STALE / missing, with provenance

and ``python -m instabilities run eos_sweep --scale full --device cuda`` writes the stored file.
Experiment modules register themselves with :func:`register`; :data:`MODULES` lists the modules
imported on first use of the registry.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import Config, ConfigError, SCALES
from ..results import StoredResult, load_stored, provenance, results_dir, save_result

Progress = Callable[[int, int], None]
RunFn = Callable[[Any, str, "Progress | None"], dict[str, np.ndarray]]

# Modules that define experiments (imported lazily so that `import instabilities` stays light).
# A listed module that does not exist (yet) is skipped; tests/test_experiments.py checks the registry.
MODULES: list[str] = ["classical", "eos", "flatness", "sgd", "adaptive", "label_noise", "full_scale"]


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    chapter: str
    description: str
    configs: dict[str, Config]
    run: RunFn
    resumable: bool = False  # True when run() checkpoints internally


_REGISTRY: dict[str, Experiment] = {}
_loaded = False


def register(name: str, chapter: str, description: str, configs: dict[str, Config], run: RunFn,
             resumable: bool = False) -> Experiment:
    """Add an experiment to the registry (called at import time by experiment modules)."""
    missing = [s for s in SCALES if s not in configs]
    if missing:
        raise ConfigError(f"experiment {name!r} lacks configs for scales {missing}.")
    for scale, cfg in configs.items():
        if cfg.scale != scale:
            raise ConfigError(f"experiment {name!r}: the {scale!r} config has scale={cfg.scale!r}.")
    exp = Experiment(name, chapter, description, dict(configs), run, resumable)
    _REGISTRY[name] = exp
    return exp


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for mod in MODULES:
            if importlib.util.find_spec(f"{__package__}.{mod}") is not None:
                importlib.import_module(f"{__package__}.{mod}")
        _loaded = True


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> Experiment:
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(f"experiment {name!r} is unknown; known: {', '.join(sorted(_REGISTRY)) or 'none'}.")
    return _REGISTRY[name]


def config(name: str, scale: str = "ci") -> Config:
    """The registered config of experiment ``name`` at ``scale``."""
    if scale not in SCALES:
        raise ConfigError(f"scale={scale!r} is unknown; use one of {SCALES}.")
    return get(name).configs[scale]


def run(name: str, cfg: Config | None = None, device: str = "cpu", progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Run experiment ``name`` with ``cfg`` (default: its ci config) and return its arrays."""
    exp = get(name)
    cfg = cfg if cfg is not None else exp.configs["ci"]
    return exp.run(cfg, device, progress)


def stored(name: str, scale: str = "full") -> StoredResult:
    """The stored result of ``name`` at ``scale``, checked against the current config."""
    return load_stored(name, config(name, scale), scale)


def run_and_store(name: str, scale: str = "full", device: str = "cpu", progress: Progress | None = None,
                  force: bool = False) -> tuple[StoredResult, bool]:
    """Run ``name`` at ``scale`` and store the result with provenance unless a current one exists.

    Returns the stored result and whether it was (re)computed.
    """
    cfg = config(name, scale)
    existing = load_stored(name, cfg, scale)
    if existing.available and not force:
        return existing, False
    exp = get(name)
    earlier = _earlier_attempts(name, cfg) if exp.resumable else {"seconds": 0.0, "parts": 0}
    t0 = time.perf_counter()
    try:
        arrays = exp.run(cfg, device, progress)
    except BaseException:
        if exp.resumable:  # the time spent so far is part of the result's cost once it resumes and finishes
            _record_attempt(name, cfg, earlier, time.perf_counter() - t0)
        raise
    wall = earlier["seconds"] + time.perf_counter() - t0
    prov = provenance(cfg, device, wall_seconds=round(wall, 2),
                      extra={"experiment": name, "scale": scale, "parts": earlier["parts"] + 1})
    save_result(results_dir(scale) / f"{name}.npz", arrays, prov)
    return load_stored(name, cfg, scale), True


# -- reproduction helpers (used by ``python -m instabilities reproduce``) ----------------------
LOCAL_DATASETS = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]),
                  "fashion_mnist": ("fashion-mnist", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])}


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

    CIFAR-10 and Fashion-MNIST are never downloaded: they must sit under ``data.data_root()``.
    """
    from ..data import data_root

    root = data_root()
    out = []
    for name in sorted(_datasets_in(cfg.to_dict())):
        if name not in LOCAL_DATASETS:
            continue
        folder, files = LOCAL_DATASETS[name]
        have = [(root / folder / f).exists() or (root / folder / (f + ".gz")).exists() for f in files]
        if not all(have):
            out.append(f"{name} not found under {root / folder} (needs {', '.join(files)}); put a local copy "
                       f"there or set INSTABILITIES_DATA to the folder that contains {folder}/")
    return out


def checkpoint_dir(name: str, scale: str = "full") -> Path:
    """Folder for the checkpoints of a long experiment (deleted once its result is stored).

    ``$INSTABILITIES_RESULTS/checkpoints/<scale>/<name>`` when that variable is set, else
    ``<repo>/checkpoints/<scale>/<name>`` (ignored by git).
    """
    import os

    from ..results import REPO_ROOT

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


def _earlier_attempts(name: str, cfg: Config) -> dict[str, Any]:
    """Seconds and number of earlier interrupted attempts of a resumable experiment with this config."""
    import json

    path = _attempts_file(name, cfg)
    if not path.exists():
        return {"seconds": 0.0, "parts": 0}
    data = json.loads(path.read_text())
    return {"seconds": float(data.get("seconds", 0.0)), "parts": int(data.get("parts", 0))}


def _record_attempt(name: str, cfg: Config, earlier: dict[str, Any], seconds: float) -> None:
    import json

    from ..results import atomic_write_bytes

    record = {"seconds": round(earlier["seconds"] + seconds, 2), "parts": earlier["parts"] + 1}
    atomic_write_bytes(_attempts_file(name, cfg), json.dumps(record).encode())


def clear_checkpoints(name: str, scale: str = "full") -> None:
    """Remove the checkpoints of ``name`` (after its result has been stored)."""
    import shutil

    shutil.rmtree(checkpoint_dir(name, scale), ignore_errors=True)


def plan(scale: str = "full", only: list[str] | None = None, force: bool = False) -> list[dict[str, Any]]:
    """What ``reproduce`` would do: one row per experiment with ``action`` run / skip and the reason."""
    rows = []
    for name in (only or names()):
        cfg = config(name, scale)
        st = load_stored(name, cfg, scale)
        missing = missing_data(cfg)
        has_ckpt = checkpoint_dir(name, scale).exists() and any(checkpoint_dir(name, scale).iterdir())
        if missing:
            action, why = "skip", "data missing: " + "; ".join(missing)
        elif st.available and not force:
            action, why = "skip", "stored result is current"
        else:
            action = "run"
            why = {"missing": "no stored result", "stale": "stored result is STALE (config changed)",
                   "current": "forced"}[st.status]
            if has_ckpt and get(name).resumable:
                why += "; resumes from checkpoint"
        rows.append({"name": name, "status": st.status, "action": action, "reason": why,
                     "resumable": get(name).resumable, "config_hash": cfg.config_hash()})
    return rows
