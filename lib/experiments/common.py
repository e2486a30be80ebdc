"""The network part shared by experiment configs: data set, sizes, MLP architecture and loss.

An experiment config that trains a fully connected network subclasses :class:`NetConfig`, adds
its own fields (step sizes, steps, tracking, ...) and builds its runs with
:meth:`NetConfig.train_config`, so that the network fields are declared, validated and turned
into a :class:`~instabilities.train.TrainConfig` in one place::

    @dataclasses.dataclass(frozen=True)
    class MySweepConfig(NetConfig):
        etas: tuple[float, ...] = (0.1, 0.2)
        steps: int = 500

    tc = cfg.train_config(optimizer="gd", lr=0.1, steps=cfg.steps, seed=0)

A subclass may redeclare a network field to change its default (e.g. ``dataset: str = "mnist1d"``).

:func:`run_population` runs a sweep's configs as one vmapped population
(:func:`instabilities.population.train_population`) with every tracked array at its full length;
given the experiment's name and config at scale ``full`` it checkpoints to
:func:`instabilities.experiments.checkpoint_path` and resumes from there (register such an
experiment with ``resumable=True``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from .. import experiments  # register (registry) and checkpoint_path (reproduce)
from ..config import Config, ConfigError, require_choice, require_positive_int
from ..data import DATASETS
from ..losses import LOSSES
from ..models import ACTIVATIONS, ModelSpec
from ..population import PopulationHistory, train_population
from ..train import TrainConfig

__all__ = ["NetConfig", "run_population", "CHECKPOINT_EVERY"]

CHECKPOINT_EVERY = 1000  # steps between two checkpoints of a full-scale population (all sweeps)


@dataclasses.dataclass(frozen=True)
class NetConfig(Config):
    """Data set (first ``n_train`` / ``n_test`` examples), MLP hidden ``widths`` and ``activation``, ``loss``."""

    dataset: str = "digits"
    n_train: int = 400
    n_test: int = 297
    widths: tuple[int, ...] = (32, 32)
    activation: str = "tanh"
    loss: str = "mse"

    def validate(self) -> None:
        super().validate()
        require_choice("dataset", self.dataset, DATASETS)
        require_choice("activation", self.activation, tuple(ACTIVATIONS))
        require_choice("loss", self.loss, LOSSES)
        require_positive_int("n_train", self.n_train)
        require_positive_int("n_test", self.n_test)
        if not isinstance(self.widths, tuple) or len(self.widths) == 0:
            raise ConfigError(
                f"widths={self.widths!r} must be a non-empty tuple of hidden widths, e.g. widths=(32, 32)."
            )
        for w in self.widths:
            require_positive_int("width", w)
        if self.dataset == "teacher" and self.loss == "ce":
            raise ConfigError("the 'teacher' dataset is a regression task; use loss='mse' or a classification dataset.")

    def model_spec(self) -> ModelSpec:
        """The MLP of this config."""
        return ModelSpec("mlp", tuple(self.widths), self.activation)

    def train_config(self, **kw) -> TrainConfig:
        """A :class:`TrainConfig` with scale, data, model and loss from this config; ``kw`` gives the rest
        (optimizer, lr, steps, seed, tracking, device, ...)."""
        return TrainConfig(
            scale=self.scale,
            dataset=self.dataset,
            n_train=self.n_train,
            n_test=self.n_test,
            model=self.model_spec(),
            loss=self.loss,
            **kw,
        )


def run_population(
    configs: Sequence[TrainConfig],
    progress: Callable[[int, int], None] | None = None,
    name: str | None = None,
    cfg: Config | None = None,
    **kw,
) -> PopulationHistory:
    """:func:`~instabilities.population.train_population` of ``configs`` (``kw`` passed on), with
    ``eig_step``/``eigs``/``eig_residuals``/``eig_matvecs`` padded (NaN, 0) to every tracked step
    ``0, eig_every, ..., steps`` even when all members stopped or diverged early.

    With the experiment's ``name`` and its ``cfg`` at scale ``full``, the population saves a checkpoint
    every ``CHECKPOINT_EVERY`` steps to ``experiments.checkpoint_path(name, cfg)`` and resumes from it
    (``ci`` runs, which take seconds, write no files).
    """
    if name is not None and cfg is not None and cfg.scale == "full":
        kw.setdefault("checkpoint_path", experiments.checkpoint_path(name, cfg))
        kw.setdefault("checkpoint_every", CHECKPOINT_EVERY)
    pop = train_population(configs, progress=progress, **kw)
    c0 = configs[0]
    n_evals = c0.steps // c0.eig_every + 1 if c0.eig_every else 0
    return pop.padded(np.arange(n_evals, dtype=np.int64) * c0.eig_every)
