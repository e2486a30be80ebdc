"""Loss functions with the book's normalisation, and objectives over a flat parameter vector.

The MSE loss is :math:`L(\\theta)=\\frac{1}{2n}\\sum_i\\lVert f(x_i;\\theta)-y_i\\rVert^2` (sum over
outputs, mean over examples), the convention of Cohen et al. (2021). Other codebases drop the
1/2, which doubles every Hessian eigenvalue: learning rates are only comparable under one convention.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .config import ConfigError
from .data import one_hot
from .models import FlatModel

LOSSES = ("mse", "ce")
Objective = Callable[[torch.Tensor], torch.Tensor]  # the one definition: theta -> scalar loss


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Half squared error summed over outputs, averaged over examples."""
    if outputs.shape != targets.shape:
        raise ConfigError(
            f"MSE needs outputs and targets of one shape, got {tuple(outputs.shape)} and "
            f"{tuple(targets.shape)}; one-hot encode class labels (data.one_hot) first."
        )
    return 0.5 * (outputs - targets).pow(2).sum(-1).mean()


def cross_entropy(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy averaged over examples."""
    return torch.nn.functional.cross_entropy(outputs, labels.long())


def prepare_targets(y: torch.Tensor, loss: str, n_classes: int) -> torch.Tensor:
    """Targets in the form a loss expects: one-hot for MSE classification, indices for CE."""
    if loss not in LOSSES:
        raise ConfigError(f"loss {loss!r} unknown; choose one of {LOSSES}.")
    if loss == "ce":
        if n_classes == 0:
            raise ConfigError("cross-entropy needs a classification dataset; use loss='mse' for regression.")
        return y.long()
    if n_classes > 0:
        return one_hot(y, n_classes).to(torch.float32)
    return y


def loss_value(outputs: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    return mse(outputs, targets) if loss == "mse" else cross_entropy(outputs, targets)


def accuracy(outputs: torch.Tensor, y: torch.Tensor, n_classes: int) -> float:
    """Fraction of correct arg-max predictions (``nan`` for regression)."""
    if n_classes == 0:
        return float("nan")
    labels = y if y.dim() == 1 else y.argmax(-1)
    return float((outputs.argmax(-1) == labels).float().mean())


def make_objective(fm: FlatModel, x: torch.Tensor, targets: torch.Tensor, loss: str) -> Objective:
    """The training loss as a function of the flat parameter vector, on fixed data ``(x, targets)``."""
    if loss not in LOSSES:
        raise ConfigError(f"loss {loss!r} unknown; choose one of {LOSSES}.")

    def objective(theta: torch.Tensor) -> torch.Tensor:
        return loss_value(fm(theta, x), targets, loss)

    return objective
