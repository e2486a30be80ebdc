"""Command line: ``python -m instabilities {list,status,run,reproduce}``.

* ``list``                          experiments with their chapter and description;
* ``status [--scale full]``         stored results: current, STALE (config changed) or missing;
* ``run NAME [--scale S] [--device D] [--force]``   run one experiment and store it with provenance;
* ``reproduce [--scale full] [--device cuda] [--only A,B] [--dry-run]``   every experiment in turn,
  skipping current results (so an interrupted reproduction resumes where it stopped; experiments
  registered as resumable also continue from their own checkpoints), with a progress bar and a
  timing table written to ``results/<scale>/TIMINGS.md``. An experiment whose data is missing
  (CIFAR-10 is never downloaded) or that fails is skipped with a message; the others still run,
  and the command exits with status 1 at the end. ``--dry-run`` only prints the plan.
  ``--time-budget SECONDS`` stops the reproduction after that long (for machines lent for a limited
  time, e.g. 10-minute commands): the running experiment is interrupted at its next progress report
  (or, failing that, 45 s later by an alarm), keeps its checkpoints if it is resumable, and the
  command exits with status 3, meaning "run the same command again to continue".
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback

from . import experiments
from .config import ConfigError
from .results import atomic_write_bytes, device_description, git_commit, results_dir


EXIT_TIME_BUDGET = 3  # reproduce stopped at --time-budget: run the same command again to continue
ALARM_GRACE_SECONDS = 45.0  # an experiment that reports no progress is interrupted this long after the budget


class TimeBudgetExceeded(BaseException):
    """Raised inside a running experiment when ``reproduce --time-budget`` has run out.

    A ``BaseException`` (like ``KeyboardInterrupt``), so that no ``except Exception`` inside the
    library swallows it.
    """


def _bar(prefix: str, deadline: float | None = None):
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if deadline is not None and now > deadline:
            raise TimeBudgetExceeded(f"time budget used up during {prefix}")
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


def _write_timings(scale: str, device: str, rows: list[tuple[str, str, float]], total: float) -> str:
    """Write ``results/<scale>/TIMINGS.md``: this invocation's rows, then every other experiment whose
    stored result is current (with the seconds and device recorded in its provenance), so that a
    reproduction done in several invocations, or partly on other machines, keeps one complete table."""
    out = results_dir(scale) / "TIMINGS.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    seen = {n for n, _, _ in rows}
    others = []
    for name in experiments.names():
        if name in seen:
            continue
        stored = experiments.stored(name, scale)
        if stored.available:
            others.append((name, "current, not run by this invocation", float(stored.provenance.get("wall_seconds") or 0.0)))

    def where(name: str, status: str) -> str:
        if status.startswith(("current", "computed")):
            stored = experiments.stored(name, scale)
            if stored.available:
                return str(stored.provenance.get("device", ""))
        return ""

    all_rows = rows + others
    lines = [f"# Timings of `python -m instabilities reproduce --scale {scale}`", "",
             f"Last invocation: {device_description(device)}; commit {git_commit()[:12]}; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "Seconds of a result that was not computed by the last invocation are those recorded in its "
             "provenance (all parts of a resumed run added up), on the device named in the row.", "",
             "| experiment | status | seconds | device |", "|---|---|---|---|"]
    lines += [f"| {n} | {st} | {d:.1f} | {where(n, st)} |" for n, st, d in all_rows]
    lines += ["", f"Sum of the seconds above: {sum(d for _, _, d in all_rows):.1f} s. "
              f"Total wall time of the last invocation: {total:.1f} s"]
    atomic_write_bytes(out, ("\n".join(lines) + "\n").encode())
    return str(out)


def _alarm(seconds: float | None):
    """Arm SIGALRM to raise :class:`TimeBudgetExceeded` after ``seconds`` (no-op where unsupported)."""
    if seconds is None or not hasattr(signal, "setitimer"):
        return lambda: None

    def handler(signum, frame):
        raise TimeBudgetExceeded("time budget used up (alarm)")

    try:
        previous = signal.signal(signal.SIGALRM, handler)
    except ValueError:  # not the main thread
        return lambda: None
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))

    def disarm() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    return disarm


def _reproduce(todo: list[str], scale: str, device: str, force: bool, write_timings: bool,
               time_budget: float | None = None) -> int:
    rows: list[tuple[str, str, float]] = []
    failures: list[str] = []
    t_all = time.perf_counter()
    deadline = None if time_budget is None else t_all + time_budget
    disarm = _alarm(None if time_budget is None else time_budget + ALARM_GRACE_SECONDS)
    out_of_time = False
    try:
        for i, name in enumerate(todo, 1):
            tag = f"[{i}/{len(todo)}] {name}"
            cfg = experiments.config(name, scale)
            if out_of_time or (deadline is not None and time.perf_counter() > deadline):
                stored = experiments.stored(name, scale)
                if stored.available and not force:  # listed with its recorded cost, as without a budget
                    rows.append((name, "current, skipped", float(stored.provenance.get("wall_seconds") or 0.0)))
                else:
                    out_of_time = True
                    rows.append((name, "not started: time budget", 0.0))
                continue
            missing = experiments.missing_data(cfg)
            if missing:
                msg = "; ".join(missing)
                print(f"{tag}: SKIPPED, data missing: {msg}")
                rows.append((name, "skipped: data missing", 0.0))
                failures.append(name)
                continue
            t0 = time.perf_counter()
            try:
                res, computed = experiments.run_and_store(name, scale, device, _bar(tag, deadline), force=force)
            except TimeBudgetExceeded:
                resumable = experiments.get(name).resumable
                what = "checkpoint kept, resumes" if resumable else "not resumable, restarts"
                print(f"\n{tag}: INTERRUPTED by the time budget after {time.perf_counter() - t0:.1f} s ({what})")
                rows.append((name, f"interrupted: time budget ({what})", time.perf_counter() - t0))
                out_of_time = True
                continue
            except FileNotFoundError as err:  # a loader found no local copy of its data
                print(f"{tag}: SKIPPED, data missing: {err}")
                rows.append((name, "skipped: data missing", 0.0))
                failures.append(name)
                continue
            except Exception as err:  # noqa: BLE001 - report and go on with the other experiments
                traceback.print_exc()
                print(f"{tag}: FAILED after {time.perf_counter() - t0:.1f} s: {type(err).__name__}: {err}")
                rows.append((name, f"failed: {type(err).__name__}", time.perf_counter() - t0))
                failures.append(name)
                continue
            dt = time.perf_counter() - t0
            if computed:
                experiments.clear_checkpoints(name, scale)
                rows.append((name, "computed", float(res.provenance.get("wall_seconds") or dt)))
            else:
                rows.append((name, "current, skipped", float(res.provenance.get("wall_seconds") or 0.0)))
            print(f"{tag}: {'computed' if computed else 'already current'} in {dt:.1f} s -> {res.path}")
    finally:
        disarm()
        if write_timings and rows:
            total = time.perf_counter() - t_all
            out = _write_timings(scale, device, rows, total)
            print(f"total {total:.1f} s; timings in {out}")
    if out_of_time:
        left = [n for n, st, _ in rows if st.startswith(("interrupted", "not started"))]
        print(f"time budget of {time_budget:.0f} s used up; not finished: {', '.join(left)}. "
              "Run the same command again to continue.", file=sys.stderr)
        return EXIT_TIME_BUDGET
    if failures:
        print(f"{len(failures)} experiment(s) not reproduced: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m instabilities", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    st = sub.add_parser("status")
    st.add_argument("--scale", default="full", choices=["ci", "full"])
    r = sub.add_parser("run")
    r.add_argument("name")
    for p in (r, rp := sub.add_parser("reproduce")):
        p.add_argument("--scale", default="full", choices=["ci", "full"])
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
        p.add_argument("--force", action="store_true", help="recompute even if a current result exists")
    rp.add_argument("--only", default="", help="comma-separated experiment names")
    rp.add_argument("--dry-run", action="store_true", help="print what would run and exit")
    rp.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                    help=f"stop after this many seconds (exit status {EXIT_TIME_BUDGET}: run again to continue)")
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
    todo = [args.name] if args.cmd == "run" else ([n for n in args.only.split(",") if n] or experiments.names())
    try:
        for name in todo:
            experiments.get(name)  # unknown names fail early, listing the known ones
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.cmd == "reproduce" and args.dry_run:
        rows = experiments.plan(args.scale, todo, args.force)
        for row in rows:
            print(f"{row['action']:4s}  {row['name']:28s} {row['status']:8s} {row['reason']}")
        n_run = sum(r["action"] == "run" for r in rows)
        print(f"{n_run} of {len(rows)} experiment(s) would run (scale {args.scale}).")
        return 0
    device = _default_device(args.device)
    budget = getattr(args, "time_budget", None)
    if budget is not None and budget <= 0:
        print(f"error: --time-budget must be positive seconds, got {budget}", file=sys.stderr)
        return 2
    return _reproduce(todo, args.scale, device, args.force, write_timings=args.cmd == "reproduce",
                      time_budget=budget)
