"""Experiment configurations: validated, hashable, with a ``ci`` and a ``full`` scale.

Every experiment in the book is described by a frozen dataclass that subclasses
:class:`Config`. A config knows its ``scale`` ("ci": CPU, seconds; "full": one
GPU, the papers' sizes), validates itself on construction and hashes to a short
stable string that is stored with every result (see :mod:`instabilities.results`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

SCALES = ("ci", "full")


class ConfigError(ValueError):
    """Raised for an invalid experiment configuration; the message names the fix."""


def _canonical(value: Any) -> Any:
    """Turn a config value into plain JSON types (tuples become lists, floats stay floats)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class for experiment configs.

    Subclasses add fields and may extend :meth:`validate` (call ``super().validate()``).
    """

    scale: str = "ci"

    def __post_init__(self) -> None:
        self.validate()

    # -- validation helpers -------------------------------------------------
    def validate(self) -> None:
        if self.scale not in SCALES:
            raise ConfigError(f"scale={self.scale!r} is unknown; use one of {SCALES}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of every field (used for hashing and provenance)."""
        d = _canonical(self)
        d["__type__"] = type(self).__name__
        return d

    def config_hash(self) -> str:
        """Short SHA-256 of the canonical JSON form; changes whenever any field changes."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# -- reusable checks ----------------------------------------------------------
def require_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value!r} must be a finite number > 0.")


def require_nonnegative(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name}={value!r} must be a finite number >= 0.")


def require_positive_int(name: str, value: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise ConfigError(f"{name}={value!r} must be a positive integer.")


def require_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not supported; choose one of {choices}.")


def require_in_range(name: str, value: float, low: float, high: float) -> None:
    if not (isinstance(value, (int, float)) and low <= value <= high):
        raise ConfigError(f"{name}={value!r} must lie in [{low}, {high}].")


def available_devices() -> list[str]:
    """Device strings this machine accepts: ``cpu``, then ``cuda`` and ``cuda:0`` ... when CUDA is there, ``mps``."""
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def require_device(device: str) -> str:
    """``device`` unchanged when this machine has it, else a one-line :class:`ConfigError` naming those it has."""
    have = available_devices()
    if device not in have:
        raise ConfigError(f"device {device!r} is not available on this machine; use one of: {', '.join(have)}.")
    return device
