#!/usr/bin/env bash
# Run the book's GPU work on a machine lent for a limited time (commands of at most ~10 minutes, a few
# of them, no internet there). Three verbs:
#
#   scripts/gpu_session.sh prepare             # HERE, with internet: wheels the GPU machine lacks -> .whl/
#   scripts/gpu_session.sh device [SECONDS]    # THERE, in a copy of the repo: benchmarks (first call only),
#                                              # then `reproduce --scale full --time-budget SECONDS`, and
#                                              # everything produced packed into $OUT (default _build/gpu_session)
#   scripts/gpu_session.sh unpack DIR          # HERE: unpack DIR/state.tgz (results/full, checkpoints/,
#                                              # benchmarks/results) into the repo
#
# `reproduce` skips current results and resumable experiments continue from their checkpoints, so the
# same `device` call is simply repeated (carrying `checkpoints` and `.whl`) until it exits 0. Exit status
# of `device`: that of reproduce (0 done, 1 some experiment failed or lacked data, 3 time budget used up).
# The GPU image is assumed to have torch, numpy, scipy, scikit-learn and matplotlib (it does:
# see the device notes); only mnist1d is carried. Nothing here is needed on a CPU machine.
# For a smoke test of `device` on a CPU: GPU_SESSION_DEVICE=cpu GPU_SESSION_SKIP_BENCH=1 PYTHON=.venv/bin/python.
set -uo pipefail
cd "$(dirname "$0")/.."
verb="${1:-}"

case "$verb" in
prepare)
  PY="${PY:-.venv/bin/python}"
  [ -x "$PY" ] || PY=python3
  mkdir -p .whl
  grep -q '^\.whl/' .gitignore || { echo ".whl/ must be git-ignored" >&2; exit 2; }
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl "$(grep '^mnist1d==' requirements.txt)" || exit 1
  ls -l .whl
  ;;
device)
  budget="${2:-450}"
  OUT="${OUT:-_build/gpu_session}"
  dev="${GPU_SESSION_DEVICE:-cuda}"
  py="${PYTHON:-python3}"
  mkdir -p "$OUT" /tmp/site
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  fi
  ln -sfn "$PWD/lib" /tmp/site/instabilities   # the package without pip install -e (no setuptools needed)
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$py" -c "import torch, instabilities; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  } 2>&1 | tee "$OUT/device.txt"
  if [ "$dev" = cuda ]; then
    "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "no CUDA device" >&2; exit 2; }
  fi
  mkdir -p benchmarks/results
  if [ -z "${GPU_SESSION_SKIP_BENCH:-}" ] && [ ! -f "benchmarks/results/tracking_$dev.json" ]; then
    # benchmarks once (their JSON files travel back and mark them done)
    t0=$SECONDS
    "$py" benchmarks/bench_population.py --device "$dev" --members 64 --steps 1000 --n-train 1000 \
      --json "benchmarks/results/population_$dev.json" 2>&1 | tee "$OUT/bench_population.txt"
    "$py" benchmarks/bench_eigensolvers.py --device "$dev" --json "benchmarks/results/eigensolvers_$dev.json" \
      2>&1 | tee "$OUT/bench_eigensolvers.txt"
    "$py" benchmarks/bench_tracking.py --device "$dev" --json "benchmarks/results/tracking_$dev.json" \
      2>&1 | tee "$OUT/bench_tracking.txt"
    # the book's full-scale EoS network (2x200 tanh, 4000 mnist1d examples), and the canonical fc-tanh
    # CIFAR-10 5k setting when a local CIFAR-10 copy was carried along (data/cifar-10-batches-py)
    "$py" benchmarks/bench_tracking.py --device "$dev" --dataset mnist1d --n-train 4000 --width 200 --lr 0.1 \
      --warm-steps 2000 --json "benchmarks/results/tracking_mnist1d_4k_$dev.json" 2>&1 | tee -a "$OUT/bench_tracking.txt"
    if [ -f data/cifar-10-batches-py/test_batch ]; then
      "$py" benchmarks/bench_tracking.py --device "$dev" --dataset cifar10 --n-train 5000 --width 200 --lr 0.02 \
        --warm-steps 2000 --json "benchmarks/results/tracking_cifar5k_$dev.json" 2>&1 | tee -a "$OUT/bench_tracking.txt"
    fi
    echo "benchmarks took $((SECONDS - t0)) s" | tee -a "$OUT/device.txt"
    budget=$((budget - (SECONDS - t0)))
    [ "$budget" -gt 30 ] || budget=30
  fi
  "$py" -m instabilities reproduce --scale full --device "$dev" --time-budget "$budget" 2>&1 | tee "$OUT/reproduce.log"
  rc=${PIPESTATUS[0]}
  "$py" -m instabilities status --scale full | tee "$OUT/status.txt"
  tar czf "$OUT/state.tgz" results/full benchmarks/results $( [ -d checkpoints ] && echo checkpoints )
  size=$(stat -c %s "$OUT/state.tgz")
  if [ "$size" -gt $((15 * 1024 * 1024)) ]; then  # the lending tool returns files of at most 16 MiB
    split -b 15M -d "$OUT/state.tgz" "$OUT/state.tgz.part" && rm "$OUT/state.tgz"
  fi
  echo "reproduce exit status $rc (0 done, 1 failures, 3 time budget used up: call again)"
  exit "$rc"
  ;;
unpack)
  dir="${2:?give the folder that holds state.tgz (or state.tgz.partNN)}"
  if [ -f "$dir/state.tgz" ]; then
    tar xzf "$dir/state.tgz"
  else
    cat "$dir"/state.tgz.part* | tar xz
  fi
  .venv/bin/python -m instabilities status --scale full
  ;;
*)
  sed -n '2,19p' "$0" >&2
  exit 2
  ;;
esac
