#!/usr/bin/env bash
# GPU check of the native ops: build dlu_mm._C_torch<X>_<Y> with CUDA, run tests/test_ops_native.py (CUDA
# tests included) and the CUDA benchmark, and print the benchmark table LAST.
#
# Made for a GPU box that has only torch (the device tool's nvidia-h100-x1 / nvidia-h200:
# Python 3.12, torch 2.11+cu130, nvcc 13.0, pytest preinstalled; no mmcv / mmengine, no network).
# Run from anywhere:   bash tools/gpu_check.sh          (env: PYTHON, TORCH_CUDA_ARCH_LIST,
#                                                         MAX_JOBS, BENCH_ARGS, OUT)
# If the box lacks pytest, carry it as wheels. On the dev machine, in the repo root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp -d .whl pytest pluggy iniconfig packaging
# and name `.whl` in the run's carry: this script installs .whl/*.whl into /tmp/site when the
# folder exists and pytest is missing.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOGDIR=${OUT:-/tmp/dlu_gpu_check}
mkdir -p "$LOGDIR"
fail() { echo "gpu_check: FAILED: $*" >&2; exit 1; }

echo "== environment"
$PY - <<'PYEOF' || fail "torch with a visible CUDA device is required"
import sys, torch
print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda)
assert torch.cuda.is_available(), 'torch.cuda.is_available() is False'
print('device', torch.cuda.get_device_name(), '| capability', torch.cuda.get_device_capability())
PYEOF
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

echo "== build (log: $LOGDIR/build.log)"
start=$(date +%s)
if ! DLU_MM_WITH_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} \
     MAX_JOBS=${MAX_JOBS:-$(nproc)} $PY setup.py build_ext --inplace >"$LOGDIR/build.log" 2>&1; then
  grep -n -E "error|Error" "$LOGDIR/build.log" | head -n 40 >&2 || true
  tail -n 30 "$LOGDIR/build.log" >&2
  fail "building dlu_mm._C_torch<X>_<Y> with CUDA"
fi
echo "built in $(( $(date +%s) - start )) s"
$PY - <<'PYEOF' || fail "dlu_mm._C_torch<X>_<Y> was built but has no CUDA kernels"
from dlu_mm.ops import _native
missing = [op for op in _native.OPS if not _native.available(op, 'cuda')]
assert not missing, {op: _native.why_unavailable(op, 'cuda') for op in missing}
print('CUDA kernels:', ', '.join(_native.OPS))
PYEOF

echo "== tests (log: $LOGDIR/tests.log)"
set +e
$PY -m pytest -q -p no:cacheprovider -rs tests/test_ops_native.py 2>&1 | tee "$LOGDIR/tests.log" | tail -n 25
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
