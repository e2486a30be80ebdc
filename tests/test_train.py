import numpy as np
import pytest
import torch

from instabilities import models, train
from instabilities.config import ConfigError

SMALL = dict(dataset="digits", n_train=120, n_test=40, model=models.ModelSpec(widths=(10,)))


def test_gd_decreases_loss_and_tracks_sharpness():
    cfg = train.TrainConfig(**SMALL, lr=0.05, steps=60, eig_every=20, n_eigs=2, eval_every=30)
    h = train.train(cfg)
    assert len(h.train_loss) == 61 and h.step[-1] == 60
    assert h.train_loss[-1] < h.train_loss[0]
    assert h.eig_step == [0, 20, 40, 60]
    eigs = np.asarray(h.eigs)
    assert eigs.shape == (4, 2) and np.all(eigs[:, 0] >= eigs[:, 1])
    assert np.all(np.asarray(h.eig_residuals) < 1e-2 * eigs[:, :1])
    assert h.eval_step == [0, 30, 60] and not h.diverged
    arrays = h.as_arrays()
    assert arrays["eigs"].shape == (4, 2) and arrays["diverged"] == False  # noqa: E712


def test_divergence_is_recorded_not_raised():
    cfg = train.TrainConfig(**SMALL, lr=50.0, steps=200)
    h = train.train(cfg)
    assert h.diverged and 0 < h.diverged_step < 200
    assert len(h.train_loss) == h.diverged_step + 1


def test_sgd_uses_minibatches_and_is_seeded():
    cfg = train.TrainConfig(**SMALL, optimizer="sgd", batch_size=16, lr=0.05, steps=30)
    a, b = train.train(cfg), train.train(cfg)
    assert a.train_loss == b.train_loss
    c = train.train(cfg.replace(seed=1))
    assert c.train_loss != a.train_loss
    gd = train.train(cfg.replace(optimizer="gd", batch_size=None))
    assert gd.train_loss != a.train_loss


def test_callbacks_see_optimizer_and_log():
    seen = []

    def cb(ctx):
        seen.append(ctx.step)
        ctx.history.log("theta_norm", float(ctx.theta.norm()))
        assert isinstance(ctx.optimizer, torch.optim.Optimizer)

    h = train.train(train.TrainConfig(**SMALL, lr=0.05, steps=5), callbacks=[cb])
    assert seen == [0, 1, 2, 3, 4, 5] and len(h.extra["theta_norm"]) == 6
    assert "extra_theta_norm" in h.as_arrays()


def test_resume_after_interruption(tmp_path):
    cfg = train.TrainConfig(**SMALL, optimizer="adam", lr=0.01, steps=30, eig_every=10)
    reference = train.train(cfg, keep_theta=True)
    ck = tmp_path / "run.pt"

    def interrupt(ctx):
        if ctx.step == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.train(cfg, checkpoint_path=ck, checkpoint_every=10, callbacks=[interrupt])
    assert torch.load(ck, weights_only=False)["step"] == 20
    resumed = train.train(cfg, checkpoint_path=ck, checkpoint_every=10, keep_theta=True)
    np.testing.assert_allclose(resumed.theta_final, reference.theta_final, rtol=1e-6, atol=1e-7)
    assert resumed.train_loss == pytest.approx(reference.train_loss, rel=1e-6)
    assert resumed.eig_step == reference.eig_step
    # a checkpoint of another config is refused with a clear message
    with pytest.raises(ConfigError, match="belongs to config"):
        train.train(cfg.replace(lr=0.02), checkpoint_path=ck, checkpoint_every=10)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(lr=0.0), "learning rate"),
        (dict(lr=-1.0), "learning rate"),
        (dict(dataset="imagenet"), "dataset"),
        (dict(loss="hinge"), "loss"),
        (dict(batch_size=10_000), "batch_size"),
        (dict(optimizer="lbfgs"), "optimizer"),
        (dict(batch_size=8), "optimizer='gd' is full batch"),
        (dict(device="tpu"), "device"),
        (dict(steps=0), "steps"),
    ],
)
def test_bad_configs_name_the_fix(bad, match):
    with pytest.raises(ConfigError, match=match):
        train.TrainConfig(**{**SMALL, **bad})


def test_cuda_request_without_gpu_is_clear():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA"):
        train.train(train.TrainConfig(**SMALL, device="cuda", steps=1))


def test_stop_acc_and_ce():
    h = train.train(train.TrainConfig(**SMALL, loss="ce", lr=0.5, steps=400, stop_acc=0.9))
    assert h.train_acc[-1] >= 0.9 and h.step[-1] < 400


@pytest.mark.parametrize(
    "changes", [dict(optimizer="nesterov", momentum=0.9), dict(optimizer="clipped_ada", clip=0.05)]
)
def test_train_steps_with_the_functional_rules_of_optim(changes):
    """train's torch optimizer is optim's rule: a hand loop of optim.update gives the same iterates."""
    from instabilities import optim

    cfg = train.TrainConfig(**SMALL, lr=0.01, steps=8, dtype="float64", **changes)
    hist = train.train(cfg, keep_theta=True)
    prob = train.build_problem(cfg)
    theta = prob.flat.theta0.clone()
    state = optim.init_state(cfg.optimizer, theta)
    hyper = {k: getattr(cfg, k) for k in ("lr", "momentum", "beta1", "beta2", "eps", "clip")}
    for _ in range(cfg.steps):
        theta = optim.update(cfg.optimizer, theta, torch.func.grad(prob.objective)(theta), state, hyper)
    np.testing.assert_allclose(hist.theta_final, theta.numpy(), rtol=1e-10, atol=1e-12)
    assert not np.allclose(hist.theta_final, prob.flat.theta0.numpy())
