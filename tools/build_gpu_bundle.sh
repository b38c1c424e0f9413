#!/usr/bin/env bash
# Builds, on a CPU machine, the wheels that a GPU machine without network
# needs to run this project (tools/gpu_check.sh): a machine with Python 3.12
# and torch 2.11.0+cu130 preinstalled. The bundle holds mmcv 2.1.0 with its
# CUDA ops for sm_90, mmengine, mmdet, mmseg, mmpretrain, mmmpvg (the
# committed tree) and every dependency such a machine lacks; at most 64 MiB.
#
#   bash tools/build_gpu_bundle.sh [OUT_DIR]      (default: dist/gpu_bundle)
#
# then, on the GPU machine (its python3 has torch):
#   python3 -m pip install --no-index --find-links OUT_DIR \
#     mmcv mmengine mmdet mmsegmentation mmpretrain 'mmmpvg[seg]'
#
# What the target already has is assumed from the GPU image's package list
# (TARGET_PACKAGES below, as listed for that image on 2026-11-17); a venv
# with exactly those decides what is missing, and the bundle is then
# installed into it with --no-index as the check.
#
# Environment:
#   PYTHON                the target's Python (default: python3.12)
#   TORCH_VERSION         the target's torch (default: 2.11.0; PyPI's is cu130)
#   TORCH_CUDA_ARCH_LIST  the target's GPU arch (default: 9.0, H100/H200)
#   MMMPVG_BUNDLE_WORK    the build and target venvs (default:
#                         ~/.cache/mmmpvg/gpu_bundle)
#   MMMPVG_CUDA_TOOLKIT   as in tools/setup_env.sh (default here: pypi, the
#                         exact CUDA torch was built with)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(realpath -m "${1:-$ROOT/dist/gpu_bundle}")
PYTHON=$(command -v "${PYTHON:-python3.12}") ||
  { echo "build_gpu_bundle: no ${PYTHON:-python3.12}; set PYTHON to the target's Python version" >&2; exit 2; }
TORCH_VERSION=${TORCH_VERSION:-2.11.0}
ARCHS=${TORCH_CUDA_ARCH_LIST:-9.0}
WORK=${MMMPVG_BUNDLE_WORK:-$HOME/.cache/mmmpvg/gpu_bundle}
# The GPU image's packages among this stack's dependencies (and what the
# GPU check runs: pytest, timm for the benchmark, scikit-learn for digits).
TARGET_PACKAGES=(numpy opencv-python-headless matplotlib scipy scikit-learn
  pyyaml rich packaging pillow six tqdm einops regex pytest timm click
  markdown zipp)

start=$(date +%s)
log() { echo "[build_gpu_bundle $(( $(date +%s) - start ))s] $*"; }
pip_quiet() { "$@" 2> >(grep -v '^WARNING: Location' >&2); }
if [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  echo "build_gpu_bundle: $OUT is not empty; remove it or name another folder" >&2
  exit 2
fi
mkdir -p "$OUT" "$WORK"

# 1. mmcv with CUDA ops, built by the set-up script in a venv like the
# target's. OpenCV is importable while it builds, so mmcv (as for a conda
# OpenCV) declares no opencv-python requirement, which the target's
# opencv-python-headless would not satisfy.
build="$WORK/build-venv"
"$PYTHON" -m venv "$build"
pip_quiet "$build/bin/python" -m pip install -q opencv-python-headless
log "building the stack in $build (mmcv CUDA ops for $ARCHS: 40+ min on 2 cores, once)"
VENV=$build PYTHON=$PYTHON TORCH_VERSION=$TORCH_VERSION FORCE_CUDA=1 \
  TORCH_CUDA_ARCH_LIST=$ARCHS MMMPVG_CUDA_TOOLKIT=${MMMPVG_CUDA_TOOLKIT:-pypi} \
  bash "$ROOT/tools/setup_env.sh"
mmcv_wheel=$("$build/bin/python" -c "import importlib.metadata as m, json; print(json.loads(m.distribution('mmcv').read_text('direct_url.json'))['url'].removeprefix('file://'))")
cp "$mmcv_wheel" "$OUT/"

# 2. mmengine rebuilt from its sdist for the same reason (PyPI's wheel
# requires opencv-python); mmmpvg from the committed tree.
log "wheels of mmengine (from source) and mmmpvg ($(git -C "$ROOT" rev-parse --short HEAD))"
pip_quiet "$build/bin/python" -m pip wheel -q --no-deps --no-build-isolation \
  --no-binary mmengine -c "$ROOT/requirements/pinned.txt" mmengine -w "$OUT"
src=$(mktemp -d)
git -C "$ROOT" archive HEAD | tar -x -C "$src"
pip_quiet "$build/bin/python" -m pip wheel -q --no-deps --no-build-isolation "$src" -w "$OUT"
rm -rf "$src"

# 3. A venv with what the target has; what pip would add to it is missing.
target="$WORK/target-venv"
rm -rf "$target"
"$PYTHON" -m venv "$target"
torch_minor=$(echo "$TORCH_VERSION" | cut -d. -f2)
torchvision="0.$((torch_minor + 15)).$(echo "$TORCH_VERSION" | cut -d. -f3)"
log "target-like venv $target: torch $TORCH_VERSION, torchvision $torchvision, ${TARGET_PACKAGES[*]}"
pip_quiet "$target/bin/python" -m pip install -q "torch==$TORCH_VERSION" \
  "torchvision==$torchvision" "${TARGET_PACKAGES[@]}"
installed=$("$target/bin/python" -m pip list --format=freeze | cut -d= -f1 | tr 'A-Z_.' 'a-z--')
pins="$WORK/pins.txt"
while IFS= read -r line; do
  name=$(echo "${line%%==*}" | tr 'A-Z_.' 'a-z--')
  grep -qx "$name" <<<"$installed" || echo "$line"
done < <(grep -E '^[A-Za-z0-9_.-]+==' "$ROOT/requirements/pinned.txt") > "$pins"
# PyPI's newest mmcv (2.2.0) is a source release: name ours.
stack=(mmcv==2.1.0 mmengine mmdet mmsegmentation mmpretrain 'mmmpvg[seg]')
pip_quiet "$target/bin/python" -m pip install -q --dry-run --report "$WORK/report.json" \
  --find-links "$OUT" -c "$pins" "${stack[@]}"
mapfile -t extra < <("$target/bin/python" "$ROOT/tools/gpu_bundle.py" missing "$WORK/report.json" "$OUT")
log "missing on the target: ${extra[*]}"
for requirement in "${extra[@]}"; do
  pip_quiet "$target/bin/python" -m pip download -q --no-deps --only-binary :all: \
    -d "$OUT" "$requirement" ||
    pip_quiet "$target/bin/python" -m pip wheel -q --no-deps -w "$OUT" "$requirement"
done
rm -f "$OUT"/*.tar.gz

"$target/bin/python" "$ROOT/tools/gpu_bundle.py" check "$OUT"

# 4. The check: install offline (no pip configuration: no local indexes)
# into the target-like venv, import, run the deformable-attention tests on
# the CPU and list the GPU check.
log "installing the bundle with --no-index into $target"
PIP_CONFIG_FILE=/dev/null "$target/bin/python" -m pip install -q --no-index \
  --find-links "$OUT" "${stack[@]}"
cd "$WORK"
"$target/bin/python" - <<'EOF'
import mmcv, mmdet, mmengine, mmpretrain, mmseg, torch
from mmcv.ops import get_compiling_cuda_version
import mmmpvg
print('offline install:', 'torch', torch.__version__, 'mmcv', mmcv.__version__,
      '(CUDA ops', get_compiling_cuda_version() + ')', 'mmengine',
      mmengine.__version__, 'mmdet', mmdet.__version__, 'mmseg',
      mmseg.__version__, 'mmpretrain', mmpretrain.__version__, 'mmmpvg',
      mmmpvg.__version__, 'from', mmmpvg.__file__)
EOF
"$target/bin/python" -m pytest -q -p no:cacheprovider "$ROOT/tests/test_ms_deform_attn.py"
PYTHON="$target/bin/python" bash "$ROOT/tools/gpu_check.sh" --dry-run > "$WORK/gpu_check_dry_run.txt"
log "done: $OUT ($(du -sm "$OUT" | cut -f1) MiB); on the GPU machine: python3 -m pip install --no-index --find-links $(basename "$OUT") ${stack[*]}"
