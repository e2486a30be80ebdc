"""The book's experiments: the registry chapters call, the reproduction machinery, one module per part.

* chapter API (:mod:`.registry`): ``config(name, scale)``, ``run(name, cfg)``, ``stored(name)``,
  ``names()``, ``get(name)``, ``register(...)`` (used by the modules listed in ``MODULES``,
  imported on first use);
* reproduction (:mod:`.reproduce`, used by ``python -m instabilities``): ``checkpoint_path`` (which
  resumable experiments call), ``checkpoint_dir``, ``run_and_store``, ``plan``, ``missing_data``, ...;
* code fingerprints (:mod:`.fingerprint`): what makes a stored result STALE when its code changes;
* one module per part of the book (``MODULES``): ``classical``, ``eos``, ``catapults``, ``flatness``,
  ``rpe``, ``sgd``, ``adaptive``, ``label_noise``, ``full_scale`` (and ``common``: the shared network config).
"""

from .registry import (
    MODULES as MODULES,
    Experiment as Experiment,
    config as config,
    get as get,
    names as names,
    register as register,
    run as run,
    stored as stored,
)
from .reproduce import (
    CorruptResultError as CorruptResultError,
    attempts as attempts,
    checkpoint_dir as checkpoint_dir,
    checkpoint_path as checkpoint_path,
    clear_checkpoints as clear_checkpoints,
    missing_data as missing_data,
    plan as plan,
    run_and_store as run_and_store,
)
