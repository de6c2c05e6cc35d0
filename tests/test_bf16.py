"""bf16 matmuls: fastnn.set_float32_matmul_precision("medium") on the cpp backend.

The reference rounds the inputs to bfloat16 as the kernels do (round to
nearest even, NaN kept, denormals to zero: VCVTNE2PS2BF16), by bit operations
on float32, and multiplies in float64. What is left between the kernel and it
is float32 accumulation. Against float32 the error is what bf16 rounding
allows: each input is off by at most 2^-8 of itself, so each product by
2^-7 (+ 2^-16), and an element of C by that much of sum_k |a_ik| |b_kj|.
"""
import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastnn
import fastnn.functional as F
from fastnn import nn

from conftest import block_form, sparse_matrix

core = pytest.importorskip("fastnn._core")
needs_bf16 = pytest.mark.skipif(not core.has_bf16(), reason="no AVX512_BF16 on this CPU (or FASTNN_ISA caps it)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = (1, 7, 16, 33, 257, 1000)
# (M, N, K): each size on every side twice; edge tiles in M (257 = 18 * 14 + 5),
# N (1000 = 31 * 32 + 8), odd K (a last pair with a zero partner), N over one
# N block and M over one M block; and K over one K block (1024) and over two.
SHAPES = [(SIZES[i], SIZES[(i + a) % 6], SIZES[(i + b) % 6]) for a, b in ((1, 2), (3, 5)) for i in range(6)] + [
    (33, 70, 1500), (16, 257, 2085)]
TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]


def to_bf16(x):
    """float32 -> the nearest bfloat16, ties to even, as float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16) & 0xFFFFFFFF
    out = rounded.astype(np.uint32).view(np.float32).copy()
    denormal = ((bits >> 23) & 0xFF) == 0
    out[denormal] = np.copysign(np.float32(0), x[denormal])
    out[np.isnan(x)] = np.nan
    return out


def operands(rng, M, N, K, trans_a, trans_b):
    a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    return a, b, (a.T if trans_a else a), (b.T if trans_b else b)


def bf16_reference(A, B):
    return to_bf16(A).astype(np.float64) @ to_bf16(B).astype(np.float64)


def accumulation_bound(A, B):
    """|kernel - bf16_reference|: float32 sums of K exact products (and the
    dot-product instruction's two roundings per pair)."""
    K = A.shape[1]
    return (K + 2) * 2.0 ** -24 * (np.abs(to_bf16(A)).astype(np.float64) @ np.abs(to_bf16(B)))


def rounding_bound(A, B):
    """|bf16 product - float32 product| per element."""
    K = A.shape[1]
    scale = np.abs(A).astype(np.float64) @ np.abs(B).astype(np.float64)
    return (2.0 ** -7 + 2.0 ** -16 + 2 * (K + 2) * 2.0 ** -24) * scale


@pytest.fixture
def medium():
    """The cpp backend in "medium" precision for one test, then the previous settings."""
    backend, precision = fastnn.backend(), fastnn.get_float32_matmul_precision()
    fastnn.set_backend("cpp")
    fastnn.set_float32_matmul_precision("medium")
    try:
        yield
    finally:
        fastnn.set_float32_matmul_precision(precision)
        fastnn.set_backend(backend)


def test_reference_rounds_to_nearest_even():
    # 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1);
    # 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: up, to even.
    x = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -(1 + 3 * 2 ** -8), np.inf, -np.inf,
                  np.float32(3.4e38), 1e-40, np.nan], dtype=np.float32)
    want = [1.0, 1 + 2 ** -6, 1 + 2 ** -7, -(1 + 2 ** -6), np.inf, -np.inf, np.inf, 0.0, np.nan]
    np.testing.assert_array_equal(to_bf16(x), np.array(want, dtype=np.float32))


@needs_bf16
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
def test_kernel_rounds_to_nearest_even(medium, trans_a, trans_b):
    # Ties in both operands, in both layouts of each: truncation would give 1 + 2^-7 for 1 + 3 * 2^-8.
    K = 40  # a tie at k = 33 sits in the scalar tail of the transposed B packing
    for value, want in ((1 + 3 * 2 ** -8, 1 + 2 ** -6), (1 + 2 ** -8, 1.0), (1 + 2 ** -8 + 2 ** -20, 1 + 2 ** -7)):
        for k in (0, 1, 33):
            for tied in ("a", "b"):
                A = np.zeros((3, K), np.float32)
                B = np.zeros((K, 34), np.float32)
                A[:, k], B[k, :] = 1.0, 1.0
                if tied == "a":
                    A[:, k] = value
                else:
                    B[k, :] = value
                a = np.ascontiguousarray(A.T) if trans_a else A
                b = np.ascontiguousarray(B.T) if trans_b else B
                got = core.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
                np.testing.assert_array_equal(got, np.full((3, 34), want, np.float32), err_msg=f"{value} {k} {tied}")


@needs_bf16
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("M, N, K", SHAPES)
def test_matmul_matches_bf16_reference(medium, M, N, K, trans_a, trans_b):
    rng = np.random.default_rng(M * 1000003 + N * 1009 + K)
    a, b, A, B = operands(rng, M, N, K, trans_a, trans_b)
    got = core.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    err = np.abs(got - bf16_reference(A, B))
    assert (err <= accumulation_bound(A, B)).all(), err.max()


@needs_bf16
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("M, N, K", [(33, 257, 1000), (257, 7, 33), (16, 1000, 16), (7, 33, 7)])
def test_error_against_float32_is_within_the_bf16_bound(M, N, K, trans_a, trans_b):
    """Medium is within rounding_bound of float32 ("highest"), and that bound
    is tight enough to reject the product of pairs packed in the wrong order
    (k and k + 1 of A swapped against B's)."""
    rng = np.random.default_rng(K)
    a, b, A, B = operands(rng, M, N, K, trans_a, trans_b)
    precision = fastnn.get_float32_matmul_precision()
    try:
        fastnn.set_float32_matmul_precision("highest")
        exact = core.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
        fastnn.set_float32_matmul_precision("medium")
        got = core.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    finally:
        fastnn.set_float32_matmul_precision(precision)
    bound = rounding_bound(A, B)
    assert (np.abs(got - exact) <= bound).all()
    assert not np.array_equal(got, exact)  # really rounded
    swap = np.arange(K)
    swap[: K // 2 * 2] = swap[: K // 2 * 2].reshape(-1, 2)[:, ::-1].ravel()
    swapped = to_bf16(A)[:, swap].astype(np.float64) @ to_bf16(B).astype(np.float64)
    assert (np.abs(swapped - exact) > bound).mean() > 0.5


@needs_bf16
def test_highest_is_unchanged(tmp_path):
    """In a fresh process: "highest" before "medium" was ever set, the same
    after setting it back, and FASTNN_ISA=avx512 (no bf16 table at all) give
    bit-identical matmul, linear and linear_backward, dense and sparse;
    "medium" differs."""
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import fastnn
        import fastnn.functional as F
        fastnn.set_backend("cpp")
        rng = np.random.default_rng(3)
        x = rng.standard_normal((130, 300)).astype(np.float32)
        W = rng.standard_normal((300, 70)).astype(np.float32)
        b = rng.standard_normal(70).astype(np.float32)
        dy = rng.standard_normal((130, 70)).astype(np.float32)
        sparse_x = np.where(rng.random(x.shape) < 0.1, np.abs(x), 0).astype(np.float32)  # the sparse products

        def run():
            y = F.linear(x, W, b, activation="relu")
            dx, dW, db = F.linear_backward(x, W, dy)
            sparse_dW = F.linear_backward(sparse_x, W, dy)[1]
            return [F.matmul(x, W), F.matmul(x.T.copy(), dy), y, dx, dW, F.linear(sparse_x, W, b), sparse_dW, db]

        first = run()
        if sys.argv[2] == "cycle":
            fastnn.set_float32_matmul_precision("medium")
            medium = run()
            assert not any(np.array_equal(m, f) for m, f in zip(medium[:7], first[:7]))
            fastnn.set_float32_matmul_precision("high")
            assert all(np.array_equal(h, f) for h, f in zip(run(), first))
            fastnn.set_float32_matmul_precision("highest")
            assert all(np.array_equal(h, f) for h, f in zip(run(), first))
        np.savez(sys.argv[1], *first)
        """
    )
    results = {}
    for name, isa, mode in (("default", None, "cycle"), ("avx512", "avx512", "plain")):
        env = {k: v for k, v in os.environ.items() if k != "FASTNN_ISA"}
        if isa:
            env["FASTNN_ISA"] = isa
        path = str(tmp_path / f"{name}.npz")
        proc = subprocess.run([sys.executable, "-c", script, path, mode], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with np.load(path) as z:
            results[name] = [z[k] for k in sorted(z.files, key=lambda s: int(s.split("_")[1]))]
    for got, want in zip(results["default"], results["avx512"]):
        np.testing.assert_array_equal(got, want)


@needs_bf16
def test_float64_is_never_rounded(medium):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((40, 50))
    b = rng.standard_normal((50, 60))
    got = F.matmul(a, b)
    fastnn.set_float32_matmul_precision("highest")
    np.testing.assert_array_equal(got, F.matmul(a, b))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_other_backends_keep_float32_in_medium(backend):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((20, 30)).astype(np.float32)
    b = rng.standard_normal((30, 10)).astype(np.float32)
    previous_backend, previous = fastnn.backend(), fastnn.get_float32_matmul_precision()
    try:
        fastnn.set_backend(backend)
        want = F.matmul(a, b)
        fastnn.set_float32_matmul_precision("medium")
        np.testing.assert_array_equal(F.matmul(a, b), want)
    finally:
        fastnn.set_float32_matmul_precision(previous)
        fastnn.set_backend(previous_backend)


def test_bad_precision_values():
    with pytest.raises(ValueError, match="'highest', 'high' or 'medium'"):
        fastnn.set_float32_matmul_precision("low")
    with pytest.raises(ValueError, match="'highest', 'high' or 'medium'"):
        core.set_matmul_precision("Medium")
    with pytest.raises(TypeError, match="str"):
        fastnn.set_float32_matmul_precision(2)
    assert fastnn.get_float32_matmul_precision() in ("highest", "high", "medium")


def test_info_reports_precision_and_bf16():
    previous = fastnn.get_float32_matmul_precision()
    try:
        for p in ("medium", "high", "highest"):
            fastnn.set_float32_matmul_precision(p)
            assert fastnn.info()["matmul_precision"] == p
            assert core.matmul_precision() == p
    finally:
        fastnn.set_float32_matmul_precision(previous)
    assert fastnn.info()["bf16"] is core.has_bf16()
    assert core.has_bf16() == (core.isa() == "avx512_bf16")


@needs_bf16
def test_threads_see_the_setting(medium):
    """Set in one thread, used by kernels called from others: medium results
    in every thread, then highest after another thread sets it."""
    rng = np.random.default_rng(8)
    a = rng.standard_normal((64, 200)).astype(np.float32)
    b = rng.standard_normal((200, 48)).astype(np.float32)
    want_medium = core.matmul(a, b)
    seen, errors = [], []

    def worker(expect):
        try:
            seen.append((fastnn.get_float32_matmul_precision(), np.array_equal(core.matmul(a, b), expect)))
        except Exception as e:  # reported below
            errors.append(e)

    def run(expect):
        threads = [threading.Thread(target=worker, args=(expect,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads) and not errors, errors

    run(want_medium)
    assert seen == [("medium", True)] * 4
    setter = threading.Thread(target=fastnn.set_float32_matmul_precision, args=("highest",))
    setter.start()
    setter.join(timeout=60)
    want_highest = core.matmul(a, b)
    assert not np.array_equal(want_highest, want_medium)
    seen.clear()
    run(want_highest)
    assert seen == [("highest", True)] * 4


def test_isa_cap_turns_bf16_off():
    """FASTNN_ISA=avx512 (a CPU without AVX512_BF16, simulated): info says
    bf16 false and "medium" runs the float32 code, bit for bit."""
    script = textwrap.dedent(
        """
        import json
        import numpy as np
        import fastnn
        from fastnn import _core
        rng = np.random.default_rng(1)
        a = rng.standard_normal((50, 77)).astype(np.float32)
        b = rng.standard_normal((77, 40)).astype(np.float32)
        want = _core.matmul(a, b)
        fastnn.set_float32_matmul_precision("medium")
        info = fastnn.info()
        print(json.dumps({"isa": info["isa"], "bf16": info["bf16"], "precision": info["matmul_precision"],
                          "same": bool(np.array_equal(_core.matmul(a, b), want))}))
        """
    )
    env = dict(os.environ, FASTNN_ISA="avx512")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if core.cpu_isa() in ("avx512", "avx512_bf16"):
        assert report["isa"] == "avx512"
    assert report == {**report, "bf16": False, "precision": "medium", "same": True}


@needs_bf16
def test_non_finite_inputs_give_what_float32_gives(medium):
    rng = np.random.default_rng(9)
    for trans_a, trans_b in TRANSPOSES:
        M, N, K = 30, 45, 67
        a, b, A, B = operands(rng, M, N, K, trans_a, trans_b)
        A[3, 5], A[7, 60], A[11, 0] = np.nan, np.inf, -np.inf
        B[9, 2], B[66, 40] = np.inf, -np.inf
        B[5, 10], B[0, :7] = 0.0, 0.0  # inf * 0
        a = np.ascontiguousarray(A.T) if trans_a else np.ascontiguousarray(A)
        b = np.ascontiguousarray(B.T) if trans_b else np.ascontiguousarray(B)
        got = core.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
        fastnn.set_float32_matmul_precision("highest")
        want = core.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
        fastnn.set_float32_matmul_precision("medium")
        assert np.isnan(want).any() and np.isinf(want).any()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
        finite = np.isfinite(want)
        clean_A, clean_B = np.nan_to_num(A, posinf=0, neginf=0), np.nan_to_num(B, posinf=0, neginf=0)
        assert (np.abs(got[finite] - want[finite]) <= rounding_bound(clean_A, clean_B)[finite]).all()


def expected_pair_form(x, by_columns):
    """The form of bf16 pairs from its definition: lines grouped by 4, depths
    by 2, a pair listed where any line of the group has a nonzero there once
    rounded (a zero of either sign is zero), the lines' two bf16 bit patterns
    side by side (depth 2p in the low half)."""
    a = x.T if by_columns else x
    lines, depth = a.shape
    padded = np.zeros((lines, depth + depth % 2), np.float32)
    padded[:, :depth] = a
    bits = to_bf16(padded).view(np.uint32) >> 16
    pairs = bits[:, 0::2] | (bits[:, 1::2] << 16)
    return block_form(pairs, lambda group: (group & 0x7FFF7FFF) != 0)


@needs_bf16
@pytest.mark.parametrize("by_columns", [False, True], ids=["rows", "columns"])
@pytest.mark.parametrize("shape", [(4, 16), (7, 33), (65, 64), (128, 784), (131, 787)])
def test_pair_form_matches_definition(shape, by_columns):
    """Odd depths (a last pair with a zero partner), partial blocks, depths
    past a whole register, a NaN, ties that round to even, a -0 next to a
    zero (not listed) and a denormal (rounded to zero)."""
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    x = sparse_matrix(rng, shape, 0.03, signed=True)
    flat = x.reshape(-1)
    if flat.size >= 1000:  # (a few specials would make a small x too dense for a form)
        for i, value in zip(range(0, flat.size, 7), (np.nan, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -0.0, 1e-40)):
            flat[i] = value
    got = core.block_sparse(x, by_columns, pairs=True)
    assert got is not None
    for g, e, name in zip(got, expected_pair_form(x, by_columns), ("count", "index", "values")):
        assert g.dtype == e.dtype and g.shape == e.shape, name
        np.testing.assert_array_equal(g, e, err_msg=name)


def test_pair_form_bad_requests():
    x = np.zeros((8, 8))
    with pytest.raises(TypeError, match="float32"):
        core.block_sparse(x, pairs=True)
    if not core.has_bf16():
        with pytest.raises(ValueError, match="AVX512_BF16"):
            core.block_sparse(x.astype(np.float32), pairs=True)


@needs_bf16
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("rows, cols, out", [(1, 1, 1), (3, 5, 7), (9, 33, 17), (128, 784, 256), (131, 787, 100),
                                             (5, 300, 1000), (200, 31, 48)])
def test_sparse_products_match_the_bf16_reference(medium, rows, cols, out, threads):
    """A mostly-zero x takes the sparse products of bf16 pairs in medium: the
    forward (bias, ReLU) and the weight gradient agree with the rounding
    reference to float32 accumulation error on any thread count (the forward's
    threads split the depth, the gradient's the blocks), and are rounded."""
    rng = np.random.default_rng(rows * 7 + cols * 3 + out)
    x = sparse_matrix(rng, (rows, cols), 0.04, signed=True)
    W = rng.standard_normal((cols, out)).astype(np.float32)
    b = rng.standard_normal(out).astype(np.float32)
    dy = rng.standard_normal((rows, out)).astype(np.float32)
    assert core.block_sparse(x, pairs=True) is not None
    assert core.block_sparse(x, by_columns=True, pairs=True) is not None
    old = core.num_threads()
    try:
        core.set_num_threads(threads)
        y = core.linear(x, W, b, activation="relu")
        z = bf16_reference(x, W) + b
        assert (np.abs(y - np.maximum(z, 0)) <= accumulation_bound(x, W) + 2.0 ** -24 * np.abs(b)).all()
        _, dW, _ = core.linear_backward(x, W, dy, need_dx=False)
        assert (np.abs(dW - bf16_reference(x.T, dy)) <= accumulation_bound(x.T, dy)).all()
        fastnn.set_float32_matmul_precision("highest")
        if rows * cols > 100:
            assert not np.array_equal(core.linear(x, W, b, activation="relu"), y)
            assert not np.array_equal(core.linear_backward(x, W, dy, need_dx=False)[1], dW)
    finally:
        core.set_num_threads(old)


@needs_bf16
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(40, 301, 64), (130, 787, 256)])
def test_sparse_products_give_what_float32_gives_for_non_finite(medium, threads, shape):
    """A NaN in x spreads over its row; an infinity in a row of W (or dy) that
    no line lists still makes 0 * inf = NaN, as float32 gives. The larger shape
    runs on teams: each member checks the rows of B it packs (the forward's
    depth shares, the weight gradient's even shares), and one infinity must stop them all."""
    rows, depth, n = shape
    rng = np.random.default_rng(12)
    x = np.abs(sparse_matrix(rng, (rows, depth), 0.1, signed=True))
    x[:, depth * 2 // 3:] = 0
    W = rng.standard_normal((depth, n)).astype(np.float32)
    dy = rng.standard_normal((rows, n)).astype(np.float32)
    x_nan = x.copy()
    x_nan[3, 17] = np.nan
    cases = [lambda: core.linear(x_nan, W)]
    for row in (5, depth - 20):  # in the first share of the depth, and in the last, which lists nothing
        W_inf = W.copy()
        W_inf[row, 5] = np.inf
        cases.append(lambda W_inf=W_inf: core.linear(x, W_inf))
    for row in (7, rows - 2):
        dy_inf = dy.copy()
        dy_inf[row, 9] = -np.inf
        cases.append(lambda dy_inf=dy_inf: core.linear_backward(x, W, dy_inf, need_dx=False)[1])
    old = core.num_threads()
    try:
        core.set_num_threads(threads)
        got = [f() for f in cases]
        fastnn.set_float32_matmul_precision("highest")
        want = [f() for f in cases]
    finally:
        core.set_num_threads(old)
    for g, w in zip(got, want):
        assert np.isnan(w).any()
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_array_equal(np.isinf(g), np.isinf(w))


def mlp_reference(layers, x, dout):
    """Forward and backward of Linear/ReLU layers in float64 where every
    matmul's inputs are rounded to bf16 from the float32 values the kernels see."""
    f32 = lambda v: v.astype(np.float32)  # noqa: E731
    bmm = lambda p, q: bf16_reference(f32(p), f32(q))  # noqa: E731
    acts, h = [], x.astype(np.float64)
    for i, (W, b) in enumerate(layers):
        acts.append(h)
        h = bmm(h, W) + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    grads, d = [], dout.astype(np.float64)
    for i in reversed(range(len(layers))):
        W, _ = layers[i]
        grads.append((bmm(acts[i].T, d), d.sum(0)))
        d = bmm(d, W.T)
        if i > 0:
            d = d * (acts[i] > 0)
    return h, grads[::-1], d


@needs_bf16
def test_mlp_gradients_match_the_bf16_reference(medium):
    """A fused Linear/ReLU MLP's output, dx and parameter gradients in medium
    agree with the rounding reference to float32 accumulation error, while
    float32 ("highest") results are far from it."""
    rng = np.random.default_rng(10)
    model = nn.MLP([37, 64, 33, 10], activation="relu", seed=1)
    linears = [layer for layer in model.layers if isinstance(layer, nn.Linear)]
    x = rng.standard_normal((50, 37)).astype(np.float32)
    dout = rng.standard_normal((50, 10)).astype(np.float32)
    want_out, want_grads, want_dx = mlp_reference([(lin.weight.data, lin.bias.data) for lin in linears], x, dout)

    def run():
        out = model.forward(x)
        dx = model.backward(dout)
        return [out, dx] + [g for lin in linears for g in (lin.weight.grad.copy(), lin.bias.grad.copy())]

    def rel(got, want):
        return np.linalg.norm(got - want) / np.linalg.norm(want)

    wanted = [want_out, want_dx] + [g for pair in want_grads for g in pair]
    got = run()
    fastnn.set_float32_matmul_precision("highest")
    float32 = run()
    for i, (g, f, w) in enumerate(zip(got, float32, wanted)):
        assert rel(g, w) < 1e-6, i
        if i != len(got) - 1:  # (the last bias gradient sums dout, untouched by rounding)
            assert rel(f, w) > 1e-3, i


@needs_bf16
def test_mnist_default_recipe_in_medium_reaches_98_percent(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "fastnn", "train", "--no-plot", "--matmul-precision", "medium",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["info"]["matmul_precision"] == "medium" and metrics["info"]["bf16"]
    assert metrics["test_accuracy"] >= 0.98, metrics["history"]
