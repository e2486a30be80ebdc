"""Tests of the MLP / Elman RNN / transformer students and their label-noise SGD loop."""

import numpy as np
import pytest
import torch

from instabilities import sequence_models as sm
from instabilities.config import ConfigError
from instabilities.dynamics import label_noise as ln


def test_simple_layer_norm_matches_torch():
    x = torch.randn(4, 5, 8, dtype=torch.float64)
    ours = sm.SimpleLayerNorm(8).double()
    ref = torch.nn.LayerNorm(8, elementwise_affine=False).double()
    torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("arch", sm.ARCHS)
def test_models_shapes_and_seed_determinism(arch):
    x = torch.randn(7, 6, 3, dtype=torch.float64)
    m1 = sm.build_sequence_model(arch, 3, 6, 2, width=8, seed=4)
    m2 = sm.build_sequence_model(arch, 3, 6, 2, width=8, seed=4)
    assert m1(x).shape == (7, 2)
    torch.testing.assert_close(m1(x), m2(x))


def test_rnn_is_a_recurrence_and_transformer_is_permutation_sensitive():
    rnn = sm.build_sequence_model("rnn", 2, 4, 1, width=5, seed=0)
    x = torch.randn(3, 4, 2, dtype=torch.float64)
    h = torch.zeros(3, 5, dtype=torch.float64)
    for t in range(4):
        h = torch.tanh(rnn.W(h) + rnn.U(x[:, t]))
    torch.testing.assert_close(rnn(x), rnn.V(h))
    tf = sm.build_sequence_model("transformer", 2, 4, 1, width=8, seed=0)
    assert not torch.allclose(tf(x), tf(x.flip(1)))  # learned positions break permutation symmetry


def test_teacher_outputs_are_standardised_and_scaled():
    teacher = sm.SequenceTeacher("mlp", 3, 6, (1.0, 0.25), width=8, seed=5)
    y = teacher.clean(torch.randn(4000, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9)))
    np.testing.assert_allclose(y.std(0).numpy(), [1.0, 0.25], rtol=0.1)


def test_training_reduces_loss_and_reports_sharpness():
    covs = torch.stack([ln.noise_covariance(1.0, 0.5)] * 2)
    out = sm.train_sequence_label_noise(
        "mlp", covs, [0, 1], 0.1, 200, batch_size=8, width=8, snapshot_every=50, final_window=1, n_eval=64
    )
    assert out["clean_loss"].shape == (4, 2)
    assert np.all(out["clean_loss"][-1] < out["clean_loss"][0])
    assert np.all(np.isfinite(out["final_sharpness"])) and np.all(out["final_sharpness"] > 0)


def test_sharpness_is_the_top_dense_eigenvalue():
    """The Lanczos sharpness used for the final models agrees with a dense eigensolver."""
    model = sm.build_sequence_model("rnn", 2, 3, 2, width=3, seed=0)
    teacher = sm.SequenceTeacher("rnn", 2, 3, (1.0, 0.25), width=3)
    x = torch.randn(32, 3, 2, dtype=torch.float64)
    y = teacher.clean(x)
    from instabilities import curvature
    from instabilities.models import FlatModel

    fm = FlatModel(model)
    obj = lambda th: 0.5 * (fm(th, x) - y).pow(2).sum(-1).mean()  # noqa: E731
    dense = torch.linalg.eigvalsh(curvature.dense_hessian(obj, fm.theta0))[-1]
    assert curvature.sharpness(obj, fm.theta0, tol=1e-8) == pytest.approx(float(dense), rel=1e-6)


def test_divergence_recorded_and_bad_input():
    covs = torch.stack([ln.noise_covariance(1.0)] * 2)
    with pytest.raises(ConfigError, match="shape"):
        sm.train_sequence_label_noise("mlp", covs[:1], [0, 1], 0.1, 100)
    with pytest.raises(ConfigError, match="arch"):
        sm.build_sequence_model("lstm", 3, 6, 2)
    out = sm.train_sequence_label_noise(
        "mlp", covs, [0, 1], 50.0, 100, width=8, snapshot_every=50, final_window=1, n_eval=32
    )
    assert out["diverged"].all() and np.isnan(out["final_sharpness"]).all()
