"""What the curvature tools cost and how accurate they are: timers and solver comparisons.

:func:`time_hvps` measures what a gradient and a Hessian-vector product cost on the current device.
"""
from __future__ import annotations

import time

import torch

from .operator import HessianOperator, Objective


def sync(device: torch.device | str) -> None:
    """Wait for queued kernels on a CUDA ``device`` (a no-op on the CPU), before reading a clock."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_hvps(objective: Objective, theta: torch.Tensor, block: int = 8, repeats: int = 10,
              seed: int = 0) -> dict[str, float]:
    """Best-of-``repeats`` wall times (seconds) of a gradient and of Hessian-vector products.

    Keys (times): ``gradient``; ``hvp_reverse`` (double backward, gradient graph rebuilt, as for a
    new iterate) and ``hvp_forward`` (``jvp`` of ``grad``) for one vector;
    ``hvp_reverse_block_per_vector`` and ``hvp_forward_block_per_vector`` (``block`` products in one
    batched call, divided by ``block``); ``grad_and_block_reverse`` and ``grad_and_block_forward``
    (gradient plus ``block`` products at one iterate, :meth:`HessianOperator.grad_and_matmat`).
    For every time key except ``gradient`` there is ``ratio_<key>`` = time / gradient time (the
    cost ``c`` of the cost model, in gradients), and ``block`` is echoed. The methods are timed
    round-robin so that a burst of load hits all alike. Timings only; the tests assert no times.
    """
    require_positive_int("block", block)
    require_positive_int("repeats", repeats)
    theta = theta.detach()
    dev = theta.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    V = torch.randn(theta.numel(), block, generator=gen, dtype=theta.dtype, device=dev)

    def gradient() -> torch.Tensor:
        leaf = theta.clone().requires_grad_(True)
        return torch.autograd.grad(objective(leaf), leaf)[0]

    fns: dict[str, Callable[[], object]] = {"gradient": gradient}
    for method in ("reverse", "forward"):
        op = lambda m=method: HessianOperator(objective, theta, m)  # noqa: E731  (a fresh iterate each call)
        fns[f"hvp_{method}"] = lambda op=op: op().matvec(V[:, 0])
        fns[f"hvp_{method}_block"] = lambda op=op: op().matmat(V)
        fns[f"grad_and_block_{method}"] = lambda op=op: op().grad_and_matmat(V)
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()  # warm-up: first-call overheads are not the products' cost
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(dev)
            t0 = time.perf_counter()
            fn()
            sync(dev)
            best[name] = min(best[name], time.perf_counter() - t0)
    out = {}
    for name, t in best.items():
        per_vector = name.startswith("hvp_") and name.endswith("_block")
        out[name + "_per_vector" if per_vector else name] = t / block if per_vector else t
    for key in [k for k in out if k != "gradient"]:
        out[f"ratio_{key}"] = out[key] / out["gradient"]
    out["block"] = float(block)
    return out
