#!/usr/bin/env bash
# The test command of README (`make test`), in this order:
#  0. ruff check and ruff format --check (lint and format rules in pyproject.toml);
#  1. unit tests of lib (pytest tests, without the website checks);
#  2. every chapter under nbval: `make book` already executed each chapter once under nbval
#     (scripts/execute_chapters.sh) and recorded the results in _build/executed/nbval.json; a chapter's
#     entry is accepted when it passed and nothing it depends on has changed since (notebook, lib/,
#     results/full/, requirements); the other chapters (failed, changed, never run) are executed here;
#  3. the website checks (tests/test_website.py: links, build log, local MathJax, downloads, leftover
#     TeX, launch buttons, figures, the student edition, and every page in headless Chromium at desktop
#     and phone widths; they need the site that `make book` built).
# pytest exits 5 when it collects no test; that is a failure here, because every suite must have tests.
# Set FORCE_NBVAL=1 to execute every chapter even when the record is current.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
t0=$(date +%s)
status=0
# 0. lint and format (rules in pyproject.toml): the library, tests, benchmarks and scripts
lint_status=0
$BIN/ruff check . || lint_status=1
$BIN/ruff format --check . || lint_status=1
# The library tests in LIB_JOBS processes (default: the number of cores, at most 4), split by file.
cores=$(nproc 2>/dev/null || echo 2)
LIB_JOBS=${LIB_JOBS:-$(( cores < 4 ? cores : 4 ))}
mkdir -p _build
mapfile -t groups < <($BIN/python - "$LIB_JOBS" <<'PY'
import sys
from pathlib import Path
n = int(sys.argv[1])
files = sorted(p for p in Path("tests").glob("test_*.py") if p.name != "test_website.py")
# weight: file size, and the stand-in chapter executions count as much as a large file
weight = {f: f.stat().st_size * (8 if f.name == "test_chapters_with_full_results.py" else 1) for f in files}
groups, load = [[] for _ in range(n)], [0] * n
for f in sorted(files, key=lambda f: -weight[f]):
    i = load.index(min(load))
    groups[i].append(str(f))
    load[i] += weight[f]
for g in groups:
    if g:
        print(" ".join(g))
PY
)
pids=()
for i in "${!groups[@]}"; do
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $BIN/python -m pytest -q -p no:cacheprovider ${groups[$i]} \
    > "_build/libtests-$i.log" 2>&1 &
  pids+=($!)
done
for i in "${!pids[@]}"; do
  rc=0; wait "${pids[$i]}" || rc=$?
  cat "_build/libtests-$i.log"
  if [ "$rc" -eq 5 ]; then echo "pytest collected no library tests in group $i (exit 5)"; fi
  if [ "$rc" -ne 0 ]; then status=1; fi
done
if [ "${#pids[@]}" -eq 0 ]; then echo "no library test files found"; status=5; fi
t1=$(date +%s)
book_status=0
if [ "${FORCE_NBVAL:-0}" = "0" ]; then
  mapfile -t stale < <($BIN/python scripts/nbval_save.py stale _build/executed/nbval.json book/*.ipynb)
else
  stale=(book/*.ipynb)
fi
if [ "${#stale[@]}" -eq 0 ]; then
  $BIN/python scripts/nbval_save.py current _build/executed/nbval.json book/*.ipynb
  echo "chapters: nbval results of this tree's \`make book\` reused (see _build/executed/nbval.json)"
else
  echo "chapters to execute under nbval (not run, failed or changed since \`make book\`): ${stale[*]}"
  bash scripts/execute_chapters.sh "${stale[@]}" || book_status=$?
fi
t2=$(date +%s)
site_status=0
$BIN/python -m pytest tests/test_website.py -q -p no:cacheprovider -rs || site_status=$?
t3=$(date +%s)
echo "times: library tests $((t1 - t0)) s, chapters $((t2 - t1)) s, website checks $((t3 - t2)) s"
if [ "$lint_status" -ne 0 ] || [ "$status" -ne 0 ] || [ "$book_status" -ne 0 ] || [ "$site_status" -ne 0 ]; then
  echo "FAILED: lint exit $lint_status, library tests exit $status, chapters exit $book_status, website checks exit $site_status"
  exit 1
fi
echo "all tests passed"
