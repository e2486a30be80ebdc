"""The book's experiments: the registry chapters call, and one module per part of the book.

Chapters use ``experiments.config(name, scale)``, ``experiments.run(name, cfg)`` and
``experiments.stored(name)``. Registration and lookup live in :mod:`.registry`; the modules that
register experiments are listed in ``registry.MODULES`` and imported on first use.
"""
from .registry import (
    MODULES as MODULES,
    Experiment as Experiment,
    checkpoint_dir as checkpoint_dir,
    checkpoint_path as checkpoint_path,
    clear_checkpoints as clear_checkpoints,
    config as config,
    get as get,
    missing_data as missing_data,
    names as names,
    plan as plan,
    register as register,
    run as run,
    run_and_store as run_and_store,
    stored as stored,
)
