"""Memory: 10^5 kernel calls (small matmul, softmax_cross_entropy, adam_step,
linear / linear_backward, gather_rows, and calls that raise) leave the
process's resident memory flat. A leak of ~200 bytes per call would add
20 MB; the bound below is that, after a warm-up. scripts/valgrind.sh is the
finer tool (definite leaks whose stack goes through _core)."""
import gc
import os

import numpy as np

import fastnn
import fastnn.functional as F

from conftest import need

core = need("fastnn._core")


def rss_bytes():
    try:
        import psutil
        return psutil.Process().memory_info().rss
    except ImportError:  # /proc/self/statm: resident pages are the second field
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _mix(rng):
    """A list of zero-argument calls, run round-robin. Each error call must raise."""
    a = rng.standard_normal((16, 24)).astype(np.float32)
    b = rng.standard_normal((24, 10)).astype(np.float32)
    bias = rng.standard_normal(10).astype(np.float32)
    logits = rng.standard_normal((16, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 16)
    dlogits = np.empty_like(logits)
    p, g = rng.standard_normal(300).astype(np.float32), rng.standard_normal(300).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    x64 = rng.standard_normal((16, 24))
    bad_labels = labels.copy()
    bad_labels[3] = 10
    readonly = np.zeros((16, 10), np.float32)
    readonly.setflags(write=False)
    step = [0]

    def adam():
        step[0] += 1
        core.adam_step(p, g, m, v, float(step[0]), lr=1e-4)

    ok = [
        lambda: core.matmul(a, b),
        lambda: F.matmul(a, b),
        lambda: F.softmax_cross_entropy(logits, labels),
        lambda: core.cross_entropy(logits, labels, 0.1, None, dlogits, 1 / 16),
        adam,
        lambda: F.linear(a, b, bias, activation="relu"),
        lambda: F.linear_backward(a, b, logits, np.maximum(logits, 0), activation="relu"),
        lambda: F.softmax(logits),
        lambda: F.gather_rows(a, labels),
        lambda: F.relu(x64),
    ]
    errors = [
        lambda: core.matmul(a, x64),                          # dtype mismatch: TypeError
        lambda: core.matmul(a, a),                            # shapes: ValueError
        lambda: core.cross_entropy(logits, bad_labels),       # label out of range: IndexError
        lambda: core.softmax(a, out=readonly[:, :10].copy()),  # out shape: ValueError
        lambda: core.softmax(logits, out=readonly),           # read-only out: ValueError
        lambda: F.softmax_cross_entropy(logits, bad_labels),  # IndexError from Python
        lambda: F.linear(a, b[:5]),                           # ValueError from Python
        lambda: core.adam_step(p, g, m, v, 0.0),              # step < 1: ValueError
        lambda: core.relu(None),                              # TypeError from pybind11
        lambda: core.gather_rows(a, np.array([99])),          # IndexError
    ]
    return ok, errors


def _run(calls_ok, calls_err, n):
    k_ok, k_err = len(calls_ok), len(calls_err)
    for i in range(n):
        if i % 3 == 2:
            try:
                calls_err[(i // 3) % k_err]()
            except (TypeError, ValueError, IndexError):
                pass
            else:
                raise AssertionError(f"error call {(i // 3) % k_err} did not raise")
        else:
            calls_ok[i % k_ok]()


def test_rss_stays_flat_over_1e5_kernel_calls():
    previous = fastnn.backend()
    fastnn.set_backend("cpp")
    try:
        ok, errors = _mix(np.random.default_rng(0))
        _run(ok, errors, 10_000)  # warm up: packing buffers, pybind11 type caches, numpy caches
        gc.collect()
        before = rss_bytes()
        _run(ok, errors, 50_000)
        gc.collect()
        middle = rss_bytes()
        _run(ok, errors, 50_000)
        gc.collect()
        after = rss_bytes()
    finally:
        fastnn.set_backend(previous)
    growth = after - before
    print(f"\nRSS growth over 1e5 calls: {growth / 2**20:.2f} MiB "
          f"(first half {(middle - before) / 2**20:.2f}, second half {(after - middle) / 2**20:.2f})")
    assert growth < 20 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 1e5 kernel calls"
    # A steady leak shows in both halves alike; warm-up effects only in the first.
    assert after - middle < 8 * 2**20, f"RSS grew by {(after - middle) / 2**20:.1f} MiB in the last 5e4 calls"


def test_no_leak_on_error_paths_of_every_core_function():
    """Each public _core function called 150 times with arguments it must
    refuse (pybind11's 'incompatible arguments' or the bindings' own checks,
    after the first array was accepted): every call raises, and RSS stays flat."""
    a = np.ones((2, 2))
    bad = np.ones((1, 1), np.float32)  # dtype mismatch with a
    calls = [(name, (-1,) if name == "set_num_threads" else args)
             for name in dir(core) if not name.startswith("_")
             for args in ((a, bad), (a, bad, bad, bad), (a, a, bad, bad, 1.0))
             # a valid call: x may have any dtype, and a one-element array reads as by_columns=True
             if (name, len(args)) != ("block_sparse", 2)]
    accepted = set()
    gc.collect()
    before = rss_bytes()
    for _ in range(150):
        for name, args in calls:
            try:
                getattr(core, name)(*args)
            except (TypeError, ValueError, IndexError):
                pass
            else:
                accepted.add(f"{name} with {len(args)} arguments")
    gc.collect()
    growth = rss_bytes() - before
    assert not accepted, f"these calls did not raise: {sorted(accepted)}"
    assert growth < 8 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB"
