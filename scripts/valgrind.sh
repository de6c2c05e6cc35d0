#!/usr/bin/env bash
# Valgrind memcheck over a short Python run of every fastnn._core kernel
# (valid calls, out= calls, and calls that raise), with PYTHONMALLOC=malloc
# so that CPython's own allocations are visible to valgrind.
#
# Reports (and exits 1 on) two things only, both filtered to stacks that go
# through _core:
#   * definite leaks (--leak-check=full --errors-for-leak-kinds=definite),
#   * memory errors (invalid reads/writes, uses of uninitialised values, ...).
# Leaks and errors entirely inside CPython, NumPy or libgomp are counted but
# not judged here. The full log is kept (path printed at the end).
#
# _core is built for this run by scripts/build_core.sh (RelWithDebInfo, so
# that stacks name fastnn's C++ frames) into $FASTNN_VALGRIND_DIR/core.
#
#   PYTHON=.venv/bin/python scripts/valgrind.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
# The interpreter itself, not a wrapper script (pyenv shims are bash scripts,
# and valgrind would check bash instead).
PYTHON="$("$PYTHON" -c 'import sys; print(sys.executable)')"
OUT="${FASTNN_VALGRIND_DIR:-$ROOT/build/valgrind}"
mkdir -p "$OUT"
LOG="$OUT/memcheck.log"
SCRIPT="$OUT/kernels.py"

if ! command -v valgrind >/dev/null 2>&1; then
  echo "valgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2
  exit 2
fi

cat > "$SCRIPT" <<'EOF'
# Every _core kernel a few times: float32 and float64, fresh and out= outputs,
# threads on, plus calls that raise. Small sizes: valgrind runs ~50x slower.
import numpy as np
from fastnn import _core as c

rng = np.random.default_rng(0)
for dt in (np.float32, np.float64):
    x = rng.standard_normal((37, 45)).astype(dt)
    W = rng.standard_normal((45, 29)).astype(dt)
    b = rng.standard_normal(29).astype(dt)
    dy = rng.standard_normal((37, 29)).astype(dt)
    lab = rng.integers(0, 45, 37)
    p = rng.uniform(0.05, 0.95, x.shape).astype(dt)
    t = rng.uniform(0, 1, x.shape).astype(dt)
    probs = c.softmax(x)
    for _ in range(3):
        c.softmax(x); c.log_softmax(x, out=np.empty_like(x))
        d = np.empty_like(x)
        c.cross_entropy(x, lab, 0.1, np.empty(37, dt), d, 0.5)
        c.cross_entropy(x, probs, 0.0)
        for f in ("relu", "sigmoid", "tanh"):
            y = getattr(c, f)(x)
            getattr(c, f + "_backward")(y, x)
        c.leaky_relu(x, 0.1); c.leaky_relu_backward(x, x, 0.1); c.elu(x, 1.0); c.elu_backward(x, x, 1.0)
        c.squared_error(x, t, np.empty_like(x)); c.squared_error_backward(x, t, 0.5)
        c.binary_cross_entropy(p, t); c.binary_cross_entropy_backward(p, t, 0.5, np.empty_like(p))
        c.binary_cross_entropy_with_logits(x, t); c.binary_cross_entropy_with_logits_backward(x, t, 0.5)
        c.cross_entropy_error(probs, lab); c.cross_entropy_error_backward(probs, lab, 0.5)
        c.matmul(x, W); c.matmul(W, x, trans_a=True, trans_b=True); c.matmul(x, x, trans_b=True)
        c.matmul(rng.standard_normal((300, 260)).astype(dt), rng.standard_normal((260, 70)).astype(dt))
        for act in ("none", "relu", "sigmoid", "tanh"):
            y = c.linear(x, W, b, act)
            c.linear_backward(x, W, dy, y, act)
        c.gather_rows(x, lab[:10] % 37)
        c.sgd_step(W.copy(), W, W.copy(), 0.1, 0.9)
        c.adagrad_step(W.copy(), W, np.abs(W), 2.0)
        c.rmsprop_step(W.copy(), W, np.abs(W), W * 0.1, W.copy(), momentum=0.9, centered=True)
        c.adam_step(W.copy(), W, W.copy(), np.abs(W), 3.0)
        for bad in (lambda: c.matmul(x, x), lambda: c.cross_entropy(x, lab + 100),
                    lambda: c.softmax(x.astype(np.int32)), lambda: c.linear(x, W, None, "gelu"),
                    lambda: c.adam_step(W, W, W, W, 1.0), lambda: c.relu(x[:, ::2]),
                    lambda: c.gather_rows(x, np.array([99]))):
            try:
                bad()
            except (TypeError, ValueError, IndexError):
                pass
print("kernels done")
EOF

PKG="$(PYTHON="$PYTHON" bash "$ROOT/scripts/build_core.sh" "$OUT/core" -DCMAKE_BUILD_TYPE=RelWithDebInfo | tail -n 1)"
export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}"

cd "$ROOT"
START=$(date +%s)
set +e
PYTHONMALLOC=malloc FASTNN_NUM_THREADS="${FASTNN_NUM_THREADS:-2}" valgrind --tool=memcheck \
  --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
  --num-callers=40 --log-file="$LOG" "$PYTHON" "$SCRIPT"
STATUS=$?
set -e
END=$(date +%s)

# Split the log into records (blank-line separated), keep the ones whose stack
# goes through fastnn's _core (its .so, or a fastnn:: frame).
set +e
"$PYTHON" - "$LOG" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
records = re.split(r"\n==\d+== \n", text)
leaks, errors, other_leaks, other_errors = [], [], 0, 0
for r in records:
    body = re.sub(r"^==\d+== ?", "", r, flags=re.M).strip()
    if not body:
        continue
    # fastnn's module file (_core.cpython-*.so; not numpy/_core/..., not do_call_core)
    # or a frame of its C++ code (with debug info)
    ours = bool(re.search(r"/_core\.cpython[^/\s]*\.so|fastnn::|src/cpp/", body))
    if "definitely lost" in body and "loss record" in body:
        if ours:
            leaks.append(body)
        else:
            other_leaks += 1
    elif re.match(r"(Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|"
                  r"Mismatched free|Source and destination overlap|Argument .* of function)", body):
        if ours:
            errors.append(body)
        else:
            other_errors += 1
summary = re.findall(r"(definitely lost: .*|ERROR SUMMARY: .*)", text)
print("valgrind.sh: memcheck summary:", "; ".join(summary[-2:]))
print(f"valgrind.sh: definite leaks through _core: {len(leaks)}; memory errors through _core: {len(errors)} "
      f"(outside _core: {other_leaks} definite leak records, {other_errors} errors)")
for r in leaks + errors:
    print("-" * 70)
    print(r[:4000])
sys.exit(1 if leaks or errors else 0)
EOF
RESULT=$?
set -e
echo "valgrind.sh: python exit $STATUS, ran $((END - START)) s; full log: $LOG"
if [ "$STATUS" -ne 0 ]; then
  exit "$STATUS"
fi
exit "$RESULT"
