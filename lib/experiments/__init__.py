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
)
from .registry import (
    Experiment as Experiment,
)
from .registry import (
    config as config,
)
from .registry import (
    get as get,
)
from .registry import (
    names as names,
)
from .registry import (
    register as register,
)
from .registry import (
    run as run,
)
from .registry import (
    stored as stored,
)
from .reproduce import (
    CorruptResultError as CorruptResultError,
)
from .reproduce import (
    attempts as attempts,
)
from .reproduce import (
    checkpoint_dir as checkpoint_dir,
)
from .reproduce import (
    checkpoint_path as checkpoint_path,
)
from .reproduce import (
    clear_checkpoints as clear_checkpoints,
)
from .reproduce import (
    missing_data as missing_data,
)
from .reproduce import (
    plan as plan,
)
from .reproduce import (
    run_and_store as run_and_store,
)
