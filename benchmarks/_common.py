"""Shared set-up of the benchmark scripts: a small problem driven to the edge of stability."""
from __future__ import annotations

import argparse
import platform
import time

import torch

from instabilities.models import ModelSpec
from instabilities.train import TrainConfig, build_problem, train


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run (default cpu)")
    return p


def header(name: str, device: str) -> None:
    where = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or platform.machine()}, " \
        f"{torch.get_num_threads()} threads"
    print(f"# {name} | torch {torch.__version__} | {device}: {where} | {time.strftime('%Y-%m-%d %H:%M')}")


def eos_point(device: str, n_train: int, widths: tuple[int, ...], lr: float, steps: int, dataset: str = "digits"):
    """Objective and parameters after ``steps`` GD steps at ``lr`` (near the edge of stability)."""
    cfg = TrainConfig(dataset=dataset, n_train=n_train, n_test=100, model=ModelSpec(widths=widths), lr=lr,
                      steps=steps, device=device)
    hist = train(cfg, keep_theta=True)
    prob = build_problem(cfg)
    theta = torch.as_tensor(hist.theta_final, device=device)
    return prob.hessian_objective, theta, cfg
