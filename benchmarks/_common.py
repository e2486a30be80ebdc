"""Shared set-up of the benchmark scripts: command line, a problem at the edge of stability, JSON output."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from instabilities import results
from instabilities.models import ModelSpec
from instabilities.train import TrainConfig, build_problem, train


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run (default cpu)")
    p.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="also write every number printed (and the settings) to this JSON file",
    )
    return p


def header(name: str, device: str) -> None:
    where = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    print(f"# {name} | torch {torch.__version__} | {device}: {where} | {time.strftime('%Y-%m-%d %H:%M')}")


def eos_point(device: str, n_train: int, widths: tuple[int, ...], lr: float, steps: int, dataset: str = "digits"):
    """Objective and parameters after ``steps`` GD steps at ``lr`` (near the edge of stability)."""
    cfg = TrainConfig(
        dataset=dataset, n_train=n_train, n_test=100, model=ModelSpec(widths=widths), lr=lr, steps=steps, device=device
    )
    hist = train(cfg, keep_theta=True)
    prob = build_problem(cfg)
    theta = torch.as_tensor(hist.theta_final, device=device)
    return prob.hessian_objective, theta, cfg


def _plain(value):
    """JSON-friendly copy of ``value`` (numpy and torch scalars and arrays become Python numbers and lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(path: str | None, name: str, args: argparse.Namespace, payload: dict) -> None:
    """Write ``payload`` with provenance (script, arguments, device, torch, commit, time) to ``path``, atomically."""
    if not path:
        return
    record = {
        "benchmark": name,
        "argv": sys.argv,
        "args": vars(args),
        "device": results.device_description(args.device),
        "torch_version": torch.__version__,
        "commit": results.git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **_plain(payload),
    }
    results.atomic_write_bytes(Path(path), (json.dumps(record, indent=1, allow_nan=True) + "\n").encode())
    print(f"wrote {path}")
