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
from typing import Any, Callable

import numpy as np

from .config import Config, ConfigError, SCALES
from .results import StoredResult, load_stored, provenance, results_dir, save_result

Progress = Callable[[int, int], None]
RunFn = Callable[[Any, str, "Progress | None"], dict[str, np.ndarray]]

# Modules that define experiments (imported lazily so that `import instabilities` stays light).
# A listed module that does not exist (yet) is skipped; tests/test_experiments.py checks the registry.
MODULES: list[str] = ["exp_classical", "exp_eos", "exp_flatness", "exp_sgd", "exp_adaptive", "exp_label_noise"]


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
    t0 = time.perf_counter()
    arrays = get(name).run(cfg, device, progress)
    prov = provenance(cfg, device, wall_seconds=round(time.perf_counter() - t0, 2),
                      extra={"experiment": name, "scale": scale})
    save_result(results_dir(scale) / f"{name}.npz", arrays, prov)
    return load_stored(name, cfg, scale), True
