"""Command line: ``python -m instabilities {list,status,run,reproduce}``.

* ``list``                          experiments with their chapter and description;
* ``status [--scale full]``         stored results: current, STALE (config) / STALE (code) when the
  config or the code of the experiment changed since, missing, or CORRUPT (unreadable file);
* ``run NAME [--scale S] [--device D] [--force]``   run one experiment and store it with provenance
  (a CORRUPT stored file is only overwritten with ``--force``);
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

Bad input (unknown experiment or device, invalid config) is one line on stderr and exit status 2;
so is ``run NAME`` on a CORRUPT stored file without ``--force``.
This module is argument parsing and the time-budget loop only; storing, checkpoints, the plan and
the timing table are :mod:`instabilities.experiments.reproduce`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback

from . import experiments
from .config import ConfigError, require_device
from .experiments import reproduce

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
    """The device asked for, checked against this machine (ConfigError otherwise); default cuda when available."""
    if name:
        return require_device(name)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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


def _reproduce(
    todo: list[str], scale: str, device: str, force: bool, write_timings: bool, time_budget: float | None = None
) -> int:
    rows: list[tuple[str, str, float]] = []
    failures: list[str] = []
    t_all = time.perf_counter()
    deadline = None if time_budget is None else t_all + time_budget
    disarm = _alarm(None if time_budget is None else time_budget + ALARM_GRACE_SECONDS)
    out_of_time = bad_input = False
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
            missing = reproduce.missing_data(cfg)
            if missing:
                msg = "; ".join(missing)
                print(f"{tag}: SKIPPED, data missing: {msg}")
                rows.append((name, "skipped: data missing", 0.0))
                failures.append(name)
                continue
            t0 = time.perf_counter()
            try:
                res, computed = reproduce.run_and_store(name, scale, device, _bar(tag, deadline), force=force)
            except TimeBudgetExceeded:
                dt = time.perf_counter() - t0
                if experiments.get(name).resumable:  # the row shows the running total of all parts so far
                    so_far = reproduce.attempts(name, cfg)
                    what = f"checkpoint kept, resumes; {so_far['parts']} part(s) so far"
                    seconds = max(so_far["seconds"], dt)
                else:
                    what, seconds = "not resumable, restarts", dt
                print(f"\n{tag}: INTERRUPTED by the time budget after {dt:.1f} s ({what}, {seconds:.1f} s in all)")
                rows.append((name, f"interrupted: time budget ({what})", seconds))
                out_of_time = True
                continue
            except reproduce.CorruptResultError as err:
                print(f"{tag}: SKIPPED, {err}")
                rows.append((name, "skipped: stored result corrupt", 0.0))
                failures.append(name)
                continue
            except ConfigError as err:  # bad input: one line, no traceback
                print(f"{tag}: FAILED, {err}")
                rows.append((name, "failed: ConfigError", time.perf_counter() - t0))
                failures.append(name)
                bad_input = True
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
                reproduce.clear_checkpoints(name, scale)
                rows.append((name, "computed", float(res.provenance.get("wall_seconds") or dt)))
            else:
                rows.append((name, "current, skipped", float(res.provenance.get("wall_seconds") or 0.0)))
            print(f"{tag}: {'computed' if computed else 'already current'} in {dt:.1f} s -> {res.path}")
    finally:
        disarm()
        if write_timings and rows:
            total = time.perf_counter() - t_all
            out = reproduce.write_timings(scale, device, rows, total)
            print(f"total {total:.1f} s; timings in {out}")
    if out_of_time:
        left = [n for n, st, _ in rows if st.startswith(("interrupted", "not started"))]
        print(
            f"time budget of {time_budget:.0f} s used up; not finished: {', '.join(left)}. "
            "Run the same command again to continue.",
            file=sys.stderr,
        )
        return EXIT_TIME_BUDGET
    if failures:
        print(f"{len(failures)} experiment(s) not reproduced: {', '.join(failures)}", file=sys.stderr)
        return 2 if bad_input else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except ConfigError as err:  # unknown experiment or device, an invalid registered config, ...
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m instabilities", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    st = sub.add_parser("status")
    st.add_argument("--scale", default="full", choices=["ci", "full"])
    r = sub.add_parser("run")
    r.add_argument("name")
    for p in (r, rp := sub.add_parser("reproduce")):
        p.add_argument("--scale", default="full", choices=["ci", "full"])
        p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
        p.add_argument("--force", action="store_true", help="recompute even if a current result exists")
    rp.add_argument("--only", default="", help="comma-separated experiment names")
    rp.add_argument("--dry-run", action="store_true", help="print what would run and exit")
    rp.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"stop after this many seconds (exit status {EXIT_TIME_BUDGET}: run again to continue)",
    )
    args = parser.parse_args(argv)

    if args.cmd == "list":
        for name in experiments.names():
            e = experiments.get(name)
            print(f"{name:28s} {e.chapter:22s} {e.description}")
        return 0
    if args.cmd == "status":
        for name in experiments.names():
            s = experiments.stored(name, args.scale)  # never raises: a bad file is CORRUPT
            p = s.provenance
            extra = f"{p.get('created', '')} {p.get('device', '')}" if s.status != "corrupt" else s.reason
            print(f"{name:32s} {s.label:22s} {extra}".rstrip())
        return 0
    todo = [args.name] if args.cmd == "run" else ([n for n in args.only.split(",") if n] or experiments.names())
    for name in todo:
        experiments.get(name)  # unknown names fail early (ConfigError, one line), listing the known ones
    if args.cmd == "reproduce" and args.dry_run:
        rows = reproduce.plan(args.scale, todo, args.force)
        for row in rows:
            print(f"{row['action']:4s}  {row['name']:28s} {row['label']:22s} {row['reason']}")
        n_run = sum(r["action"] == "run" for r in rows)
        print(f"{n_run} of {len(rows)} experiment(s) would run (scale {args.scale}).")
        return 0
    device = _default_device(args.device)  # an unavailable device: ConfigError naming those available
    if args.cmd == "run" and not args.force:
        st = experiments.stored(args.name, args.scale)
        if st.status == "corrupt":
            print(
                f"error: the stored result {st.path} is CORRUPT ({st.reason}); rerun with --force to overwrite it.",
                file=sys.stderr,
            )
            return 2
    budget = getattr(args, "time_budget", None)
    if budget is not None and budget <= 0:
        print(f"error: --time-budget must be positive seconds, got {budget}", file=sys.stderr)
        return 2
    return _reproduce(todo, args.scale, device, args.force, write_timings=args.cmd == "reproduce", time_budget=budget)
