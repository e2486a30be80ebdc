import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _torch_determinism():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def small_net():
    """(Hessian objective, initial parameters) of a 10-10 tanh MLP on 100 digits, in float64."""
    from _problems import small_digits_net

    return small_digits_net()
