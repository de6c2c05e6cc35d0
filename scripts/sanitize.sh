#!/usr/bin/env bash
# Build fastnn._core with AddressSanitizer + UndefinedBehaviorSanitizer
# (-DFASTNN_SANITIZE=ON) in its own build directory and run the kernel tests
# against that build. Exits non-zero if any sanitizer report was written (by
# pytest or by any subprocess a test starts) or if the tests fail.
#
#   PYTHON=.venv/bin/python scripts/sanitize.sh            # default tests
#   scripts/sanitize.sh tests/test_gemm.py -k avx2         # pytest arguments of your choice
#
# Environment:
#   PYTHON            the Python to build for and test with (default: python3)
#   FASTNN_ASAN_DIR   build directory (default: build/asan)
#   FASTNN_SANITIZE_CMAKE_ARGS  extra cmake arguments, e.g. to silence one check while
#                     looking for others: "-DFASTNN_SANITIZE_EXTRA_FLAGS=-fno-sanitize=shift-base"
#
# Works on a fresh clone after `pip install '.[test]'`: scripts/build_core.sh
# builds _core and installs its build-time tools when missing. Python is not
# itself instrumented, so the ASan runtime is LD_PRELOADed and leak detection is off (CPython keeps memory
# until exit by design).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
PYTHON="$(command -v "$PYTHON")"
BUILD="${FASTNN_ASAN_DIR:-$ROOT/build/asan}"
START=$(date +%s)

log() { echo "sanitize.sh: $*" >&2; }

ASAN_LIB="$(g++ -print-file-name=libasan.so)"
if [ ! -e "$ASAN_LIB" ] || [ "$ASAN_LIB" = "libasan.so" ]; then
  log "cannot find the ASan runtime (g++ -print-file-name=libasan.so gave '$ASAN_LIB')"
  exit 2
fi

# ---------------------------------------------------------------- build
# Without NDEBUG (RelWithDebInfo's flags, but -g alone), so that pybind11
# checks that every reference count it touches is touched with the GIL held.
# shellcheck disable=SC2086
PKG="$(PYTHON="$PYTHON" bash "$ROOT/scripts/build_core.sh" "$BUILD" -DFASTNN_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-g ${FASTNN_SANITIZE_CMAKE_ARGS:-} | tail -n 1)"
BUILT=$(date +%s)
log "built in $((BUILT - START)) s"

# ---------------------------------------------------------------- tests
if [ "$#" -eq 0 ]; then
  set --
  for t in test_functional test_gemm test_sparse test_bf16 test_robustness test_properties test_threads test_gradients \
      test_optim test_pool test_nn; do
    [ -f "$ROOT/tests/$t.py" ] && set -- "$@" "tests/$t.py"
  done
fi

LOG="$BUILD/pytest.log"
export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}"
# libstdc++ too: python itself does not link it, and ASan's __cxa_throw
# interceptor must find the real one at start-up ("CHECK failed:
# asan_interceptors.cpp ... real___cxa_throw" at the first C++ exception otherwise).
STDCXX_LIB="$(g++ -print-file-name=libstdc++.so)"
export LD_PRELOAD="$ASAN_LIB:$STDCXX_LIB${LD_PRELOAD:+:$LD_PRELOAD}"
# Every report is fatal, with its own exit code (86 ASan, 87 UBSan), in pytest
# and in every subprocess a test starts (they inherit this environment).
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:exitcode=86${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export NUMBA_CACHE_DIR="$BUILD/numba-cache"
export FASTNN_BACKEND=cpp

# The tests must import the sanitized build, not an installed fastnn.
"$PYTHON" - <<'EOF'
import fastnn, fastnn._core as c, os
where = os.path.dirname(fastnn.__file__)
assert where == os.path.join(os.environ["PYTHONPATH"].split(":")[0], "fastnn"), where
print(f"sanitize.sh: fastnn from {where}, _core {c.__file__}, isa {c.isa()}, threads {c.num_threads()}")
EOF

# --capture=sys: pytest captures Python's sys.stdout/stderr only, so a report
# that the sanitizer runtime writes to file descriptor 2 of the pytest process
# reaches the log even when it kills that process. Reports from subprocesses
# reach it through the failing test's message (the tests print their stderr).
set +e
(cd "$ROOT" && "$PYTHON" -m pytest -q -rfE --capture=sys -p no:cacheprovider "$@") 2>&1 | tee "$LOG"
STATUS=${PIPESTATUS[0]}
set -e
END=$(date +%s)

PATTERN="runtime error:|ERROR: AddressSanitizer|SUMMARY: (Address|UndefinedBehavior)Sanitizer|AddressSanitizer: CHECK failed"
REPORTS=$(grep -cE "$PATTERN" "$LOG" || true)
if [ "$REPORTS" -gt 0 ]; then
  echo "=================== sanitizer reports (first lines; full log: $LOG)" >&2
  grep -nE -B2 -A10 "$PATTERN" "$LOG" | cut -c1-300 | head -n 150 >&2
fi
case "$STATUS" in
  86) log "pytest itself was stopped by an AddressSanitizer report" ;;
  87) log "pytest itself was stopped by an UndefinedBehaviorSanitizer report" ;;
esac
log "tests took $((END - BUILT)) s (build $((BUILT - START)) s, total $((END - START)) s); pytest exit $STATUS; sanitizer report lines: $REPORTS"
if [ "$REPORTS" -gt 0 ]; then
  exit 1
fi
exit "$STATUS"
