#!/usr/bin/env bash
# dlu_mm developer entry point: creates (or reuses) the environment, then runs one verb.
#
#   bash tools/dev.sh demo    train + evaluate a DLU detector on a generated synthetic COCO set
#   bash tools/dev.sh test    run the test suite (what .ci/run calls)
#   bash tools/dev.sh env     only create / update the environment
#
# Environment knobs (all optional):
#   DLU_MM_VENV=path         virtualenv to create or reuse (default: .venv in the repo)
#   DLU_MM_KEEP_TORCH=1      keep the torch/torchvision already in DLU_MM_VENV (e.g. another CUDA
#                            build); mmcv is then compiled against that torch
#   DLU_MM_CACHE=path        where built wheels are cached (default: ~/.cache/dlu_mm)
#   DLU_MM_WITH_CUDA=0|1     compile the CUDA kernels of ops/ (default: 1 when nvcc is found)
#   PYTEST_ARGS="..."        extra pytest arguments for `test`
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${DLU_MM_VENV:-$ROOT/.venv}"
CACHE="${DLU_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dlu_mm}"
PYTHON_BOOT="${PYTHON:-python3.11}"
command -v "$PYTHON_BOOT" >/dev/null 2>&1 || PYTHON_BOOT=python3
CONSTRAINTS="$ROOT/constraints.txt"

log() { printf '[dev.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# Runtime dependencies of the mm* packages, listed by hand because the mm* packages themselves are
# installed with --no-deps (mmengine's metadata asks for opencv-python, which pulls numpy 2.4 and a
# second cv2). Versions come from constraints.txt where pinned there.
RUNTIME_DEPS=(
  numpy opencv-python-headless addict pyyaml rich termcolor yapf==0.40.1 matplotlib packaging
  Pillow pycocotools scipy shapely six terminaltables tqdm prettytable einops
  importlib-metadata mat4py modelindex ftfy regex pytest pytest-timeout
)

pip_() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }

stack_fingerprint() {
  # Everything that decides the third-party stack; a change re-runs the stack install.
  { cat "$CONSTRAINTS"; printf '%s\n' "${RUNTIME_DEPS[@]}" "keep_torch=${DLU_MM_KEEP_TORCH:-0}"; } \
    | sha256sum | cut -c1-16
}

project_fingerprint() {
  # What `pip install -e .` turns into a build: the build scripts and the native sources.
  { cat pyproject.toml setup.py 2>/dev/null
    find ops -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' \) -print0 \
      | sort -z | xargs -0 -r cat
    echo "cuda=${DLU_MM_WITH_CUDA:-auto}"; } | sha256sum | cut -c1-16
}

build_mmcv_wheel() {
  # mmcv 2.1.0 ships only an sdist; compiling its ops takes ~14 min on 2 cores, so the wheel is
  # cached outside the repo, keyed by python + torch + mmcv versions.
  local pyver torchver mmcvver house
  pyver=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  torchver=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')
  mmcvver=$(sed -n 's/^mmcv==//p' "$CONSTRAINTS")
  house="$CACHE/wheels/${pyver}-torch${torchver}-mmcv${mmcvver}"
  mkdir -p "$house"
  if ! ls "$house"/mmcv-"$mmcvver"-*.whl >/dev/null 2>&1; then
    log "building mmcv $mmcvver wheel with its CPU ops (about 14 min on 2 cores; cached in $house)"
    local tmp; tmp=$(mktemp -d)
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      pip_ wheel --no-build-isolation --no-deps -c "$CONSTRAINTS" -w "$tmp" "mmcv==$mmcvver"
    mv "$tmp"/mmcv-*.whl "$house"/ && rmdir "$tmp"
  else
    log "reusing cached mmcv wheel from $house"
  fi
  pip_ install --no-deps "$house"/mmcv-"$mmcvver"-*.whl
}

ensure_stack() {
  local want have=""
  want=$(stack_fingerprint)
  [ -f "$VENV/.dlu_mm_stack" ] && have=$(cat "$VENV/.dlu_mm_stack")
  if [ "$want" = "$have" ]; then return; fi
  log "installing the pinned stack into $VENV"
  [ -x "$VENV/bin/python" ] || "$PYTHON_BOOT" -m venv "$VENV"
  pip_ install -q -c "$CONSTRAINTS" setuptools wheel ninja
  if [ "${DLU_MM_KEEP_TORCH:-0}" = 1 ]; then
    "$VENV/bin/python" -c 'import torch, torchvision' \
      || { echo "DLU_MM_KEEP_TORCH=1 but $VENV has no working torch + torchvision" >&2; exit 2; }
    log "keeping $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
    pip_ install -q -c <(grep -v -E '^(torch|torchvision)[=<>]' "$CONSTRAINTS") "${RUNTIME_DEPS[@]}"
  else
    pip_ install -q -c "$CONSTRAINTS" "torch===2.13.0" torchvision "${RUNTIME_DEPS[@]}"
  fi
  build_mmcv_wheel
  pip_ install -q --no-deps -c "$CONSTRAINTS" mmengine mmdet mmsegmentation mmpretrain
  "$VENV/bin/python" -c 'import mmcv.ops, mmdet.models, mmseg.models, mmpretrain.models' \
    || { echo "the installed stack does not import: see the messages above" >&2; exit 1; }
  echo "$want" > "$VENV/.dlu_mm_stack"
  rm -f "$VENV/.dlu_mm_project"
}

ensure_project() {
  local want have=""
  want=$(project_fingerprint)
  [ -f "$VENV/.dlu_mm_project" ] && have=$(cat "$VENV/.dlu_mm_project")
  # the editable install points at this checkout: redo it when the venv belonged to another one
  if [ "$want" = "$have" ] && "$VENV/bin/python" - "$ROOT" <<'EOF' 2>/dev/null
import os, sys, dlu_mm
sys.exit(0 if os.path.dirname(os.path.dirname(os.path.abspath(dlu_mm.__file__))) == sys.argv[1] else 1)
EOF
  then return; fi
  log "installing dlu_mm (editable; builds the native ops from ops/)"
  MAX_JOBS="${MAX_JOBS:-$(nproc)}" pip_ install -q --no-build-isolation --no-deps -e .
  echo "$want" > "$VENV/.dlu_mm_project"
}

run_tests() {
  local rc=0
  # a hung test fails the run instead of eating the CI budget
  "$VENV/bin/python" -m pytest --timeout=900 ${PYTEST_ARGS:-} tests || rc=$?
  if [ "$rc" = 5 ]; then
    echo "pytest collected no tests (exit 5): treating this as a failure" >&2
    return 1
  fi
  return "$rc"
}

verb="${1:-}"
case "$verb" in
  env)  ensure_stack; ensure_project ;;
  test) ensure_stack; ensure_project; run_tests ;;
  demo) ensure_stack; ensure_project; shift; "$VENV/bin/python" tools/demo.py "$@" ;;
  *) echo "usage: bash tools/dev.sh {demo|test|env}" >&2; exit 2 ;;
esac
