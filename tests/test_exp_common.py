"""The shared network config: validation messages, model spec and the TrainConfig it builds."""

import dataclasses

import pytest

from instabilities.config import ConfigError
from instabilities.experiments.common import NetConfig
from instabilities.train import TrainConfig


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(dataset="imagenet"), "dataset"),
        (dict(activation="swish2"), "activation"),
        (dict(loss="hinge"), "loss"),
        (dict(n_train=0), "n_train"),
        (dict(n_test=-1), "n_test"),
        (dict(widths=()), "widths"),
        (dict(widths=[8]), "tuple"),
        (dict(widths=(8, 0)), "width"),
        (dict(dataset="teacher", loss="ce"), "regression"),
    ],
)
def test_rejects_bad_network_fields(bad, match):
    with pytest.raises(ConfigError, match=match):
        NetConfig(**bad)


def test_train_config_takes_network_fields_from_self():
    net = NetConfig(scale="full", dataset="mnist1d", n_train=50, n_test=40, widths=(7, 5), activation="relu", loss="ce")
    tc = net.train_config(optimizer="gd", lr=0.3, steps=11, seed=4)
    assert isinstance(tc, TrainConfig)
    assert (tc.scale, tc.dataset, tc.n_train, tc.n_test, tc.loss) == ("full", "mnist1d", 50, 40, "ce")
    assert tc.model == net.model_spec() and tc.model.widths == (7, 5) and tc.model.activation == "relu"
    assert (tc.lr, tc.steps, tc.seed) == (0.3, 11, 4)
    with pytest.raises(TypeError):  # the network fields come from the config, not from kw
        net.train_config(dataset="digits")


def test_subclass_redeclares_defaults_and_hash_sees_network_fields():
    @dataclasses.dataclass(frozen=True)
    class Sweep(NetConfig):
        dataset: str = "mnist1d"
        steps: int = 10

    a = Sweep()
    assert a.dataset == "mnist1d" and a.n_train == NetConfig().n_train
    assert a.config_hash() != a.replace(widths=(16,)).config_hash()
    with pytest.raises(ConfigError, match="widths"):
        Sweep(widths=())
