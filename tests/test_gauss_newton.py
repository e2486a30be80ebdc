"""The Gauss-Newton split of the MSE Hessian."""

import pytest
import torch

from instabilities.config import ConfigError
from instabilities.dynamics.gauss_newton import gauss_newton_split
from instabilities.models import FlatModel, mlp


def test_split_is_exact_and_gauss_newton_is_psd():
    torch.manual_seed(0)
    x, y = torch.randn(30, 4, dtype=torch.float64), torch.randn(30, 3, dtype=torch.float64)
    fm = FlatModel(mlp(4, [6], 3, "tanh").double())
    s = gauss_newton_split(fm, fm.theta0, x, y)
    assert s.split_error < 1e-12
    assert torch.linalg.eigvalsh(s.G).min() > -1e-10
    # at targets equal to the outputs the residual term vanishes and H = G
    s0 = gauss_newton_split(fm, fm.theta0, x, fm(fm.theta0, x).detach())
    assert s0.R.abs().max() < 1e-14 and torch.allclose(s0.H, s0.G)
    # a linear model: H = G = X^T X / n (per output), whatever the targets
    lin = FlatModel(torch.nn.Linear(4, 1, bias=False).double())
    sl = gauss_newton_split(lin, lin.theta0, x, y[:, :1])
    assert torch.allclose(sl.H, x.T @ x / 30)


def test_bad_shapes():
    fm = FlatModel(mlp(4, [6], 3, "tanh").double())
    with pytest.raises(ConfigError, match="2-D"):
        gauss_newton_split(fm, fm.theta0, torch.randn(5, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64))


def test_too_many_parameters_for_dense_matrices_is_a_config_error():
    fm = FlatModel(mlp(4, [5000], 3, "tanh").double())  # 40003 parameters: dense Hessians would not fit
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(ConfigError, match="too large"):
        gauss_newton_split(fm, fm.theta0, x, y)
