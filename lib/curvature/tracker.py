"""THE sharpness tracker: top Hessian eigenvalues along a trajectory, warm-started step to step.

Why one class: training (:func:`instabilities.train.train`), populations
(:func:`instabilities.population.train_population`), the adaptive-optimizer experiments (preconditioned
sharpness), the benchmarks and the appendix all track the top of the Hessian spectrum along a
trajectory. They differ only in the solver, its tolerance and whether the operator is preconditioned;
the state they carry (the previous eigenvectors, for a warm start) and what they record (values,
explicit residuals, Hessian-vector products per solve) are the same. So the cost measured by the
benchmarks is the cost of the tracker the experiments run.

* ``solver="lanczos"`` (default): :func:`~instabilities.curvature.lanczos` warm-started from the previous
  eigenvectors; what ``train`` and ``train_population`` (:meth:`SharpnessTracker.track_population`, batched
  Lanczos) record.
* ``solver="block"``: :func:`~instabilities.curvature.block.block_eigs` warm-started from the previous Ritz
  block, with the fused-gradient step (:meth:`SharpnessTracker.step`) and the amortised one-iteration
  mode: the per-step tracking measured in ``benchmarks/`` and the appendix.
* ``precond=`` (a positive diagonal ``P``): the operator is ``P^{-1/2} H P^{-1/2}``, whose spectrum is the
  one of ``P^{-1} H`` (:class:`~instabilities.curvature.preconditioned.PreconditionedHessianOperator`).
"""

from __future__ import annotations

import dataclasses

import torch

from ..config import ConfigError
from .block import BlockEigResult, block_eigs, next_amortised_block, start_block
from .eigen import BatchedEigResult, EigResult, batched_top_eigenpairs, lanczos
from .operator import HessianOperator, Objective

SOLVERS = ("lanczos", "block")
_DEFAULTS = {"lanczos": (1e-4, 200), "block": (1e-3, 30)}  # (tol, max_iter) when not given


def max_rel_error(values: torch.Tensor, reference: torch.Tensor) -> float:
    """``max_i |values_i - reference_i| / |reference_i|`` (the accuracy audit of trackers and solvers)."""
    values, reference = values.double().cpu(), reference.double().cpu()
    return float(((values - reference).abs() / reference.abs()).max())


@dataclasses.dataclass
class SharpnessTracker:
    """Top-``k`` Hessian eigenvalues along a trajectory, warm-started from the previous solve.

    Call ``tracker(objective, theta)`` at every step you want to measure (one iterate),
    ``tracker.step(objective, theta)`` (block solver only) to get the training step's loss and gradient
    from the same differentiation as the first block product (:meth:`HessianOperator.grad_and_matmat`),
    or ``tracker.track_population(objective, Theta, ...)`` for the rows of a population (batched Lanczos).
    Each call appends to ``values``, ``residuals`` (explicit ``||H v - lambda v||``) and ``matvecs``
    (Hessian-vector products of the solve, the residual check included).

    Arguments:

    * ``k``: number of top (largest algebraic) eigenvalues tracked.
    * ``solver``: ``"lanczos"`` (full re-orthogonalisation; the training default) or ``"block"`` (block
      Krylov with guard vectors, for cheap per-step tracking).
    * ``tol``: relative stopping tolerance (Lanczos: Ritz residual estimate ``<= tol * |lambda_1|``; block:
      ``||H y_i - theta_i y_i|| <= tol * |theta_i|``). ``None``: 1e-4 (lanczos), 1e-3 (block).
    * ``max_iter``: Krylov steps (lanczos) or block iterations (block) per solve. ``None``: 200 (lanczos),
      30 (block).
    * ``block_size``: block solver only; vectors per block (default ``k + 2``).
    * ``hvp_method``: ``"reverse"`` (double backward) or ``"forward"`` (jvp of grad).
    * ``verify_every``: every that many calls (0: never) run a converged Lanczos solve (``verify_tol``) too
      and log the relative difference of the top eigenvalues in ``verify_errors`` (the accuracy audit).
    * ``warm_from``: warm-start from the solve of that many calls ago (at the edge of stability the iterate
      flips sign along the top eigenvector every step; ``2`` starts from the same phase).
    * ``amortised``: block solver only; carry the search space over from call to call
      (:func:`~instabilities.curvature.block.next_amortised_block`); with ``max_iter=1`` every call after the
      first in each phase does exactly one block iteration and converges across steps (``tol`` is then not
      enforced; ``converged`` says whether it was met, residuals are exact, the audit measures the error).

    The seed of each solve is the ``seed`` given to the call (``train`` passes the step), else the number
    of calls so far. ``vectors`` holds the last eigenvectors (population mode: ``(P, dim, k)``, one row per
    member); assign it to resume from a checkpoint.
    """

    k: int = 1
    solver: str = "lanczos"
    tol: float | None = None
    max_iter: int | None = None
    block_size: int | None = None
    hvp_method: str = "reverse"
    verify_every: int = 0
    verify_tol: float = 1e-7
    warm_from: int = 1
    amortised: bool = False
    values: list = dataclasses.field(default_factory=list)
    residuals: list = dataclasses.field(default_factory=list)
    matvecs: list = dataclasses.field(default_factory=list)
    verify_steps: list = dataclasses.field(default_factory=list)
    verify_errors: list = dataclasses.field(default_factory=list)
    vectors: torch.Tensor | None = None
    _blocks: list = dataclasses.field(default_factory=list)
    _carry: dict = dataclasses.field(default_factory=dict)
    _calls: int = 0

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ConfigError(f"solver={self.solver!r}; choose 'lanczos' or 'block'.")
        if self.k < 1 or (self.block_size is not None and self.block_size < self.k):
            raise ConfigError(f"k={self.k}, block_size={self.block_size}: need k >= 1 and block_size >= k.")
        if self.warm_from < 1:
            raise ConfigError(f"warm_from={self.warm_from} must be >= 1 (1: previous call, 2: two calls ago).")
        if self.amortised and self.solver != "block":
            raise ConfigError("amortised=True needs solver='block' (it carries a block search space).")
        tol, max_iter = _DEFAULTS[self.solver]
        self.tol = tol if self.tol is None else self.tol
        self.max_iter = max_iter if self.max_iter is None else self.max_iter

    # ------------------------------------------------------------------ one iterate
    def __call__(
        self, objective: Objective, theta: torch.Tensor, seed: int | None = None, precond: torch.Tensor | None = None
    ) -> EigResult:
        """Track at ``theta``: the top-``k`` eigenpairs (of ``P^{-1/2} H P^{-1/2}`` with ``precond=P``)."""
        return self._track(objective, theta, fused=False, seed=seed, precond=precond)[0]

    def step(
        self, objective: Objective, theta: torch.Tensor, seed: int | None = None
    ) -> tuple[BlockEigResult, torch.Tensor, torch.Tensor]:
        """Track at ``theta``; return ``(result, loss, gradient)``, the gradient fused with the first block product."""
        if self.solver != "block":
            raise ConfigError("step() fuses the gradient with the first block product; use solver='block'.")
        res, loss, grad = self._track(objective, theta, fused=True, seed=seed, precond=None)
        return res, loss, grad

    def _operator(self, objective: Objective, theta: torch.Tensor, precond: torch.Tensor | None) -> HessianOperator:
        if precond is None:
            return HessianOperator(objective, theta, self.hvp_method)
        from .preconditioned import PreconditionedHessianOperator  # (imports the optimizers)

        return PreconditionedHessianOperator(objective, theta, precond, self.hvp_method)

    def _track(
        self, objective: Objective, theta: torch.Tensor, fused: bool, seed: int | None, precond: torch.Tensor | None
    ):
        op = self._operator(objective, theta, precond)
        seed = self._calls if seed is None else seed
        loss = grad = None
        if self.solver == "lanczos":
            v0 = (
                self._blocks[-self.warm_from]
                if len(self._blocks) >= self.warm_from
                else (self._blocks[-1] if self._blocks else self.vectors)
            )
            res = lanczos(op, self.k, max_iter=self.max_iter, tol=self.tol, v0=v0, seed=seed)
            self._blocks = (self._blocks + [res.vectors])[-self.warm_from :]
        else:
            res, loss, grad = self._block_solve(op, fused, seed)
        self.vectors = res.vectors
        self.values.append(res.values.tolist())
        self.residuals.append(res.residuals.tolist())
        self.matvecs.append(op.n_matvec)
        if self.verify_every and self._calls % self.verify_every == 0:
            ref = lanczos(
                self._operator(objective, theta, precond), self.k, max_iter=300, tol=self.verify_tol, v0=res.vectors
            )
            self.verify_steps.append(self._calls)
            self.verify_errors.append(max_rel_error(res.values, ref.values))
        self._calls += 1
        return res, loss, grad

    def _block_solve(self, op: HessianOperator, fused: bool, seed: int):
        b = min(self.block_size or self.k + 2, op.dim)
        phase = self._calls % self.warm_from
        own = phase in self._carry  # this phase of the oscillation has been solved before
        if self.amortised and self._carry:  # the block carried over from the last call in this phase
            X0 = self._carry[phase if own else max(self._carry)]["X"]
        else:
            X0 = (
                self._blocks[-self.warm_from]
                if len(self._blocks) >= self.warm_from
                else (self._blocks[-1] if self._blocks else None)
            )
        # the first solve (and, amortised, the first in each phase) converges; later ones are capped
        max_iter = self.max_iter if (own or (self._blocks and not self.amortised)) else 100
        loss = grad = HX0 = None
        if fused:
            X0 = start_block(op.dim, b, X0, seed, op.device)
            loss, grad, HX0 = op.grad_and_matmat(X0.to(op.dtype))
        res = block_eigs(op, self.k, b, self.tol, max_iter, X0=X0, seed=seed, HX0=HX0)
        self._blocks = (self._blocks + [res.block])[-self.warm_from :]
        if self.amortised:
            Y, HY = res.block.to(torch.float64), res.block_products
            R = HY - Y * res.block_values
            Yk = Y[:, : self.k]
            prev = self._carry.get(phase, {}).get("Y")
            P = None if prev is None else Yk - prev @ (prev.T @ Yk)  # how the wanted vectors moved
            self._carry[phase] = {"X": next_amortised_block(Y, R, P, HY, self.k, b), "Y": Yk}
        return res, loss, grad

    # ------------------------------------------------------------------ a population
    def track_population(
        self,
        objective: Objective,
        Theta: torch.Tensor,
        rows: torch.Tensor | None = None,
        size: int | None = None,
        seed: int | None = None,
    ) -> BatchedEigResult:
        """Track every member at once (batched Lanczos, one Krylov basis per member).

        ``Theta`` (``(m, dim)``) holds the members ``rows`` (a long tensor of row indices into the
        population of ``size`` members; ``None``: all, ``m == size``). Each member warm-starts from its own
        previous eigenvectors (``vectors``, ``(size, dim, k)``). Appends the ``(m, k)`` values and
        residuals and the products per member (``n_matvec``) to the records. ``solver`` must be
        ``"lanczos"``; ``tol``, ``max_iter`` and ``seed`` as for one iterate.
        """
        if self.solver != "lanczos":
            raise ConfigError("a population is tracked with batched Lanczos; use solver='lanczos'.")
        size = Theta.shape[0] if size is None else size
        V0 = None
        if self.vectors is not None:
            V0 = self.vectors if rows is None else self.vectors.index_select(0, rows)
        res = batched_top_eigenpairs(
            objective,
            Theta,
            self.k,
            max_iter=self.max_iter,
            tol=self.tol,
            V0=V0,
            seed=self._calls if seed is None else seed,
        )
        if self.vectors is None:
            self.vectors = torch.zeros(
                (size,) + res.vectors.shape[1:], dtype=res.vectors.dtype, device=res.vectors.device
            )
        self.vectors = res.vectors if rows is None else self.vectors.index_copy(0, rows, res.vectors)
        self.values.append(res.values.tolist())
        self.residuals.append(res.residuals.tolist())
        self.matvecs.append(res.n_matvec)
        self._calls += 1
        return res
