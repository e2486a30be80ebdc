import pytest
import torch

from instabilities import losses, models
from instabilities.config import ConfigError


def test_flat_model_roundtrip_matches_module():
    m = models.build_model(models.ModelSpec(widths=(7, 5)), (4,), 3, seed=1)
    fm = models.FlatModel(m)
    assert fm.dim == sum(p.numel() for p in m.parameters())
    x = torch.randn(6, 4)
    torch.testing.assert_close(fm(fm.theta0, x), m(x))
    theta = fm.theta0 + 0.1
    fm.write_back(theta)
    torch.testing.assert_close(fm(theta, x), m(x))
    with pytest.raises(ConfigError, match="parameters"):
        fm.unflatten(torch.zeros(fm.dim + 1))


def test_seed_controls_init_only():
    spec = models.ModelSpec(widths=(8,))
    a = models.FlatModel(models.build_model(spec, (3,), 2, seed=0)).theta0
    b = models.FlatModel(models.build_model(spec, (3,), 2, seed=0)).theta0
    c = models.FlatModel(models.build_model(spec, (3,), 2, seed=1)).theta0
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_init_scale_and_archs():
    spec = models.ModelSpec(widths=(8,), init_scale=2.0)
    a = models.FlatModel(models.build_model(models.ModelSpec(widths=(8,)), (3,), 2, seed=0)).theta0
    b = models.FlatModel(models.build_model(spec, (3,), 2, seed=0)).theta0
    torch.testing.assert_close(b, 2 * a)
    lin = models.build_model(models.ModelSpec(arch="deep_linear", widths=(4, 4)), (3,), 2)
    x = torch.randn(5, 3)
    torch.testing.assert_close(lin(2 * x), 2 * lin(x))  # linear, no bias
    cnn = models.build_model(models.ModelSpec(arch="cnn", widths=(4, 4), activation="relu"), (1, 8, 8), 10)
    assert cnn(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    cnn1d = models.build_model(models.ModelSpec(arch="cnn", widths=(4,), activation="relu"), (40,), 10)
    assert cnn1d(torch.randn(2, 40)).shape == (2, 10)


def test_bad_specs():
    with pytest.raises(ConfigError, match="activation"):
        models.ModelSpec(activation="swishy")
    with pytest.raises(ConfigError, match="arch"):
        models.ModelSpec(arch="transformer-xxl")
    with pytest.raises(ConfigError, match="too small"):
        models.build_model(models.ModelSpec(arch="cnn", widths=(2, 2, 2, 2)), (1, 4, 4), 3)


def test_mse_convention_and_shape_check():
    out = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    tgt = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert float(losses.mse(out, tgt)) == pytest.approx(0.5 * (1 + 4) / 2)
    with pytest.raises(ConfigError, match="one-hot"):
        losses.mse(out, torch.zeros(2))


def test_targets_and_accuracy():
    y = torch.tensor([0, 2, 1])
    oh = losses.prepare_targets(y, "mse", 3)
    assert oh.shape == (3, 3) and float(oh.sum()) == 3
    assert losses.prepare_targets(y, "ce", 3).dtype == torch.long
    with pytest.raises(ConfigError, match="regression"):
        losses.prepare_targets(torch.zeros(3, 1), "ce", 0)
    assert losses.accuracy(oh, y, 3) == 1.0
    with pytest.raises(ConfigError):
        losses.make_objective(None, None, None, "hinge")
