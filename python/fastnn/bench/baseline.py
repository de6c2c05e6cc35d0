"""The machine's measured baseline, run inside a worker: the float32 FMA peak, the
bfloat16 dot-product peak and the copy bandwidth.

Each peak is an LLVM loop of independent vector instructions on every core,
compiled for the host by llvmlite (which ships with Numba): FMAs on float32
lanes, or VDPBF16PS (32 bf16 products summed pairwise into 16 float32 lanes)
where the CPU has AVX512_BF16. The bandwidth is np.copyto of a large array,
counting read + write.
"""
import threading
import time

import numpy as np

_PEAK_KEEP = []  # the compiled loops' engines must outlive their function pointers
_CHAINS = 12  # independent accumulators: enough to hide the instruction's latency


def _peak_loop(kind):
    """A compiled function f(n) running n iterations of independent `kind` ("fma" or
    "bf16_dot") instructions, everything in registers; returns (f, flops per iteration,
    description), or raises RuntimeError when the CPU has no such instruction."""
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
    if kind == "bf16_dot":
        if not features.get("avx512bf16"):
            raise RuntimeError("this CPU has no AVX512_BF16")
        lanes, fn = 16, "@llvm.x86.avx512bf16.dpbf16ps.512"
        vt, operand = "<16 x float>", "<32 x bfloat>"
        flops_per_op, what = 4 * lanes, "VDPBF16PS (bf16 dot-product)"
    else:
        lanes = 16 if features.get("avx512f") else (8 if features.get("avx") else 4)
        vt = operand = f"<{lanes} x float>"
        fn = f"@llvm.fmuladd.v{lanes}f32"
        flops_per_op, what = 2 * lanes, f"{lanes}-lane float32 FMA"
    ir = [f"declare {vt} {fn}({vt}, {operand}, {operand})",
          "define float @peak(i64 %n, float %a0, float %b0) {",
          "entry:",
          f"  %va = insertelement {vt} undef, float %a0, i32 0",
          f"  %a = shufflevector {vt} %va, {vt} undef, <{lanes} x i32> zeroinitializer",
          f"  %vb = insertelement {vt} undef, float %b0, i32 0",
          f"  %b = shufflevector {vt} %vb, {vt} undef, <{lanes} x i32> zeroinitializer",
          f"  %x = bitcast {vt} %a to {operand}",
          "  br label %loop",
          "loop:",
          "  %i = phi i64 [0, %entry], [%i1, %loop]"]
    ir += [f"  %acc{k} = phi {vt} [%b, %entry], [%n{k}, %loop]" for k in range(_CHAINS)]
    ir += [f"  %n{k} = call {vt} {fn}({vt} %acc{k}, {operand} %x, {operand} %x)" for k in range(_CHAINS)]
    ir += ["  %i1 = add i64 %i, 1", "  %c = icmp ult i64 %i1, %n", "  br i1 %c, label %loop, label %done",
           "done:"]
    prev = "%n0"
    for k in range(1, _CHAINS):
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
    func = proto(engine.get_function_address("peak"))
    _PEAK_KEEP.append(func)
    desc = f"llvmlite-compiled loop of {_CHAINS} independent {what} chains per thread (llvm cpu {cpu_name})"
    return (lambda n: func(n, 0.999, 0.001)), flops_per_op * _CHAINS, desc


def measure_peak(kind, threads, seconds=0.25, reps=5):
    """Best-of-`reps` throughput (GFLOP/s) of `kind` ("fma" or "bf16_dot") on 1 thread and
    on `threads` threads. ctypes releases the GIL, so Python threads run the loop in parallel."""
    try:
        run, flops_per_iter, desc = _peak_loop(kind)
    except Exception as exc:  # no llvmlite, or it cannot target this CPU, or the CPU lacks the instruction
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
