"""Deep linear networks: the balancedness invariant and what an unstable GD step does to it.

A deep linear network ``f(x) = W_L ... W_2 W_1 x`` trained on the squared loss
``L = (1 / 2n) sum_i (f(x_i) - y_i)^2`` has the **balancedness matrices**

    B_l = W_{l+1}^T W_{l+1} - W_l W_l^T        (l = 1, ..., L - 1),

which gradient flow conserves (Arora et al.; Du et al., 2018). One GD step changes them by exactly

    B_l^+ - B_l = eta^2 (G_{l+1}^T G_{l+1} - G_l G_l^T),     G_l = dL / dW_l,

because the first-order terms cancel (``W_{l+1}^T G_{l+1} = G_l W_l^T``). So the change is second order in
the step and as large as the squared gradient: negligible while GD is stable and the gradient decays,
large during an instability, when the gradient is large. For scalar layers (``W_l = theta_l``) this is
the depth-``D`` imbalance identity of :mod:`instabilities.dynamics.rpe`.

Everything is batched over a leading axis of parameter vectors (one row per seed), written by hand in
``torch`` (no ``F.mse_loss``, so that ``torch.func`` transforms apply), and differentiable.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from ..config import ConfigError, require_positive, require_positive_int


@dataclasses.dataclass(frozen=True)
class DeepLinear:
    """A deep linear network ``in_dim -> widths... -> 1`` on fixed data ``(x, y)`` (float64 tensors)."""

    x: torch.Tensor
    y: torch.Tensor
    widths: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.shape != (self.x.shape[0],):
            raise ConfigError(f"x must be (n, d) and y (n,); got {tuple(self.x.shape)} and {tuple(self.y.shape)}.")
        if not self.widths:
            raise ConfigError("widths is empty; a deep linear network needs at least one hidden layer.")

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.x.shape[1], *self.widths, 1)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        d = self.dims
        return [(d[i + 1], d[i]) for i in range(len(d) - 1)]

    @property
    def n_params(self) -> int:
        return sum(a * b for a, b in self.shapes)

    def unflatten(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """Weight matrices ``[W_1, ..., W_L]`` of ``theta`` (``(..., P)`` -> ``(..., out, in)`` each)."""
        out, i = [], 0
        for a, b in self.shapes:
            out.append(theta[..., i : i + a * b].reshape(theta.shape[:-1] + (a, b)))
            i += a * b
        return out

    def end_to_end(self, theta: torch.Tensor) -> torch.Tensor:
        """The product ``W_L ... W_1`` as a ``(..., d)`` vector."""
        Ws = self.unflatten(theta)
        M = Ws[0]
        for W in Ws[1:]:
            M = W @ M
        return M[..., 0, :]

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        """``(1 / 2n) ||X w - y||^2`` with ``w`` the end-to-end vector (one ``theta`` of shape ``(P,)``)."""
        r = self.x @ self.end_to_end(theta) - self.y
        return 0.5 * (r * r).mean()

    def init(self, seeds: Sequence[int], scale: float | Sequence[float] = 1.0) -> torch.Tensor:
        """Gaussian initialisations, layer ``l`` drawn from ``N(0, scale_l^2 / fan_in)``, one row per seed,
        ``(len(seeds), P)``. ``scale`` is one number or one per layer (unequal scales start unbalanced)."""
        scales = [float(scale)] * len(self.shapes) if np.isscalar(scale) else [float(c) for c in scale]
        if len(scales) != len(self.shapes):
            raise ConfigError(f"scale has {len(scales)} entries for {len(self.shapes)} layers; give one per layer.")
        for c in scales:
            require_positive("scale", c)
        rows = []
        for s in seeds:
            g = torch.Generator().manual_seed(int(s))
            parts = [
                torch.randn(a * b, generator=g, dtype=torch.float64) * c / math.sqrt(b)
                for (a, b), c in zip(self.shapes, scales)
            ]
            rows.append(torch.cat(parts))
        return torch.stack(rows)


def teacher_problem(
    n: int = 64, d: int = 6, widths: tuple[int, ...] = (6, 6), teacher_norm: float = 2.0, seed: int = 0
) -> DeepLinear:
    """Gaussian inputs ``x ~ N(0, I_d)`` labelled by a linear teacher of norm ``teacher_norm`` (no noise)."""
    require_positive_int("n", n)
    require_positive_int("d", d)
    require_positive("teacher_norm", teacher_norm)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    w *= teacher_norm / np.linalg.norm(w)
    return DeepLinear(torch.tensor(x), torch.tensor(x @ w), tuple(widths))


def balancedness(net: DeepLinear, theta: torch.Tensor) -> list[torch.Tensor]:
    """``[B_1, ..., B_{L-1}]`` with ``B_l = W_{l+1}^T W_{l+1} - W_l W_l^T`` (batched over leading axes)."""
    Ws = net.unflatten(theta)
    return [Ws[l + 1].transpose(-1, -2) @ Ws[l + 1] - Ws[l] @ Ws[l].transpose(-1, -2) for l in range(len(Ws) - 1)]


def balancedness_change(net: DeepLinear, grad: torch.Tensor, eta: float | torch.Tensor) -> list[torch.Tensor]:
    """The exact change of every ``B_l`` in one GD step: ``eta^2 (G_{l+1}^T G_{l+1} - G_l G_l^T)``.

    ``eta`` is a number or a tensor matching the leading (batch) axes of ``grad`` (one step size per row)."""
    Gs = net.unflatten(grad)
    e2 = torch.as_tensor(eta, dtype=grad.dtype) ** 2
    e2 = e2[..., None, None] if e2.ndim else e2
    return [
        e2 * (Gs[l + 1].transpose(-1, -2) @ Gs[l + 1] - Gs[l] @ Gs[l].transpose(-1, -2)) for l in range(len(Gs) - 1)
    ]


def balancedness_norm(mats: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sqrt(sum_l ||M_l||_F^2)`` over the layer pairs (batched)."""
    return torch.sqrt(sum((M * M).sum((-1, -2)) for M in mats))
