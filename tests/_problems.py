"""Small problems shared by the curvature tests (one builder each, imported by the test modules)."""

import torch

from instabilities.losses import make_objective
from instabilities.models import FlatModel, ModelSpec, mlp
from instabilities.train import TrainConfig, build_problem


def quadratic_with_spectrum(eigenvalues, seed=0):
    """Objective 0.5 theta^T A theta with a random orthogonal eigenbasis and the given spectrum."""
    n = len(eigenvalues)
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    A = U @ torch.diag(torch.as_tensor(eigenvalues, dtype=torch.float64)) @ U.T
    A = 0.5 * (A + A.T)
    return (lambda th: 0.5 * th @ (A @ th)), A


def small_digits_net():
    """(Hessian objective, initial parameters) of a 10-10 tanh MLP on 100 digits, in float64."""
    cfg = TrainConfig(dataset="digits", n_train=100, n_test=50, model=ModelSpec(widths=(10, 10)), dtype="float64")
    prob = build_problem(cfg)
    return prob.hessian_objective, prob.flat.theta0


def tiny_problem(seed: int = 0):
    """A tanh MLP 5-6-3 (P = 57) on random data, in float64."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    torch.manual_seed(seed)
    fm = FlatModel(mlp(5, [6], 3).double())
    return make_objective(fm, x, y, "mse"), fm.theta0
