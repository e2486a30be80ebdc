"""Registry of the book's experiments: one code path, two scales.

An experiment has a config for each scale (``ci``: CPU, seconds to a minute; ``full``: one GPU,
the papers' sizes) and a ``run(config, device, progress)`` function returning a dict of numpy
arrays. Chapters call::

    cfg = experiments.config("eos_sweep", "ci")
    res = experiments.run("eos_sweep", cfg)             # computed now (CI always recomputes ci)
    full = experiments.stored("eos_sweep")              # results/full/eos_sweep.npz, checked
    print(full.banner())                                # current / STALE / missing / CORRUPT, with provenance

and ``python -m instabilities run eos_sweep --scale full --device cuda`` writes the stored file
(:mod:`.reproduce`). Experiment modules register themselves with :func:`register`; :data:`MODULES`
lists the modules imported on first use of the registry.

A stored result is current when its config hash *and* its experiment's code identity match:
the explicit ``revision`` given to :func:`register` (bump it when a run's meaning changes in a way
the code cannot show, e.g. new data) and the :func:`~.fingerprint.code_fingerprint` of the run
function and the package code it reaches (so editing what a run computes marks its result STALE,
while comments, docstrings and formatting do not).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from ..config import SCALES, Config, ConfigError
from ..results import StoredResult, load_stored
from .fingerprint import code_fingerprint

Progress = Callable[[int, int], None]
RunFn = Callable[[Any, str, "Progress | None"], dict[str, np.ndarray]]

#: Modules that define experiments (imported lazily so that `import instabilities` stays light).
#: A listed module that does not exist (yet) is skipped; tests/test_experiments.py checks the registry.
MODULES: list[str] = [
    "classical",
    "eos",
    "catapults",
    "flatness",
    "rpe",
    "sgd",
    "adaptive",
    "label_noise",
    "full_scale",
]


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    chapter: str
    description: str
    configs: dict[str, Config]
    run: RunFn
    resumable: bool = False  # True when run() checkpoints internally
    revision: int = 0  # bumped by hand when what run() computes changes in a way the code does not show

    @property
    def code_fingerprint(self) -> str:
        """Hash of the run function's normalized source and of the package code it reaches.

        Recomputed at every call (a few milliseconds per experiment; sources are cached per object), so
        that a module attribute patched and restored in between (a test's monkeypatch) is never remembered.
        """
        return code_fingerprint(self.run)

    def code_identity(self) -> dict[str, Any]:
        """What, besides the config, a stored result must match to be current (recorded in its provenance)."""
        return {"revision": self.revision, "code_fingerprint": self.code_fingerprint}


_REGISTRY: dict[str, Experiment] = {}
_loaded = False


def register(
    name: str,
    chapter: str,
    description: str,
    configs: dict[str, Config],
    run: RunFn,
    resumable: bool = False,
    revision: int = 0,
) -> Experiment:
    """Add an experiment to the registry (called at import time by experiment modules)."""
    missing = [s for s in SCALES if s not in configs]
    if missing:
        raise ConfigError(f"experiment {name!r} lacks configs for scales {missing}.")
    for scale, cfg in configs.items():
        if cfg.scale != scale:
            raise ConfigError(f"experiment {name!r}: the {scale!r} config has scale={cfg.scale!r}.")
    if not (isinstance(revision, int) and not isinstance(revision, bool) and revision >= 0):
        raise ConfigError(f"experiment {name!r}: revision={revision!r} must be an integer >= 0.")
    exp = Experiment(name, chapter, description, dict(configs), run, resumable, revision)
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


def run(
    name: str, cfg: Config | None = None, device: str = "cpu", progress: Progress | None = None
) -> dict[str, np.ndarray]:
    """Run experiment ``name`` with ``cfg`` (default: its ci config) and return its arrays."""
    exp = get(name)
    cfg = cfg if cfg is not None else exp.configs["ci"]
    return exp.run(cfg, device, progress)


def stored(name: str, scale: str = "full") -> StoredResult:
    """The stored result of ``name`` at ``scale``, checked against the current config and code.

    Never raises for a bad file: a missing, stale or corrupt result comes back not ``available``,
    its ``banner()`` saying why.
    """
    return load_stored(name, config(name, scale), scale, code=get(name).code_identity())
