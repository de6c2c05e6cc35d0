"""The Numba backend: the reference backend's interface, compiled with Numba.

Same public names, signatures, defaults and return conventions as
`fastnn.backends.numpy_backend` (read its docstring for the shapes and for what
the validated inputs look like: C-contiguous float32/float64 arrays of agreeing
shapes and dtypes, int64 labels in [0, C)). Outputs keep the input dtype.

How it is built:

* Every kernel is `@njit(cache=True)` and compiled lazily, once per dtype.
  Kernels that pay for threads also have a tiny `parallel=True` driver that
  splits the rows (or elements) into chunks and calls the same serial kernel
  on slices of them in a prange (parfor compilation is slow, so the parallel
  part is kept minimal). The Python wrapper picks the driver above a work
  threshold. Both paths run the same arithmetic in the same order: results
  are bit-identical.
* exp / expm1 / tanh are written out here as polynomials (`_vexp`, `_vexpm1`,
  `_vtanh`) so that LLVM vectorises the loops that use them; Numba's own
  np.exp is a scalar libm call, 5-8x slower than NumPy's SIMD exp. They are
  within ~1 ulp (exp) to a few ulp (tanh, expm1) and follow IEEE for NaN, +-inf,
  overflow and gradual underflow. Row maxima use llvm.maxnum, which vectorises
  (a compare-and-select max does not).
* Only `contract` and `reassoc` fast-math flags are used, and only where sums
  must vectorise; never nnan/ninf, so NaN and Inf propagate as in NumPy.
  Sums (softmax denominators, loss totals, bias gradients) accumulate in float64,
  except the at most 16 terms of a short row's cross-entropy (_ce_narrow_block).
* Where the reference is plain dtype arithmetic (activation backward passes,
  optimizer steps, MSE, ...) the kernels repeat NumPy's operations in the same
  dtype and order without contraction, so they agree with it to the bit.
* matmul / linear / linear_backward use NumPy's BLAS for the products; Numba does
  the fused bias+activation epilogue and the activation-gradient + bias-gradient
  pass.

Numba's on-disk cache lives next to this file (`__pycache__`) when that is
writable. When it is not (a read-only site-packages) and NUMBA_CACHE_DIR is not
set, this module sets NUMBA_CACHE_DIR to `$FASTNN_DATA/numba-cache`, else
`$XDG_CACHE_HOME/fastnn/numba-cache` (default `~/.cache/...`), else a per-user
directory under the temp dir, before Numba is imported. If none is writable,
kernels are compiled without an on-disk cache instead of failing.
"""
import math
import os
import tempfile


# ------------------------------------------------------------ numba cache setup

def _writable_dir(path):
    # The same test numba's cache locators apply: create it, then write a file in it.
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def _choose_cache_dir():
    """Returns (use_disk_cache, directory or None). Sets NUMBA_CACHE_DIR if needed."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return True, os.environ["NUMBA_CACHE_DIR"]
    here = os.path.dirname(os.path.abspath(__file__))
    if _writable_dir(os.path.join(here, "__pycache__")):
        return True, None  # numba's default in-tree cache works
    candidates = []
    if os.environ.get("FASTNN_DATA"):
        candidates.append(os.path.join(os.environ["FASTNN_DATA"], "numba-cache"))
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidates.append(os.path.join(xdg, "fastnn", "numba-cache"))
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    candidates.append(os.path.join(tempfile.gettempdir(), "fastnn-numba-cache-%s" % uid))
    for path in candidates:
        if _writable_dir(path):
            os.environ["NUMBA_CACHE_DIR"] = path
            return True, path
    return False, None


_CACHE, _CACHE_DIR = _choose_cache_dir()

import numpy as np  # noqa: E402
import numba  # noqa: E402
from numba import njit as _njit, prange as _prange, types as nbtypes  # noqa: E402
from numba.extending import intrinsic as _intrinsic, overload as _overload  # noqa: E402
from llvmlite import ir  # noqa: E402

if _CACHE_DIR is not None and not numba.core.config.CACHE_DIR:
    # numba was imported before us: it read NUMBA_CACHE_DIR already.
    numba.core.config.CACHE_DIR = _CACHE_DIR

NAME = "numba"

# Activations that linear() / linear_backward() can fuse. Their derivatives are
# written in terms of the activation's output y, which the layer keeps.
FUSED_ACTIVATIONS = ("none", "relu", "sigmoid", "tanh")

# Work (elements) from which the parallel driver of a kernel is used. Alone, a
# parallel region costs ~2-4 us and pays off from ~2^15 elements; but this
# backend's matmuls run on NumPy's OpenBLAS, whose threads keep spinning for
# ~0.1 s after each call, and Numba's threads then wait for the cores: in an
# MNIST training step (784-256-128-10, batch 128) every parallel kernel took
# milliseconds (an epoch 5.1 s; all serial, 0.6 s). So only work large enough
# to dwarf that contention -- a few ms -- is split.
_PAR_MIN_ELEMENTWISE = 1 << 21      # memory-bound loops (relu, backward passes, bias gradient)
_PAR_MIN_TRANSCENDENTAL = 1 << 19   # loops with an exp/tanh per element
_PAR_MIN_ROWS = 1 << 19             # softmax / cross-entropy, N*C
_PAR_MIN_GATHER = 1 << 21           # gather_rows, B*D
_PAR_MIN_OPTIMIZER = 1 << 20        # optimizer steps, parameter size

_FM_SUM = {"contract", "reassoc"}    # kernels with float64 sums (need reassoc to vectorise)
_FM_MATH = {"contract"}              # the polynomial helpers (FMA only; no reassociation!)
_MATH_OPTIONS = {"fastmath": _FM_MATH, "error_model": "numpy"}


def _jit(fn=None, **opts):
    # error_model="numpy": x / 0 gives inf/nan as in NumPy instead of raising
    # ZeroDivisionError, and without that per-division check loops vectorise.
    if fn is None:
        return lambda f: _jit(f, **opts)
    return _njit(cache=_CACHE, error_model="numpy", **opts)(fn)


# GNU OpenMP (Numba's "omp" threading layer) cannot run parallel regions in a
# fork child once the parent has used it: Numba then kills the child. So a
# child of such a parent runs every kernel serially.
_SERIAL_AFTER_FORK = False


def _after_fork_in_child():
    global _SERIAL_AFTER_FORK
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet: the child may start its own
        return
    if layer == "omp":
        _SERIAL_AFTER_FORK = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def _chunks(work, threshold):
    """How many chunks a parallel driver should split `work` into; 0: run serially."""
    if work < threshold or _SERIAL_AFTER_FORK:
        return 0
    threads = numba.get_num_threads()
    return 4 * threads if threads > 1 else 0


# ------------------------------------------------------------------ scalar math
# Overloads so that float32 code stays in float32 (numba would promote a float64
# constant) and so that the loops using them vectorise.

# A float's bits as the integer of its width, and back.
_BITCAST = {nbtypes.int32: nbtypes.float32, nbtypes.float32: nbtypes.int32,
            nbtypes.int64: nbtypes.float64, nbtypes.float64: nbtypes.int64}


@_intrinsic
def _bitcast(typingctx, x):
    to = _BITCAST.get(x)
    if to is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(to))
    return to(x), codegen


@_intrinsic
def _fmaxnum(typingctx, a, b):
    # llvm.maxnum: max ignoring a NaN operand. Unlike `a if a > b else b` the
    # vectoriser turns a loop of these into a SIMD max reduction.
    if not isinstance(a, nbtypes.Float) or a != b:
        return None

    def codegen(context, builder, signature, args):
        llty = context.get_value_type(signature.return_type)
        fn = builder.module.declare_intrinsic("llvm.maxnum", [llty], ir.FunctionType(llty, [llty, llty]))
        return builder.call(fn, args)
    return a(a, b), codegen


def _cst(value, like):
    """`value` converted to the float type of `like` (jitted code only)."""


@_overload(_cst, jit_options={"error_model": "numpy"})
def _ov_cst(value, like):
    if like == nbtypes.float32:
        return lambda value, like: np.float32(value)
    if like == nbtypes.float64:
        return lambda value, like: np.float64(value)


_f32 = np.float32
# exp: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, then Taylor to r^7
# (float32) or r^13 (float64), truncation well below half an ulp; 2^n is
# applied as two factors so that results underflow gradually to subnormals and
# overflow to inf where libm's exp does. expm1 uses its Taylor series for small
# |x| (no cancellation) and exp(x) - 1 elsewhere.
_E32_LO, _E32_HI = _f32(-104.0), _f32(89.0)
_E32_LOG2E, _E32_HALF = _f32(1.4426950408889634), _f32(0.5)
_E32_LN2HI, _E32_LN2LO = _f32(0.693359375), _f32(-2.12194440e-4)
_E32_C = tuple(_f32(1.0 / math.factorial(k)) for k in range(11))
_E32_C0, _E32_C1, _E32_C2, _E32_C3, _E32_C4, _E32_C5, _E32_C6, _E32_C7, _E32_C8, _E32_C9, _E32_C10 = _E32_C
_E64_LO, _E64_HI = -746.0, 710.0
_E64_LN2HI, _E64_LN2LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_E64_C = tuple(1.0 / math.factorial(k) for k in range(17))
(_E64_C0, _E64_C1, _E64_C2, _E64_C3, _E64_C4, _E64_C5, _E64_C6, _E64_C7, _E64_C8, _E64_C9, _E64_C10,
 _E64_C11, _E64_C12, _E64_C13, _E64_C14, _E64_C15, _E64_C16) = _E64_C
_M32_SMALL = _f32(0.6931)   # expm1: Taylor below this |x|, exp(x) - 1 above
_M64_SMALL = 0.5


def _vexp(x):
    """exp(x) for a float32/float64 scalar, vectorisable (jitted code only)."""


@_overload(_vexp, jit_options=_MATH_OPTIONS)
def _ov_vexp(x):
    if x == nbtypes.float32:
        def impl(x):
            xc = x
            if not (xc > _E32_LO):  # also maps NaN to a finite value; fixed below
                xc = _E32_LO
            if xc > _E32_HI:
                xc = _E32_HI
            n = np.floor(xc * _E32_LOG2E + _E32_HALF)
            r = xc - n * _E32_LN2HI
            r = r - n * _E32_LN2LO
            p = _E32_C7
            p = p * r + _E32_C6
            p = p * r + _E32_C5
            p = p * r + _E32_C4
            p = p * r + _E32_C3
            p = p * r + _E32_C2
            p = p * r + _E32_C1
            p = p * r + _E32_C0
            ni = np.int32(n)
            n1 = ni >> 1
            n2 = ni - n1
            res = p * _bitcast(np.int32((n1 + 127) << 23)) * _bitcast(np.int32((n2 + 127) << 23))
            if x != x:
                res = x
            return res
        return impl
    if x == nbtypes.float64:
        def impl(x):
            xc = x
            if not (xc > _E64_LO):
                xc = _E64_LO
            if xc > _E64_HI:
                xc = _E64_HI
            n = np.floor(xc * 1.4426950408889634 + 0.5)
            r = xc - n * _E64_LN2HI
            r = r - n * _E64_LN2LO
            p = _E64_C13
            p = p * r + _E64_C12
            p = p * r + _E64_C11
            p = p * r + _E64_C10
            p = p * r + _E64_C9
            p = p * r + _E64_C8
            p = p * r + _E64_C7
            p = p * r + _E64_C6
            p = p * r + _E64_C5
            p = p * r + _E64_C4
            p = p * r + _E64_C3
            p = p * r + _E64_C2
            p = p * r + _E64_C1
            p = p * r + _E64_C0
            ni = np.int64(n)
            n1 = ni >> 1
            n2 = ni - n1
            res = p * _bitcast(np.int64((n1 + 1023) << 52)) * _bitcast(np.int64((n2 + 1023) << 52))
            if x != x:
                res = x
            return res
        return impl


def _vexpm1(x):
    """expm1(x), vectorisable (jitted code only)."""


@_overload(_vexpm1, jit_options=_MATH_OPTIONS, inline="always")
def _ov_vexpm1(x):
    if x == nbtypes.float32:
        def impl(x):
            p = _E32_C10
            p = p * x + _E32_C9
            p = p * x + _E32_C8
            p = p * x + _E32_C7
            p = p * x + _E32_C6
            p = p * x + _E32_C5
            p = p * x + _E32_C4
            p = p * x + _E32_C3
            p = p * x + _E32_C2
            small = x + x * x * p
            big = _vexp(x) - _E32_C0
            return small if abs(x) < _M32_SMALL else big
        return impl
    if x == nbtypes.float64:
        def impl(x):
            p = _E64_C16
            p = p * x + _E64_C15
            p = p * x + _E64_C14
            p = p * x + _E64_C13
            p = p * x + _E64_C12
            p = p * x + _E64_C11
            p = p * x + _E64_C10
            p = p * x + _E64_C9
            p = p * x + _E64_C8
            p = p * x + _E64_C7
            p = p * x + _E64_C6
            p = p * x + _E64_C5
            p = p * x + _E64_C4
            p = p * x + _E64_C3
            p = p * x + _E64_C2
            small = x + x * x * p
            big = _vexp(x) - 1.0
            return small if abs(x) < _M64_SMALL else big
        return impl


# log: x = 2^e m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(u) with
# u = (m - 1) / (m + 1), |u| < 0.172, by its odd series to u^9 (float32) or
# u^23 (float64); subnormals are scaled up by 2^(mantissa bits + 1) first.
def _log_impl(f, bits_t, mantissa_bits, bias, degree, ln2hi, ln2lo):
    tiny = f(np.finfo(f).tiny)
    scale_up = f(2.0 ** (mantissa_bits + 1))
    mantissa_mask = bits_t((1 << mantissa_bits) - 1)
    one_bits = bits_t(bias << mantissa_bits)
    sqrt2, half, one, zero = f(math.sqrt(2.0)), f(0.5), f(1.0), f(0.0)
    coefs = tuple(f(2.0 / k) for k in range(1, 2 * degree + 2, 2))
    top = len(coefs) - 1
    inf, nan = f(np.inf), f(np.nan)

    def impl(x):
        sub = x < tiny
        bits = _bitcast(x * scale_up if sub else x)
        e = (bits >> mantissa_bits) - (bias + mantissa_bits + 1 if sub else bias)
        m = _bitcast(bits_t((bits & mantissa_mask) | one_bits))
        big = m > sqrt2
        m = m * half if big else m
        e = e + 1 if big else e
        u = (m - one) / (m + one)
        z = u * u
        p = coefs[top]
        for k in range(top - 1, -1, -1):
            p = p * z + coefs[k]
        ef = f(e)
        r = ef * ln2hi + (u * p + ef * ln2lo)
        r = -inf if x == zero else r
        r = x if x == inf else r
        return nan if not (x >= zero) else r
    return impl


_LOG32 = _log_impl(np.float32, np.int32, 23, 127, 4, _E32_LN2HI, _E32_LN2LO)
_LOG64 = _log_impl(np.float64, np.int64, 52, 1023, 11, _E64_LN2HI, _E64_LN2LO)


def _vlog(x):
    """log(x) for a float32/float64 scalar, vectorisable (jitted code only)."""


@_overload(_vlog, jit_options=_MATH_OPTIONS, inline="always")
def _ov_vlog(x):
    if x == nbtypes.float32:
        return _LOG32
    if x == nbtypes.float64:
        return _LOG64


def _vtanh(x):
    """tanh(x), vectorisable (jitted code only)."""


@_overload(_vtanh, jit_options=_MATH_OPTIONS, inline="always")
def _ov_vtanh(x):
    if isinstance(x, nbtypes.Float):
        def impl(x):
            # tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)); NaN stays NaN.
            t = _vexpm1(_cst(-2.0, x) * abs(x))
            return math.copysign(-t / (_cst(2.0, x) + t), x)
        return impl


def _vsigmoid(x):
    """The reference's sigmoid: exp() only of -|x| (jitted code only)."""


@_overload(_vsigmoid, jit_options={"error_model": "numpy"})
def _ov_vsigmoid(x):
    if isinstance(x, nbtypes.Float):
        def impl(x):
            one = _cst(1.0, x)
            e = _vexp(-abs(x))
            d = one + e
            return one / d if x >= 0 else e / d
        return impl


# --------------------------------------------------------- kernels: conventions
# A kernel is called on whole arrays for serial use; its `_par` driver splits
# the rows (or elements) into chunks and runs the same kernel on slices of
# them in a prange. The drivers are tiny, so the costly parfor compilation
# stays small, and both paths do the same arithmetic in the same order: their
# results are bit-identical. Kernels loop from 0 over the (sliced) arrays:
# with an index that may be negative (range(lo, hi)) numba adds a wraparound
# check to every access, which stops LLVM from vectorising.

@_jit
def _split(n, nchunks, c, align):
    # Chunk c of [0, n) in nchunks pieces, boundaries rounded down to `align`.
    lo = (c * n // nchunks) // align * align
    hi = n if c == nchunks - 1 else ((c + 1) * n // nchunks) // align * align
    return lo, hi


@_jit(fastmath=False)
def _seq_sum(a):
    # Strictly sequential sum, so that serial and parallel totals agree. The
    # explicit fastmath=False matters: callees inherit the caller's flags.
    s = 0.0
    for i in range(a.size):
        s += a[i]
    return s


def _target(out, like):
    # Where a kernel may write a result shaped and typed like `like`: `out`
    # itself when it is a C-contiguous writeable array of that shape and dtype.
    if out is None:
        return np.empty(like.shape, like.dtype)
    if (out.dtype == like.dtype and out.shape == like.shape
            and out.flags.c_contiguous and out.flags.writeable):
        return out
    return np.empty(like.shape, like.dtype)


def _finish(out, result):
    if out is None or result is out:
        return result
    out[...] = result
    return out


_EMPTY = {}


def _empty(dtype, ndim=1):
    # A placeholder for an unused array argument (kernels are typed by dtype and ndim).
    key = (dtype, ndim)
    if key not in _EMPTY:
        _EMPTY[key] = np.empty((0,) * ndim, dtype)
    return _EMPTY[key]


# ---------------------------------------------------------------- softmax family

@_jit(fastmath=_FM_SUM)
def _softmax_rows(x, out, log):
    # Per row: max, then exp-sum, then the outputs. out may be x itself; the
    # sums only ever read one array, so they vectorise (in the same order)
    # whether or not out overlaps x.
    n, c = x.shape
    if c == 0:
        return
    for i in range(n):
        m = x[i, 0]
        for j in range(c):
            m = _fmaxnum(m, x[i, j])
        s = 0.0
        if log:
            for j in range(c):
                s += _vexp(x[i, j] - m)
            lse = x.dtype.type(math.log(s))
            for j in range(c):
                out[i, j] = (x[i, j] - m) - lse
        else:
            for j in range(c):
                out[i, j] = _vexp(x[i, j] - m)
            for j in range(c):
                s += out[i, j]
            inv = x.dtype.type(1.0 / s)
            for j in range(c):
                out[i, j] *= inv


@_jit(parallel=True)
def _softmax_par(x, out, log, nchunks):
    for k in _prange(nchunks):
        lo, hi = _split(x.shape[0], nchunks, k, 1)
        _softmax_rows(x[lo:hi], out[lo:hi], log)


def _softmax(x, out, log):
    res = _target(out, x)
    nchunks = _chunks(x.size, _PAR_MIN_ROWS) if x.shape[0] > 1 else 0
    if nchunks:
        _softmax_par(x, res, log, nchunks)
    else:
        _softmax_rows(x, res, log)
    return _finish(out, res)


def softmax(x, out=None):
    # (N, C) -> (N, C); subtracting the row max keeps exp() from overflowing.
    return _softmax(x, out, False)


def log_softmax(x, out=None):
    # (N, C) -> (N, C); log-sum-exp, never log(softmax) which underflows to -inf.
    return _softmax(x, out, True)


# ------------------------------------------------------------------ activations
# Forward takes x; backward takes what the derivative is simplest in
# (the output y for sigmoid/tanh/relu, the input x for leaky_relu/elu) and dy.
# Kernels work on flat views (the arrays are C-contiguous).

# The one activation code table of this backend: the elementwise kernels and
# linear's fused epilogue and gradient pass all branch on these codes.
_A_SIGMOID, _A_TANH, _A_RELU, _A_LEAKY, _A_ELU, _A_NONE = 0, 1, 2, 3, 4, 5


@_jit
def _act_fwd_k(x, out, code, a):
    # One loop per activation; `a` (slope / alpha) is used in x's dtype.
    af = x.dtype.type(a)
    if code == _A_SIGMOID:
        for i in range(out.size):
            out[i] = _vsigmoid(x[i])
    elif code == _A_TANH:
        for i in range(out.size):
            out[i] = _vtanh(x[i])
    elif code == _A_RELU:
        zero = x.dtype.type(0)
        for i in range(out.size):
            v = x[i]
            out[i] = zero if v < zero else v  # NaN passes, as in np.maximum
    elif code == _A_LEAKY:
        for i in range(out.size):
            v = x[i]
            out[i] = v if v > 0 else v * af
    else:
        for i in range(out.size):
            v = x[i]
            out[i] = v if v > 0 else af * _vexpm1(v)


@_jit(parallel=True)
def _act_fwd_par(x, out, code, a, nchunks):
    for k in _prange(nchunks):
        lo, hi = _split(x.size, nchunks, k, 64)
        _act_fwd_k(x[lo:hi], out[lo:hi], code, a)


@_jit
def _act_bwd_k(v, dy, out, code, a):
    # v is y (sigmoid, tanh, relu) or x (leaky_relu, elu). The reference's dtype
    # arithmetic in its order, without FMA contraction: bit-identical results.
    af = dy.dtype.type(a)
    one = dy.dtype.type(1)
    if code == _A_SIGMOID:
        for i in range(out.size):
            y = v[i]
            out[i] = dy[i] * y * (one - y)
    elif code == _A_TANH:
        for i in range(out.size):
            y = v[i]
            out[i] = dy[i] * (one - y * y)
    elif code == _A_RELU:
        zero = dy.dtype.type(0)
        for i in range(out.size):
            out[i] = dy[i] if v[i] > 0 else zero
    elif code == _A_LEAKY:
        for i in range(out.size):
            out[i] = dy[i] if v[i] > 0 else dy[i] * af
    else:
        for i in range(out.size):
            x = v[i]
            out[i] = dy[i] if x > 0 else dy[i] * af * _vexp(x)


@_jit(parallel=True)
def _act_bwd_par(v, dy, out, code, a, nchunks):
    for k in _prange(nchunks):
        lo, hi = _split(dy.size, nchunks, k, 64)
        _act_bwd_k(v[lo:hi], dy[lo:hi], out[lo:hi], code, a)


def _act_forward(x, out, code, limit, a=0.0):
    res = np.empty(x.shape, x.dtype) if out is None else _target(out, x)
    n = x.size
    nchunks = _chunks(n, limit)
    if nchunks:
        _act_fwd_par(x.ravel(), res.ravel(), code, a, nchunks)
    else:
        _act_fwd_k(x.ravel(), res.ravel(), code, a)
    return res if out is None else _finish(out, res)


def _act_backward(v, dy, out, code, limit, a=0.0):
    res = np.empty(dy.shape, dy.dtype) if out is None else _target(out, dy)
    n = dy.size
    nchunks = _chunks(n, limit)
    if nchunks:
        _act_bwd_par(v.ravel(), dy.ravel(), res.ravel(), code, a, nchunks)
    else:
        _act_bwd_k(v.ravel(), dy.ravel(), res.ravel(), code, a)
    return res if out is None else _finish(out, res)


def sigmoid(x, out=None):
    # Split by sign so that exp() only ever sees non-positive arguments.
    return _act_forward(x, out, _A_SIGMOID, _PAR_MIN_TRANSCENDENTAL)


def sigmoid_backward(y, dy, out=None):
    return _act_backward(y, dy, out, _A_SIGMOID, _PAR_MIN_ELEMENTWISE)


def tanh(x, out=None):
    return _act_forward(x, out, _A_TANH, _PAR_MIN_TRANSCENDENTAL)


def tanh_backward(y, dy, out=None):
    return _act_backward(y, dy, out, _A_TANH, _PAR_MIN_ELEMENTWISE)


def relu(x, out=None):
    return _act_forward(x, out, _A_RELU, _PAR_MIN_ELEMENTWISE)


def relu_backward(y, dy, out=None):
    return _act_backward(y, dy, out, _A_RELU, _PAR_MIN_ELEMENTWISE)


def leaky_relu(x, negative_slope=0.01, out=None):
    return _act_forward(x, out, _A_LEAKY, _PAR_MIN_ELEMENTWISE, negative_slope)


def leaky_relu_backward(x, dy, negative_slope=0.01, out=None):
    return _act_backward(x, dy, out, _A_LEAKY, _PAR_MIN_ELEMENTWISE, negative_slope)


def elu(x, alpha=1.0, out=None):
    return _act_forward(x, out, _A_ELU, _PAR_MIN_TRANSCENDENTAL, alpha)


def elu_backward(x, dy, alpha=1.0, out=None):
    return _act_backward(x, dy, out, _A_ELU, _PAR_MIN_TRANSCENDENTAL, alpha)


# ------------------------------------------------------------------------ losses
# Totals are float64 sums; 'none' returns per-element losses in the input dtype.

def _reduced(total, count, per_element, reduction):
    # The reference's _reduce, given the float64 total and the per-element array.
    if reduction == "mean":
        return total / count if count else float("nan")
    if reduction == "sum":
        return total
    return per_element


def _reduction_scale(reduction, count):
    return 1.0 / count if reduction == "mean" and count else 1.0


@_jit(fastmath=_FM_SUM)
def _sqdiff_k(y, t, out, write):
    # Sum of (y - t)^2 in float64, d = y - t in the dtype as the reference;
    # with `write`, also out = d * d in the dtype.
    s = 0.0
    if write:
        for i in range(y.size):
            d = y[i] - t[i]
            out[i] = d * d
            s += float(d) * float(d)
    else:
        for i in range(y.size):
            d = float(y[i] - t[i])
            s += d * d
    return s


@_jit
def _scaled_diff_k(y, t, c, out):
    # out = c * (y - t) in the dtype (c already of that dtype).
    for i in range(y.size):
        out[i] = c * (y[i] - t[i])


def sum_squared_error(y, t):
    return 0.5 * _sqdiff_k(y.ravel(), t.ravel(), _empty(y.dtype), False)


def sum_squared_error_backward(y, t):
    out = np.empty(y.shape, y.dtype)
    _scaled_diff_k(y.ravel(), t.ravel(), y.dtype.type(1), out.ravel())
    return out


def mean_squared_error(y, t, reduction="mean"):
    if reduction not in ("mean", "sum"):
        per = np.empty(y.shape, y.dtype)
        _sqdiff_k(y.ravel(), t.ravel(), per.ravel(), True)
        return per
    return _reduced(_sqdiff_k(y.ravel(), t.ravel(), _empty(y.dtype), False), y.size, None, reduction)


def mean_squared_error_backward(y, t, reduction="mean"):
    out = np.empty(y.shape, y.dtype)
    c = y.dtype.type(2 * _reduction_scale(reduction, y.size))
    _scaled_diff_k(y.ravel(), t.ravel(), c, out.ravel())
    return out


@_jit(fastmath=_FM_SUM)
def _cee_k(y, labels, t, use_labels):
    # Sum over rows of log(y + 1e-7) at the label, or weighted by t; y + 1e-7
    # in the dtype as the reference, the log and the sum in float64.
    eps = y.dtype.type(1e-7)
    s = 0.0
    if use_labels:
        for i in range(y.shape[0]):
            s += math.log(float(y[i, labels[i]] + eps))
    else:
        for i in range(y.shape[0]):
            for j in range(y.shape[1]):
                s += float(t[i, j]) * np.log(float(y[i, j] + eps))
    return s


@_jit
def _cee_bwd_k(y, labels, t, use_labels, out):
    n, c = y.shape
    eps = y.dtype.type(1e-7)
    nn = y.dtype.type(n)
    if use_labels:
        zero = y.dtype.type(0)
        for i in range(n):
            for j in range(c):
                out[i, j] = zero
            k = labels[i]
            out[i, k] = (y.dtype.type(-1) / (y[i, k] + eps)) / nn
    else:
        for i in range(n):
            for j in range(c):
                out[i, j] = -t[i, j] / (y[i, j] + eps) / nn


def cross_entropy_error(y, t):
    # Textbook CE on probabilities: y (N, C); t one-hot (N, C) or labels (N,).
    n = y.shape[0]
    if n == 0:
        return float("nan")
    if t.ndim == 1:
        s = _cee_k(y, t, _empty(y.dtype, 2), True)
    else:
        s = _cee_k(y, _empty(np.int64), t, False)
    return -s / n


def cross_entropy_error_backward(y, t):
    out = np.empty(y.shape, y.dtype)
    if t.ndim == 1:
        _cee_bwd_k(y, t, _empty(y.dtype, 2), True, out)
    else:
        _cee_bwd_k(y, _empty(np.int64), t, False, out)
    return out


@_jit(fastmath=_FM_SUM)
def _ce_rows(x, labels, t, use_labels, ls, scale, want_grad, grad, rows):
    # Softmax cross-entropy by rows: the row loss
    # -sum_c t~_c logp_c with t~ = t (1 - ls) + ls / C, in float64, and
    # grad = (p sum_c t~_c - t~) scale. Everything
    # needed from a row of x is read before its grad row is written, so grad
    # may be x itself.
    n, c = x.shape
    keep = 1.0 - ls
    ls_c = ls / c if c > 0 else 0.0
    for i in range(n):
        if c == 0:
            rows[i] = 0.0
            continue
        m = x[i, 0]
        for j in range(c):
            m = _fmaxnum(m, x[i, j])
        mf = float(m)
        # sum_c (x_c - m), shifted term by term: a plain sum of x overflows for huge logits.
        sx = 0.0
        for j in range(c):
            sx += float(x[i, j]) - mf
        st = 1.0  # sum_c t_c
        stx = 0.0  # sum_c t_c (x_c - m)
        if use_labels:
            y = labels[i]
            stx = float(x[i, y]) - mf
        else:
            st = 0.0
            for j in range(c):
                st += t[i, j]
            for j in range(c):
                stx += float(t[i, j]) * (float(x[i, j]) - mf)
        s = 0.0
        if want_grad:
            for j in range(c):
                grad[i, j] = _vexp(x[i, j] - m)
            for j in range(c):
                s += grad[i, j]
        else:
            for j in range(c):
                s += _vexp(x[i, j] - m)
        lse = math.log(s)
        # Without smoothing the (ls / C) sum_c logp_c term is left out, as torch
        # does: a -inf logit of a class other than the label adds nothing.
        smooth = ls_c * (sx - c * lse) if ls > 0.0 else 0.0
        rows[i] = -(keep * (stx - st * lse) + smooth)
        if want_grad:
            if use_labels:
                inv = 1.0 / s
                e_y = float(grad[i, y])
                for j in range(c):
                    grad[i, j] = (grad[i, j] * inv - ls_c) * scale
                grad[i, y] = (e_y * inv - (keep + ls_c)) * scale
            else:
                inv = (st * keep + ls) / s  # sum_c t~_c / sum_c exp
                for j in range(c):
                    grad[i, j] = (grad[i, j] * inv - (float(t[i, j]) * keep + ls_c)) * scale


# Rows of at most this many classes go through _ce_narrow_rows.
_NARROW_CLASSES = 16
_NARROW_BLOCK = 256


@_jit(fastmath=_FM_SUM)
def _ce_narrow_block(x, labels, ls, scale, want_grad, grad, rows):
    # _ce_rows for labels and short rows (C <= _NARROW_CLASSES), same formulas
    # but the sums in the input dtype. A loop over 10 classes runs scalar, so
    # the rows are transposed into (C, N) scratch: every step then loops over
    # the rows and vectorises. 128x10: 6.1 us in _ce_rows, 2.1 us here.
    n, c = x.shape
    keep = 1.0 - ls
    ls_c = ls / c
    xt = np.empty((c, n), x.dtype)
    for i in range(n):
        for j in range(c):
            xt[j, i] = x[i, j]
    m = xt[0].copy()
    for j in range(1, c):
        for i in range(n):
            m[i] = _fmaxnum(m[i], xt[j, i])
    s = np.zeros(n, x.dtype)
    sx = np.zeros(n, x.dtype)
    for j in range(c):
        for i in range(n):
            d = xt[j, i] - m[i]
            e = _vexp(d)
            xt[j, i] = e
            s[i] += e
            sx[i] += d
    lse = np.empty(n, x.dtype)
    for i in range(n):
        lse[i] = _vlog(s[i])
    for i in range(n):
        smooth = ls_c * (sx[i] - c * lse[i]) if ls > 0.0 else 0.0
        rows[i] = -(keep * ((float(x[i, labels[i]]) - float(m[i])) - lse[i]) + smooth)
    if want_grad:
        for j in range(c):
            for i in range(n):
                xt[j, i] = (xt[j, i] / s[i] - ls_c) * scale
        for i in range(n):
            for j in range(c):
                grad[i, j] = xt[j, i]
            grad[i, labels[i]] -= keep * scale


@_jit
def _ce_narrow_rows(x, labels, ls, scale, want_grad, grad, rows):
    # By blocks of rows, so that the scratch stays small and in cache.
    n = x.shape[0]
    for i0 in range(0, n, _NARROW_BLOCK):
        i1 = min(i0 + _NARROW_BLOCK, n)
        _ce_narrow_block(x[i0:i1], labels[i0:i1], ls, scale, want_grad, grad[i0:i1], rows[i0:i1])


@_jit
def _ce_row_losses(x, labels, t, use_labels, ls, scale, want_grad, grad, rows):
    # rows (and grad) for checked labels: short rows by the transposed kernel.
    if use_labels and x.shape[1] <= _NARROW_CLASSES:
        _ce_narrow_rows(x, labels, ls, scale, want_grad, grad, rows)
    else:
        _ce_rows(x, labels, t, use_labels, ls, scale, want_grad, grad, rows)


@_jit(parallel=True)
def _ce_par(x, labels, t, use_labels, ls, scale, want_grad, grad, rows, nchunks):
    n = x.shape[0]
    for k in _prange(nchunks):
        lo, hi = _split(n, nchunks, k, 1)
        _ce_row_losses(x[lo:hi], labels[lo:hi], t[lo:hi], use_labels, ls, scale, want_grad, grad[lo:hi], rows[lo:hi])


def _ce(logits, target, label_smoothing, scale, grad):
    # At 128x10 the kernel takes 2.1 us: this wrapper is kept lean.
    n = logits.shape[0]
    rows = np.empty(n)
    use_labels = target.ndim == 1
    labels = target if use_labels else _empty(np.int64)
    t = _empty(logits.dtype, 2) if use_labels else target
    want_grad = grad is not None
    if not want_grad:
        grad = _empty(logits.dtype, 2)
    args = (logits, labels, t, use_labels, float(label_smoothing), float(scale), want_grad, grad, rows)
    nchunks = _chunks(logits.size, _PAR_MIN_ROWS) if n > 1 else 0
    if nchunks:
        _ce_par(*args, nchunks)
    else:
        _ce_row_losses(*args)
    return _seq_sum(rows), rows


def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0):
    # torch.nn.functional.cross_entropy for (N, C) logits, without weights.
    total, rows = _ce(logits, target, label_smoothing, 1.0, None)
    per = rows.astype(logits.dtype) if reduction not in ("mean", "sum") else None
    return _reduced(total, logits.shape[0], per, reduction)


def softmax_cross_entropy(logits, target, reduction="mean", label_smoothing=0.0, out=None):
    # Returns (loss, dlogits); dlogits is the gradient of the reduced loss
    # ('none': of the sum of the row losses).
    grad = np.empty_like(logits) if out is None else out
    total, rows = _ce(logits, target, label_smoothing, _reduction_scale(reduction, logits.shape[0]), grad)
    per = rows.astype(logits.dtype) if reduction not in ("mean", "sum") else None
    return _reduced(total, logits.shape[0], per, reduction), grad


@_jit(fastmath=_FM_SUM)
def _bce_k(p, t, out, write):
    # -(t log p + (1 - t) log(1 - p)), each log clamped at -100; 1 - p in the
    # dtype as the reference, the rest in float64.
    one = p.dtype.type(1)
    s = 0.0
    for i in range(p.size):
        lp = np.log(float(p[i]))
        if lp < -100.0:
            lp = -100.0
        lq = np.log(float(one - p[i]))
        if lq < -100.0:
            lq = -100.0
        tt = float(t[i])
        v = -(tt * lp + (1.0 - tt) * lq)
        if write:
            out[i] = v
        s += v
    return s


@_jit
def _bce_bwd_k(p, t, c, out):
    # c (p - t) / max(p (1 - p), 1e-12) in the dtype.
    one = p.dtype.type(1)
    floor = p.dtype.type(1e-12)
    for i in range(p.size):
        q = p[i] * (one - p[i])
        if q < floor:
            q = floor
        out[i] = c * (p[i] - t[i]) / q


@_jit(fastmath=_FM_SUM)
def _bcel_k(z, t, out, write):
    # max(z, 0) - z t + log1p(exp(-|z|)) in float64.
    s = 0.0
    for i in range(z.size):
        zz = float(z[i])
        v = (0.0 if zz < 0.0 else zz) - zz * float(t[i]) + math.log1p(_vexp(-abs(zz)))
        if write:
            out[i] = v
        s += v
    return s


@_jit
def _bcel_bwd_k(z, t, c, out):
    for i in range(z.size):
        out[i] = c * (_vsigmoid(z[i]) - t[i])


def _elementwise_loss(kernel, a, t, reduction):
    if reduction not in ("mean", "sum"):
        per = np.empty(a.shape, a.dtype)
        kernel(a.ravel(), t.ravel(), per.ravel(), True)
        return per
    return _reduced(kernel(a.ravel(), t.ravel(), _empty(a.dtype), False), a.size, None, reduction)


def binary_cross_entropy(p, t, reduction="mean"):
    # torch clamps each log at -100 so that p = 0 or 1 gives a finite loss.
    return _elementwise_loss(_bce_k, p, t, reduction)


def binary_cross_entropy_backward(p, t, reduction="mean"):
    # torch's form: (p - t) / max(p (1 - p), 1e-12).
    out = np.empty(p.shape, p.dtype)
    _bce_bwd_k(p.ravel(), t.ravel(), p.dtype.type(_reduction_scale(reduction, p.size)), out.ravel())
    return out


def binary_cross_entropy_with_logits(z, t, reduction="mean"):
    # max(z, 0) - z t + log(1 + exp(-|z|)): stable for any z.
    return _elementwise_loss(_bcel_k, z, t, reduction)


def binary_cross_entropy_with_logits_backward(z, t, reduction="mean"):
    out = np.empty(z.shape, z.dtype)
    _bcel_bwd_k(z.ravel(), t.ravel(), z.dtype.type(_reduction_scale(reduction, z.size)), out.ravel())
    return out


# ------------------------------------------------------------------------ linear

_ACT_CODE = {"none": _A_NONE, "relu": _A_RELU, "sigmoid": _A_SIGMOID, "tanh": _A_TANH}
_GRAD_FROM_OUTPUT = {"relu": relu_backward, "sigmoid": sigmoid_backward, "tanh": tanh_backward}


def matmul(a, b, trans_a=False, trans_b=False, out=None):
    # op(a) (M, K) @ op(b) (K, N) -> (M, N); op transposes when asked.
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    if out is None:
        return a @ b
    return np.matmul(a, b, out=out)


@_jit
def _bias_act_rows(z, b, has_b, code):
    # In place: z = act(z + b), the reference's `z += b` and activation in the
    # dtype.
    n, c = z.shape
    zero = z.dtype.type(0)
    for i in range(n):
        if has_b:
            for j in range(c):
                z[i, j] = z[i, j] + b[j]
        if code == _A_RELU:
            for j in range(c):
                v = z[i, j]
                z[i, j] = zero if v < zero else v
        elif code == _A_SIGMOID:
            for j in range(c):
                z[i, j] = _vsigmoid(z[i, j])
        elif code == _A_TANH:
            for j in range(c):
                z[i, j] = _vtanh(z[i, j])


@_jit(parallel=True)
def _bias_act_par(z, b, has_b, code, nchunks):
    for k in _prange(nchunks):
        lo, hi = _split(z.shape[0], nchunks, k, 1)
        _bias_act_rows(z[lo:hi], b, has_b, code)


def linear(x, W, b=None, activation="none", out=None):
    # x (N, in), W (in, out), b (out,) -> act(x @ W + b) (N, out).
    code = _ACT_CODE[activation]
    shape = (x.shape[0], W.shape[1])
    if (out is not None and out.dtype == np.result_type(x, W) and out.shape == shape
            and out.flags.c_contiguous and out.flags.writeable):
        z = np.matmul(x, W, out=out)
    else:
        z = x @ W
    if b is not None or code != _A_NONE:
        if not z.flags.c_contiguous:
            z = np.ascontiguousarray(z)
        bb = b if b is not None else _empty(z.dtype)
        n = z.shape[0]
        nchunks = _chunks(z.size, _PAR_MIN_TRANSCENDENTAL if code in (_A_SIGMOID, _A_TANH) else _PAR_MIN_ELEMENTWISE) if n > 1 else 0
        if nchunks:
            _bias_act_par(z, bb, b is not None, code, nchunks)
        else:
            _bias_act_rows(z, bb, b is not None, code)
    return _finish(out, z)


@_jit
def _act_grad_bias_cols(y, dy, dz, db, code, j0, j1):
    # Columns [j0, j1): dz = dL/d(pre-activation) from the output y and dy (not
    # written for 'none', where dz is dy) and db = column sums of dz in float64,
    # each summed in row order. The loops run over row slices and vectorise
    # across columns; no fast-math (contraction would change dz from the
    # reference's).
    n = dy.shape[0]
    w = j1 - j0
    one = dy.dtype.type(1)
    zero = dy.dtype.type(0)
    dbs = db[j0:j1]
    for j in range(w):
        dbs[j] = 0.0
    for i in range(n):
        g_in = dy[i, j0:j1]
        if code == _A_NONE:
            for j in range(w):
                dbs[j] += g_in[j]
        else:
            y_in = y[i, j0:j1]
            g_out = dz[i, j0:j1]
            if code == _A_RELU:
                for j in range(w):
                    g = g_in[j] if y_in[j] > 0 else zero
                    g_out[j] = g
                    dbs[j] += g
            elif code == _A_SIGMOID:
                for j in range(w):
                    v = y_in[j]
                    g = g_in[j] * v * (one - v)
                    g_out[j] = g
                    dbs[j] += g
            else:
                for j in range(w):
                    v = y_in[j]
                    g = g_in[j] * (one - v * v)
                    g_out[j] = g
                    dbs[j] += g


@_jit(parallel=True)
def _act_grad_bias_par(y, dy, dz, db, code, nchunks):
    for k in _prange(nchunks):
        j0, j1 = _split(dy.shape[1], nchunks, k, 16)
        _act_grad_bias_cols(y, dy, dz, db, code, j0, j1)


def linear_backward(x, W, dy, y=None, activation="none", need_dx=True,
                    dx_out=None, dW_out=None, db_out=None, x_activation="none"):
    # x (N, in), W (in, out), dy (N, out) = dL/d(act output); y is that output,
    # needed when an activation was fused. Returns (dx or None, dW, db); with
    # x_activation, x is that activation's output and dx goes through it.
    code = _ACT_CODE[activation]
    if code != _A_NONE:
        dz = np.empty(dy.shape, dy.dtype)
        args = (y, dy, dz)
    else:
        dz = dy
        args = (_empty(dy.dtype, 2), dy, _empty(dy.dtype, 2))
    db64 = np.empty(dy.shape[1], np.float64)
    nchunks = _chunks(dy.size, _PAR_MIN_ELEMENTWISE) if dy.shape[1] >= 64 else 0
    if nchunks:
        _act_grad_bias_par(*args, db64, code, min(nchunks, dy.shape[1] // 16))
    else:
        _act_grad_bias_cols(*args, db64, code, 0, dy.shape[1])
    dW = matmul(x, dz, trans_a=True, out=dW_out)
    if db_out is None:
        db = db64.astype(dy.dtype)
    else:
        db_out[...] = db64
        db = db_out
    dx = matmul(dz, W, trans_b=True, out=dx_out) if need_dx else None
    if dx is not None and x_activation != "none":
        _GRAD_FROM_OUTPUT[x_activation](x, dx, out=dx)
    return dx, dW, db


# No block-sparse product here: the dense one serves sparse_input=False too.
BLOCK_SPARSE = False
dense_linear = linear
dense_linear_backward = linear_backward


@_jit
def _gather_k(x, index, out):
    # out[k] = x[index[k]] for 2-D views (index checked to be in range).
    d = x.shape[1]
    for k in range(index.shape[0]):
        src = x[index[k]]
        dst = out[k]
        for j in range(d):
            dst[j] = src[j]


@_jit(parallel=True)
def _gather_par(x, index, out, nchunks):
    for k in _prange(nchunks):
        lo, hi = _split(index.shape[0], nchunks, k, 1)
        _gather_k(x, index[lo:hi], out[lo:hi])


def gather_rows(x, index, out=None):
    # x (N, ...) and index (B,) -> x[index] (B, ...): one mini-batch.
    shape = (index.shape[0],) + x.shape[1:]
    res = np.empty(shape, x.dtype) if out is None else out
    if res.size == 0:
        return res
    # Rows are copied as bytes, so every dtype (float16, big-endian, ...) works alike.
    x2 = x.reshape(x.shape[0], -1).view(np.uint8)
    r2 = res.reshape(shape[0], -1).view(np.uint8)
    nchunks = _chunks(r2.size, _PAR_MIN_GATHER) if shape[0] > 1 else 0
    if nchunks:
        _gather_par(x2, index, r2, nchunks)
    else:
        _gather_k(x2, index, r2)
    return res


def prefetch_rows(x, index):
    # A hint that x[index] is gathered next; only the cpp backend acts on it.
    pass


# -------------------------------------------------------------- optimizer steps
# One in-place update of one parameter, following torch.optim's single-tensor
# code exactly. `step` counts from 1 and is already incremented by the caller.
# The kernels repeat the reference's dtype arithmetic element by element, in
# its order and without contraction, so the updates match it to the bit; the
# Python scalars arrive converted to the parameter's dtype where NumPy would
# convert them. Flat views of param, grad and state.

@_jit
def _sgd_k(p, grad, buf, lr, momentum, damp1m, wd, use_wd, use_mom, nesterov, maximize, first):
    for i in range(p.size):
        g = -grad[i] if maximize else grad[i]
        if use_wd:
            g = g + wd * p[i]
        if use_mom:
            if first:
                b = g
            else:
                b = buf[i] * momentum
                b = b + damp1m * g
            buf[i] = b
            g = g + momentum * b if nesterov else b
        p[i] = p[i] - lr * g


@_jit(parallel=True)
def _sgd_par(p, grad, buf, lr, momentum, damp1m, wd, use_wd, use_mom, nesterov, maximize, first, nchunks):
    for k in _prange(nchunks):
        lo, hi = _split(p.size, nchunks, k, 64)
        _sgd_k(p[lo:hi], grad[lo:hi], buf[lo:hi], lr, momentum, damp1m, wd, use_wd, use_mom, nesterov, maximize,
               first)


@_jit
def _adagrad_k(p, grad, state_sum, clr, wd, eps, use_wd, maximize):
    for i in range(p.size):
        g = -grad[i] if maximize else grad[i]
        if use_wd:
            g = g + wd * p[i]
        ss = state_sum[i] + g * g
        state_sum[i] = ss
        p[i] = p[i] - clr * g / (np.sqrt(ss) + eps)


@_jit(parallel=True)
def _adagrad_par(p, grad, state_sum, clr, wd, eps, use_wd, maximize, nchunks):
    for k in _prange(nchunks):
        lo, hi = _split(p.size, nchunks, k, 64)
        _adagrad_k(p[lo:hi], grad[lo:hi], state_sum[lo:hi], clr, wd, eps, use_wd, maximize)


@_jit
def _rmsprop_k(p, grad, square_avg, grad_avg, buf, lr, alpha, alpha1m, eps, wd, momentum,
               use_wd, centered, use_mom, maximize):
    for i in range(p.size):
        g = -grad[i] if maximize else grad[i]
        if use_wd:
            g = g + wd * p[i]
        sq = square_avg[i] * alpha
        sq = sq + alpha1m * g * g
        square_avg[i] = sq
        if centered:
            ga = grad_avg[i] * alpha
            ga = ga + alpha1m * g
            grad_avg[i] = ga
            avg = np.sqrt(sq - ga * ga) + eps
        else:
            avg = np.sqrt(sq) + eps
        if use_mom:
            b = buf[i] * momentum
            b = b + g / avg
            buf[i] = b
            p[i] = p[i] - lr * b
        else:
            p[i] = p[i] - lr * g / avg


@_jit(parallel=True)
def _rmsprop_par(p, grad, square_avg, grad_avg, buf, lr, alpha, alpha1m, eps, wd, momentum,
                 use_wd, centered, use_mom, maximize, nchunks):
    for k in _prange(nchunks):
        lo, hi = _split(p.size, nchunks, k, 64)
        _rmsprop_k(p[lo:hi], grad[lo:hi], square_avg[lo:hi], grad_avg[lo:hi], buf[lo:hi], lr, alpha, alpha1m,
                   eps, wd, momentum, use_wd, centered, use_mom, maximize)


@_jit
def _adam_k(p, grad, exp_avg, exp_avg_sq, step_size, beta1, beta1m, beta2, beta2m, eps,
            sqrt_bc2, wd, decay, use_wd, decoupled, maximize):
    # eps and sqrt_bc2 are float64: in the reference np.sqrt(bias_correction2)
    # is a float64 scalar, so (NumPy 2 promotion) the denominator and the
    # update are float64 before param is cast back to its dtype.
    for i in range(p.size):
        g = -grad[i] if maximize else grad[i]
        pi = p[i]
        if use_wd:
            if decoupled:
                pi = pi * decay
            else:
                g = g + wd * pi
        m = exp_avg[i] * beta1
        m = m + beta1m * g
        exp_avg[i] = m
        v = exp_avg_sq[i] * beta2
        v = v + beta2m * g * g
        exp_avg_sq[i] = v
        denom = np.sqrt(v) / sqrt_bc2 + eps
        p[i] = pi - step_size * m / denom


@_jit(parallel=True)
def _adam_par(p, grad, exp_avg, exp_avg_sq, step_size, beta1, beta1m, beta2, beta2m, eps,
              sqrt_bc2, wd, decay, use_wd, decoupled, maximize, nchunks):
    for k in _prange(nchunks):
        lo, hi = _split(p.size, nchunks, k, 64)
        _adam_k(p[lo:hi], grad[lo:hi], exp_avg[lo:hi], exp_avg_sq[lo:hi], step_size, beta1, beta1m, beta2,
                beta2m, eps, sqrt_bc2, wd, decay, use_wd, decoupled, maximize)


def _state(a):
    # A flat view of an array updated in place (a copy would lose the update).
    if not a.flags.c_contiguous:
        raise ValueError("optimizer parameters and state must be C-contiguous")
    return a.reshape(-1)


def _run(serial, parallel, n, args):
    nchunks = _chunks(n, _PAR_MIN_OPTIMIZER)
    if nchunks:
        parallel(*args, nchunks)
    else:
        serial(*args)


def sgd_step(param, grad, momentum_buf, lr, momentum=0.0, dampening=0.0,
             nesterov=False, weight_decay=0.0, maximize=False, first_step=True):
    f = param.dtype.type
    use_mom = bool(momentum)
    buf = _state(momentum_buf) if use_mom else _empty(param.dtype)
    _run(_sgd_k, _sgd_par, param.size,
         (_state(param), grad.ravel(), buf, f(lr), f(momentum), f(1 - dampening), f(weight_decay),
          bool(weight_decay), use_mom, bool(nesterov), bool(maximize), bool(first_step)))


def adagrad_step(param, grad, state_sum, step, lr=0.01, lr_decay=0.0,
                 weight_decay=0.0, eps=1e-10, maximize=False):
    f = param.dtype.type
    clr = lr / (1 + (step - 1) * lr_decay)
    _run(_adagrad_k, _adagrad_par, param.size,
         (_state(param), grad.ravel(), _state(state_sum), f(clr), f(weight_decay), f(eps),
          bool(weight_decay), bool(maximize)))


def rmsprop_step(param, grad, square_avg, grad_avg, momentum_buf, lr=0.01, alpha=0.99,
                 eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False):
    # grad_avg is used only when centered, momentum_buf only when momentum > 0.
    f = param.dtype.type
    use_mom = momentum > 0
    gavg = _state(grad_avg) if centered else _empty(param.dtype)
    buf = _state(momentum_buf) if use_mom else _empty(param.dtype)
    _run(_rmsprop_k, _rmsprop_par, param.size,
         (_state(param), grad.ravel(), _state(square_avg), gavg, buf, f(lr), f(alpha), f(1 - alpha),
          f(eps), f(weight_decay), f(momentum), bool(weight_decay), bool(centered), use_mom,
          bool(maximize)))


def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, beta1=0.9, beta2=0.999,
              eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, maximize=False):
    # Adam, or AdamW when decoupled_weight_decay (the decay then scales param directly).
    f = param.dtype.type
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    _run(_adam_k, _adam_par, param.size,
         (_state(param), grad.ravel(), _state(exp_avg), _state(exp_avg_sq), f(lr / bias_correction1),
          f(beta1), f(1 - beta1), f(beta2), f(1 - beta2), float(eps), math.sqrt(bias_correction2),
          f(weight_decay), f(1 - lr * weight_decay), bool(weight_decay), bool(decoupled_weight_decay),
          bool(maximize)))
