"""Curvature of the loss: every Hessian product, eigensolver, tracker and their cost, in one place.

* :mod:`~instabilities.curvature.operator`: the Hessian as a linear operator; Hessian-vector products
  for one iterate and for a population (forward-over-reverse and double backward).
* :mod:`~instabilities.curvature.eigen`: Lanczos (one iterate and batched over a population), power
  iteration, ``top_eigenpairs``/``sharpness``, subspace and vector angles.
* :mod:`~instabilities.curvature.block`: the block Krylov solver used for per-step tracking.
* :mod:`~instabilities.curvature.preconditioned`: preconditioned sharpness and optimiser thresholds.
* :mod:`~instabilities.curvature.compare`: timers and solver comparisons (accuracy and cost).

The names below are the public face; import them from ``instabilities.curvature``.
"""
from .compare import sync as sync, time_hvps as time_hvps
from .eigen import (
    BatchedEigResult as BatchedEigResult,
    EigResult as EigResult,
    batched_lanczos as batched_lanczos,
    batched_top_eigenpairs as batched_top_eigenpairs,
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
    grad_and_hvps as grad_and_hvps,
    hvp as hvp,
    population_hvp as population_hvp,
    population_hvp_block as population_hvp_block,
    population_hvp_reverse as population_hvp_reverse,
)
