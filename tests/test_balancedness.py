"""Deep linear networks: the balancedness identity of one GD step and its conservation by gradient flow."""

import numpy as np
import pytest
import torch
from torch.func import grad, vmap

from instabilities.config import ConfigError
from instabilities.dynamics import balancedness as bal


@pytest.fixture
def net():
    return bal.teacher_problem(n=32, d=3, widths=(4, 5), teacher_norm=1.5, seed=1)


def test_shapes_and_end_to_end(net):
    theta = net.init([0, 1], scale=(1.0, 0.5, 2.0))
    assert theta.shape == (2, net.n_params) and net.n_params == 4 * 3 + 5 * 4 + 5
    Ws = net.unflatten(theta[0])
    np.testing.assert_allclose(net.end_to_end(theta[0]), (Ws[2] @ Ws[1] @ Ws[0])[0])
    with pytest.raises(ConfigError):
        net.init([0], scale=(1.0, 1.0))


def test_gd_step_changes_balancedness_by_eta_squared_gram_difference(net):
    theta = net.init([0, 1, 2], scale=1.0)
    G = vmap(grad(net.loss))(theta)
    for eta in (0.05, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)):
        step = theta - (eta[:, None] if torch.is_tensor(eta) else eta) * G
        direct = [a - b for a, b in zip(bal.balancedness(net, step), bal.balancedness(net, theta))]
        for D, P in zip(direct, bal.balancedness_change(net, G, eta)):
            torch.testing.assert_close(D, P, rtol=1e-9, atol=1e-12)


def test_gradient_flow_conserves_balancedness(net):
    """Small-step GD over a fixed flow time changes B by O(h): the flow itself conserves it."""
    theta = net.init([4], scale=1.0)[0]
    B0 = bal.balancedness(net, theta)
    g = grad(net.loss)
    drift = {}
    for h in (1e-2, 1e-3):
        x = theta.clone()
        for _ in range(int(round(1.0 / h))):
            x = x - h * g(x)
        drift[h] = float(bal.balancedness_norm([a - b for a, b in zip(bal.balancedness(net, x), B0)]))
    assert drift[1e-3] < 0.2 * drift[1e-2]
