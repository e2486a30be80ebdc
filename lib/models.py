"""Small models used across the book, and a flat-parameter view of any ``nn.Module``.

Curvature tools and training loops work on a single flat parameter vector
``theta`` (what the book calls :math:`\\theta`); :class:`FlatModel` maps it back to
the module's named parameters with ``torch.func.functional_call``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from .config import ConfigError, require_choice, require_positive, require_positive_int

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}
ARCHITECTURES = ("mlp", "deep_linear", "cnn")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Architecture description, part of every training config.

    ``widths`` are hidden widths (MLP / deep linear) or channel counts (CNN).
    ``init_scale`` multiplies every initial weight (1.0 = PyTorch default init).
    """

    arch: str = "mlp"
    widths: tuple[int, ...] = (100, 100)
    activation: str = "tanh"
    bias: bool = True
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        require_choice("arch", self.arch, ARCHITECTURES)
        require_choice("activation", self.activation, tuple(ACTIVATIONS))
        if not isinstance(self.widths, tuple):
            object.__setattr__(self, "widths", tuple(self.widths))
        for w in self.widths:
            require_positive_int("width", w)
        require_positive("init_scale", self.init_scale)


def mlp(in_dim: int, widths: Sequence[int], out_dim: int, activation: str = "tanh", bias: bool = True) -> nn.Sequential:
    """Fully connected network ``in_dim -> widths... -> out_dim`` with the given activation."""
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation {activation!r} unknown; choose one of {tuple(ACTIVATIONS)}.")
    layers: list[nn.Module] = [nn.Flatten()]
    dims = [in_dim, *widths]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b, bias=bias), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(dims[-1], out_dim, bias=bias))
    return nn.Sequential(*layers)


def deep_linear(in_dim: int, widths: Sequence[int], out_dim: int) -> nn.Sequential:
    """Deep linear network (product of matrices, no biases, no activations)."""
    return mlp(in_dim, widths, out_dim, activation="identity", bias=False)


class SmallCNN(nn.Module):
    """Two conv blocks (3x3 conv, activation, 2x2 max-pool) and a linear read-out."""

    def __init__(
        self,
        in_shape: Sequence[int],
        out_dim: int,
        channels: Sequence[int] = (32, 32),
        activation: str = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if len(in_shape) == 1:  # 1-D signals such as mnist1d: (L,) -> (1, L)
            in_shape = (1, in_shape[0])
        self.one_d = len(in_shape) == 2
        self.in_shape = tuple(in_shape)
        conv, pool = (nn.Conv1d, nn.MaxPool1d) if self.one_d else (nn.Conv2d, nn.MaxPool2d)
        blocks: list[nn.Module] = []
        c_in, spatial = in_shape[0], list(in_shape[1:])
        for c in channels:
            blocks += [conv(c_in, c, 3, padding=1, bias=bias), ACTIVATIONS[activation](), pool(2)]
            c_in, spatial = c, [s // 2 for s in spatial]
        if any(s < 1 for s in spatial):
            raise ConfigError(
                f"input {tuple(in_shape)} is too small for {len(channels)} pooling blocks; use fewer channels entries."
            )
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in * math.prod(spatial), out_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.in_shape)
        return self.head(self.features(x).flatten(1))


def build_model(spec: ModelSpec, in_shape: Sequence[int], out_dim: int, seed: int = 0) -> nn.Module:
    """Instantiate ``spec`` for inputs of shape ``in_shape``; the init depends only on ``seed``."""
    in_shape = tuple(in_shape)
    in_dim = math.prod(in_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.arch == "mlp":
            model = mlp(in_dim, spec.widths, out_dim, spec.activation, spec.bias)
        elif spec.arch == "deep_linear":
            model = deep_linear(in_dim, spec.widths, out_dim)
        else:
            model = SmallCNN(in_shape, out_dim, spec.widths, spec.activation, spec.bias)
    if spec.init_scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(spec.init_scale)
    return model


class FlatModel:
    """View of a module's parameters as one flat vector.

    >>> fm = FlatModel(mlp(4, [3], 2)); theta = fm.theta0   # flat copy of the init
    >>> out = fm(theta, torch.zeros(5, 4))                   # forward with parameters theta
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.names = [n for n, _ in module.named_parameters()]
        self.shapes = [p.shape for _, p in module.named_parameters()]
        self.sizes = [p.numel() for _, p in module.named_parameters()]
        self.theta0 = torch.cat([p.detach().reshape(-1) for p in module.parameters()]).clone()

    @property
    def dim(self) -> int:
        return int(sum(self.sizes))

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        if theta.shape[-1] != self.dim:
            raise ConfigError(f"theta has {theta.shape[-1]} entries but the model has {self.dim} parameters.")
        chunks = torch.split(theta, self.sizes, dim=-1)
        return {n: c.reshape(s) for n, c, s in zip(self.names, chunks, self.shapes)}

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, self.unflatten(theta), (x,))

    def write_back(self, theta: torch.Tensor) -> None:
        """Copy ``theta`` into the module's own parameters."""
        with torch.no_grad():
            for p, v in zip(self.module.parameters(), self.unflatten(theta.detach()).values()):
                p.copy_(v)
