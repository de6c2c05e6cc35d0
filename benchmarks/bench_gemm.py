"""Quick GEMM benchmark: fastnn._core.matmul vs NumPy (a @ b) at the shapes of
an MLP's linear layers, forward and backward.

Runs the two in interleaved segments (fastnn, numpy, fastnn, ...; a short pause
before each so that the other library's spinning worker threads have gone to
sleep) so that machine noise hits both alike, and reports medians.

    python benchmarks/bench_gemm.py [--dtype float32] [--repeat 7] [--threads N]
                                    [--isa NAME]  (sets FASTNN_ISA; re-executes)
"""

import argparse
import os
import sys
import time

import numpy as np

# name, M, K, N, trans_a, trans_b, numpy expression
# Linear layer x (batch, in) @ W (in, out): forward x@W; backward
# dX = dY @ W.T (trans_b) and dW = X.T @ dY (trans_a).
SHAPES = [
    ("fwd 128x784->256", 128, 784, 256),
    ("fwd 256x784->512", 256, 784, 512),
    ("fwd 1024^3", 1024, 1024, 1024),
    ("bwd 128x784->256", 128, 784, 256),
    ("bwd 128x256->128", 128, 256, 128),
    ("bwd 1024x784->1024", 1024, 784, 1024),
]


def cases(dtype, rng):
    out = []
    for name, batch, fin, fout in SHAPES:
        x = rng.standard_normal((batch, fin)).astype(dtype)
        W = rng.standard_normal((fin, fout)).astype(dtype)
        dy = rng.standard_normal((batch, fout)).astype(dtype)
        if name.startswith("fwd"):
            out.append((name + "  x@W", 2.0 * batch * fin * fout,
                        (x, W, False, False), lambda x=x, W=W: x @ W))
        else:
            out.append((name + "  dY@W.T", 2.0 * batch * fin * fout,
                        (dy, W, False, True), lambda dy=dy, W=W: dy @ W.T))
            out.append((name + "  X.T@dY", 2.0 * batch * fin * fout,
                        (x, dy, True, False), lambda x=x, dy=dy: x.T @ dy))
    return out


def _segment(fn, calls):
    """Median seconds per call over `calls` calls (after 2 warm-up calls)."""
    fn()
    fn()
    ts = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def bench(fn_ours, fn_np, repeat, seg_time=0.1, pause=0.15):
    """Interleaved segments: ours, numpy, ours, ... each ~seg_time long.

    Both libraries keep idle worker threads spinning for a while after a call
    (OpenBLAS's pool, OpenMP's team); on a 2-core machine those spinners steal
    a core from the other library. So the two are never interleaved call by
    call: each segment starts after a pause that lets the other's threads go
    to sleep. Returns the medians over segments of the per-call medians.
    """
    t = time.perf_counter()
    fn_ours()
    fn_np()
    one = max((time.perf_counter() - t) / 2, 1e-7)
    calls = max(5, int(seg_time / one))
    ours, theirs = [], []
    for _ in range(repeat):
        time.sleep(pause)
        ours.append(_segment(fn_ours, calls))
        time.sleep(pause)
        theirs.append(_segment(fn_np, calls))
    return float(np.median(ours)), float(np.median(theirs))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeat", type=int, default=7, help="interleaved segment pairs per case")
    p.add_argument("--threads", type=int, default=None, help="fastnn thread count (default: all)")
    p.add_argument("--isa", default=None, help="generic | avx2 | avx512 (sets FASTNN_ISA)")
    args = p.parse_args()
    if args.isa and os.environ.get("FASTNN_ISA") != args.isa:
        os.environ["FASTNN_ISA"] = args.isa
        os.execv(sys.executable, [sys.executable] + sys.argv)

    import fastnn._core as core

    if args.threads:
        core.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    print(f"fastnn isa={core.isa()} threads={core.num_threads()} dtype={dtype.name}; "
          f"numpy {np.__version__}; medians of {args.repeat} interleaved segments")
    print(f"{'case':34s} {'fastnn GF/s':>11s} {'numpy GF/s':>11s} {'ratio':>6s} {'fastnn us':>10s}")
    ratios = []
    for name, flops, (a, b, ta, tb), fn_np in cases(dtype, rng):
        ref = fn_np()
        got = core.matmul(a, b, trans_a=ta, trans_b=tb)
        err = np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30)
        assert err < (1e-4 if dtype == np.float32 else 1e-12), (name, err)
        out = np.empty_like(ref)
        t_ours, t_np = bench(lambda: core.matmul(a, b, trans_a=ta, trans_b=tb, out=out), fn_np, args.repeat)
        ratios.append(t_np / t_ours)
        print(f"{name:34s} {flops / t_ours / 1e9:11.1f} {flops / t_np / 1e9:11.1f} "
              f"{t_np / t_ours:6.2f} {t_ours * 1e6:10.1f}")
    print(f"geometric-mean speed-up vs numpy: {np.exp(np.mean(np.log(ratios))):.2f}x")


if __name__ == "__main__":
    main()
