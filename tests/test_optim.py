import math

import pytest
import torch

from instabilities import optim
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
    v_hat = v / (1 - 0.9**3)
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


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(lr=-1.0), "lr"),
        (dict(betas=(1.0, 0.9)), "beta1"),
        (dict(betas=(0.9, 1.5)), "beta2"),
        (dict(eps=-1.0), "eps"),
        (dict(c=0.0), "clip="),
        (dict(c=float("nan")), "clip="),
        (dict(betas=0.9), "pair"),
    ],
)
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


# --------------------------------------------------------------------------------------------
# the functional rules: torch.optim's own optimizers, per-row hyper-parameters, a hand computation
# --------------------------------------------------------------------------------------------
TORCH_REFERENCES = [
    ("gd", dict(lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    ("sgd", dict(lr=0.3), lambda p: torch.optim.SGD(p, lr=0.3)),
    ("momentum", dict(lr=0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    ("nesterov", dict(lr=0.05, momentum=0.8), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    (
        "adam",
        dict(lr=0.03, beta1=0.8, beta2=0.99, eps=1e-6),
        lambda p: torch.optim.Adam(p, lr=0.03, betas=(0.8, 0.99), eps=1e-6),
    ),
    # the book's RMSProp is bias-corrected (Adam with beta1 = 0), not torch.optim.RMSprop
    ("rmsprop", dict(lr=0.03, beta2=0.9, eps=1e-8), lambda p: torch.optim.Adam(p, lr=0.03, betas=(0.0, 0.9))),
    (
        "clipped_ada",
        dict(lr=0.03, beta1=0.9, beta2=0.99, eps=1e-8, clip=math.inf),
        lambda p: torch.optim.Adam(p, lr=0.03, betas=(0.9, 0.99)),
    ),
]


def _grad_fn(seed=0, dim=6):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(30, dim, generator=gen, dtype=torch.float64)
    b = torch.randn(30, generator=gen, dtype=torch.float64)
    return lambda w: A.T @ (A @ w - b) / 30


@pytest.mark.parametrize("name, hyper, reference", TORCH_REFERENCES, ids=[c[0] for c in TORCH_REFERENCES])
def test_functional_rule_equals_torch_optimizer(name, hyper, reference):
    grad = _grad_fn()
    w = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    opt = reference([w])
    theta, state = torch.zeros(6, dtype=torch.float64), optim.init_state(name, torch.zeros(6, dtype=torch.float64))
    torch_opt = build_optimizer(name, [wb := torch.zeros(6, dtype=torch.float64, requires_grad=True)], **hyper)
    for _ in range(12):
        w.grad = grad(w.detach())
        opt.step()
        wb.grad = grad(wb.detach())
        torch_opt.step()
        theta = optim.update(name, theta, grad(theta), state, hyper)
        torch.testing.assert_close(theta, w.detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(wb.detach(), w.detach(), rtol=1e-12, atol=1e-14)
    assert float(theta.abs().max()) > 1e-2  # the runs moved


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_rows_with_their_own_hyper_parameters_equal_separate_runs(name):
    """A (P, dim) tensor with (P, 1) hyper-parameters is P independent runs of the same rule."""
    grad = _grad_fn(1)
    rows = [
        dict(lr=0.02, momentum=0.9, beta1=0.9, beta2=0.999, eps=1e-8, clip=0.05),
        dict(lr=0.1, momentum=0.0, beta1=0.0, beta2=0.9, eps=1e-3, clip=math.inf),
        dict(lr=0.05, momentum=0.5, beta1=0.5, beta2=0.99, eps=1e-6, clip=1.0),
    ]
    hyper = {k: torch.tensor([r[k] for r in rows], dtype=torch.float64)[:, None] for k in rows[0]}
    Theta = torch.zeros(3, 6, dtype=torch.float64)
    state = optim.init_state(name, Theta)
    singles = [
        (torch.zeros(6, dtype=torch.float64), optim.init_state(name, torch.zeros(6, dtype=torch.float64))) for _ in rows
    ]
    for _ in range(10):
        Theta = optim.update(name, Theta, torch.stack([grad(t) for t in Theta]), state, hyper)
        singles = [(optim.update(name, t, grad(t), s, r), s) for (t, s), r in zip(singles, rows)]
        torch.testing.assert_close(Theta, torch.stack([t for t, _ in singles]), rtol=1e-12, atol=1e-14)


def test_clipped_ada_rule_against_a_hand_computation():
    lr, b1, b2, eps, c = 0.1, 0.9, 0.99, 1e-8, 0.05
    grads = [
        torch.tensor([0.01, 2.0, -3.0], dtype=torch.float64),
        torch.tensor([0.02, -1.0, 0.5], dtype=torch.float64),
        torch.tensor([0.001, 4.0, 0.0], dtype=torch.float64),
    ]
    theta = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    state = optim.init_state("clipped_ada", theta)
    hyper = dict(lr=lr, beta1=b1, beta2=b2, eps=eps, clip=c)
    w = [1.0, -1.0, 0.5]
    m, v = [0.0] * 3, [0.0] * 3
    for t, g in enumerate(grads, start=1):
        theta = optim.update("clipped_ada", theta, g, state, hyper)
        for i in range(3):
            m[i] = b1 * m[i] + (1 - b1) * float(g[i])
            v[i] = b2 * v[i] + (1 - b2) * float(g[i]) ** 2
            d = min(math.sqrt(v[i] / (1 - b2**t)), c) + eps
            w[i] -= lr * (m[i] / (1 - b1**t)) / d
        torch.testing.assert_close(theta, torch.tensor(w, dtype=torch.float64), rtol=1e-12, atol=1e-14)
        P = optim.preconditioner("clipped_ada", state, hyper)
        hand = [min(math.sqrt(v[i] / (1 - b2**t)), c) + eps for i in range(3)]
        torch.testing.assert_close(P, torch.tensor(hand, dtype=torch.float64), rtol=1e-12, atol=1e-14)
    # the first coordinate's gradients are tiny: unclipped (Adam's step); the others are clipped at c
    assert hand[0] < c and hand[1] == hand[2] == c + eps


def test_torch_face_exposes_the_rule_state_and_preconditioner():
    w = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = build_optimizer("rmsprop", [w], lr=0.01, beta1=0.9, beta2=0.9, eps=1e-8)
    assert optim.optimizer_preconditioner(opt) is None  # no step yet
    w.grad = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    opt.step()
    state = opt.state[w]
    assert state["step"] == 1 and set(state) == {"step", "exp_avg", "exp_avg_sq"}
    # RMSProp pins beta1 = 0: the first moment is the gradient itself
    torch.testing.assert_close(state["exp_avg"], w.grad)
    torch.testing.assert_close(optim.optimizer_preconditioner(opt), w.grad.abs() + 1e-8)
    with pytest.raises(ConfigError, match="no diagonal preconditioner"):
        optim.optimizer_preconditioner(build_optimizer("momentum", [w], lr=0.1, momentum=0.9))


def test_unknown_rule_and_missing_hyper_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="choose one of"):
        optim.init_state("lion", torch.zeros(2))
    with pytest.raises(ConfigError, match="momentum"):
        optim.update(
            "momentum", torch.zeros(2), torch.ones(2), optim.init_state("momentum", torch.zeros(2)), {"lr": 0.1}
        )


def test_a_new_adaptive_variant_is_one_registration():
    """An Adam variant is register(name, hyper, **adaptive(denominator)); here P = sqrt(v_hat) + eps, i.e. Adam."""
    unclipped = lambda v, t, h: clipped_denominator(v, t, h["beta2"], math.inf, h["eps"])
    optim.register("adam_again", hyper=("lr", "beta1", "beta2", "eps"), **optim.adaptive(unclipped))
    try:
        a = _run(lambda p: build_optimizer("adam", p, lr=0.05, beta2=0.99))
        b = _run(lambda p: optim.RuleOptimizer(p, "adam_again", lr=0.05, beta1=0.9, beta2=0.99, eps=1e-8))
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    finally:
        del optim.RULES["adam_again"]
