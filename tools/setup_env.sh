#!/usr/bin/env bash
# One-command set-up: creates .venv/ in the repository root with the pinned
# OpenMMLab stack (torch, mmengine, mmcv 2.1.0 with compiled ops, mmdet,
# mmseg, mmpretrain) and mmmpvg in editable mode.
#
#   bash tools/setup_env.sh
#
# Environment:
#   PYTHON            interpreter for the venv (default: python3.11, else python3)
#   MAX_JOBS          parallel compile jobs for mmcv (default: nproc)
#   MMMPVG_WHEEL_CACHE  where the built mmcv wheel is kept for the next run
#                     (default: ~/.cache/mmmpvg/wheels)
#   FORCE_CUDA=1      build mmcv's CUDA ops (needs nvcc); automatic when
#                     torch sees a GPU at build time.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
PINS="$ROOT/requirements/pinned.txt"
MMCV_VERSION=2.1.0
WHEEL_CACHE=${MMMPVG_WHEEL_CACHE:-$HOME/.cache/mmmpvg/wheels}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

start=$(date +%s)
log() { echo "[setup_env $(( $(date +%s) - start ))s] $*"; }

log "creating .venv with $PYTHON"
"$PYTHON" -m venv .venv
PY="$ROOT/.venv/bin/python"
# The machine's pip config lists local indexes that lack most projects; pip
# warns once per project, which buries real errors.
pip_install() {
  "$PY" -m pip install --disable-pip-version-check -q -c "$PINS" "$@" \
    2> >(grep -v '^WARNING: Location' >&2)
}

# mmcv's build imports pkg_resources (gone in setuptools 82) and needs
# wheel + ninja present because it is built without isolation. pip < 25.3
# still performs `setup.py develop` for `-e .`, which `mim` relies on.
pip_install "pip<25.3" setuptools wheel ninja
log "installing torch + torchvision (a pinned pair)"
pip_install torch torchvision

# mmcv is source-only on PyPI. Build it once per (torch, cuda) and keep the
# wheel, so a second set-up on the same machine takes minutes, not 20.
torch_tag=$("$PY" -c "import torch; print(torch.__version__.replace('+', '_'))")
if [ "${FORCE_CUDA:-0}" = 1 ] || "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  build_kind=cuda
else
  build_kind=cpu
fi
mmcv_cache="$WHEEL_CACHE/mmcv-$MMCV_VERSION-torch$torch_tag-$build_kind"
if ! ls "$mmcv_cache"/mmcv-*.whl >/dev/null 2>&1; then
  log "building mmcv $MMCV_VERSION ($build_kind ops, MAX_JOBS=$MAX_JOBS): 15-25 min on 2 cores"
  src=$(mktemp -d)
  "$PY" -m pip download -q -c "$PINS" --no-deps --no-binary :all: --no-build-isolation \
    "mmcv==$MMCV_VERSION" -d "$src"
  tar xzf "$src"/mmcv-$MMCV_VERSION.tar.gz -C "$src"
  # torch >= 2.14 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17,
  # which as the last flag on the command line would win.
  if "$PY" -c "import sys, torch; v = tuple(map(int, torch.__version__.split('+')[0].split('.')[:2])); sys.exit(v < (2, 14))"; then
    sed -i 's/-std=c++17/-std=c++20/g; s/std:c++17/std:c++20/g' "$src/mmcv-$MMCV_VERSION/setup.py"
  fi
  mkdir -p "$mmcv_cache"
  MMCV_WITH_OPS=1 "$PY" -m pip wheel -q --no-deps --no-build-isolation \
    -w "$mmcv_cache" "$src/mmcv-$MMCV_VERSION"
  rm -rf "$src"
else
  log "reusing the mmcv wheel in $mmcv_cache"
fi
pip_install "$mmcv_cache"/mmcv-*.whl

log "installing mmengine, mmpretrain, mmdet, mmseg and the test tools"
pip_install -r requirements/runtime.txt -r requirements/det.txt \
  -r requirements/seg.txt -r requirements/tests.txt
log "installing the deploy and docs extras (onnx, onnxruntime, fvcore; Sphinx) and openmim"
pip_install -r requirements/deploy.txt -r requirements/docs.txt \
  -r requirements/mim.txt
pip_install --no-build-isolation --no-deps -e .

"$PY" - <<'EOF'
import mmcv, mmdet, mmengine, mmpretrain, mmseg, torch, torchvision
from mmcv.ops import nms  # noqa: F401  (fails if the compiled ops are missing)
import mmmpvg
print('torch', torch.__version__, 'torchvision', torchvision.__version__,
      'mmengine', mmengine.__version__, 'mmcv', mmcv.__version__,
      'mmdet', mmdet.__version__, 'mmseg', mmseg.__version__,
      'mmpretrain', mmpretrain.__version__, 'mmmpvg', mmmpvg.__version__)
EOF
log "done: activate with 'source .venv/bin/activate'"
