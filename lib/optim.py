"""Optimizers: one functional update rule per optimizer, shared by every training loop.

The rules are the single definition of every optimizer in the book. A rule acts on a parameter
tensor ``theta`` and its gradient; its hyper-parameters are Python floats or tensors that broadcast
against ``theta``, e.g. ``(P, 1)`` per-row values when the rows of a ``(P, dim)`` tensor are ``P``
separate runs (:mod:`instabilities.population`)::

    state = init_state(name, theta)                        # zero buffers (+ a step counter)
    theta = update(name, theta, grad, state, hyper)        # new theta; ``state`` updated in place

The torch face is :class:`RuleOptimizer`, a ``torch.optim.Optimizer`` that applies the same rule to
each of its parameters; :func:`build_optimizer` (used by :func:`instabilities.train.train`) builds it.
The rules use torch.optim's operation order (fused ``addcmul``/``addcdiv``, ``lerp``, bias corrections
in Python floats), so they reproduce ``torch.optim.SGD`` and ``torch.optim.Adam`` bit for bit.

* ``gd``/``sgd``: ``theta <- theta - lr g`` (the training loop decides the batch).
* ``momentum``/``nesterov``: heavy ball with torch's buffer ``b <- momentum b + g``; the step is
  ``lr b`` (``lr (g + momentum b)`` for Nesterov).
* ``adam``, ``rmsprop``, ``clipped_ada``: one adaptive rule with bias-corrected moments ``m_hat``,
  ``v_hat`` and the diagonal preconditioner ``P = min(sqrt(v_hat), clip) + eps``
  (:func:`clipped_denominator`); ``theta <- theta - lr m_hat / P``. Adam is ``clip = inf``; RMSProp is
  Adam with ``beta1 = 0`` (bias-corrected, the "RMS" of Wang & Roberts' code); Clipped-Ada bounds the
  preconditioner from above, so every coordinate moves with an effective step ``>= lr / (clip + eps)``
  (our reconstruction of Wang & Roberts' Clipped-Ada, inferred from the authors' code; ``beta1 = 0``
  gives "RMS-UB").
* ``clipped_ada_q``: ``clipped_ada`` with a linear step-size warm-up over ``round(5 / (1 - beta1))``
  steps, the form the ``q^thresh`` sweep of the adaptive chapter uses (``clip = inf``-like values give
  Adam with the same warm-up).

Adding an optimizer is one new rule, registered in this module before :data:`OPTIMIZERS` is formed:
write ``_my_step(theta, grad, state, h) -> theta`` (read the hyper-parameters from ``h``, keep
buffers in ``state``, replace entries rather than mutate them) and call :func:`register`, naming its
hyper-parameters, its buffers, any hyper-parameters it pins (``fixed``) and, for a diagonally
preconditioned rule, a ``preconditioner(state, h)`` that returns the ``P`` of its latest step (read by
:func:`optimizer_preconditioner` and the preconditioned-sharpness tracker). An Adam variant with
another preconditioner is ``register(name, hyper=..., **adaptive(denominator))``. A rule that needs a
measured quantity (e.g. a sharpness estimate) reads it from ``h`` or ``state``, where the training
loop puts it. :func:`build_optimizer`, :class:`~instabilities.train.TrainConfig` and populations then
accept the new name; a new hyper-parameter also needs a ``TrainConfig`` field (and an entry in
``population.VARYING`` if members may differ in it).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from .config import ConfigError

# A hyper-parameter is a Python float or a tensor broadcasting against theta (e.g. (P, 1) per row).
# A rule's step function is step(theta, grad, state, hyper) -> new theta (no type aliases: the API
# pages are built nitpicky).


@dataclasses.dataclass(frozen=True)
class UpdateRule:
    """One optimizer as a function of ``(theta, grad, state, hyper)``.

    ``hyper``: the hyper-parameters it reads; ``buffers``: state tensors shaped like ``theta``
    (zero at the start); ``counts_steps``: keeps ``state["step"]``; ``fixed``: hyper-parameters it
    pins (RMSProp: ``beta1 = 0``); ``preconditioner(state, hyper)``: the diagonal ``P`` of its latest
    step, for rules of the form ``theta <- theta - lr P^{-1} (...)``.
    """

    name: str
    step: Callable[..., torch.Tensor]
    hyper: tuple[str, ...]
    buffers: tuple[str, ...] = ()
    counts_steps: bool = False
    fixed: Mapping[str, float] = dataclasses.field(default_factory=dict)
    preconditioner: Callable[[dict, Mapping[str, float | torch.Tensor]], torch.Tensor] | None = None


RULES: dict[str, UpdateRule] = {}


def register(name: str, step: Callable[..., torch.Tensor], hyper: tuple[str, ...], **kw: Any) -> UpdateRule:
    """Add the rule ``name`` (see :class:`UpdateRule` for the keyword arguments)."""
    RULES[name] = new = UpdateRule(name, step, tuple(hyper), **kw)
    return new


def _as(x: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Hyper-parameter ``x`` as a tensor of ``like``'s dtype and device (rounded once, as torch does)."""
    return torch.as_tensor(x, dtype=torch.float64, device=like.device).to(like.dtype)


def _host(fn: Callable[..., float], *xs: float | torch.Tensor) -> float | torch.Tensor:
    """``fn`` evaluated in Python floats, elementwise over the tensor arguments (torch.optim computes
    its bias corrections this way; torch's ``pow`` rounds differently). For per-row tensors on a GPU
    this is one small host transfer per step."""
    tensors = [x for x in xs if torch.is_tensor(x)]
    if not tensors:
        return fn(*xs)
    cols = [x.reshape(-1).tolist() if torch.is_tensor(x) else itertools.repeat(x) for x in xs]
    ref = tensors[0]
    return torch.tensor([fn(*v) for v in zip(*cols)], dtype=torch.float64, device=ref.device).reshape(ref.shape)


# --------------------------------------------------------------------------------------------
# the rules
# --------------------------------------------------------------------------------------------
def _descend(theta: torch.Tensor, direction: torch.Tensor, lr: float | torch.Tensor) -> torch.Tensor:
    """``theta - lr * direction`` (fused, as ``torch.optim.SGD``'s ``add_(d, alpha=-lr)``)."""
    return torch.addcmul(theta, direction, _as(lr, theta), value=-1)


def _gd_step(theta, grad, state, h):
    return _descend(theta, grad, h["lr"])


def _heavy_ball_step(nesterov: bool) -> Callable[..., torch.Tensor]:
    def step(theta, grad, state, h):
        mom = _as(h["momentum"], theta)
        state["momentum_buffer"] = buf = state["momentum_buffer"].mul(mom).add(grad)
        return _descend(theta, torch.addcmul(grad, buf, mom) if nesterov else buf, h["lr"])

    return step


def clipped_denominator(
    exp_avg_sq: torch.Tensor,
    step: float,
    beta2: float | torch.Tensor,
    c: float | torch.Tensor = math.inf,
    eps: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """The adaptive rules' preconditioner ``min(sqrt(v_hat), c) + eps``, ``v_hat = exp_avg_sq / (1 - beta2**step)``
    (``c = inf``: Adam's ``sqrt(v_hat) + eps``)."""
    step = float(step)
    d = exp_avg_sq.sqrt() / _as(_host(lambda b2: (1 - b2**step) ** 0.5, beta2), exp_avg_sq)
    if torch.is_tensor(c) or math.isfinite(c):
        d = torch.minimum(d, _as(c, d))
    return d + _as(eps, d)


def adaptive(denominator: Callable[..., torch.Tensor]) -> dict[str, Any]:
    """Keyword arguments of :func:`register` for an Adam-type rule with the preconditioner
    ``denominator(exp_avg_sq, step, hyper)``: bias-corrected moments (torch.optim.Adam's arithmetic)
    and ``theta <- theta - lr m_hat / P``. A variant with another ``P`` is ``register(name,
    hyper=(...), **adaptive(my_denominator))``."""

    def step(theta, grad, state, h):
        state["step"] = t = state["step"] + 1
        t = float(t)
        b1, b2 = h["beta1"], h["beta2"]
        state["exp_avg"] = m = state["exp_avg"].lerp(grad, _as(_host(lambda b: 1 - b, b1), theta))
        state["exp_avg_sq"] = v = (
            state["exp_avg_sq"].mul(_as(b2, theta)).addcmul(_as(_host(lambda b: 1 - b, b2), theta) * grad, grad)
        )
        step_size = _host(lambda lr, b: lr / (1 - b**t), h["lr"], b1)
        return torch.addcdiv(theta, -_as(step_size, theta) * m, denominator(v, t, h))

    def preconditioner(state, h):
        return denominator(state["exp_avg_sq"], state["step"], h)

    return dict(step=step, buffers=("exp_avg", "exp_avg_sq"), counts_steps=True, preconditioner=preconditioner)


def _clipped(exp_avg_sq, step, h):
    return clipped_denominator(exp_avg_sq, step, h["beta2"], h["clip"], h["eps"])


register("gd", _gd_step, ("lr",))
register("sgd", _gd_step, ("lr",))
register("momentum", _heavy_ball_step(False), ("lr", "momentum"), buffers=("momentum_buffer",))
register("nesterov", _heavy_ball_step(True), ("lr", "momentum"), buffers=("momentum_buffer",))
register("adam", hyper=("lr", "beta1", "beta2", "eps"), fixed={"clip": math.inf}, **adaptive(_clipped))
register("rmsprop", hyper=("lr", "beta2", "eps"), fixed={"beta1": 0.0, "clip": math.inf}, **adaptive(_clipped))
register("clipped_ada", hyper=("lr", "beta1", "beta2", "eps", "clip"), **adaptive(_clipped))


def _warmed_up(step: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``step`` with the step size ramped up linearly, ``lr_t = lr min(1, t / W)``, over the first
    ``W = round(5 / (1 - beta1))`` steps (50 for ``beta1 = 0.9``: five times the memory of ``m``)."""

    def warm(theta, grad, state, h):
        t = float(state["step"]) + 1
        lr = _host(lambda lr, b1: lr * min(1.0, t / max(1, round(5 / (1 - b1)))), h["lr"], h["beta1"])
        return step(theta, grad, state, {**h, "lr": lr})

    return warm


# Clipped-Ada as the q^thresh sweep of the adaptive chapter runs it (experiments.adaptive.clip_for_q sets
# ``clip``): the clipped_ada update with a linear warm-up, which small clips need, since their first
# steps are GD steps of size lr / clip (reconstruction).
_CLIPPED_ADA_Q = adaptive(_clipped)
register(
    "clipped_ada_q",
    hyper=("lr", "beta1", "beta2", "eps", "clip"),
    **{**_CLIPPED_ADA_Q, "step": _warmed_up(_CLIPPED_ADA_Q["step"])},
)

#: Names accepted by :func:`build_optimizer`, :func:`init_state` and :func:`update` (one per rule).
OPTIMIZERS = tuple(RULES)


def rule(name: str) -> UpdateRule:
    """The rule called ``name`` (a :class:`ConfigError` naming the choices otherwise)."""
    try:
        return RULES[name]
    except KeyError:
        raise ConfigError(f"optimizer {name!r} unknown; choose one of {tuple(RULES)}.") from None


def init_state(name: str, theta: torch.Tensor) -> dict[str, Any]:
    """Fresh state of rule ``name`` for parameters shaped like ``theta``."""
    r = rule(name)
    state: dict[str, Any] = {"step": 0} if r.counts_steps else {}
    state.update({b: torch.zeros_like(theta) for b in r.buffers})
    return state


def _hyper(r: UpdateRule, hyper: Mapping[str, float | torch.Tensor]) -> dict[str, float | torch.Tensor]:
    missing = [k for k in r.hyper if k not in hyper]
    if missing:
        raise ConfigError(f"optimizer {r.name!r} needs the hyper-parameters {missing}.")
    return {**{k: hyper[k] for k in r.hyper}, **r.fixed}


def update(
    name: str, theta: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], hyper: Mapping[str, float | torch.Tensor]
) -> torch.Tensor:
    """One step of rule ``name``: the new ``theta`` (``state``'s entries are replaced by the new ones).

    ``hyper`` maps the rule's hyper-parameters (``lr``, ``momentum``, ``beta1``, ``beta2``, ``eps``,
    ``clip``; extra keys are ignored) to Python floats or to tensors broadcasting against ``theta``.
    """
    r = rule(name)
    return r.step(theta, grad, state, _hyper(r, hyper))


def preconditioner(name: str, state: dict[str, Any], hyper: Mapping[str, float | torch.Tensor]) -> torch.Tensor | None:
    """The diagonal preconditioner ``P`` of rule ``name``'s latest step (``None`` before the first step)."""
    r = rule(name)
    if r.preconditioner is None:
        raise ConfigError(
            f"optimizer {name!r} has no diagonal preconditioner; use one of "
            f"{tuple(k for k, v in RULES.items() if v.preconditioner is not None)}."
        )
    if not state or (r.counts_steps and float(state["step"]) == 0):
        return None
    return r.preconditioner(state, _hyper(r, hyper))


# --------------------------------------------------------------------------------------------
# the torch face
# --------------------------------------------------------------------------------------------
def _check_hyper(name: str, value: Any) -> None:
    real = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if name == "lr" and not (real and math.isfinite(value) and value > 0):
        raise ConfigError(f"lr={value!r} must be a finite number > 0.")
    if name == "beta1" and not (real and 0.0 <= value < 1.0):
        raise ConfigError(f"beta1={value!r} must lie in [0, 1); a typical value is 0.9.")
    if name == "momentum" and not (real and math.isfinite(value) and value >= 0):
        raise ConfigError(f"momentum={value!r} must be a finite number >= 0 (e.g. 0.9).")
    if name == "beta2" and not (real and 0.0 < value < 1.0):
        raise ConfigError(f"beta2={value!r} must lie in (0, 1); a typical value is 0.999.")
    if name == "eps" and not (real and math.isfinite(value) and value >= 0):
        raise ConfigError(f"eps={value!r} must be a finite number >= 0 (e.g. 1e-8).")
    if name == "clip" and not (real and value > 0):
        raise ConfigError(
            f"clip={value!r} (the bound on sqrt(v_hat)) must be > 0; use clip=float('inf') for plain Adam."
        )


class RuleOptimizer(torch.optim.Optimizer):
    """``torch.optim.Optimizer`` applying the update rule ``name`` to each parameter tensor.

    The parameter groups hold the rule's hyper-parameters under their rule names (``lr``,
    ``momentum``, ``beta1``, ``beta2``, ``eps``, ``clip``); the per-parameter state is the rule's
    state (torch's names: ``momentum_buffer``; ``step``, ``exp_avg``, ``exp_avg_sq``).
    """

    def __init__(self, params: Iterable[torch.Tensor], name: str, **hyper: float) -> None:
        r = rule(name)
        defaults = _hyper(r, hyper)
        for k in r.hyper:
            _check_hyper(k, defaults[k])
        self.rule = r.name
        super().__init__(params, {k: defaults[k] for k in r.hyper})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(init_state(self.rule, p))
                p.copy_(update(self.rule, p, p.grad, state, group))
        return loss


class ClippedAda(RuleOptimizer):
    """Clipped-Ada (reconstruction) with Adam's argument names: ``betas = (beta1, beta2)``, clip ``c``.

    Per coordinate ``d = min(sqrt(v_hat), c)`` and ``theta <- theta - lr * m_hat / (d + eps)``; ``c = inf``
    is Adam, ``beta1 = 0`` clipped RMSProp ("RMS-UB"). The rule is ``update("clipped_ada", ...)``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        c: float = 1.0,
    ) -> None:
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ConfigError(f"betas={betas!r} must be a pair (beta1, beta2), e.g. (0.9, 0.999).")
        super().__init__(params, "clipped_ada", lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, clip=c)


def build_optimizer(
    name: str,
    params: list[torch.Tensor],
    lr: float,
    momentum: float = 0.0,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    clip: float = math.inf,
    **extra: Any,
) -> RuleOptimizer:
    """The :class:`RuleOptimizer` of rule ``name`` (one of :data:`OPTIMIZERS`) over ``params``;
    hyper-parameters a rule does not read are ignored."""
    return RuleOptimizer(params, name, lr=lr, momentum=momentum, beta1=beta1, beta2=beta2, eps=eps, clip=clip)


def optimizer_preconditioner(
    optimizer: torch.optim.Optimizer, param: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Diagonal of ``P`` that ``optimizer`` (an adaptive :class:`RuleOptimizer` or ``torch.optim.Adam``)
    used in its latest step: ``min(sqrt(v_hat), clip) + eps`` (``clip = inf`` for Adam and RMSProp).
    Returns ``None`` before the first step (no second-moment estimate yet)."""
    if isinstance(optimizer, torch.optim.Adam):
        group = optimizer.param_groups[0]
        if group.get("amsgrad", False):
            raise ConfigError("amsgrad is not supported; build Adam with amsgrad=False.")
        name = "adam"
        hyper: Mapping[str, Any] = dict(
            lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1], eps=group["eps"]
        )
    elif isinstance(optimizer, RuleOptimizer):
        name, group = optimizer.rule, optimizer.param_groups[0]
        hyper = group
    else:
        raise ConfigError(
            f"{type(optimizer).__name__} has no diagonal preconditioner; use optimizer 'adam', "
            "'rmsprop' or 'clipped_ada'."
        )
    if len(optimizer.param_groups) != 1 or len(group["params"]) != 1:
        if param is None:
            raise ConfigError("the optimizer holds several tensors; pass param= (the flat parameter vector).")
    p = param if param is not None else group["params"][0]
    P = preconditioner(name, optimizer.state.get(p, {}), hyper)
    return None if P is None else P.detach()


def quadratic_trajectory(
    name: str, curvature: float, lr: float, steps: int, w0: float = 0.1, divergence: float = 1e12, **options: Any
) -> torch.Tensor:
    """Iterates ``w_0..w_T`` of optimizer ``name`` on the 1-D quadratic ``L(w) = curvature/2 * w**2``.

    ``options`` go to :func:`build_optimizer` (``beta1``, ``beta2``, ``eps``, ``clip``, ``momentum``).
    The run stops early (and the trajectory is shorter) once ``|w|`` exceeds ``divergence``.
    """
    if not (isinstance(steps, int) and steps > 0):
        raise ConfigError(f"steps={steps!r} must be a positive integer.")
    w = torch.tensor([float(w0)], dtype=torch.float64, requires_grad=True)
    opt = build_optimizer(name, [w], lr, **options)
    out = [float(w0)]
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * curvature * w.pow(2)).sum().backward()
        opt.step()
        out.append(float(w.detach()))
        if not math.isfinite(out[-1]) or abs(out[-1]) > divergence:
            break
    return torch.tensor(out, dtype=torch.float64)
