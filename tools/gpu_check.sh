#!/usr/bin/env bash
# GPU check of the native ops: build dlu_mm._C_torch<X>_<Y> with CUDA, run the op tests
# (tests/test_ops_native.py and tests/test_ops_generic.py, CUDA tests included) and the CUDA
# benchmark (native vs reference, fp32 and fp16, time, peak memory and % of a same-bytes clone),
# and print the benchmark table LAST.
#
# Made for a GPU box that has only torch (the device tool's nvidia-h100-x1 / nvidia-h200:
# Python 3.12, torch 2.11+cu130, nvcc 13.0, pytest preinstalled; no mmcv / mmengine, no network).
# Run from anywhere:   bash tools/gpu_check.sh [--cpu-only] [--no-build]
#                      (env: PYTHON, TORCH_CUDA_ARCH_LIST, MAX_JOBS, BENCH_ARGS, OUT)
#   --cpu-only  what needs no GPU (automatic when torch sees none): build with CUDA when nvcc
#               matches torch's CUDA, check that every op has CUDA kernels registered and that
#               the CUDA tests collect (pytest --collect-only -m cuda); no tests run, no benchmark.
#               Without a matching nvcc it says so and exits 0 (nothing CUDA to check).
#   --no-build  reuse the extension already built in place (CI: tools/dev.sh compiled it).
# If the box lacks pytest, carry it as wheels. On the dev machine, in the repo root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp -d .whl pytest pluggy iniconfig packaging
# and name `.whl` in the run's carry: this script installs .whl/*.whl into /tmp/site when the
# folder exists and pytest is missing.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CPU_ONLY=0
BUILD=1
for arg in "$@"; do
  case "$arg" in
    --cpu-only) CPU_ONLY=1 ;;
    --no-build) BUILD=0 ;;
    *) echo "usage: $0 [--cpu-only] [--no-build]" >&2; exit 2 ;;
  esac
done
TESTS="tests/test_ops_native.py tests/test_ops_generic.py"
LOGDIR=${OUT:-/tmp/dlu_gpu_check}
mkdir -p "$LOGDIR"
fail() { echo "gpu_check: FAILED: $*" >&2; exit 1; }

echo "== environment"
$PY - <<'PYEOF' || fail "torch is required"
import sys, torch
print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda)
if torch.cuda.is_available():
    print('device', torch.cuda.get_device_name(), '| capability', torch.cuda.get_device_capability())
else:
    print('device: none visible to torch')
PYEOF
if [ "$CPU_ONLY" -eq 0 ] && ! $PY -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  echo "no CUDA device: running the CPU-side checks only (--cpu-only)"
  CPU_ONLY=1
fi
command -v nvcc >/dev/null && nvcc --version | tail -n 1 || echo "nvcc not on PATH (torch's CUDA_HOME is used)"

if ! $PY -c "import pytest" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || fail "could not install the carried wheels in .whl/"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    fail "pytest is missing: carry it as wheels in .whl/ (see this script's header)"
  fi
fi

if [ "$CPU_ONLY" -eq 1 ]; then
  # the CUDA build needs an nvcc of torch's CUDA major version (setup.py's rule)
  match=$($PY - <<'PYEOF'
import os, re, shutil, subprocess, torch
from torch.utils.cpp_extension import CUDA_HOME
nvcc = os.path.join(CUDA_HOME, 'bin', 'nvcc') if CUDA_HOME else shutil.which('nvcc')
if torch.version.cuda is None:
    print('no: torch is a CPU-only build')
elif not nvcc or not os.path.exists(nvcc):
    print('no: nvcc not found')
else:
    release = re.search(r'release (\d+)\.(\d+)', subprocess.run(
        [nvcc, '--version'], capture_output=True, text=True).stdout)
    same = release and release.group(1) == torch.version.cuda.split('.')[0]
    print('yes' if same else f'no: nvcc {release and release.group(0)} vs torch CUDA '
          f'{torch.version.cuda}')
PYEOF
)
  if [ "$match" != yes ]; then
    echo "gpu_check: SKIPPED the CUDA build checks ($match)"
    exit 0
  fi
fi

if [ "$BUILD" -eq 1 ]; then
  echo "== build (log: $LOGDIR/build.log)"
  start=$(date +%s)
  if ! DLU_MM_WITH_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} \
       MAX_JOBS=${MAX_JOBS:-$(nproc)} $PY setup.py build_ext --inplace >"$LOGDIR/build.log" 2>&1; then
    grep -n -E "error|Error" "$LOGDIR/build.log" | head -n 40 >&2 || true
    tail -n 30 "$LOGDIR/build.log" >&2
    fail "building dlu_mm._C_torch<X>_<Y> with CUDA"
  fi
  echo "built in $(( $(date +%s) - start )) s"
fi
$PY - <<'PYEOF' || fail "dlu_mm._C_torch<X>_<Y> has no CUDA kernels (build it with DLU_MM_WITH_CUDA=1)"
import torch
from dlu_mm.ops import native as compiled
assert compiled.LOAD_ERROR is None, compiled.LOAD_ERROR
# the dispatcher's table, not compiled.available: that one also needs a visible device's build
missing = [op for op in compiled.OPS
           if not all(torch._C._dispatch_has_kernel_for_dispatch_key(f'dlu_mm::{name}', 'CUDA')
                      for name in (op, f'{op}_backward'))]
assert not missing, f'no CUDA kernel registered for {missing}'
print('CUDA kernels registered:', ', '.join(compiled.OPS))
PYEOF

if [ "$CPU_ONLY" -eq 1 ]; then
  echo "== CUDA tests collected (not run: no GPU)"
  # shellcheck disable=SC2086
  $PY -m pytest -q -p no:cacheprovider --collect-only -m cuda $TESTS 2>&1 | tee "$LOGDIR/collect.log" | tail -n 3
  collected=$(grep -c "::" "$LOGDIR/collect.log" || true)
  [ "$collected" -gt 0 ] || fail "no CUDA test collected from $TESTS"
  echo "gpu_check: CPU-side checks PASSED ($collected CUDA tests collected)"
  exit 0
fi

echo "== tests (log: $LOGDIR/tests.log)"
set +e
# shellcheck disable=SC2086
$PY -m pytest -q -p no:cacheprovider -rs $TESTS 2>&1 | tee "$LOGDIR/tests.log" | tail -n 25
test_rc=${PIPESTATUS[0]}
set -e

echo "== benchmark (log: $LOGDIR/benchmark.log)"
# shellcheck disable=SC2086
$PY tools/analysis/benchmark_ops.py --device cuda ${BENCH_ARGS:-} \
  >"$LOGDIR/benchmark_table.md" 2>"$LOGDIR/benchmark.log" || {
  tail -n 20 "$LOGDIR/benchmark.log" >&2; fail "benchmark"; }

echo
echo "== tests: $( [ "$test_rc" -eq 0 ] && echo PASSED || echo "FAILED (rc $test_rc)" )"
echo "== benchmark table"
cat "$LOGDIR/benchmark_table.md"
exit "$test_rc"
