#!/usr/bin/env bash
# One-command set-up: creates a venv (.venv/ in the repository root) with the
# pinned OpenMMLab stack (torch, mmengine, mmcv 2.1.0 with compiled ops,
# mmdet, mmseg, mmpretrain) and mmmpvg in editable mode.
#
#   bash tools/setup_env.sh
#   FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" bash tools/setup_env.sh
#
# Environment:
#   VENV              where the venv goes (default: .venv in the repository)
#   PYTHON            interpreter for the venv (default: python3.11, else python3)
#   TORCH_VERSION     this torch (X.Y.Z) and its torchvision instead of the
#                     pinned pair; every other pin stays
#   MAX_JOBS          parallel compile jobs for mmcv (default: nproc)
#   MMMPVG_WHEEL_CACHE  where built mmcv wheels are kept for the next run
#                     (default: ~/.cache/mmmpvg/wheels), keyed by torch,
#                     CUDA and arch list; one wheel per Python inside
#   FORCE_CUDA        1: build mmcv's CUDA ops, also without a GPU; 0: CPU
#                     ops only; unset: CUDA ops when torch sees a GPU
#   TORCH_CUDA_ARCH_LIST  GPU archs of the CUDA build, e.g. "8.0;9.0"
#                     (default: those of the visible GPUs; required when
#                     none is visible)
#   MMMPVG_CUDA_TOOLKIT  where nvcc comes from for a CUDA build: "system"
#                     (the CUDA torch finds: CUDA_HOME, nvcc on PATH or
#                     /usr/local/cuda), "pypi" (NVIDIA's cuda-toolkit wheels
#                     matching torch's CUDA, installed into the venv as
#                     $VENV/cuda), or "auto" (default: system when its major
#                     version matches torch's, else pypi)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
PINS="$ROOT/requirements/pinned.txt"
MMCV_VERSION=2.1.0
WHEEL_CACHE=${MMMPVG_WHEEL_CACHE:-$HOME/.cache/mmmpvg/wheels}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

start=$(date +%s)
log() { echo "[setup_env $(( $(date +%s) - start ))s] $*"; }
die() { echo "setup_env: $*" >&2; exit 1; }

if [ -n "${TORCH_VERSION:-}" ]; then
  [[ $TORCH_VERSION =~ ^2\.([0-9]+)\.([0-9]+)$ ]] ||
    die "TORCH_VERSION=$TORCH_VERSION: give a torch 2 release as X.Y.Z, e.g. 2.1.2."
  torch_minor=${BASH_REMATCH[1]} torch_patch=${BASH_REMATCH[2]}
  # torchvision 0.(minor+15).patch is built for torch 2.minor.patch.
  torchvision="0.$((torch_minor + 15)).$torch_patch"
  # Every pin but the torch pair. torch < 2.3 was compiled against NumPy 1,
  # and ml_dtypes 0.6 (for onnx) needs NumPy 2.
  PINS=$(mktemp --suffix=.txt)
  trap 'rm -f "$PINS"' EXIT
  unpinned='torch|torchvision'
  if (( torch_minor < 3 )); then unpinned+='|ml_dtypes'; fi
  grep -Ev "^($unpinned)==" "$ROOT/requirements/pinned.txt" > "$PINS"
  printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VERSION" "$torchvision" >> "$PINS"
  if (( torch_minor < 3 )); then printf 'numpy<2\nml_dtypes<0.6\n' >> "$PINS"; fi
fi

log "creating $VENV with $PYTHON"
"$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
# The machine's pip config lists local indexes that lack most projects; pip
# warns once per project, which buries real errors.
pip_install() {
  "$PY" -m pip install --disable-pip-version-check -q -c "$PINS" "$@" \
    2> >(grep -v '^WARNING: Location' >&2)
}
torch_at_least() {  # torch_at_least 2 14
  "$PY" -c "import sys, torch; v = tuple(map(int, torch.__version__.split('+')[0].split('.')[:2])); sys.exit(v < ($1, $2))"
}

# mmcv's build imports pkg_resources (gone in setuptools 82) and needs
# wheel + ninja present because it is built without isolation. pip < 25.3
# still performs `setup.py develop` for `-e .`, which `mim` relies on.
pip_install "pip<25.3" setuptools wheel ninja
log "installing torch + torchvision (a pinned pair)"
pip_install torch torchvision

# A CUDA toolkit for nvcc: the system's when it matches torch's CUDA major
# version, else NVIDIA's PyPI wheels of the version torch was built with,
# merged by symlinks into $VENV/cuda (the layout torch's extension builder
# expects: bin/, include/, lib64/).
setup_cuda_toolkit() {
  local torch_cuda system_home system_cuda choice=${MMMPVG_CUDA_TOOLKIT:-auto}
  torch_cuda=$("$PY" -c "import torch; print(torch.version.cuda or '')")
  [ -n "$torch_cuda" ] ||
    die "FORCE_CUDA=1 needs a CUDA build of torch; $("$PY" -c 'import torch; print(torch.__version__)') has none."
  case $choice in auto|system|pypi) ;;
    *) die "MMMPVG_CUDA_TOOLKIT=$choice: choose auto, system or pypi." ;; esac
  if [ "$choice" != pypi ]; then
    system_home=$("$PY" -c "from torch.utils.cpp_extension import CUDA_HOME; print(CUDA_HOME or '')" 2>/dev/null)
    if [ -x "$system_home/bin/nvcc" ]; then
      system_cuda=$("$system_home/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
      if [ "${system_cuda%%.*}" = "${torch_cuda%%.*}" ]; then
        export CUDA_HOME=$system_home CUDA_VERSION_BUILT=$system_cuda
        log "using the system CUDA $system_cuda at $CUDA_HOME (torch: CUDA $torch_cuda)"
        return
      fi
      [ "$choice" = auto ] ||
        die "the system CUDA $system_cuda at $system_home does not match torch's CUDA $torch_cuda; use MMMPVG_CUDA_TOOLKIT=pypi."
      log "the system CUDA $system_cuda at $system_home does not match torch's CUDA $torch_cuda: using PyPI's"
    elif [ "$choice" = system ]; then
      die "MMMPVG_CUDA_TOOLKIT=system but no nvcc found (set CUDA_HOME)."
    fi
  fi
  # torch >= 2.9 requires NVIDIA's cuda-toolkit metapackage at the exact
  # version it was built with; older CUDA torch only names the CUDA version.
  local toolkit
  toolkit=$("$PY" -c "import importlib.metadata as m; print(m.version('cuda-toolkit'))" 2>/dev/null) ||
    toolkit="$torch_cuda.*"
  log "installing nvcc and the CUDA headers from PyPI: cuda-toolkit[nvcc,cccl]==$toolkit"
  pip_install "cuda-toolkit[nvcc,cccl]==$toolkit"
  local site home="$VENV/cuda"
  site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  rm -rf "$home"
  mkdir -p "$home/lib"
  # nvidia/cu13/ (CUDA 13) or one folder per component (CUDA 12).
  for part in "$site"/nvidia/*/; do
    for sub in bin include nvvm lib; do
      if [ -d "$part/$sub" ]; then
        mkdir -p "$home/$sub"
        cp -rsn "$part/$sub/." "$home/$sub/"
      fi
    done
  done
  [ -x "$home/bin/nvcc" ] || die "no nvcc in the cuda-toolkit wheels under $site/nvidia."
  ln -s lib "$home/lib64"
  # The linker looks for the unversioned name, which the wheels lack.
  local cudart
  cudart=$(cd "$home/lib" && ls libcudart.so.[0-9]* | head -n1)
  ln -sf "$cudart" "$home/lib/libcudart.so"
  export CUDA_HOME=$home
  CUDA_VERSION_BUILT=$("$home/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
  export CUDA_VERSION_BUILT
  export PATH="$home/bin:$PATH"
}

# mmcv is source-only on PyPI. Build it once per (torch, CUDA, archs) and
# keep the wheel, so a second set-up on the same machine takes minutes.
torch_tag=$("$PY" -c "import torch; print(torch.__version__.replace('+', '_'))")
py_tag=$("$PY" -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
gpu_visible() { "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; }
if [ "${FORCE_CUDA:-}" = 1 ] || { [ -z "${FORCE_CUDA:-}" ] && gpu_visible; }; then
  if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    gpu_visible || die "FORCE_CUDA=1 without a visible GPU needs TORCH_CUDA_ARCH_LIST, e.g. \"8.0;9.0\" (A100, H100)."
    TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; print(';'.join(sorted({'%d.%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})))")
  fi
  export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST
  setup_cuda_toolkit
  build_kind="cuda$CUDA_VERSION_BUILT-arch${TORCH_CUDA_ARCH_LIST//[; ]/_}"
else
  export FORCE_CUDA=0
  build_kind=cpu
fi
mmcv_cache="$WHEEL_CACHE/mmcv-$MMCV_VERSION-torch$torch_tag-$build_kind"
mmcv_wheel() { ls "$mmcv_cache"/mmcv-$MMCV_VERSION-$py_tag-*.whl 2>/dev/null | head -n1; }
if [ -z "$(mmcv_wheel)" ]; then
  log "building mmcv $MMCV_VERSION ($build_kind ops, MAX_JOBS=$MAX_JOBS): 15-25 min on 2 cores for CPU ops, 40+ min per arch for CUDA ops"
  # Built in the cache: an interrupted build resumes where it stopped.
  src="$mmcv_cache/build-$py_tag"
  if [ ! -f "$src/mmcv-$MMCV_VERSION/setup.py" ]; then
    mkdir -p "$src"
    "$PY" -m pip download -q -c "$PINS" --no-deps --no-binary :all: --no-build-isolation \
      "mmcv==$MMCV_VERSION" -d "$src" 2> >(grep -v '^WARNING: Location' >&2)
    tar xzf "$src"/mmcv-$MMCV_VERSION.tar.gz -C "$src"
  else
    log "resuming the build in $src"
  fi
  # torch >= 2.14 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17,
  # which as the last flag on the command line would win.
  if torch_at_least 2 14; then
    sed -i 's/-std=c++17/-std=c++20/g; s/std:c++17/std:c++20/g' "$src/mmcv-$MMCV_VERSION/setup.py"
  fi
  mkdir -p "$mmcv_cache"
  build_start=$(date +%s)
  # mmcv builds CUDA ops whenever torch sees a GPU: hide it for CPU ops.
  hide_gpus=()
  if [ "$build_kind" = cpu ]; then hide_gpus=(env CUDA_VISIBLE_DEVICES=); fi
  MMCV_WITH_OPS=1 "${hide_gpus[@]}" "$PY" -m pip wheel -q --no-deps --no-build-isolation \
    -w "$mmcv_cache" "$src/mmcv-$MMCV_VERSION"
  rm -rf "$src"
  log "built $(mmcv_wheel) ($(du -m "$(mmcv_wheel)" | cut -f1) MiB) in $(( ($(date +%s) - build_start) / 60 )) min"
else
  log "reusing $(mmcv_wheel)"
fi
pip_install "$(mmcv_wheel)"

log "installing mmengine, mmpretrain, mmdet, mmseg and the test tools"
pip_install -r requirements/runtime.txt -r requirements/det.txt \
  -r requirements/seg.txt -r requirements/tests.txt
log "installing the deploy and docs extras (onnx, onnxruntime, fvcore; Sphinx) and openmim"
pip_install -r requirements/deploy.txt -r requirements/docs.txt \
  -r requirements/mim.txt
pip_install --no-build-isolation --no-deps -e .

"$PY" - <<'EOF'
import mmcv, mmdet, mmengine, mmpretrain, mmseg, torch, torchvision
from mmcv.ops import get_compiling_cuda_version, nms  # noqa: F401  (fails if the compiled ops are missing)
import mmmpvg
print('torch', torch.__version__, 'torchvision', torchvision.__version__,
      'mmengine', mmengine.__version__, 'mmcv', mmcv.__version__,
      '(CUDA ops:', get_compiling_cuda_version() + ')',
      'mmdet', mmdet.__version__, 'mmseg', mmseg.__version__,
      'mmpretrain', mmpretrain.__version__, 'mmmpvg', mmmpvg.__version__)
EOF
log "done: activate with 'source $VENV/bin/activate'"
