"""Tests of the C++ GEMM (fastnn._core.matmul / linear) on every ISA path.

Each instruction-set path is exercised in a subprocess started with
FASTNN_ISA=generic|avx2|avx512 (the table is picked once per process), which
checks that the requested path is active and compares against NumPy in
float64. Paths the CPU lacks are skipped.
"""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from conftest import need

core = need("fastnn._core")

ISAS = ["generic", "avx2", "avx512", "avx512_bf16"]
SIZES = [1, 7, 16, 33, 257, 1000]


def _shapes():
    """(M, N, K) triples: every size appears on each of M, N and K, at most
    one side is 1000 (keeps the run to a few seconds per ISA)."""
    n = len(SIZES)
    out = []
    for i in range(n):
        for off in ((1, 2), (3, 5), (2, 4)):
            out.append((SIZES[i], SIZES[(i + off[0]) % n], SIZES[(i + off[1]) % n]))
    return out


# Runs inside the subprocess. Exits non-zero (traceback on stderr) on failure.
_WORKER = textwrap.dedent(
    r"""
    import os, sys, itertools
    import numpy as np
    import fastnn._core as core

    want = os.environ["FASTNN_ISA"]
    assert core.isa() == want, f"asked for {want}, got {core.isa()}"
    shapes = eval(sys.argv[1])
    rng = np.random.default_rng(1234)

    def operands(M, N, K, ta, tb, dtype):
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
        b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        ref = (a64.T if ta else a64) @ (b64.T if tb else b64)
        scale = np.abs(a64.T if ta else a64) @ np.abs(b64.T if tb else b64)
        return a, b, ref, scale

    def check(got, ref, scale, dtype, what):
        assert got.dtype == dtype, what
        assert got.shape == ref.shape, (what, got.shape, ref.shape)
        assert np.all(np.isfinite(got)), what
        rtol = 1e-4 if dtype == np.float32 else 1e-12
        err = np.abs(got.astype(np.float64) - ref)
        bound = rtol * (scale + 1e-3)
        bad = err > bound
        assert not bad.any(), f"{what}: max err {err.max():.3g} (worst ratio {(err / bound).max():.3g})"
        # and relative to the norm
        den = max(np.linalg.norm(ref), 1e-30)
        assert np.linalg.norm(got - ref) / den < (1e-4 if dtype == np.float32 else 1e-13), what

    n = 0
    for (M, N, K) in shapes:
        for ta, tb in itertools.product((False, True), repeat=2):
            for dtype in (np.float32, np.float64):
                a, b, ref, scale = operands(M, N, K, ta, tb, dtype)
                what = f"{want} {np.dtype(dtype).name} M={M} N={N} K={K} trans_a={ta} trans_b={tb}"
                check(core.matmul(a, b, trans_a=ta, trans_b=tb), ref, scale, dtype, what)
                n += 1
        # out= prefilled with NaN: beta = 0 must never read C.
        for dtype in (np.float32, np.float64):
            a, b, ref, scale = operands(M, N, K, False, False, dtype)
            out = np.full((M, N), np.nan, dtype=dtype)
            got = core.matmul(a, b, out=out)
            check(out, ref, scale, dtype, f"{want} out=NaN M={M} N={N} K={K}")

    # K == 0: all zeros (even with a NaN-filled out); M or N == 0: empty.
    for dtype in (np.float32, np.float64):
        for (M, N) in ((1, 1), (7, 33), (257, 16)):
            for ta, tb in itertools.product((False, True), repeat=2):
                a = np.ones((0, M) if ta else (M, 0), dtype)
                b = np.ones((N, 0) if tb else (0, N), dtype)
                got = core.matmul(a, b, trans_a=ta, trans_b=tb)
                assert got.shape == (M, N) and np.all(got == 0), (M, N, ta, tb)
            out = np.full((M, N), np.nan, dtype)
            core.matmul(np.ones((M, 0), dtype), np.ones((0, N), dtype), out=out)
            assert np.all(out == 0)
        assert core.matmul(np.ones((0, 5), dtype), np.ones((5, 3), dtype)).shape == (0, 3)
        assert core.matmul(np.ones((4, 5), dtype), np.ones((5, 0), dtype)).shape == (4, 0)

    # Fused epilogue through linear(): bias + activation in the GEMM store.
    acts = {
        "none": lambda z: z,
        "relu": lambda z: np.maximum(z, 0),
        "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
        "tanh": np.tanh,
    }
    for (M, N, K) in ((1, 1, 1), (7, 33, 16), (33, 257, 7), (128, 256, 784), (16, 1000, 33)):
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal((M, K)).astype(dtype)
            W = (rng.standard_normal((K, N)) / np.sqrt(K)).astype(dtype)
            bias = rng.standard_normal(N).astype(dtype)
            z = x.astype(np.float64) @ W.astype(np.float64) + bias
            tol = 2e-5 if dtype == np.float32 else 1e-12
            for act, f in acts.items():
                for use_bias in (True, False):
                    zz = z if use_bias else z - bias
                    got = core.linear(x, W, bias if use_bias else None, activation=act)
                    err = np.abs(got - f(zz)).max()
                    assert err < tol * (1 + np.abs(zz).max()), (want, M, N, K, act, use_bias, err)

    # relu must propagate NaN like np.maximum.
    x = np.ones((3, 4), np.float32); x[1, 2] = np.nan
    got = core.linear(x, np.ones((4, 40), np.float32), None, activation="relu")
    assert np.isnan(got[1]).all() and not np.isnan(got[[0, 2]]).any()

    # The gate in dx's store: linear_backward(x_activation=a) with x = a(u)
    # gives (dy @ W.T) * a'(u), also when K (here out) spans several blocks.
    grads = {
        "relu": lambda x: (x > 0).astype(np.float64),
        "sigmoid": lambda x: x * (1 - x),
        "tanh": lambda x: 1 - x * x,
    }
    for (M, n_in, n_out) in ((1, 1, 1), (7, 33, 16), (33, 257, 7), (128, 256, 128), (16, 1000, 33), (20, 40, 1000)):
        for dtype in (np.float32, np.float64):
            u = rng.standard_normal((M, n_in))
            W = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_out)).astype(dtype)
            dy = rng.standard_normal((M, n_out)).astype(dtype)
            plain = dy.astype(np.float64) @ W.astype(np.float64).T
            tol = 2e-5 if dtype == np.float32 else 1e-12
            for act, grad in grads.items():
                x = acts[act](u).astype(dtype)
                dx = core.linear_backward(x, W, dy, x_activation=act)[0]
                err = np.abs(dx - plain * grad(x.astype(np.float64))).max()
                assert err < tol * (1 + np.abs(plain).max()), (want, M, n_in, n_out, act, err)
    print("OK", n)
    """
)


def _isa_rank(name):
    return ISAS.index(name)


@pytest.mark.parametrize("isa", ISAS)
def test_gemm_isa(isa):
    if _isa_rank(core.cpu_isa()) < _isa_rank(isa):
        pytest.skip(f"CPU lacks {isa} (best: {core.cpu_isa()})")
    env = dict(os.environ, FASTNN_ISA=isa)
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER, repr(_shapes())],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("OK")


def test_shapes_cover_every_size_on_every_side():
    shapes = _shapes()
    for side in range(3):
        assert {s[side] for s in shapes} == set(SIZES)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_bit_identical(dtype):
    """Concurrent Python threads (each with its own OpenMP team) give results
    bit-identical to serial calls, whatever the thread count."""
    rng = np.random.default_rng(7)
    cases = []
    for (M, N, K, ta, tb) in [
        (128, 256, 784, False, False),
        (128, 784, 256, False, True),
        (784, 256, 128, True, False),
        (257, 33, 1000, True, True),
        (33, 1000, 257, False, False),
        (7, 16, 1, False, True),
    ]:
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
        b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
        cases.append((a, b, ta, tb))
    serial = [core.matmul(a, b, trans_a=ta, trans_b=tb) for (a, b, ta, tb) in cases]

    old = core.num_threads()
    try:
        core.set_num_threads(1)
        single = [core.matmul(a, b, trans_a=ta, trans_b=tb) for (a, b, ta, tb) in cases]
    finally:
        core.set_num_threads(old)
    for s, r in zip(serial, single):
        assert np.array_equal(s, r)

    errors = []

    def work(tid):
        try:
            for it in range(6):
                i = (tid + it) % len(cases)
                a, b, ta, tb = cases[i]
                got = core.matmul(a, b, trans_a=ta, trans_b=tb)
                if not np.array_equal(got, serial[i]):
                    errors.append((tid, it, i))
        except Exception as e:  # pragma: no cover
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
