"""Scalar math for the numba kernels: exp, expm1, log, tanh and sigmoid as
overloads that keep float32 code in float32 (numba would promote a float64
constant) and that LLVM vectorises (Numba's own np.exp is a scalar libm call,
several times slower than NumPy's SIMD exp), plus the float-bits and maxnum
intrinsics they need.

exp is within about an ulp, tanh, expm1 and log within a few, and all follow
IEEE for NaN, +-inf, overflow and gradual underflow. Row maxima use
llvm.maxnum, which vectorises (a compare-and-select max does not).
"""
import math

import numpy as np
from llvmlite import ir
from numba import types as nbtypes
from numba.extending import intrinsic, overload

from ._common import MATH_OPTIONS

# A float's bits as the integer of its width, and back.
_BITCAST = {nbtypes.int32: nbtypes.float32, nbtypes.float32: nbtypes.int32,
            nbtypes.int64: nbtypes.float64, nbtypes.float64: nbtypes.int64}


@intrinsic
def bitcast(typingctx, x):
    to = _BITCAST.get(x)
    if to is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(to))
    return to(x), codegen


@intrinsic
def fmaxnum(typingctx, a, b):
    # llvm.maxnum: max ignoring a NaN operand. Unlike `a if a > b else b` the
    # vectoriser turns a loop of these into a SIMD max reduction.
    if not isinstance(a, nbtypes.Float) or a != b:
        return None

    def codegen(context, builder, signature, args):
        llty = context.get_value_type(signature.return_type)
        fn = builder.module.declare_intrinsic("llvm.maxnum", [llty], ir.FunctionType(llty, [llty, llty]))
        return builder.call(fn, args)
    return a(a, b), codegen


def cst(value, like):
    """`value` converted to the float type of `like` (jitted code only)."""


@overload(cst, jit_options={"error_model": "numpy"})
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


def vexp(x):
    """exp(x) for a float32/float64 scalar, vectorisable (jitted code only)."""


@overload(vexp, jit_options=MATH_OPTIONS)
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
            res = p * bitcast(np.int32((n1 + 127) << 23)) * bitcast(np.int32((n2 + 127) << 23))
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
            res = p * bitcast(np.int64((n1 + 1023) << 52)) * bitcast(np.int64((n2 + 1023) << 52))
            if x != x:
                res = x
            return res
        return impl


def vexpm1(x):
    """expm1(x), vectorisable (jitted code only)."""


@overload(vexpm1, jit_options=MATH_OPTIONS, inline="always")
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
            big = vexp(x) - _E32_C0
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
            big = vexp(x) - 1.0
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
        bits = bitcast(x * scale_up if sub else x)
        e = (bits >> mantissa_bits) - (bias + mantissa_bits + 1 if sub else bias)
        m = bitcast(bits_t((bits & mantissa_mask) | one_bits))
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


def vlog(x):
    """log(x) for a float32/float64 scalar, vectorisable (jitted code only)."""


@overload(vlog, jit_options=MATH_OPTIONS, inline="always")
def _ov_vlog(x):
    if x == nbtypes.float32:
        return _LOG32
    if x == nbtypes.float64:
        return _LOG64


def vtanh(x):
    """tanh(x), vectorisable (jitted code only)."""


@overload(vtanh, jit_options=MATH_OPTIONS, inline="always")
def _ov_vtanh(x):
    if isinstance(x, nbtypes.Float):
        def impl(x):
            # tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)); NaN stays NaN.
            t = vexpm1(cst(-2.0, x) * abs(x))
            return math.copysign(-t / (cst(2.0, x) + t), x)
        return impl


def vsigmoid(x):
    """The reference's sigmoid: exp() only of -|x| (jitted code only)."""


@overload(vsigmoid, jit_options={"error_model": "numpy"})
def _ov_vsigmoid(x):
    if isinstance(x, nbtypes.Float):
        def impl(x):
            one = cst(1.0, x)
            e = vexp(-abs(x))
            d = one + e
            return one / d if x >= 0 else e / d
        return impl

