#!/usr/bin/env bash
# Execute every chapter once under nbval (the test of every chapter), JOBS chapters at a time
# (default: the number of cores, at most 4), each kernel single-threaded. The executed notebooks and
# the results go to _build/executed/ (nbval.json: outcome, seconds and input fingerprint per chapter);
# the chapters that passed are put into the jupyter-cache that the website build reads, so
# `make html` does not execute them again. Exit status 1 if any chapter failed.
# Usage: scripts/execute_chapters.sh [--stale | book/X.ipynb ...]   (default: every chapter;
#        --stale: only those without a passing record for today's inputs)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=_build/executed
CACHE=_build/.jupyter_cache
mkdir -p "$OUT"
rm -f "$OUT"/record-*.json "$OUT"/nbval-*.log
if [ "${1:-}" = "--stale" ]; then
  # only the chapters not yet passed with today's inputs (after a `make book`, nothing changed: none)
  mapfile -t chapters < <($BIN/python scripts/nbval_save.py stale "$OUT/nbval.json" book/*.ipynb)
  if [ "${#chapters[@]}" -eq 0 ]; then echo "every chapter passed nbval with today's inputs: nothing to execute"; exit 0; fi
elif [ "$#" -gt 0 ]; then chapters=("$@"); else chapters=(book/*.ipynb); fi
cores=$(nproc 2>/dev/null || echo 2)
JOBS=${JOBS:-$(( cores < 4 ? cores : 4 ))}
start=$(date +%s)
mapfile -t groups < <($BIN/python scripts/nbval_save.py split "$JOBS" "$OUT/nbval.json" "${chapters[@]}")
pids=()
for i in "${!groups[@]}"; do
  # shellcheck disable=SC2086
  env -u MPLBACKEND BOOK_BUILD=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=scripts \
    $BIN/python -m pytest --nbval-lax --nbval-cell-timeout=600 -p no:cacheprovider -p nbval_save \
    --nbval-save-dir "$OUT" --nbval-save-record "$OUT/record-$i.json" -q ${groups[$i]} \
    > "$OUT/nbval-$i.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  rc=0; wait "${pids[$i]}" || rc=$?
  echo "--- nbval group $i (exit $rc): ${groups[$i]}"
  if [ "$rc" -eq 0 ]; then tail -n 2 "$OUT/nbval-$i.log"; else cat "$OUT/nbval-$i.log"; fi
  if [ "$rc" -ne 0 ]; then status=1; fi
done
echo "chapters executed in $(( $(date +%s) - start )) s with $JOBS jobs:"
$BIN/python scripts/nbval_save.py merge "$OUT" "$CACHE" || status=1
exit $status
