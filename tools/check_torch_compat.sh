#!/usr/bin/env bash
# Runs the test suite under another torch: a venv of its own with that torch
# and its torchvision, a CPU build of mmcv 2.1.0 for it (built once, then
# reused from the wheel cache), every other pin as requirements/pinned.txt.
#
#   bash tools/check_torch_compat.sh TORCH_VERSION [PYTHON] [-- PYTEST_ARGS...]
#   bash tools/check_torch_compat.sh 2.1.2
#   bash tools/check_torch_compat.sh 2.11.0 python3.12 -- -m "not slow"
#
# PYTEST_ARGS replace the default `tests`. The venv is
# $MMMPVG_COMPAT_VENVS/torch<VERSION>-py<X.Y> (default ~/.cache/mmmpvg/venvs);
# set-up variables (MAX_JOBS, MMMPVG_WHEEL_CACHE) as in tools/setup_env.sh;
# FORCE_CUDA=1 with TORCH_CUDA_ARCH_LIST takes a CUDA build of mmcv instead.
# Exits with pytest's status.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
usage() {
  echo "usage: $0 TORCH_VERSION [PYTHON] [-- PYTEST_ARGS...]  (e.g. $0 2.1.2 python3.11)" >&2
  exit 2
}
fail() { echo "check_torch_compat: $*" >&2; exit 2; }

[ $# -ge 1 ] && [ "$1" != -h ] && [ "$1" != --help ] || usage
torch_version=$1
shift
python=python3.11
if [ $# -ge 1 ] && [ "$1" != -- ]; then python=$1; shift; fi
if [ $# -ge 1 ]; then
  [ "$1" = -- ] || usage
  shift
fi
pytest_args=("$@")
[ ${#pytest_args[@]} -gt 0 ] || pytest_args=(tests)

[[ $torch_version =~ ^2\.([0-9]+)\.[0-9]+$ ]] ||
  fail "TORCH_VERSION '$torch_version': give a torch release as X.Y.Z, e.g. 2.1.2."
# mmcv 2.1.0 has prebuilt wheels up to torch 2.1, the oldest checked here.
(( BASH_REMATCH[1] >= 1 )) ||
  fail "torch $torch_version: this project is checked with torch >= 2.1 only."
python_path=$(command -v "$python") ||
  fail "no interpreter '$python' on PATH; name one, e.g. python3.12 or /usr/bin/python3."
py_version=$("$python_path" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

venv="${MMMPVG_COMPAT_VENVS:-$HOME/.cache/mmmpvg/venvs}/torch$torch_version-py$py_version"
echo "[check_torch_compat] torch $torch_version, Python $py_version: $venv"
VENV=$venv PYTHON=$python_path TORCH_VERSION=$torch_version FORCE_CUDA=${FORCE_CUDA:-0} \
  bash "$ROOT/tools/setup_env.sh"

cd "$ROOT"
echo "[check_torch_compat] pytest ${pytest_args[*]}"
status=0
PYTHONPATH=$ROOT "$venv/bin/python" -m pytest -q -p no:cacheprovider -rfEs \
  "${pytest_args[@]}" || status=$?
echo "[check_torch_compat] torch $torch_version, Python $py_version: pytest exit $status"
exit "$status"
