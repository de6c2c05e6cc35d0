"""The machine's measured baseline, run inside a worker: float32 FMA peak and copy bandwidth.

The peak is an LLVM loop of independent vector FMAs on every core, compiled for
the host by llvmlite (which ships with Numba); the bandwidth is np.copyto of a
large array, counting read + write.
"""
import threading
import time

import numpy as np

_PEAK_KEEP = []  # the compiled FMA loops' engines must outlive their function pointers


def _fma_loop():
    """A compiled function f(n) running n iterations of A independent FMAs on
    L-lane float32 vectors (everything in registers); returns (f, flops per iteration, description)."""
    import ctypes

    import llvmlite.binding as llvm
    try:  # older llvmlite needs this; newer ones initialise themselves (and may refuse the call)
        llvm.initialize()
    except Exception:
        pass
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    features = llvm.get_host_cpu_features()
    cpu_name = llvm.get_host_cpu_name()
    if features.get("avx512f"):
        lanes, chains = 16, 12
    elif features.get("avx"):
        lanes, chains = 8, 10
    else:
        lanes, chains = 4, 10
    vt = f"<{lanes} x float>"
    fn = f"@llvm.fmuladd.v{lanes}f32"
    ir = [f"declare {vt} {fn}({vt}, {vt}, {vt})",
          "define float @fma_peak(i64 %n, float %a0, float %b0) {",
          "entry:",
          f"  %va = insertelement {vt} undef, float %a0, i32 0",
          f"  %a = shufflevector {vt} %va, {vt} undef, <{lanes} x i32> zeroinitializer",
          f"  %vb = insertelement {vt} undef, float %b0, i32 0",
          f"  %b = shufflevector {vt} %vb, {vt} undef, <{lanes} x i32> zeroinitializer",
          "  br label %loop",
          "loop:",
          "  %i = phi i64 [0, %entry], [%i1, %loop]"]
    ir += [f"  %acc{k} = phi {vt} [%b, %entry], [%n{k}, %loop]" for k in range(chains)]
    ir += [f"  %n{k} = call {vt} {fn}({vt} %acc{k}, {vt} %a, {vt} %b)" for k in range(chains)]
    ir += ["  %i1 = add i64 %i, 1", "  %c = icmp ult i64 %i1, %n", "  br i1 %c, label %loop, label %done",
           "done:"]
    prev = "%n0"
    for k in range(1, chains):
        ir.append(f"  %s{k} = fadd {vt} {prev}, %n{k}")
        prev = f"%s{k}"
    ir += [f"  %r = extractelement {vt} {prev}, i32 0", "  ret float %r", "}"]
    module = llvm.parse_assembly("\n".join(ir))
    module.verify()
    target = llvm.Target.from_default_triple()
    machine = target.create_target_machine(cpu=cpu_name, features=features.flatten(), opt=2)
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    _PEAK_KEEP.append(engine)
    proto = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64, ctypes.c_float, ctypes.c_float)
    func = proto(engine.get_function_address("fma_peak"))
    _PEAK_KEEP.append(func)
    desc = (f"llvmlite-compiled loop of {chains} independent {lanes}-lane float32 FMA chains per thread "
            f"(llvm cpu {cpu_name})")
    return (lambda n: func(n, 0.999, 0.001)), 2 * lanes * chains, desc


def measure_fma_peak(threads, seconds=0.25, reps=5):
    """Best-of-`reps` float32 FMA throughput (GFLOP/s) on 1 thread and on `threads` threads.
    ctypes releases the GIL, so Python threads run the loop in parallel."""
    try:
        run, flops_per_iter, desc = _fma_loop()
    except Exception as exc:  # no llvmlite, or it cannot target this CPU
        return {"gflops": None, "gflops_1thread": None, "error": f"{type(exc).__name__}: {exc}"}
    run(1000)
    t0 = time.perf_counter()
    run(200_000)
    per_iter = max((time.perf_counter() - t0) / 200_000, 1e-10)
    n = max(1000, int(seconds / per_iter))

    def timed(nthreads):
        pool = [threading.Thread(target=run, args=(n,)) for _ in range(nthreads)]
        t = time.perf_counter()
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        return nthreads * n * flops_per_iter / (time.perf_counter() - t) / 1e9

    one = max(timed(1) for _ in range(reps))
    many = max(timed(threads) for _ in range(reps)) if threads > 1 else one
    return {"gflops": many, "gflops_1thread": one, "threads": threads, "method": desc,
            "statistic": f"best of {reps} runs of {n} iterations"}


def measure_copy_bandwidth(mib=256, reps=5):
    """np.copyto of a `mib` MiB float32 array: GB/s = 2 * bytes / time (read + write), best of reps."""
    n = mib * 2 ** 20 // 4
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch every page first
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = max(best, 2 * src.nbytes / (time.perf_counter() - t) / 1e9)
    return {"gbs": best, "method": f"np.copyto of {mib} MiB (float32), 2 x bytes / time, best of {reps}"}
