"""Optimisers over the flat parameter vector.

``build_optimizer`` maps a name from :data:`OPTIMIZERS` to a ``torch.optim.Optimizer``.
GD is SGD on the full batch; the training loop decides the batch.
"""
from __future__ import annotations

from typing import Any

import torch

from .config import ConfigError

OPTIMIZERS = ("gd", "sgd", "momentum", "nesterov", "adam")


def build_optimizer(name: str, params: list[torch.Tensor], lr: float, momentum: float = 0.0,
                    beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, **extra: Any) -> torch.optim.Optimizer:
    """Optimizer ``name`` over ``params`` (``gd``/``sgd``: plain steps; ``momentum``/``nesterov``: heavy ball)."""
    if name in ("gd", "sgd"):
        return torch.optim.SGD(params, lr=lr)
    if name in ("momentum", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=name == "nesterov")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(beta1, beta2), eps=eps)
    raise ConfigError(f"optimizer {name!r} unknown; choose one of {OPTIMIZERS}.")
