"""Every resumable experiment can checkpoint: a tiny config at scale ``full`` runs through the checkpoint path.

``ci`` runs never checkpoint, so a broken checkpoint call in a run function (as ``eos_momentum`` once had) only
shows up in a full-scale run; this runs that code path at toy size in a temporary results folder.
"""

from __future__ import annotations

import functools

import numpy as np

from instabilities import experiments
from instabilities.experiments import eos


def test_eos_momentum_full_scale_run_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path))
    cfg = experiments.config("eos_momentum", "ci").replace(
        scale="full", n_train=64, widths=(8,), steps=6, eig_every=3, etas_heavy_ball=(0.3,), etas_nesterov=(0.3,)
    )
    run = experiments.get("eos_momentum").run
    assert isinstance(run, functools.partial) and run.keywords.get("name") == "eos_momentum"
    out = eos.run_eos_momentum(cfg, "cpu", None, name="eos_momentum")
    assert np.all(np.isfinite(out["train_loss"]))
    assert (tmp_path / "checkpoints" / "full" / "eos_momentum").exists(), "no checkpoint folder was written"
