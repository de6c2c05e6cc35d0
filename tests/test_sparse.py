"""The sparse-input path of linear / linear_backward (mostly-zero x, such as
MNIST's pixels): its block-sparse form against a NumPy construction, the
choice between it and the dense GEMM, and its results on every ISA path,
with NaN and infinity, on one and many threads."""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from conftest import block_form, need, sparse_matrix

core = need("fastnn._core")

ISAS = ["generic", "avx2", "avx512", "avx512_bf16"]


def expected_form(x, by_columns):
    """The form from its definition: lines (x's rows, or its columns) grouped
    by 4, positions where any line of the group is nonzero (NaN != 0)."""
    return block_form(x.T if by_columns else x, lambda group: group != 0)


@pytest.mark.parametrize("by_columns", [False, True], ids=["rows", "columns"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (4, 16), (7, 33), (128, 784), (130, 787)])
def test_block_sparse_form_matches_definition(rng, shape, dtype, by_columns):
    x = sparse_matrix(rng, shape, 0.1, dtype)
    if x.size > 2:
        x.flat[2] = np.nan  # a NaN is a nonzero: it must reach the product
    got = core.block_sparse(x, by_columns)
    assert got is not None
    for g, e, name in zip(got, expected_form(x, by_columns), ("count", "index", "values")):
        assert g.dtype == e.dtype and g.shape == e.shape, name
        np.testing.assert_array_equal(g, e, err_msg=name)


@pytest.mark.parametrize("by_columns", [False, True], ids=["rows", "columns"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_sparse_form_lists_whole_lines(rng, dtype, by_columns):
    """Lines nonzero everywhere fill their block's list to its end (the AVX-512
    builder writes whole vectors there), next to blocks that list nothing."""
    x = np.zeros((130, 787), dtype)
    x[:5] = rng.random((5, 787)) + 0.5
    x[:, :5] = rng.random((130, 5)) + 0.5
    got = core.block_sparse(x, by_columns)
    assert got is not None
    for g, e, name in zip(got, expected_form(x, by_columns), ("count", "index", "values")):
        np.testing.assert_array_equal(g, e, err_msg=name)
    assert got[0][0] == (x.shape[0] if by_columns else x.shape[1])


@pytest.mark.parametrize("by_columns", [False, True])
def test_dense_input_is_left_to_the_gemm(rng, by_columns):
    assert core.block_sparse(rng.standard_normal((128, 784)).astype(np.float32), by_columns) is None
    # about half the values zero is still too dense once 4 lines are merged
    assert core.block_sparse(sparse_matrix(rng, (128, 256), 0.5), by_columns) is None
    assert core.block_sparse(sparse_matrix(rng, (128, 784), 0.1), by_columns) is not None


def test_mnist_batch_takes_the_sparse_path():
    from fastnn.datasets import DatasetUnavailableError, load_mnist
    try:
        (x, _), _ = load_mnist()
    except DatasetUnavailableError as exc:  # only "no copy anywhere": a loader bug must fail here
        pytest.skip(f"MNIST is not cached and cannot be downloaded: {exc}")
    batch = np.ascontiguousarray(x[:128], dtype=np.float32)
    assert core.block_sparse(batch) is not None
    assert core.block_sparse(batch, by_columns=True) is not None


# Runs inside a subprocess per ISA. Exits non-zero (traceback on stderr) on failure.
_WORKER = textwrap.dedent(
    r"""
    import os
    import numpy as np
    import fastnn._core as core

    want = os.environ["FASTNN_ISA"]
    assert core.isa() == want, f"asked for {want}, got {core.isa()}"
    rng = np.random.default_rng(99)
    acts = {"none": lambda z: z, "relu": lambda z: np.maximum(z, 0),
            "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh}
    grads = {"none": lambda y: 1.0, "relu": lambda y: (y > 0).astype(np.float64),
             "sigmoid": lambda y: y * (1 - y), "tanh": lambda y: 1 - y * y}

    def close(got, ref, scale, dtype, what):
        rtol = 2e-5 if dtype == np.float32 else 1e-12
        err = np.abs(got.astype(np.float64) - ref)
        assert np.all(err <= rtol * (scale + 1e-3)), f"{what}: max err {err.max():.3g}"

    n = 0
    # rows and columns not multiples of 4 or of a vector, outputs from 1 to past 2 tiles
    for (rows, cols, out) in [(1, 1, 1), (3, 5, 7), (4, 16, 16), (9, 33, 17), (128, 784, 256),
                              (130, 787, 100), (5, 300, 1000)]:
        for dtype in (np.float32, np.float64):
            x = rng.random((rows, cols)).astype(dtype)
            x[rng.random((rows, cols)) >= 0.08] = 0
            assert core.block_sparse(x) is not None and core.block_sparse(x, True) is not None
            W = (rng.standard_normal((cols, out)) / np.sqrt(cols)).astype(dtype)
            b = rng.standard_normal(out).astype(dtype)
            x64, W64 = x.astype(np.float64), W.astype(np.float64)
            z = x64 @ W64 + b
            scale = np.abs(x64) @ np.abs(W64) + np.abs(b)
            for act, f in acts.items():
                what = f"{want} {np.dtype(dtype).name} {rows}x{cols}->{out} {act}"
                y = core.linear(x, W, b, activation=act)
                close(y, f(z), scale, dtype, what + " forward")
                dy = rng.standard_normal((rows, out)).astype(dtype)
                dx, dW, db = core.linear_backward(x, W, dy, None if act == "none" else y, activation=act)
                dz = dy * grads[act](y.astype(np.float64))
                close(dW, x64.T @ dz, np.abs(x64.T) @ np.abs(dz), dtype, what + " dW")
                close(db, dz.sum(0), np.abs(dz).sum(0), dtype, what + " db")
                close(dx, dz @ W64.T, np.abs(dz) @ np.abs(W64.T), dtype, what + " dx")
                n += 1

    # IEEE semantics as in the dense product: 0 * inf is NaN, NaN in x spreads.
    for dtype in (np.float32, np.float64):
        x = np.zeros((8, 64), dtype); x[:, 3] = 1.0
        W = np.ones((64, 32), dtype); W[10, 5] = np.inf
        with np.errstate(invalid="ignore"):
            ref = x @ W
        got = core.linear(x, W)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        x[2, 40] = np.nan
        got = core.linear(x, np.ones((64, 32), dtype))
        assert np.isnan(got[2]).all() and not np.isnan(np.delete(got, 2, axis=0)).any()
        dy = np.ones((8, 32), dtype); dy[4, 7] = np.inf
        x[2, 40] = 0
        with np.errstate(invalid="ignore"):
            ref = x.T @ dy
        _, dW, _ = core.linear_backward(x, np.ones((64, 32), dtype), dy)
        np.testing.assert_array_equal(np.isnan(dW), np.isnan(ref))
        np.testing.assert_array_equal(dW[~np.isnan(dW)], ref[~np.isnan(ref)])
    print("OK", n)
    """
)


@pytest.mark.parametrize("isa", ISAS)
def test_sparse_linear_isa(isa):
    if ISAS.index(core.cpu_isa()) < ISAS.index(isa):
        pytest.skip(f"CPU lacks {isa} (best: {core.cpu_isa()})")
    proc = subprocess.run([sys.executable, "-c", _WORKER], env=dict(os.environ, FASTNN_ISA=isa),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("OK")


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
@pytest.mark.parametrize("rows", [130, 5])
def test_sparse_linear_any_thread_count(rng, threads, rows):
    """The forward's threads split the depth by equal shares of x's nonzeros
    and add up their partial sums; the weight gradient's split the blocks.
    Any thread count, with more threads than blocks, a partial last block and
    depth shares that list nothing, gives the float64 product's values, and
    its NaNs where W or dy holds an infinity."""
    x = sparse_matrix(rng, (rows, 787), 0.15, np.float32)
    x[:, :300] = 0  # no entries at all in the first 300 positions
    x[1] = 0        # a line with no entries
    W = (rng.standard_normal((787, 256)) / 20).astype(np.float32)
    b = rng.standard_normal(256).astype(np.float32)
    dy = rng.standard_normal((rows, 256)).astype(np.float32)
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    assert core.block_sparse(x) is not None
    old = core.num_threads()
    try:
        core.set_num_threads(threads)
        for act, f in (("none", lambda z: z), ("relu", lambda z: np.maximum(z, 0)),
                       ("sigmoid", lambda z: 1 / (1 + np.exp(-z)))):
            y = core.linear(x, W, b, activation=act)
            np.testing.assert_allclose(y, f(x64 @ W64 + b), rtol=1e-5, atol=1e-5)
        _, dW, _ = core.linear_backward(x, W, dy)
        np.testing.assert_allclose(dW, x64.T @ dy, rtol=1e-5, atol=1e-5)
        # An infinity in a row of W that no line lists (x is 0 there) still
        # makes 0 * inf = NaN, as in the dense product; so does one in dy.
        for row, col in ((5, 7), (700, 200)):
            W_inf = W.copy()
            W_inf[row, col] = np.inf
            with np.errstate(invalid="ignore"):
                expected = x64 @ W_inf.astype(np.float64)
            got = core.linear(x, W_inf)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
            np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], rtol=1e-5, atol=1e-5)
        dy_inf = dy.copy()
        dy_inf[3, 9] = -np.inf
        with np.errstate(invalid="ignore"):
            expected = x64.T @ dy_inf.astype(np.float64)
        _, dW, _ = core.linear_backward(x, W, dy_inf)
        np.testing.assert_array_equal(np.isnan(dW), np.isnan(expected))
    finally:
        core.set_num_threads(old)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_linear_threads_bit_identical(rng, dtype):
    """Eight concurrent Python threads give the bits of one call. One kernel
    thread gives the same weight gradient bits, and a forward equal up to
    rounding: threads that split the depth add up their partial sums."""
    x = sparse_matrix(rng, (128, 784), 0.15, dtype)
    W = rng.standard_normal((784, 256)).astype(dtype)
    dy = rng.standard_normal((128, 256)).astype(dtype)

    def run():
        y = core.linear(x, W, None, activation="relu")
        return (y,) + core.linear_backward(x, W, dy, y, activation="relu", need_dx=False)[1:]

    reference = run()
    old = core.num_threads()
    try:
        core.set_num_threads(1)
        single = run()
    finally:
        core.set_num_threads(old)
    errors = []

    def work():
        for _ in range(5):
            if not all(np.array_equal(a, b) for a, b in zip(run(), reference)):
                errors.append("differs")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(single[0], reference[0], rtol=tol, atol=tol * np.abs(reference[0]).max())
    assert all(np.array_equal(a, b) for a, b in zip(single[1:], reference[1:]))
    assert not errors
