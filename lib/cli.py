"""Command line: ``python -m instabilities {list,status,run,reproduce}``.

* ``list``                          experiments with their chapter and description;
* ``status [--scale full]``         stored results: current, STALE (config changed) or missing;
* ``run NAME [--scale S] [--device D] [--force]``   run one experiment and store it with provenance;
* ``reproduce [--scale full] [--device cuda] [--only A,B]``   every experiment in turn, skipping
  current results (so an interrupted reproduction resumes where it stopped), with a progress bar
  and a timing table written to ``results/<scale>/TIMINGS.md``.
"""
from __future__ import annotations

import argparse
import sys
import time

from . import experiments
from .results import results_dir


def _bar(prefix: str):
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - last[0] < 0.5:
            return
        last[0] = now
        width = 30
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\r{prefix} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return progress


def _default_device(name: str | None) -> str:
    if name:
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m instabilities", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    st = sub.add_parser("status")
    st.add_argument("--scale", default="full")
    r = sub.add_parser("run")
    r.add_argument("name")
    for p in (r, rp := sub.add_parser("reproduce")):
        p.add_argument("--scale", default="full", choices=["ci", "full"])
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
        p.add_argument("--force", action="store_true", help="recompute even if a current result exists")
    rp.add_argument("--only", default="", help="comma-separated experiment names")
    args = parser.parse_args(argv)

    if args.cmd == "list":
        for name in experiments.names():
            e = experiments.get(name)
            print(f"{name:28s} {e.chapter:22s} {e.description}")
        return 0
    if args.cmd == "status":
        for name in experiments.names():
            s = experiments.stored(name, args.scale)
            print(f"{name:28s} {s.status:8s} {s.provenance.get('created', '')} {s.provenance.get('device', '')}")
        return 0
    device = _default_device(args.device)
    todo = [args.name] if args.cmd == "run" else (
        [n for n in args.only.split(",") if n] or experiments.names())
    rows = []
    t_all = time.perf_counter()
    for i, name in enumerate(todo, 1):
        t0 = time.perf_counter()
        res, computed = experiments.run_and_store(name, args.scale, device, _bar(f"[{i}/{len(todo)}] {name}"),
                                                  force=args.force)
        dt = time.perf_counter() - t0
        rows.append((name, "computed" if computed else "current, skipped", dt))
        print(f"[{i}/{len(todo)}] {name}: {'computed' if computed else 'already current'} in {dt:.1f} s -> {res.path}")
    if args.cmd == "reproduce":
        total = time.perf_counter() - t_all
        out = results_dir(args.scale) / "TIMINGS.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"# Timings of `python -m instabilities reproduce --scale {args.scale}` on {device}", "",
                 "| experiment | status | seconds |", "|---|---|---|"]
        lines += [f"| {n} | {s} | {d:.1f} |" for n, s, d in rows]
        lines += ["", f"Total: {total:.1f} s"]
        out.write_text("\n".join(lines) + "\n")
        print(f"total {total:.1f} s; timings in {out}")
    return 0
