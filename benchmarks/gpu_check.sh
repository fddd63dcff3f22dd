#!/usr/bin/env bash
# The GPU path of issue 18, measured in one go on a lent GPU machine (a few minutes of device time, so:
# one prepared script, short sizes, a time limit per item, every item's output kept even when one fails).
#
#   bash benchmarks/gpu_check.sh --wheels     # once, HERE (a machine with PyPI): the wheels the device lacks
#   bash benchmarks/gpu_check.sh              # on the GPU machine (device tool: carry ["build/gpu-wheels"])
#   SMOKE=1 bash benchmarks/gpu_check.sh      # every item on the CPU with tiny sizes: flags and entry points
#
# Items (each writes its file under $OUT, default benchmarks/out/gpu, or benchmarks/out/gpu-smoke with SMOKE=1):
#   1. 1-gpu.md          bench_gpu.py: ResNet-18 CIFAR-shaped epoch, engine vs bare loop in fp32 and bf16 +
#                        channels_last (goal ≤ 1.02×), + bf16 alone and + torch.compile, images/s
#   2. 2-fastpath.txt    tests/test_fastpath.py::test_the_step_loop_never_waits_for_the_gpu (skipped without CUDA)
#   3. 3-landscape.md    bench_landscape.py --device cuda: batched (vmap) surface vs one forward per point (goal ≥ 5×)
#   4. 4-terms.md        bench_terms.py --device cuda: PS-KD + BYOT + DMFL epoch / plain epoch (goals ≤ 1.3, ≤ 1.27)
#   5. 5-gpu-pack.md     bench_sweep.py --gpu-pack 1,2,4,8: demo trials sharing one GPU, wall time, trials/hour, memory
# plus summary.md (machine, versions, date, one line per item) and stderr.log (every item's stderr).
# The budgets below add up to about 8 minutes (the device tool allows 10 per command, 15 per session with
# the machine's start); expected on an H100 is about 5. An item that fails or runs out of time is recorded and
# the next one runs. Exit status: 0 when every item ran to its end (a skip counts), else 1; 3 when the
# environment is not usable (no torch, no CUDA without SMOKE=1, sdlab's imports failing).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SMOKE=${SMOKE:-0}
WHEELS=build/gpu-wheels  # build/ is git-ignored; the device tool carries it when `carry` names it

if [ "${1:-}" = "--wheels" ]; then
  # The device image has torch, numpy, scipy, scikit-learn, pytest, but not pyhessian, which sdcore.engine imports
  # (sdcore.analysis.hessian); it is pure Python (py3-none-any), so one small wheel. Pinned as requirements.txt pins it.
  pin=$(grep -io '^pyhessian==[^ #]*' requirements.txt) || { echo "no pyhessian pin in requirements.txt" >&2; exit 2; }
  py=.venv/bin/python; [ -x "$py" ] || py=python3
  mkdir -p "$WHEELS" && "$py" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" "$pin" || exit 2
  ls -l "$WHEELS"
  echo "now, on the GPU machine: bash benchmarks/gpu_check.sh   (device tool: carry [\"$WHEELS\"])"
  exit 0
fi

if [ "$SMOKE" = 1 ]; then OUT=${OUT:-benchmarks/out/gpu-smoke}; else OUT=${OUT:-benchmarks/out/gpu}; fi
mkdir -p "$OUT" || exit 3
: > "$OUT/stderr.log"
export PYTHONUNBUFFERED=1  # a killed item still leaves what it printed
# torch.compile's cache, fresh per check: an item killed mid-compilation can leave a truncated kernel in it, which a
# rerun on the same (warm) machine would load and fail on ("file too short", seen on this CPU).
TORCHINDUCTOR_CACHE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check-inductor.XXXXXX") || exit 3
export TORCHINDUCTOR_CACHE_DIR
trap 'rm -rf "$TORCHINDUCTOR_CACHE_DIR"' EXIT

# Python: the repo's .venv when there is one; else a python3 that already holds torch (a lent device machine:
# no internet, its python3 is the one with CUDA's torch), with the carried wheels beside it; else a new .venv
# made the way .ci/run makes it (needs PyPI).
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
elif python3 -c "import torch" 2>/dev/null; then
  PY=python3
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sdlab-site \
      "$WHEELS"/*.whl || { echo "gpu_check: installing $WHEELS/*.whl failed" >&2; exit 3; }
    export PYTHONPATH=/tmp/sdlab-site${PYTHONPATH:+:$PYTHONPATH}
  fi
else
  echo "gpu_check: no .venv and python3 has no torch: creating .venv as .ci/run does (needs PyPI)" >&2
  if ! { python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt -r requirements-dev.txt -e .; }; then
    rm -rf .venv  # half made: the next run tries again
    echo "gpu_check: torch is missing and .venv could not be made (no PyPI here?). On a lent device machine," \
         "python3 holds torch; elsewhere install requirements.txt into .venv first." >&2
    exit 3
  fi
  PY=.venv/bin/python
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}  # sdcore from this checkout, installed or not

"$PY" -c "import torch" 2>>"$OUT/stderr.log" || { echo "gpu_check: $PY cannot import torch" >&2; exit 3; }
if ! "$PY" -c "import sdcore.engine, sdcore.sweep, sdcore.analysis.landscape" 2>>"$OUT/stderr.log"; then
  echo "gpu_check: $PY cannot import sdlab ($(tail -n1 "$OUT/stderr.log")). For a lent device machine: run" \
       "'bash benchmarks/gpu_check.sh --wheels' on a machine with PyPI first, and carry $WHEELS." >&2
  exit 3
fi
if [ "$SMOKE" = 1 ]; then
  DEV=cpu
elif "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  DEV=cuda
else
  echo "gpu_check: torch sees no CUDA GPU here ($("$PY" -c 'import torch; print(torch.__version__)')); run it on a" \
       "GPU machine, or SMOKE=1 for the CPU smoke run" >&2
  exit 3
fi

{
  echo "## The GPU path (issue 18): benchmarks/gpu_check.sh$([ "$SMOKE" = 1 ] && echo ', SMOKE=1 (CPU, tiny sizes)')"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes, or no git here)')"
  echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'none (no nvidia-smi)')"
  "$PY" - <<'EOF'
import platform, os, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"device 0: {gpu}")
print(f"- Python {platform.python_version()} ({__import__('sys').executable}), "
      f"{os.cpu_count()} CPUs, {platform.machine()}")
EOF
} > "$OUT/summary.md" 2>>"$OUT/stderr.log"
cat "$OUT/summary.md"

ROWS=()
FAILED=0
# run_item N TITLE SECONDS FILE CMD...: CMD's stdout to $OUT/FILE, its stderr to stderr.log, killed after SECONDS
# (SIGTERM, then SIGKILL 15 s later: bench_gpu.py prints its partial table on SIGTERM).
run_item() {
  local n=$1 title=$2 limit=$3 file=$4
  shift 4
  echo
  echo "== $n. $title (limit ${limit} s): $*"
  printf '\n===== %s. %s: %s\n' "$n" "$title" "$*" >>"$OUT/stderr.log"
  local t0=$SECONDS rc
  timeout -k 15 "$limit" "$@" >"$OUT/$file" 2>>"$OUT/stderr.log"
  rc=$?
  local took=$((SECONDS - t0)) status last
  last=$(grep -v '^[[:space:]]*$' "$OUT/$file" | tail -n1 | cut -c1-220)
  case $rc in
    0) status=ok ;;
    124 | 137) status="TIMEOUT after ${limit} s (partial output kept)"; FAILED=1 ;;
    *) status="FAILED (exit $rc)"; FAILED=1
       last="$(grep -v '^[[:space:]]*$' "$OUT/stderr.log" | tail -n1 | cut -c1-220)" ;;
  esac
  if [ "$n" = 2 ]; then  # pytest: passed / skipped / failed from its last line ("1 passed, 3 skipped in 2.0s")
    if [ $rc = 0 ] && grep -q ' passed' <<<"$last"; then status=PASSED
    elif [ $rc = 0 ] && grep -q ' skipped' <<<"$last"; then
      status="SKIPPED ($(grep -m1 -o 'SKIPPED \[[0-9]*\] [^ ]*: .*' "$OUT/$file" | sed 's/^SKIPPED \[[0-9]*\] [^ ]*: //'))"
    elif [ $rc = 5 ]; then status="FAILED (no test collected: renamed?)"; FAILED=1
    elif [ $rc = 1 ]; then status="FAILED (a test failed)"; FAILED=1
    fi
    last=$(grep -v '^[[:space:]]*$' "$OUT/$file" | tail -n1 | cut -c1-220)
  fi
  echo "   -> $status, ${took} s"
  cat "$OUT/$file"
  ROWS+=("| $n. $title | $status | $took | ${last//|/\\|} |")
}

if [ "$SMOKE" = 1 ]; then
  run_item 1 "ResNet-18 epoch, engine vs bare loop" 120 1-gpu.md \
    "$PY" benchmarks/bench_gpu.py --device cpu --images 32 --epochs 1 --no-compile --max-seconds 60
  run_item 2 "the step loop never waits for the GPU" 120 2-fastpath.txt \
    "$PY" -m pytest -p no:cacheprovider -o addopts= -rA -q \
    "tests/test_fastpath.py::test_the_step_loop_never_waits_for_the_gpu"
  run_item 3 "landscape: vmap vs a loop per point" 120 3-landscape.md \
    "$PY" benchmarks/bench_landscape.py --device cpu --trials 1 --examples 64 --few 16 --grid 3
  run_item 4 "all terms / plain epoch" 120 4-terms.md \
    "$PY" benchmarks/bench_terms.py --device cpu --trials 1 --images 32
  run_item 5 "demo trials packed on one GPU" 120 5-gpu-pack.md \
    "$PY" benchmarks/bench_sweep.py --gpu-pack 1,2 --preset demo --set epochs=1 --set rounds=0 --set data.subset=192
else
  run_item 1 "ResNet-18 epoch, engine vs bare loop" 150 1-gpu.md \
    "$PY" benchmarks/bench_gpu.py --device cuda --images 9600 --epochs 3 --max-seconds 120
  run_item 2 "the step loop never waits for the GPU" 60 2-fastpath.txt \
    "$PY" -m pytest -p no:cacheprovider -o addopts= -rA -q \
    "tests/test_fastpath.py::test_the_step_loop_never_waits_for_the_gpu"
  run_item 3 "landscape: vmap vs a loop per point" 70 3-landscape.md \
    "$PY" benchmarks/bench_landscape.py --device cuda
  run_item 4 "all terms / plain epoch" 70 4-terms.md \
    "$PY" benchmarks/bench_terms.py --device cuda --images 2048 --trials 5
  run_item 5 "demo trials packed on one GPU" 130 5-gpu-pack.md \
    "$PY" benchmarks/bench_sweep.py --gpu-pack 1,2,4,8 --preset demo
fi

{
  echo
  echo "| item | status | seconds | last line of its output |"
  echo "|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "Whole check: ${SECONDS} s. Each item's output: $OUT/{1-gpu.md,2-fastpath.txt,3-landscape.md,4-terms.md,5-gpu-pack.md}; stderr: $OUT/stderr.log."
} >>"$OUT/summary.md"
echo
echo "===== summary ($OUT/summary.md)"
cat "$OUT/summary.md"
exit $FAILED
