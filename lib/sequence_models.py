"""Small MLP, Elman RNN and one-layer transformer students, teacher-student tasks with label noise.

Used to check that the direction of the label-noise effect of the solvable model (more anisotropic
label noise -> sharper solution) appears beyond deep linear networks. Everything is written by hand
with ``torch.func`` so that ``R`` independent replicas (seeds x noise covariances) train in one vmapped
loop, with fresh inputs and fresh label noise every step (online SGD). The transformer has an optional
hand-written LayerNorm (no ``nn.LayerNorm``: its higher derivatives are not needed for Hessians, but the
hand-written one keeps every operation twice differentiable in a transparent way).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from . import curvature
from .config import ConfigError
from .dynamics.label_noise import single_thread

ARCHS = ("mlp", "rnn", "transformer")


class SimpleLayerNorm(nn.Module):
    """``(x - mean) / sqrt(var + eps)`` over the last axis, with a learnable gain and bias."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gain, self.bias, self.eps = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(-1, keepdim=True)
        var = (x - mu).pow(2).mean(-1, keepdim=True)
        return self.gain * (x - mu) / torch.sqrt(var + self.eps) + self.bias


class SequenceMLP(nn.Module):
    """Flatten the sequence, then ``tanh`` MLP with one hidden layer per entry of ``widths``."""

    def __init__(self, d_in: int, seq_len: int, d_out: int, hidden: int = 32, n_hidden: int = 2) -> None:
        super().__init__()
        dims = [d_in * seq_len] + [hidden] * n_hidden
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(dims[-1], d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(-2)
        for layer in self.hidden:
            h = torch.tanh(layer(h))
        return self.out(h)


class ElmanRNN(nn.Module):
    """``h_t = tanh(W h_{t-1} + U x_t + b)``, ``h_0 = 0``; output ``V h_T``."""

    def __init__(self, d_in: int, d_out: int, hidden: int = 16) -> None:
        super().__init__()
        self.U = nn.Linear(d_in, hidden)
        self.W = nn.Linear(hidden, hidden, bias=False)
        with torch.no_grad():
            self.W.weight.mul_(0.5)  # start well inside the stable regime of the recurrence
        self.V = nn.Linear(hidden, d_out)
        self.hidden_size = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(*x.shape[:-2], self.hidden_size, dtype=x.dtype, device=x.device)
        for t in range(x.shape[-2]):
            h = torch.tanh(self.W(h) + self.U(x[..., t, :]))
        return self.V(h)


class TinyTransformer(nn.Module):
    """Embedding + learned positions, one single-head self-attention block and a ``tanh`` MLP block
    (both residual), mean pooling and a linear read-out; ``layer_norm`` adds pre-norms."""

    def __init__(self, d_in: int, seq_len: int, d_out: int, d_model: int = 16, layer_norm: bool = False) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, d_model)
        self.pos = nn.Parameter(0.1 * torch.randn(seq_len, d_model))
        self.q, self.k, self.v = (nn.Linear(d_model, d_model, bias=False) for _ in range(3))
        self.mlp1, self.mlp2 = nn.Linear(d_model, 2 * d_model), nn.Linear(2 * d_model, d_model)
        self.norm1 = SimpleLayerNorm(d_model) if layer_norm else nn.Identity()
        self.norm2 = SimpleLayerNorm(d_model) if layer_norm else nn.Identity()
        self.out = nn.Linear(d_model, d_out)
        self.scale = 1.0 / math.sqrt(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos
        z = self.norm1(h)
        att = torch.softmax(self.q(z) @ self.k(z).transpose(-1, -2) * self.scale, dim=-1)
        h = h + att @ self.v(z)
        h = h + self.mlp2(torch.tanh(self.mlp1(self.norm2(h))))
        return self.out(h.mean(-2))


def build_sequence_model(
    arch: str, d_in: int, seq_len: int, d_out: int, width: int = 16, seed: int = 0, layer_norm: bool = False
) -> nn.Module:
    """One of ``mlp``, ``rnn``, ``transformer``; the init depends only on ``seed`` (float64)."""
    if arch not in ARCHS:
        raise ConfigError(f"arch={arch!r} is unknown; choose one of {ARCHS}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch == "mlp":
            model = SequenceMLP(d_in, seq_len, d_out, hidden=width)
        elif arch == "rnn":
            model = ElmanRNN(d_in, d_out, hidden=width)
        else:
            model = TinyTransformer(d_in, seq_len, d_out, d_model=width, layer_norm=layer_norm)
    return model.double()


class SequenceTeacher:
    """Targets ``y = diag(scales) g(x) + eps``: ``g`` a random network of the student's family, each
    output standardised on a reference sample; ``eps ~ N(0, Sigma_eps)`` drawn fresh per call."""

    def __init__(
        self,
        arch: str,
        d_in: int,
        seq_len: int,
        scales: Sequence[float],
        width: int = 16,
        seed: int = 1000,
        n_ref: int = 2048,
    ) -> None:
        self.net = build_sequence_model(arch, d_in, seq_len, len(scales), width, seed)
        self.d_in, self.seq_len = d_in, seq_len
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            ref = self.net(torch.randn(n_ref, seq_len, d_in, generator=gen, dtype=torch.float64))
        self.mean, self.std = ref.mean(0), ref.std(0)
        self.scales = torch.as_tensor(scales, dtype=torch.float64)

    def clean(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (self.net(x) - self.mean) / self.std * self.scales


def train_sequence_label_noise(*args, **kwargs) -> dict[str, np.ndarray]:
    """Online SGD with fresh label noise for several replicas (the loop is the private helper ``_train``);
    runs on one thread."""
    with single_thread():
        return _train(*args, **kwargs)


def _train(
    arch: str,
    noise_covs: torch.Tensor,
    seeds: Sequence[int],
    eta: float,
    steps: int,
    batch_size: int = 8,
    d_in: int = 3,
    seq_len: int = 6,
    width: int = 16,
    teacher_scales: Sequence[float] = (1.0, 0.25),
    n_eval: int = 256,
    final_window: int = 3,
    snapshot_every: int = 100,
    layer_norm: bool = False,
    data_seed: int = 0,
    device: str = "cpu",
    anneal_steps: int = 0,
    anneal_factor: float = 0.1,
) -> dict[str, np.ndarray]:
    """Online SGD with fresh label noise for ``R = len(seeds)`` replicas, replica ``i`` with ``noise_covs[i]``.

    ``steps`` steps at step size ``eta``, then ``anneal_steps`` more at ``eta * anneal_factor`` (they bring the
    iterate close to the manifold of minima, where the measurements below are meant, while the position along the
    minima, which moves at rate ``eta^2``, barely changes). Returns the clean-target loss every ``snapshot_every``
    steps, and at the last ``final_window`` snapshots the sharpness ``S`` (Lanczos on the clean-target loss over
    ``n_eval`` fixed inputs) and the Gauss-Newton trace ``tr E[J^T J]`` (exact, from per-input Jacobians; it equals
    ``tr H`` at a minimum), averaged into ``final_sharpness`` and ``final_trace``; ``final_clean_loss`` is the clean
    loss at the end. Diverged replicas are recorded (``diverged``) and get NaN.
    """
    lr = eta
    if not (isinstance(anneal_steps, int) and anneal_steps >= 0) or not (0 < anneal_factor <= 1):
        raise ConfigError("anneal_steps must be an integer >= 0 and anneal_factor in (0, 1].")
    R = len(seeds)
    noise_covs = torch.as_tensor(noise_covs, dtype=torch.float64)
    d_out = len(teacher_scales)
    if noise_covs.shape != (R, d_out, d_out):
        raise ConfigError(f"noise_covs must have shape ({R}, {d_out}, {d_out}): one covariance per seed.")
    total = steps + anneal_steps
    if total < final_window * snapshot_every:
        raise ConfigError("steps + anneal_steps must be at least final_window * snapshot_every.")
    teacher = SequenceTeacher(arch, d_in, seq_len, teacher_scales, width)
    models = [build_sequence_model(arch, d_in, seq_len, d_out, width, int(s), layer_norm) for s in seeds]
    params, buffers = stack_module_state(models)
    params = {k: v.detach().to(device) for k, v in params.items()}
    base = copy.deepcopy(models[0]).to("meta")
    evals, evecs = torch.linalg.eigh(noise_covs)
    Le = evecs * evals.clamp_min(0).sqrt().unsqueeze(-2)  # targets are drawn on the CPU, then moved
    gen = torch.Generator().manual_seed(data_seed)
    x_eval = torch.randn(n_eval, seq_len, d_in, generator=gen, dtype=torch.float64)
    y_eval = teacher.clean(x_eval)

    def loss_fn(p, x, y):
        out = functional_call(base, (p, {}), (x,))
        return 0.5 * (out - y).pow(2).sum(-1).mean()

    step_grad = vmap(grad(loss_fn))
    eval_loss = vmap(loss_fn, in_dims=(0, None, None))
    alive = torch.ones(R, dtype=torch.bool)
    losses, snaps = [], []
    names = list(params)
    for t in range(1, total + 1):
        step = lr if t <= steps else lr * anneal_factor
        x = torch.randn(R, batch_size, seq_len, d_in, generator=gen, dtype=torch.float64)
        y = teacher.clean(x.reshape(-1, seq_len, d_in)).reshape(R, batch_size, d_out)
        y = y + torch.randn(R, batch_size, d_out, generator=gen, dtype=torch.float64) @ Le.transpose(-1, -2)
        g = step_grad(params, x.to(device), y.to(device))
        keep = alive.to(device)
        params = {k: params[k] - step * g[k] * keep.reshape(-1, *[1] * (g[k].dim() - 1)) for k in names}
        if t % snapshot_every == 0:
            ev = eval_loss(params, x_eval.to(device), y_eval.to(device)).cpu()
            finite = torch.stack([torch.isfinite(v).flatten(1).all(1) for v in params.values()]).all(0).cpu()
            bad = ~finite | ~torch.isfinite(ev) | (ev > 1e6)
            if bool(bad.any()):
                alive &= ~bad
                params = {
                    k: torch.where(bad.to(device).reshape(-1, *[1] * (v.dim() - 1)), torch.zeros_like(v), v)
                    for k, v in params.items()
                }
            losses.append(torch.where(alive, ev, torch.nan).numpy())
            if t > total - final_window * snapshot_every:
                snaps.append({k: v.detach().cpu().clone() for k, v in params.items()})
    sharp = np.full((len(snaps), R), np.nan)
    trace = np.full((len(snaps), R), np.nan)
    sizes = [params[k][0].numel() for k in names]
    shapes = [params[k][0].shape for k in names]
    eval_base = copy.deepcopy(models[0]).to(device)
    xe, ye = x_eval.to(device), y_eval.to(device)
    for j, snap in enumerate(snaps):
        for i in range(R):
            if not alive[i]:
                continue
            theta = torch.cat([snap[k][i].reshape(-1) for k in names]).to(device)

            def objective(th):
                p = {k: c.reshape(s) for k, c, s in zip(names, torch.split(th, sizes), shapes)}
                return 0.5 * (functional_call(eval_base, p, (xe,)) - ye).pow(2).sum(-1).mean()

            sharp[j, i] = curvature.sharpness(objective, theta, tol=1e-5, max_iter=100)
            trace[j, i] = gauss_newton_trace(eval_base, {k: snap[k][i].to(device) for k in names}, xe)
    return {
        "clean_loss": np.stack(losses),
        "steps": np.arange(1, len(losses) + 1) * snapshot_every,
        "sharpness_window": sharp,
        "final_sharpness": sharp.mean(0),
        "trace_window": trace,
        "final_trace": trace.mean(0),
        "final_clean_loss": losses[-1],
        "diverged": (~alive).numpy(),
        "n_params": np.asarray(sum(sizes)),
    }


def gauss_newton_trace(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> float:
    """``tr E_x[J^T J] = mean_x sum_j |d f_j(x) / d theta|^2`` for the given parameters (exact, per-input Jacobians).

    For the MSE loss this is the Hessian trace at a minimum (the paper's sharpness ``T``); near a minimum it
    differs from ``tr H`` by the residual term, which vanishes with the residual.
    """
    from torch.func import jacrev

    def f(p, xi):
        return functional_call(model, (p, {}), (xi.unsqueeze(0),))[0]

    jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)  # dict of (n, d_out, *shape)
    return float(sum(j.pow(2).flatten(1).sum(1).mean() for j in jac.values()))
