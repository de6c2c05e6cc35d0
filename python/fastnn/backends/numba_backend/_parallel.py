"""Threads for the numba backend: one driver template that runs a serial
kernel on chunks of its arrays in a prange, the work thresholds from which it
is used, and fork safety.

A kernel is called on whole arrays for serial use; `threaded(kernel)` adds its
parallel driver, which splits the leading axis of the kernel's first arrays
into chunks and runs the same kernel on slices of them. The drivers are tiny,
so the costly parfor compilation stays small, and both paths do the same
arithmetic in the same order: their results are bit-identical. Kernels loop
from 0 over the (sliced) arrays: with an index that may be negative
(range(lo, hi)) numba adds a wraparound check to every access, which stops
LLVM from vectorising.
"""
import os
import types

import numba
from numba.extending import overload

from ._common import jit

# Work (elements) from which a kernel runs on threads, by kind of loop. A
# parallel region alone pays off for far smaller work; but this backend's
# matmuls run on NumPy's OpenBLAS, whose threads keep spinning for a while
# after each call, and Numba's threads then wait for the cores, which made
# every parallel kernel of an MNIST training step slower than its serial run.
# So only work large enough to dwarf that contention is split.
PAR_MIN = {
    "elementwise": 1 << 21,     # memory-bound loops (relu, backward passes, bias gradient)
    "transcendental": 1 << 19,  # loops with an exp/tanh per element
    "rows": 1 << 19,            # softmax / cross-entropy, N*C
    "gather": 1 << 21,          # gather_rows, B*D
    "optimizer": 1 << 20,       # optimizer steps, parameter size
}

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


def chunks(work, kind):
    """How many chunks a parallel driver should split `work` into; 0: run serially."""
    if work < PAR_MIN[kind] or _SERIAL_AFTER_FORK:
        return 0
    threads = numba.get_num_threads()
    return 4 * threads if threads > 1 else 0


@jit
def chunk_bounds(n, nchunks, c, align):
    # Chunk c of [0, n) in nchunks pieces, boundaries rounded down to `align`.
    lo = (c * n // nchunks) // align * align
    hi = n if c == nchunks - 1 else ((c + 1) * n // nchunks) // align * align
    return lo, hi


def _slices(arrays, lo, hi):
    """The tuple of a[lo:hi] for each array a (jitted code only)."""


@overload(_slices)
def _ov_slices(arrays, lo, hi):
    if len(arrays) == 0:
        return lambda arrays, lo, hi: ()
    return lambda arrays, lo, hi: (arrays[0][lo:hi],) + _slices(arrays[1:], lo, hi)


def _driver_template(args, n, nchunks):
    # SPLIT, ALIGN and KERNEL are the globals of each driver made from this:
    # the first SPLIT arguments are sliced to the chunk, or with SPLIT == 0
    # all are passed whole and the chunk's bounds appended.
    for k in numba.prange(nchunks):
        lo, hi = chunk_bounds(n, nchunks, k, ALIGN)  # noqa: F821
        if SPLIT == 0:  # noqa: F821
            KERNEL(*(args + (lo, hi)))  # noqa: F821
        else:
            KERNEL(*(_slices(args[:SPLIT], lo, hi) + args[SPLIT:]))  # noqa: F821


def _driver(kernel, split, align):
    # A copy of the template with its own globals and name: numba then caches
    # each driver under its own name. Its code is filed under the kernel's
    # source file, so that editing the kernel also invalidates the cached
    # driver that has the kernel compiled in.
    py = kernel.py_func
    name = py.__name__ + "_par"
    code = _driver_template.__code__.replace(co_filename=py.__code__.co_filename, co_name=name)
    env = dict(_driver_template.__globals__, KERNEL=kernel, SPLIT=split, ALIGN=align)
    fn = types.FunctionType(code, env, name)
    fn.__qualname__ = py.__qualname__ + "_par"
    fn.__module__ = py.__module__
    return jit(fn, parallel=True)


def threaded(kernel, split=1, align=1):
    """`kernel` and its parallel driver, as one function run(kind, *args, work=None, n=None).

    run calls kernel(*args) serially, unless `work` (default: the size of
    args[0]) reaches the threshold of `kind`: then it splits [0, n) (default:
    the leading length of args[0]) into chunks whose boundaries are multiples
    of `align`, and each chunk runs the kernel on the slices [lo:hi] of the
    first `split` arguments and the rest as they are. With split=0 (kernels
    that split along another axis) every argument is passed whole, followed
    by the chunk's bounds lo, hi; the serial call passes 0, n.
    """
    driver = _driver(kernel, split, align)

    def run(kind, *args, work=None, n=None):
        if work is None:
            work = args[0].size
        if work >= PAR_MIN[kind]:  # tested alone first: small serial calls are the hot path
            if n is None:
                n = args[0].shape[0]
            nchunks = min(chunks(work, kind), n // align)
            if nchunks > 1:
                driver(args, n, nchunks)
                return
        if split == 0:
            kernel(*args, 0, args[0].shape[0] if n is None else n)
        else:
            kernel(*args)

    run.kernel, run.driver = kernel, driver
    return run
