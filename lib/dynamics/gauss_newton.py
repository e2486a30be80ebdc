"""The Gauss-Newton decomposition of the MSE Hessian (a standard identity; our implementation).

For the book's MSE loss ``L(theta) = 1/(2n) sum_i ||f(x_i; theta) - y_i||^2`` (sum over outputs, mean over
examples, the convention of Cohen et al., 2021), with Jacobians ``J_i = d f(x_i)/d theta`` and residuals
``r_i = f(x_i) - y_i``::

    H = G + R,   G = (1/n) sum_i J_i^T J_i   (Gauss-Newton: positive semidefinite),
                 R = (1/n) sum_i sum_k r_ik  Hess f_ik   (residual term: vanishes at an interpolating minimum).

The factor 1/2 in ``L`` is what makes ``G`` carry no factor 2; without it every eigenvalue doubles, and GD with
step ``eta`` would reach the edge of stability at ``lambda_max(H) = 1/eta`` of this ``L``. Dense matrices, for
small models only.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.func import jacrev

from ..config import ConfigError
from ..curvature.operator import dense_hessian
from ..models import FlatModel

__all__ = ["GaussNewtonSplit", "gauss_newton_split"]


@dataclasses.dataclass
class GaussNewtonSplit:
    """Dense ``H``, ``G``, ``R`` (``H = G + R`` up to rounding) and the largest eigenvalues of each."""

    H: torch.Tensor
    G: torch.Tensor
    R: torch.Tensor

    def top(self, which: str = "H", k: int = 1) -> torch.Tensor:
        """The ``k`` largest eigenvalues of ``H``, ``G`` or ``R``."""
        return torch.linalg.eigvalsh(getattr(self, which)).flip(0)[:k]

    @property
    def split_error(self) -> float:
        """``||H - G - R|| / ||H||`` (Frobenius): 0 up to rounding."""
        return float((self.H - self.G - self.R).norm() / self.H.norm())


def gauss_newton_split(fm: FlatModel, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> GaussNewtonSplit:
    """``H``, ``G`` and ``R`` of the book's MSE loss of ``fm`` at ``theta`` on ``(x, y)``, each computed
    independently: ``H`` as the Hessian of the loss, ``G`` from the Jacobian, ``R`` as the Hessian of
    ``(1/n) sum r_ik f_ik`` with the residuals held fixed (both Hessians by
    :func:`~instabilities.curvature.operator.dense_hessian`)."""
    if x.shape[0] != y.shape[0] or y.dim() != 2:
        raise ConfigError("x and y need one row per example and y must be 2-D (one-hot or regression targets).")
    n = x.shape[0]
    th = theta.detach()

    def out(t: torch.Tensor) -> torch.Tensor:
        return fm(t, x)

    loss = lambda t: 0.5 * (out(t) - y).pow(2).sum(-1).mean()  # noqa: E731  (written by hand, no F.mse_loss)
    H = dense_hessian(loss, th)
    J = jacrev(out)(th).reshape(-1, th.numel())
    G = J.T @ J / n
    r = (out(th) - y).detach()
    R = dense_hessian(lambda t: (r * out(t)).sum() / n, th)
    return GaussNewtonSplit(H, G, R)
