#!/usr/bin/env bash
# dlu_mm developer entry point: creates (or reuses) the environment, then runs one verb.
#
#   bash tools/dev.sh demo    train + evaluate a DLU detector on a generated synthetic COCO set
#   bash tools/dev.sh test    run the test suite (what .ci/run calls, once per stack)
#   bash tools/dev.sh env     only create / update the environment
#   bash tools/dev.sh yolo-demo   train + validate + export a YOLOv8n with DLU on a generated
#                             synthetic YOLO set (tools/yolo_demo.py), offline, in the yolo stack
#   bash tools/dev.sh stamp   print the stamp that decides whether `env` rebuilds dlu_mm (for tests)
#
# Environment knobs (all optional):
#   DLU_MM_STACK=main|oldest|newest|yolo   which tested stack (default main; yolo for yolo-demo):
#                            main    constraints.txt         torch 2.13 + mmcv 2.1.0 + mmdet/mmseg/mmpretrain
#                            oldest  constraints-oldest.txt  torch 2.1.2 + mmcv 2.1.0 + mmdet/mmseg/mmpretrain
#                            newest  constraints-newest.txt  torch 2.14.1 + mmengine (ops/upsampler tests)
#                            yolo    constraints-yolo.txt    torch 2.14.1 + ultralytics, no OpenMMLab
#                                    (torch-only upsampler tests, ultralytics integration tests)
#   DLU_MM_VENV=path         virtualenv to create or reuse (default: .venv, .venv-oldest,
#                            .venv-newest, .venv-yolo)
#   DLU_MM_KEEP_TORCH=1      keep the torch/torchvision already in DLU_MM_VENV (e.g. another CUDA
#                            build); mmcv is then compiled against that torch
#   DLU_MM_CACHE=path        where built wheels are cached (default: ~/.cache/dlu_mm)
#   DLU_MM_WITH_CUDA=0|1     compile the CUDA kernels of ops/ (default: 1 when nvcc matches torch)
#   PYTEST_ARGS="..."        extra pytest arguments for `test`
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEFAULT_STACK=main
[ "${1:-}" = yolo-demo ] && DEFAULT_STACK=yolo  # the YOLO demo needs the stack with ultralytics
STACK="${DLU_MM_STACK:-$DEFAULT_STACK}"
case "$STACK" in
  main)   CONSTRAINTS="$ROOT/constraints.txt";        DEFAULT_VENV="$ROOT/.venv" ;;
  oldest) CONSTRAINTS="$ROOT/constraints-oldest.txt"; DEFAULT_VENV="$ROOT/.venv-oldest" ;;
  newest) CONSTRAINTS="$ROOT/constraints-newest.txt"; DEFAULT_VENV="$ROOT/.venv-newest" ;;
  yolo)   CONSTRAINTS="$ROOT/constraints-yolo.txt";   DEFAULT_VENV="$ROOT/.venv-yolo" ;;
  *) echo "DLU_MM_STACK must be main, oldest, newest or yolo, got '$STACK'" >&2; exit 2 ;;
esac
VENV="${DLU_MM_VENV:-$DEFAULT_VENV}"
if [ "$STACK" = yolo ]; then
  # ultralytics offline: no connectivity probe, no hub/update check; its settings file in the venv
  # instead of ~/.config (tests and the demo also pass plots=False: plots would fetch a font)
  export YOLO_OFFLINE=1 YOLO_CONFIG_DIR="${YOLO_CONFIG_DIR:-$VENV/ultralytics-settings}"
  # CPU kernels unless asked for: the newest stack already compiles the CUDA kernels against the
  # same torch 2.14.1, and this stack's tests run on CPU (DLU_MM_WITH_CUDA=1 builds them here too)
  export DLU_MM_WITH_CUDA="${DLU_MM_WITH_CUDA:-0}"
fi
CACHE="${DLU_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dlu_mm}"
PYTHON_BOOT="${PYTHON:-python3.11}"
command -v "$PYTHON_BOOT" >/dev/null 2>&1 || PYTHON_BOOT=python3
# the stack without mmcv runs what needs torch + mmengine only: every test_ops_* and
# test_upsamplers_* file (the naming scheme: tests/test_<layer>_<topic>.py) and these
NEWEST_TESTS=(tests/test_ops_*.py tests/test_upsamplers_*.py tests/test_architecture.py
              tests/test_checkpoint_resume.py tests/test_onnx_export.py tests/test_gpu_check.py
              tests/test_stack.py::test_dlu_mm_import_is_light tests/test_stack.py::test_stack_versions)
# the stack without OpenMMLab runs what needs torch alone, and the ultralytics integration
YOLO_TESTS=(tests/test_upsamplers_torch_only.py tests/test_integrations_ultralytics.py
            tests/test_stack.py::test_dlu_mm_import_is_light tests/test_stack.py::test_stack_versions)

log() { printf '[dev.sh %s %(%H:%M:%S)T] %s\n' "$STACK" -1 "$*" >&2; }
pinned() { sed -n "s/^$1[=]*//p" "$CONSTRAINTS"; }  # the version constraints.txt pins, or nothing

# Runtime dependencies of the mm* packages, listed by hand because the mm* packages themselves are
# installed with --no-deps (mmengine's metadata asks for opencv-python, which pulls numpy 2.4 and a
# second cv2). Versions come from constraints.txt where pinned there.
RUNTIME_DEPS=(
  numpy opencv-python-headless addict pyyaml rich termcolor yapf==0.40.1 matplotlib packaging
  Pillow pycocotools scipy shapely six terminaltables tqdm prettytable einops
  importlib-metadata mat4py modelindex ftfy regex pytest pytest-timeout
  onnx onnxruntime ml_dtypes onnxscript onnx-ir protobuf
)

# The yolo stack's packages besides torch: ultralytics itself goes in with --no-deps (its metadata
# asks for opencv-python, a second cv2 next to -headless, and for nvidia-ml-py, ultralytics-thop and
# ultralytics-platform, which it only uses when present); these are what `import ultralytics`,
# training (polars writes results.csv), validation, ONNX export (onnxslim: simplify=True) and the
# synthetic data generator (pycocotools) need. Versions from constraints-yolo.txt.
YOLO_DEPS=(
  numpy opencv-python-headless matplotlib pillow pyyaml requests psutil polars pycocotools
  pytest pytest-timeout onnx onnxruntime ml_dtypes onnxscript onnx-ir protobuf onnxslim
)

pip_() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }

stack_fingerprint() {
  # Everything that decides the third-party stack; a change re-runs the stack install.
  { cat "$CONSTRAINTS"; printf '%s\n' "${RUNTIME_DEPS[@]}" "${YOLO_DEPS[@]}" "keep_torch=${DLU_MM_KEEP_TORCH:-0}"
    declare -f ensure_stack build_mmcv_wheel; } \
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
  # mmcv 2.1.0 ships only an sdist; compiling its ops takes 7-14 min on 2 cores, so the wheel is
  # cached outside the repo, keyed by python + torch (with its local tag, e.g. +cu121) + mmcv.
  local pyver torchver mmcvver house
  pyver=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  torchver=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')
  mmcvver=$(pinned mmcv)
  house="$CACHE/wheels/${pyver}-torch${torchver}-mmcv${mmcvver}"
  mkdir -p "$house"
  if ! ls "$house"/mmcv-"$mmcvver"-*.whl >/dev/null 2>&1; then
    log "building mmcv $mmcvver wheel with its CPU ops against torch $torchver (7-14 min on 2 cores; cached in $house)"
    local tmp; tmp=$(mktemp -d)
    # --no-cache-dir: pip's own wheel cache is keyed by the sdist, not by the torch it was built
    # against, and would hand a wheel built for another torch (wrong ABI) to this one
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      pip_ wheel --no-cache-dir --no-build-isolation --no-deps -c "$CONSTRAINTS" -w "$tmp" "mmcv==$mmcvver"
    mv "$tmp"/mmcv-*.whl "$house"/ && rmdir "$tmp"
  else
    log "reusing cached mmcv wheel from $house"
  fi
  pip_ install --no-deps "$house"/mmcv-"$mmcvver"-*.whl
}

ensure_stack() {
  local want have="" mm_packages=() imports="import mmengine" deps=("${RUNTIME_DEPS[@]}")
  [ "$STACK" = yolo ] && deps=("${YOLO_DEPS[@]}")
  want=$(stack_fingerprint)
  [ -f "$VENV/.dlu_mm_stack" ] && have=$(cat "$VENV/.dlu_mm_stack")
  if [ "$want" = "$have" ]; then return; fi
  log "installing the pinned stack ($(basename "$CONSTRAINTS")) into $VENV"
  [ -x "$VENV/bin/python" ] || "$PYTHON_BOOT" -m venv "$VENV"
  pip_ install -q -c "$CONSTRAINTS" setuptools wheel ninja
  if [ "${DLU_MM_KEEP_TORCH:-0}" = 1 ]; then
    "$VENV/bin/python" -c 'import torch, torchvision' \
      || { echo "DLU_MM_KEEP_TORCH=1 but $VENV has no working torch + torchvision" >&2; exit 2; }
    log "keeping $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
    pip_ install -q -c <(grep -v -E '^(torch|torchvision)[=<>]' "$CONSTRAINTS") "${deps[@]}"
  else
    # the torch pin lives in the constraints file ('===' for main: see constraints.txt)
    pip_ install -q -c "$CONSTRAINTS" torch torchvision "${deps[@]}"
  fi
  if [ "$STACK" = yolo ]; then
    pip_ install -q --no-deps -c "$CONSTRAINTS" ultralytics
    # no OpenMMLab here: what dlu_mm.upsamplers must do without it is what this stack tests
    imports="import ultralytics, onnxruntime, onnxslim, pycocotools, polars
import importlib.util as u; assert not any(u.find_spec(m) for m in ('mmengine', 'mmcv')), 'OpenMMLab in the yolo stack'"
  elif [ -n "$(pinned mmcv)" ]; then
    build_mmcv_wheel
    mm_packages=(mmdet mmsegmentation mmpretrain)
    imports="import mmcv.ops, mmdet.models, mmseg.models, mmpretrain.models"
  fi
  [ "$STACK" = yolo ] || pip_ install -q --no-deps -c "$CONSTRAINTS" mmengine "${mm_packages[@]}"
  "$VENV/bin/python" -c "$imports" \
    || { echo "the installed stack does not import: see the messages above" >&2; exit 1; }
  echo "$want" > "$VENV/.dlu_mm_stack"
  rm -f "$VENV/.dlu_mm_project"
}

built_library() {
  # the in-place extension of this venv's torch (dlu_mm/_C_torch<X>_<Y>*.so) as a hash: the
  # newest and yolo stacks share torch 2.14 and so one file name (newest builds it with CUDA,
  # yolo without), so a stamp alone cannot tell whose build is on disk
  local version
  version=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))')
  version=${version%%+*}
  local major=${version%%.*} rest=${version#*.}
  # no file yet (a fresh clone) hashes as empty; `|| true` keeps pipefail + set -e from ending the
  # script inside the command substitution that calls this
  { cat dlu_mm/_C_torch"${major}_${rest%%.*}".*.so 2>/dev/null || true; } | sha256sum | cut -c1-16
}

project_stamp() {
  # each part assigned on its own line, so that set -e stops on a failing one instead of stamping
  local fingerprint library
  fingerprint=$(project_fingerprint)
  library=$(built_library)
  echo "$fingerprint $library"
}

ensure_project() {
  local want have=""
  want=$(project_stamp)
  [ -f "$VENV/.dlu_mm_project" ] && have=$(cat "$VENV/.dlu_mm_project")
  # the editable install points at this checkout: redo it when the venv belonged to another one
  if [ "$want" = "$have" ] && "$VENV/bin/python" - "$ROOT" <<'EOF' 2>/dev/null
import os, sys, dlu_mm
sys.exit(0 if os.path.dirname(os.path.dirname(os.path.abspath(dlu_mm.__file__))) == sys.argv[1] else 1)
EOF
  then return; fi
  log "installing dlu_mm (editable; builds the native ops from ops/ against $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
  # exactly what a user runs; -v only to show setup.py's own 'dlu_mm:' lines (e.g. CUDA skipped)
  MAX_JOBS="${MAX_JOBS:-$(nproc)}" pip_ install -v --no-build-isolation --no-deps -e . \
    > "$VENV/dlu_mm-build.log" 2>&1 \
    || { tail -n 60 "$VENV/dlu_mm-build.log" >&2; echo "building dlu_mm failed (log: $VENV/dlu_mm-build.log)" >&2; exit 1; }
  grep -E '^ *dlu_mm:' "$VENV/dlu_mm-build.log" >&2 || true
  project_stamp > "$VENV/.dlu_mm_project"
}

run_tests() {
  local rc=0 paths=(tests)
  [ "$STACK" = newest ] && paths=("${NEWEST_TESTS[@]}")
  [ "$STACK" = yolo ] && paths=("${YOLO_TESTS[@]}")
  log "pytest on torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'): ${paths[*]}"
  # a hung test fails the run instead of eating the CI budget; the compiled ops must load
  # (tests/conftest.py stops the run otherwise) and the version pins are checked (test_stack.py)
  # where setup.py said it builds the CUDA kernels, tests/test_gpu_check.py must find them
  local expect_cuda=0
  grep -q 'dlu_mm: building the CUDA kernels' "$VENV/dlu_mm-build.log" 2>/dev/null && expect_cuda=1
  DLU_MM_REQUIRE_NATIVE=1 DLU_MM_CONSTRAINTS="$CONSTRAINTS" DLU_MM_EXPECT_CUDA="$expect_cuda" \
    "$VENV/bin/python" -m pytest --timeout=900 ${PYTEST_ARGS:-} "${paths[@]}" || rc=$?
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
  # what decides whether `env` rebuilds dlu_mm; reads the existing venv, installs nothing
  # (tests/test_stack.py runs it on a copy of the checkout with no extension built)
  stamp) [ -x "$VENV/bin/python" ] || { echo "no venv at $VENV" >&2; exit 2; }; project_stamp ;;
  yolo-demo)
    [ "$STACK" = yolo ] || { echo "yolo-demo runs in the yolo stack (DLU_MM_STACK=yolo), got '$STACK'" >&2; exit 2; }
    ensure_stack; ensure_project; shift; "$VENV/bin/python" tools/yolo_demo.py "$@" ;;
  *) echo "usage: bash tools/dev.sh {demo|test|env|yolo-demo|stamp}" >&2; exit 2 ;;
esac
