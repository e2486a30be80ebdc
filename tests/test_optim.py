import math

import pytest
import torch

from instabilities.config import ConfigError
from instabilities.optim import OPTIMIZERS, ClippedAda, build_optimizer, clipped_denominator, quadratic_trajectory


def _run(opt_factory, steps=25, seed=0):
    """Train a small least-squares problem; return the parameter trajectory."""
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(30, 6, generator=gen, dtype=torch.float64)
    b = torch.randn(30, generator=gen, dtype=torch.float64)
    w = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    opt = opt_factory([w])
    traj = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (A @ w - b).pow(2).mean()).backward()
        opt.step()
        traj.append(w.detach().clone())
    return torch.stack(traj)


def test_clipped_ada_equals_adam_when_clip_is_huge():
    a = _run(lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.9, 0.99), eps=1e-8))
    b = _run(lambda p: ClippedAda(p, lr=0.05, betas=(0.9, 0.99), eps=1e-8, c=1e6))
    c = _run(lambda p: ClippedAda(p, lr=0.05, betas=(0.9, 0.99), eps=1e-8, c=math.inf))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)


def test_rmsprop_is_adam_without_momentum():
    a = _run(lambda p: build_optimizer("rmsprop", p, lr=0.01, beta2=0.9))
    b = _run(lambda p: ClippedAda(p, lr=0.01, betas=(0.0, 0.9), eps=1e-8, c=math.inf))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_effective_step_is_bounded_below_by_lr_over_c():
    lr, c, eps = 0.01, 0.05, 1e-8
    w = torch.zeros(50, dtype=torch.float64, requires_grad=True)
    opt = ClippedAda([w], lr=lr, betas=(0.0, 0.9), eps=eps, c=c)
    scales = torch.logspace(-4, 3, 50, dtype=torch.float64)  # gradients over seven decades
    w.grad = scales.clone()
    opt.step()
    # with beta1 = 0: step = lr * g / (min(|g|, c) + eps); effective step per unit gradient >= lr / (c + eps)
    effective = (-w.detach()) / scales
    assert bool((effective >= lr / (c + eps) * (1 - 1e-12)).all())
    # unclipped coordinates take Adam's normalised step lr * g / (|g| + eps)
    small = scales < c
    torch.testing.assert_close(-w.detach()[small], lr * scales[small] / (scales[small] + eps))
    # clipped ones move like SGD with step lr / c
    torch.testing.assert_close(-w.detach()[~small], lr * scales[~small] / (c + eps))


def test_clipped_denominator_matches_definition():
    v = torch.tensor([1e-6, 1.0, 100.0], dtype=torch.float64)
    d = clipped_denominator(v, step=3, beta2=0.9, c=2.0, eps=0.1)
    v_hat = v / (1 - 0.9 ** 3)
    torch.testing.assert_close(d, torch.minimum(v_hat.sqrt(), torch.tensor(2.0, dtype=torch.float64)) + 0.1)


def test_quadratic_toy_clipped_ada_diverges_where_adam_and_rmsprop_stay_bounded():
    # L = lam/2 w^2, lam = 2.3, eta = 1, c = 1.1: eta * lam / c = 2.09 > 2
    opts = dict(beta2=0.9, clip=1.1)
    rms = quadratic_trajectory("rmsprop", 2.3, 1.0, 200, **opts)
    adam = quadratic_trajectory("adam", 2.3, 1.0, 200, **opts)
    clipped = quadratic_trajectory("clipped_ada", 2.3, 1.0, 200, beta1=0.0, **opts)
    sgd = quadratic_trajectory("sgd", 2.3, 1.0, 200)
    assert float(rms.abs().max()) < 2.0 and float(adam.abs().max()) < 2.0
    assert float(clipped.abs()[-1]) > 1e3  # grows like |1 - eta lam / c|^t
    assert float(sgd.abs()[-1]) > 1e6
    # below the clipped threshold (eta * lam / c = 1.73 < 2) Clipped-Ada stays bounded
    calm = quadratic_trajectory("clipped_ada", 1.9, 1.0, 200, beta1=0.0, **opts)
    assert float(calm.abs().max()) < 2.0


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(lr=-1.0), "lr"), (dict(betas=(1.0, 0.9)), "beta1"), (dict(betas=(0.9, 1.5)), "beta2"),
    (dict(eps=-1.0), "eps"), (dict(c=0.0), "c="), (dict(c=float("nan")), "c="), (dict(betas=0.9), "pair"),
])
def test_clipped_ada_rejects_bad_arguments(kwargs, fragment):
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ConfigError, match=fragment):
        ClippedAda([w], **kwargs)


def test_build_optimizer_names():
    w = torch.zeros(2, requires_grad=True)
    for name in OPTIMIZERS:
        assert isinstance(build_optimizer(name, [w], 0.1, momentum=0.9, clip=1.0), torch.optim.Optimizer)
    with pytest.raises(ConfigError, match="choose one of"):
        build_optimizer("lion", [w], 0.1)
