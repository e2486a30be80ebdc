"""The Hessian as a linear operator: every Hessian-vector product of the library lives here.

Two recipes, each for one iterate and for a population of iterates (rows of ``Theta``):

* forward-over-reverse, ``jvp`` of ``grad`` (vmapped over vectors and members):
  :meth:`HessianOperator.matvec` / :meth:`~HessianOperator.matmat` with ``method="forward"``, :func:`hvp`,
  :func:`grad_and_hvps` (gradient and products fused), :func:`population_hvp`, :func:`population_hvp_block`;
* double backward through a gradient graph built once (usually cheaper on a CPU):
  ``method="reverse"``, :func:`population_hvp_reverse`;
* the differentiable member, double backward with the graph kept: :func:`differentiable_hvps`, for
  quantities that differentiate ``H U`` once more (third derivatives, e.g. ``grad (u^T H u)`` in the
  central flow).

The eigensolvers built on these products are in :mod:`instabilities.curvature.eigen`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad, grad_and_value, jvp, vmap

from ..config import ConfigError
from ..losses import Objective


def hvp_fn(objective: Objective) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(theta, v) -> H(theta) v`` by forward-over-reverse (``jvp`` of ``grad``): the one inner
    product that every forward-mode product below (single, block, population) vmaps."""

    def one(theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return jvp(grad(objective), (theta,), (v,))[1]

    return one


class HessianOperator:
    """The Hessian of ``objective`` at ``theta`` as a linear operator ``v -> H v``.

    ``method="forward"`` uses forward-over-reverse (``jvp`` of ``grad``) and batches many
    vectors with ``vmap``; ``method="reverse"`` builds the gradient graph once and
    differentiates it again for every vector (double backward), usually cheaper on CPU.
    ``n_matvec`` counts products (a batch of ``k`` vectors counts ``k``).
    """

    def __init__(self, objective: Objective, theta: torch.Tensor, method: str = "reverse") -> None:
        if method not in ("forward", "reverse"):
            raise ConfigError(f"method={method!r}; use 'forward' (jvp-of-grad) or 'reverse' (double backward).")
        self.objective, self.method = objective, method
        self.theta = theta.detach()
        self.dim = self.theta.numel()
        self.dtype, self.device = self.theta.dtype, self.theta.device
        self.n_matvec = 0
        self._grad: torch.Tensor | None = None
        self._leaf: torch.Tensor | None = None
        self._loss: torch.Tensor | None = None

    def _reverse_graph(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._grad is None:
            leaf = self.theta.clone().requires_grad_(True)
            with torch.enable_grad():
                loss = self.objective(leaf)
                (g,) = torch.autograd.grad(loss, leaf, create_graph=True)
            self._leaf, self._grad, self._loss = leaf, g, loss.detach()
        return self._leaf, self._grad

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for one vector ``v`` of shape ``(dim,)``."""
        self.n_matvec += 1
        v = v.to(self.dtype)
        if self.method == "forward":
            return hvp_fn(self.objective)(self.theta, v)
        leaf, g = self._reverse_graph()
        with torch.enable_grad():
            return torch.autograd.grad(g, leaf, v, retain_graph=True)[0]

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H V`` for a block ``V`` of shape ``(dim, k)`` (batched with vmap)."""
        k = V.shape[1]
        self.n_matvec += k
        V = V.to(self.dtype)
        if self.method == "forward":
            return vmap(hvp_fn(self.objective), in_dims=(None, 1), out_dims=1)(self.theta, V)
        leaf, g = self._reverse_graph()
        with torch.enable_grad():
            out = torch.autograd.grad(g, leaf, V.T.contiguous(), retain_graph=True, is_grads_batched=True)[0]
        return out.T

    def grad_and_matmat(self, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, gradient, H V)`` at ``theta`` from one differentiation of the objective.

        ``forward``: :func:`grad_and_hvps` (``jvp`` of ``grad_and_value``, vmapped over the tangents).
        ``reverse``: the gradient graph built for the products (``create_graph``) also yields the
        gradient itself. Either way the gradient is computed once; ``n_matvec`` grows by ``V.shape[1]``.
        """
        if self.method == "forward":
            self.n_matvec += V.shape[1]
            return grad_and_hvps(self.objective, self.theta, V)
        HV = self.matmat(V)  # builds (once) the gradient graph it differentiates
        return self._loss, self._grad.detach(), HV

    def dense(self) -> torch.Tensor:
        """The full ``dim x dim`` Hessian (small models only; tests and teaching)."""
        if self.dim > 20000:
            raise ConfigError(f"dense Hessian of {self.dim} parameters is too large; use lanczos().")
        return torch.func.hessian(self.objective)(self.theta)


def hvp(objective: Objective, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One Hessian-vector product ``H(theta) v`` by forward-over-reverse differentiation."""
    return hvp_fn(objective)(theta.detach(), v.to(theta.dtype))


def grad_and_hvps(
    objective: Objective, theta: torch.Tensor, V: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, gradient and ``H V`` (``V``: ``(dim, b)``) at ``theta`` in one ``torch.func`` call.

    Forward-over-reverse: ``jvp`` of ``grad_and_value`` with ``vmap`` over the ``b`` tangents only.
    The primal ``theta`` is not batched, so the loss and the gradient are computed once and only
    the tangent part of the computation is batched: a GD step that also needs ``H V`` at the same
    iterate gets its gradient for free. Returns ``(loss, grad, HV)`` with ``HV`` of shape ``(dim, b)``.
    """
    if V.dim() != 2 or V.shape[0] != theta.numel():
        raise ConfigError(f"V must have shape (dim, b) = ({theta.numel()}, b); got {tuple(V.shape)}.")
    theta = theta.detach()
    f = grad_and_value(objective)

    def one(v: torch.Tensor):
        (g, loss), (hv, _) = jvp(f, (theta,), (v,))
        return g, loss, hv

    g, loss, HV = vmap(one, in_dims=1, out_dims=(0, 0, 1))(V.to(theta.dtype))
    return loss[0], g[0], HV


def differentiable_hvps(
    objective: Objective, leaf: torch.Tensor, U: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """Loss, gradient and the products ``H u_j`` at ``leaf``, all still attached to the autograd graph.

    The differentiable member of the family: the double-backward recipe of ``method="reverse"``
    with ``create_graph=True`` on both differentiations, so that a scalar built from the products
    (say ``u_i^T H u_j`` with the columns of ``U = [u_1 .. u_k]`` held fixed) can be differentiated
    once more with respect to ``leaf`` (third derivatives of the objective). ``leaf``: shape
    ``(dim,)``, requiring grad (``theta.detach().clone().requires_grad_(True)``); ``U``: ``(dim, k)``.
    Returns ``(loss, grad, HU)`` with ``HU`` a tuple of the ``k`` products ``H u_j`` (each ``(dim,)``),
    kept apart rather than stacked: differentiating a scalar of one product then back-propagates
    through that product's graph only (a stacked block would send zeros through all ``k``).
    Build the scalars under ``torch.enable_grad()``.
    """
    if not leaf.requires_grad:
        raise ConfigError("leaf must require grad: pass theta.detach().clone().requires_grad_(True).")
    if U.dim() != 2 or U.shape[0] != leaf.numel():
        raise ConfigError(f"U must have shape (dim, k) = ({leaf.numel()}, k); got {tuple(U.shape)}.")
    U = U.to(leaf.dtype)
    with torch.enable_grad():
        loss = objective(leaf)
        (g,) = torch.autograd.grad(loss, leaf, create_graph=True)
        HU = tuple(
            torch.autograd.grad(g, leaf, U[:, j], create_graph=True, retain_graph=True)[0] for j in range(U.shape[1])
        )
    return loss, g, HU


def dense_hessian(objective: Objective, theta: torch.Tensor) -> torch.Tensor:
    """Dense Hessian via ``torch.func.hessian`` (for small models)."""
    return HessianOperator(objective, theta).dense()


# --------------------------------------------------------------------------------------------
# populations: one product per member (rows of Theta)
# --------------------------------------------------------------------------------------------
def population_hvp(objective: Callable[[torch.Tensor], torch.Tensor]):
    """``(Theta (P, dim), V (P, dim)) -> (P, dim)``: one Hessian-vector product per member, vmapped."""
    return vmap(hvp_fn(objective))


def population_hvp_block(objective: Callable[[torch.Tensor], torch.Tensor]):
    """``(Theta (P, dim), V (P, dim, k)) -> (P, dim, k)``: ``k`` products per member, vmapped twice."""
    return vmap(vmap(hvp_fn(objective), in_dims=(None, 1), out_dims=1))


def population_hvp_reverse(
    objective: Callable[[torch.Tensor], torch.Tensor], Theta: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``V (P, dim) -> (P, dim)``: the Hessian-vector products of every member at the rows of ``Theta``
    by double backward. The gradient graph of ``sum_p L(theta_p)`` (block diagonal Hessian) is built
    once; every product is one backward pass through it, usually cheaper than ``jvp`` of ``grad``."""
    leaf = Theta.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(vmap(objective)(leaf).sum(), leaf, create_graph=True)

    def hv(V: torch.Tensor) -> torch.Tensor:
        if not g.requires_grad:  # the gradient does not depend on theta: zero Hessian
            return torch.zeros_like(leaf)
        with torch.enable_grad():
            (out,) = torch.autograd.grad(g, leaf, V.to(leaf.dtype), retain_graph=True, allow_unused=True)
        return torch.zeros_like(leaf) if out is None else out

    return hv
