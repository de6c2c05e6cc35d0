#!/usr/bin/env bash
# Build fastnn._core with CMake into a build directory of its own, and stage an
# importable copy of the package beside it: BUILD_DIR/pkg/fastnn holds this
# checkout's Python sources and the freshly built _core. Prints BUILD_DIR/pkg
# as its last line of stdout (progress goes to stderr), so callers can do
#
#   PKG="$(scripts/build_core.sh build/asan -DFASTNN_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo | tail -n 1)"
#   PYTHONPATH="$PKG" python -c 'import fastnn'
#
# This is the one way the development scripts (sanitize.sh, valgrind.sh) build
# _core; wheels go through the same CMakeLists.txt via scikit-build-core.
# The build directory is reused (incremental builds) as long as the Python and
# the CMake options are the same; otherwise it is configured afresh.
#
# Environment:
#   PYTHON  the Python to build for (default: python3). pybind11, cmake and
#           ninja (build-time only requirements) are pip-installed into its
#           environment when missing.
set -euo pipefail

if [ "$#" -lt 1 ]; then
  echo "usage: scripts/build_core.sh BUILD_DIR [CMAKE_OPTION...]" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$1"
shift
mkdir -p "$BUILD"
BUILD="$(cd "$BUILD" && pwd)"
PYTHON="${PYTHON:-python3}"
PYTHON="$(command -v "$PYTHON")"

log() { echo "build_core.sh: $*" >&2; }

# ---------------------------------------------------------------- tools
if ! "$PYTHON" -c "import pybind11" 2>/dev/null; then
  log "installing pybind11 (a build requirement) into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
  "$PYTHON" -m pip install --quiet "pybind11>=2.12" >&2
fi
export PATH="$PATH:$(dirname "$PYTHON")"
if ! command -v cmake >/dev/null 2>&1; then
  log "installing cmake from PyPI"
  "$PYTHON" -m pip install --quiet cmake >&2
fi
GENERATOR="Ninja"
if ! command -v ninja >/dev/null 2>&1; then
  "$PYTHON" -m pip install --quiet ninja >&2 || true
fi
command -v ninja >/dev/null 2>&1 || GENERATOR="Unix Makefiles"

# ---------------------------------------------------------------- build
PYBIND11_DIR="$("$PYTHON" -m pybind11 --cmakedir)"
VERSION="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n 1)"
CONFIG="$PYTHON $GENERATOR $*"
if [ ! -f "$BUILD/CMakeCache.txt" ] || [ "$(cat "$BUILD/.fastnn-config" 2>/dev/null)" != "$CONFIG" ]; then
  # A fresh configure: no cached option or Python survives a change of either.
  rm -rf "$BUILD/CMakeCache.txt" "$BUILD/CMakeFiles"
  cmake -S "$ROOT" -B "$BUILD" -G "$GENERATOR" -Dpybind11_DIR="$PYBIND11_DIR" -DPython_EXECUTABLE="$PYTHON" \
    -DSKBUILD_PROJECT_VERSION="$VERSION" "$@" >&2
  echo "$CONFIG" > "$BUILD/.fastnn-config"
fi
START=$(date +%s)
cmake --build "$BUILD" --target _core -j 2 >&2
SO="$(ls "$BUILD"/_core*.so | head -n 1)"
log "built $SO in $(($(date +%s) - START)) s"

# ------------------------------------------- a package that imports this build
# A stable path (not mktemp) so that numba's on-disk cache, keyed by source
# path and mtime, stays valid between runs.
PKG="$BUILD/pkg"
mkdir -p "$PKG/fastnn"
if command -v rsync >/dev/null 2>&1; then
  rsync -a --delete --exclude '_core*.so' --exclude '__pycache__' "$ROOT/python/fastnn/" "$PKG/fastnn/"
else
  find "$PKG/fastnn" -mindepth 1 -maxdepth 1 ! -name __pycache__ -exec rm -rf {} +
  (cd "$ROOT/python/fastnn" && tar cf - --exclude '_core*.so' --exclude __pycache__ .) | (cd "$PKG/fastnn" && tar xpf -)
fi
rm -f "$PKG"/fastnn/_core*.so
cp "$SO" "$PKG/fastnn/"
echo "$PKG"
