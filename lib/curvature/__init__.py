"""Curvature of the loss: every Hessian product, eigensolver, tracker and their cost, in one place.

* :mod:`~instabilities.curvature.operator`: the Hessian as a linear operator; Hessian-vector products
  for one iterate and for a population (forward-over-reverse and double backward).
* :mod:`~instabilities.curvature.eigen`: Lanczos (one iterate and batched over a population), power
  iteration, ``top_eigenpairs``/``sharpness``, subspace and vector angles.
* :mod:`~instabilities.curvature.block`: the block Krylov solver used for per-step tracking.
* :mod:`~instabilities.curvature.tracker`: THE sharpness tracker (:class:`SharpnessTracker`) that training,
  populations, the adaptive experiments, the benchmarks and the appendix use.
* :mod:`~instabilities.curvature.preconditioned`: preconditioned sharpness and optimiser thresholds.
* :mod:`~instabilities.curvature.compare`: the one solver comparison (:func:`compare_solvers`) and the
  timers (:func:`sync`, :func:`time_hvps`, :func:`measure_tracking_cost`).

The names below are the public face; import them from ``instabilities.curvature``.
"""

from .compare import (
    compare_solvers as compare_solvers,
    dense_hessian_blocked as dense_hessian_blocked,
    measure_tracking_cost as measure_tracking_cost,
    solver_rows as solver_rows,
    sync as sync,
    time_hvps as time_hvps,
    warm_start_matvecs as warm_start_matvecs,
)
from .eigen import (
    BatchedEigResult as BatchedEigResult,
    EigResult as EigResult,
    TraceEstimate as TraceEstimate,
    batched_lanczos as batched_lanczos,
    batched_top_eigenpairs as batched_top_eigenpairs,
    hutchinson_trace as hutchinson_trace,
    lanczos as lanczos,
    power_iteration as power_iteration,
    sharpness as sharpness,
    subspace_similarity as subspace_similarity,
    top_eigenpairs as top_eigenpairs,
    vector_angle as vector_angle,
)
from .operator import (
    HessianOperator as HessianOperator,
    Objective as Objective,
    dense_hessian as dense_hessian,
    differentiable_hvps as differentiable_hvps,
    grad_and_hvps as grad_and_hvps,
    hvp as hvp,
    hvp_fn as hvp_fn,
    population_hvp as population_hvp,
    population_hvp_block as population_hvp_block,
    population_hvp_reverse as population_hvp_reverse,
)
from .tracker import SharpnessTracker as SharpnessTracker
