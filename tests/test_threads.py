"""Threads: the C++ kernels release the GIL, are safe to call from many Python
threads at once, and give the same results whatever fastnn.set_num_threads says.

Thread-count tolerance (test_thread_count_does_not_change_results):
* bit-identical for 1 and 2 threads: matmul / linear / linear_backward (the
  GEMM's K blocking depends on K only and every C element is summed by one
  thread in one order; db is summed per column by one thread in row order),
  except linear on a mostly-zero x, whose threads split the depth and add up
  their partial sums (test_sparse.py bounds that difference),
  softmax / log_softmax and the per-row losses and dlogits of cross_entropy
  (one row = one thread), every elementwise kernel and every optimizer step;
* scalar reductions (the summed cross-entropy, squared error and BCE losses)
  add per-thread partial sums in double, so their last bits depend on the
  thread count: they agree to 1e-12 relative (float32 data) and 1e-13
  (float64 data).
"""
import ctypes
import sys
import threading
import time

import numpy as np
import pytest

import fastnn
import fastnn.functional as F
from fastnn import backends

core = pytest.importorskip("fastnn._core")


@pytest.fixture
def cpp():
    previous = fastnn.backend()
    fastnn.set_backend("cpp")
    threads = core.num_threads()
    yield
    core.set_num_threads(threads)
    fastnn.set_backend(previous)


# ------------------------------------------------------------ GIL release

def _long_calls(rng):
    """(name, buffer, sentinel, call) for _core calls long enough (milliseconds)
    for another thread to look at `buffer` while `call` writes it: each call's
    output (or, for the optimizer, its in-place state) is `buffer`, which holds
    `sentinel` everywhere before the call and nowhere after it."""
    a = rng.standard_normal((1024, 1024)).astype(np.float32)
    x = rng.standard_normal((4096, 1024)).astype(np.float32)
    W = rng.standard_normal((1024, 512)).astype(np.float32)
    dy = rng.standard_normal((4096, 512)).astype(np.float32)
    y = np.maximum(rng.standard_normal((4096, 512)), 0).astype(np.float32)
    logits = rng.standard_normal((1 << 14, 1000)).astype(np.float32)
    labels = rng.integers(0, 1000, 1 << 14)
    big = rng.standard_normal(1 << 22).astype(np.float32)
    rows = rng.integers(0, 4096, 1 << 14)
    p, g = (rng.standard_normal(1 << 23).astype(np.float32) for _ in range(2))
    v = np.abs(rng.standard_normal(1 << 23)).astype(np.float32)
    nan = np.float32(np.nan)

    def out(shape):
        return np.full(shape, nan, np.float32)

    product, act, dx = out(a.shape), out((4096, 512)), out(x.shape)
    probs, dlogits, th, squares = out(logits.shape), out(logits.shape), out(g.shape), out(big.shape)
    m, gathered = np.zeros_like(p), out((1 << 14, 1024))
    return [
        ("matmul", product, nan, lambda: core.matmul(a, a, out=product)),
        ("linear", act, nan, lambda: core.linear(x, W, None, "relu", out=act)),
        ("linear_backward", dx, nan, lambda: core.linear_backward(x, W, dy, y, "relu", dx_out=dx)),
        ("softmax", probs, nan, lambda: core.softmax(logits, out=probs)),
        ("cross_entropy", dlogits, nan, lambda: core.cross_entropy(logits, labels, 0.1, None, dlogits)),
        ("tanh", th, nan, lambda: core.tanh(g, out=th)),
        ("squared_error", squares, nan, lambda: core.squared_error(big, big[::-1].copy(), squares)),
        # exp_avg starts at 0 and becomes 0.1 * grad, nonzero for every element
        ("adam_step", m, np.float32(0), lambda: core.adam_step(p, g, m, v, 10.0)),
        ("gather_rows", gathered, nan, lambda: core.gather_rows(x, rows, out=gathered)),
    ]


def _seen_mid_write(buffer, sentinel, call, attempts):
    """Whether a second Python thread, holding the GIL, ever sees `buffer`
    partly written (some probes still `sentinel`, some not) while `call` runs,
    in up to `attempts` calls. With an enormous switch interval a thread gives
    up the GIL only when it blocks or when C++ releases it, so the watcher's
    probe loop and the caller's Python code each run without interruption: a
    half-written buffer can only be seen if `call` wrote it while not holding
    the GIL. Before the call every probe is the sentinel, after it none is."""
    flat = buffer.reshape(-1)
    probes = np.linspace(0, flat.size - 1, 64).astype(int).tolist()
    unwritten = (lambda v: v != v) if sentinel != sentinel else (lambda v: v == sentinel)
    seen = []
    for _ in range(attempts):
        flat[:] = sentinel
        go, done = threading.Event(), threading.Event()

        def watch():
            go.wait()
            while not done.is_set():
                state = [unwritten(flat.item(i)) for i in probes]  # no GIL release in here
                if any(state) and not all(state):
                    seen.append(True)
                    return
                time.sleep(1e-4)  # blocks, so the caller can take the GIL back when its call returns

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        go.set()
        call()
        done.set()
        watcher.join(timeout=60)  # a hang guard only
        assert not watcher.is_alive(), "the watching thread hangs"
        assert not any(unwritten(flat.item(i)) for i in probes), "the call left part of its output unwritten"
        if seen:
            return True
    return False


def test_kernels_release_the_gil(cpp):
    """While one thread is inside a long _core call, another Python thread
    runs and sees the call's output half written (see _seen_mid_write): proof,
    without any clock, that the call computes without the GIL. The method
    itself, on libc's memset: called through ctypes.CDLL (which releases the
    GIL) it is seen half done, through ctypes.PyDLL (which holds it) never."""
    core.set_num_threads(1)  # leave the second core to the watching thread
    calls = _long_calls(np.random.default_rng(0))
    for _, _, _, call in calls:
        call()  # warm up (first touch, packing buffers)
    filled = np.full(1 << 25, np.nan, np.float32)
    memsets = {}
    for name, library in (("releasing", ctypes.CDLL(None)), ("holding", ctypes.PyDLL(None))):
        memsets[name] = library.memset
        memsets[name].argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        for name, attempts in (("holding", 3), ("releasing", 100)):
            seen = _seen_mid_write(filled, np.float32(np.nan),
                                   lambda: memsets[name](filled.ctypes.data, 0, filled.nbytes), attempts)
            assert seen == (name == "releasing"), f"memset {name} the GIL: seen half written = {seen}"
        held = [name for name, buffer, sentinel, call in calls
                if not _seen_mid_write(buffer, sentinel, call, attempts=100)]
    finally:
        sys.setswitchinterval(switch_interval)
    assert not held, f"no other Python thread ran while these kernels wrote their output: {held}"


# ------------------------------------------------ concurrent callers

def _workloads(dtype, seed=1):
    """Each entry: name -> function(i) returning arrays; i picks the inputs.
    Sizes take the OpenMP paths (>= 32768 elements, > 1 MFLOP per GEMM)."""
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((256, 300)).astype(dtype) for _ in range(3)]
    Ws = [rng.standard_normal((300, 130)).astype(dtype) for _ in range(3)]
    bs = [rng.standard_normal(130).astype(dtype) for _ in range(3)]
    dys = [rng.standard_normal((256, 130)).astype(dtype) for _ in range(3)]
    logits = [rng.standard_normal((512, 97)).astype(dtype) for _ in range(3)]
    labels = [rng.integers(0, 97, 512) for _ in range(3)]
    params = [rng.standard_normal(70000).astype(dtype) for _ in range(3)]
    grads = [rng.standard_normal((5, 70000)).astype(dtype) for _ in range(3)]

    def linear_backward(i):
        y = F.linear(xs[i], Ws[i], bs[i], activation="tanh")
        return (y,) + F.linear_backward(xs[i], Ws[i], dys[i], y, activation="tanh")

    def adam(i):
        # each caller owns its parameter and state: five steps
        p = params[i].copy()
        m, v = np.zeros_like(p), np.zeros_like(p)
        opt = backends.active()
        for step in range(5):
            opt.adam_step(p, grads[i][step], m, v, float(step + 1), lr=1e-2, weight_decay=0.01)
        return p, m, v

    return {
        "matmul": lambda i: (F.matmul(xs[i], Ws[i]), F.matmul(xs[i], xs[i], trans_b=True)),
        "linear": lambda i: (F.linear(xs[i], Ws[i], bs[i], activation="relu"),),
        "linear_backward": linear_backward,
        "softmax_cross_entropy": lambda i: F.softmax_cross_entropy(logits[i], labels[i], label_smoothing=0.1),
        "adam_step": adam,
    }


def _same_bits(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes()
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("backend", ["cpp", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_concurrent_callers_get_the_serial_results(backend, dtype):
    """8 Python threads x 12 calls, mixing every workload on shared read-only
    inputs (and thread-private optimizer state), all at once: every result is
    bit-identical to the serial one."""
    previous = fastnn.backend()
    fastnn.set_backend(backend)
    try:
        work = _workloads(dtype)
        names = list(work)
        serial = {(n, i): work[n](i) for n in names for i in range(3)}
        errors = []
        barrier = threading.Barrier(8)

        def run(tid):
            try:
                barrier.wait()
                for it in range(12 if backend == "cpp" else 6):
                    n = names[(tid + it) % len(names)]
                    i = (tid * 7 + it) % 3
                    got = work[n](i)
                    if not all(_same_bits(g, s) for g, s in zip(got, serial[(n, i)])):
                        errors.append(f"thread {tid} call {it}: {n}[{i}] differs from the serial result")
            except Exception as exc:  # noqa: BLE001
                errors.append(f"thread {tid}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads), "a thread hangs"
        assert not errors, "\n".join(errors[:20])
    finally:
        fastnn.set_backend(previous)


# ------------------------------------------------------- thread count

def _all_kernels(dtype, rng):
    """name -> (callable, kind) over sizes large enough to be split across threads."""
    x = rng.standard_normal((300, 257)).astype(dtype)
    W = rng.standard_normal((257, 190)).astype(dtype)
    b = rng.standard_normal(190).astype(dtype)
    dy = rng.standard_normal((300, 190)).astype(dtype)
    logits = rng.standard_normal((600, 113)).astype(dtype)
    labels = rng.integers(0, 113, 600)
    probs = F.softmax(rng.standard_normal((600, 113)).astype(dtype))
    v = rng.standard_normal(1 << 17).astype(dtype)
    t01 = rng.uniform(0, 1, 1 << 17).astype(dtype)
    p01 = rng.uniform(0.01, 0.99, 1 << 17).astype(dtype)
    idx = rng.integers(0, 300, 5000)

    def optimizer(name, **kw):
        def run():
            opt = backends.active()
            p, s1, s2, s3 = v.copy(), np.abs(v[::-1]).copy(), v[::-1] * 0.1, np.zeros_like(v)
            g = (v * 0.5)[::-1].copy()
            if name == "sgd_step":
                opt.sgd_step(p, g, s3, 0.1, momentum=0.9, nesterov=True, weight_decay=0.01, first_step=False)
            elif name == "adagrad_step":
                opt.adagrad_step(p, g, s1, 3.0, lr=0.1, lr_decay=0.01)
            elif name == "rmsprop_step":
                opt.rmsprop_step(p, g, s1 + 1, s2, s3, lr=0.01, momentum=0.9, centered=True)
            else:
                opt.adam_step(p, g, s2, s1, 7.0, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
            return p
        return run

    exact = {
        "matmul": lambda: F.matmul(x, W),
        "matmul_tt": lambda: F.matmul(W, x, trans_a=True, trans_b=True),
        "linear": lambda: F.linear(x, W, b, activation="sigmoid"),
        "linear_backward": lambda: F.linear_backward(x, W, dy, F.tanh(dy), activation="tanh"),
        "softmax": lambda: F.softmax(logits),
        "log_softmax": lambda: F.log_softmax(logits),
        "cross_entropy[none]": lambda: F.cross_entropy(logits, labels, reduction="none", label_smoothing=0.1),
        "dlogits": lambda: F.softmax_cross_entropy(logits, probs)[1],
        "relu": lambda: F.relu(v), "sigmoid": lambda: F.sigmoid(v), "tanh": lambda: F.tanh(v),
        "elu": lambda: F.elu(v), "leaky_relu_backward": lambda: F.leaky_relu_backward(v, t01),
        "mse_backward": lambda: F.mean_squared_error_backward(v, t01),
        "bce_backward": lambda: F.binary_cross_entropy_backward(p01, t01),
        "gather_rows": lambda: F.gather_rows(x, idx),
        "sgd_step": optimizer("sgd_step"), "adagrad_step": optimizer("adagrad_step"),
        "rmsprop_step": optimizer("rmsprop_step"), "adam_step": optimizer("adam_step"),
    }
    reductions = {
        "cross_entropy[mean]": lambda: F.cross_entropy(logits, labels, label_smoothing=0.1),
        "softmax_cross_entropy[sum]": lambda: F.softmax_cross_entropy(logits, probs, reduction="sum")[0],
        "mean_squared_error": lambda: F.mean_squared_error(v, t01),
        "sum_squared_error": lambda: F.sum_squared_error(v, t01),
        "binary_cross_entropy": lambda: F.binary_cross_entropy(p01, t01),
        "bce_with_logits": lambda: F.binary_cross_entropy_with_logits(v, t01, reduction="sum"),
        "cross_entropy_error": lambda: F.cross_entropy_error(probs, labels),
    }
    return exact, reductions


@pytest.mark.parametrize("backend", ["cpp", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_count_does_not_change_results(backend, dtype):
    """fastnn.set_num_threads(1) against set_num_threads(2): see the module
    docstring for what must be bit-identical and the bound on the rest."""
    previous_backend, previous_threads = fastnn.backend(), core.num_threads()
    fastnn.set_backend(backend)
    try:
        results = {}
        for n in (1, 2):
            fastnn.set_num_threads(n)
            exact, reductions = _all_kernels(dtype, np.random.default_rng(11))
            results[n] = ({k: f() for k, f in exact.items()}, {k: f() for k, f in reductions.items()})
        differ = []
        for name, one in results[1][0].items():
            two = results[2][0][name]
            one, two = (one, two) if isinstance(one, tuple) else ((one,), (two,))
            if not all(_same_bits(a, b) for a, b in zip(one, two)):
                differ.append(name)
        assert not differ, f"not bit-identical between 1 and 2 threads on {backend}: {differ}"
        bound = 1e-12 if dtype == np.float32 else 1e-13
        for name, one in results[1][1].items():
            two = results[2][1][name]
            assert abs(one - two) <= bound * abs(one), (name, one, two)
    finally:
        fastnn.set_num_threads(previous_threads)
        fastnn.set_backend(previous_backend)
