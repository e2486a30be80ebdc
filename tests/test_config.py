import dataclasses

import pytest

from instabilities.config import Config, ConfigError, require_choice, require_positive, require_positive_int


@dataclasses.dataclass(frozen=True)
class Toy(Config):
    eta: float = 0.1
    widths: tuple = (3, 4)

    def validate(self):
        super().validate()
        require_positive("eta", self.eta)


def test_hash_is_stable_and_sensitive():
    a, b = Toy(), Toy()
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != Toy(eta=0.2).config_hash()
    assert a.config_hash() != Toy(widths=(3, 5)).config_hash()
    assert a.config_hash() != Toy(scale="full").config_hash()
    assert len(a.config_hash()) == 16


def test_to_dict_is_plain_json():
    d = Toy().to_dict()
    assert d["widths"] == [3, 4] and d["__type__"] == "Toy" and d["scale"] == "ci"


@pytest.mark.parametrize("eta", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_eta_names_the_fix(eta):
    with pytest.raises(ConfigError, match="eta"):
        Toy(eta=eta)


def test_bad_scale():
    with pytest.raises(ConfigError, match="scale"):
        Toy(scale="huge")


def test_replace_validates():
    with pytest.raises(ConfigError):
        Toy().replace(eta=-3)


def test_helpers():
    with pytest.raises(ConfigError, match="positive integer"):
        require_positive_int("steps", 0)
    with pytest.raises(ConfigError, match="choose one of"):
        require_choice("loss", "l1", ("mse", "ce"))


def test_require_device(monkeypatch):
    import torch

    from instabilities.config import available_devices, require_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert available_devices()[:4] == ["cpu", "cuda", "cuda:0", "cuda:1"]
    assert require_device("cuda:1") == "cuda:1"
    with pytest.raises(
        ConfigError, match=r"'cuda:7' is not available on this machine; use one of: cpu, cuda, cuda:0, cuda:1"
    ):
        require_device("cuda:7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="'cuda' is not available"):
        require_device("cuda")
    with pytest.raises(ConfigError, match="'tpu'"):
        require_device("tpu")
