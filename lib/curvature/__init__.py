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
)
from .compare import (
    dense_hessian_blocked as dense_hessian_blocked,
)
from .compare import (
    measure_tracking_cost as measure_tracking_cost,
)
from .compare import (
    solver_rows as solver_rows,
)
from .compare import (
    sync as sync,
)
from .compare import (
    time_hvps as time_hvps,
)
from .compare import (
    warm_start_matvecs as warm_start_matvecs,
)
from .eigen import (
    BatchedEigResult as BatchedEigResult,
)
from .eigen import (
    EigResult as EigResult,
)
from .eigen import (
    TraceEstimate as TraceEstimate,
)
from .eigen import (
    batched_lanczos as batched_lanczos,
)
from .eigen import (
    batched_top_eigenpairs as batched_top_eigenpairs,
)
from .eigen import (
    hutchinson_trace as hutchinson_trace,
)
from .eigen import (
    lanczos as lanczos,
)
from .eigen import (
    power_iteration as power_iteration,
)
from .eigen import (
    sharpness as sharpness,
)
from .eigen import (
    subspace_similarity as subspace_similarity,
)
from .eigen import (
    top_eigenpairs as top_eigenpairs,
)
from .eigen import (
    vector_angle as vector_angle,
)
from .operator import (
    HessianOperator as HessianOperator,
)
from .operator import (
    Objective as Objective,
)
from .operator import (
    dense_hessian as dense_hessian,
    differentiable_hvps as differentiable_hvps,
)
from .operator import (
    grad_and_hvps as grad_and_hvps,
)
from .operator import (
    hvp as hvp,
)
from .operator import (
    hvp_fn as hvp_fn,
)
from .operator import (
    population_hvp as population_hvp,
)
from .operator import (
    population_hvp_block as population_hvp_block,
)
from .operator import (
    population_hvp_reverse as population_hvp_reverse,
)
from .tracker import SharpnessTracker as SharpnessTracker
