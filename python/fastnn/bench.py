"""fastnn's benchmark suite: `fastnn bench [--quick] [--out DIR]`.

What it measures
  Kernels -- the activations relu, sigmoid and tanh, softmax, log_softmax,
  cross_entropy, softmax_cross_entropy, matmul, linear (forward),
  linear_backward and one Adam step -- at the shapes of an MNIST MLP and at
  large shapes (linear and linear_backward also on a batch of MNIST images,
  whose zeros fastnn skips), through the public API
  (`fastnn.functional`; the optimizer step through the backend's fused
  kernel) for every backend (numpy, numba, cpp), beside the textbook NumPy
  formulation (`fastnn.bench_reference`) and PyTorch CPU when it is installed.
  End to end -- one MNIST epoch of a 784-256-128-10 ReLU MLP trained with Adam
  (lr 1e-3, batch 128, the same initial weights and the same shuffled batches)
  for fastnn's Trainer, the textbook NumPy MLP, PyTorch and scikit-learn's
  MLPClassifier (each when installed); and the training time fastnn's default
  `fastnn train` recipe needs to reach 98% test accuracy.

How
  Every candidate is warmed up first (Numba JIT, thread pools, allocators).
  The candidates of one case then run interleaved, in rounds (every candidate
  once per round, in a rotating order); each sample is the mean of enough
  back-to-back calls to last `min_time`. Each round is charged with the CPU
  share other processes took meanwhile; on a busy machine extra rounds run
  and the quietest are kept (see run_rounds). Times are medians over the kept
  rounds; the headline ratios -- speed-ups over the textbook NumPy code -- are
  medians of the per-round ratios.
  Throughput is given in GFLOP/s against a measured FMA peak (an LLVM loop of
  independent vector FMAs on every core, compiled for the host by llvmlite,
  which ships with Numba) and in GB/s against measured copy bandwidth
  (np.copyto of a large array, counting read + write).

Outputs (into --out): results.json, results.md (the README's "Performance"
section), kernels.png, epoch.png, and the table on the terminal.

`main(quick, out)` returns the exit code: 1 when a fastnn kernel or training
run failed, else 0. Nothing here asserts anything about speed.
"""
import argparse
import datetime
import gc
import json
import os
import platform
import re
import sys
import threading
import time
import warnings

import numpy as np

from . import backends
from . import bench_reference as ref

SIZES = [784, 256, 128, 10]
BATCH = 128
COLUMNS = ("numpy", "numba", "cpp", "torch")  # speed-up columns, beside the textbook baseline
COLUMN_TITLES = {"textbook": "textbook NumPy", "numpy": "fastnn numpy", "numba": "fastnn numba",
                 "cpp": "fastnn cpp", "torch": "PyTorch"}

MODES = {
    # reps: interleaved repetitions per kernel case; min_time: seconds per sample;
    # e2e_samples: training samples per timed epoch (None: all 60000).
    "full": dict(reps=11, min_time=0.05, e2e_samples=None, e2e_reps=5, t98_reps=3, t98_torch=True,
                 peak_seconds=0.25, peak_reps=7, copy_mib=256, large_scale=1, synthetic=False, others=True,
                 t98_budget=None, max_reps_factor=2.0, pause=1.0, retry_noisy=True),
    "quick": dict(reps=3, min_time=0.01, e2e_samples=10000, e2e_reps=3, t98_reps=1, t98_torch=False,
                  peak_seconds=0.1, peak_reps=3, copy_mib=128, large_scale=1, synthetic=False, others=True,
                  t98_budget=20, max_reps_factor=1.0, pause=0.5, retry_noisy=False),
    # tiny: for the test suite only -- small "large" shapes, synthetic data, no time-to-98%,
    # and neither PyTorch nor scikit-learn (importing them alone takes seconds).
    "tiny": dict(reps=1, min_time=0.001, e2e_samples=512, e2e_reps=1, t98_reps=0, t98_torch=False,
                 peak_seconds=0.02, peak_reps=1, copy_mib=16, large_scale=8, synthetic=True, others=False,
                 t98_budget=None, max_reps_factor=1.0, pause=0.05, retry_noisy=False),
}

# Speed targets (performance issue): (kernel, shape, minimum speed-up of the
# headline backend over the textbook NumPy code, what the baseline is).
KERNEL_TARGETS = [
    ("matmul", "128x784x256", 2.0, "NumPy @"),
    ("matmul", "256x784x512", 2.0, "NumPy @"),
    ("matmul", "1024x1024x1024", 2.0, "NumPy @"),
    ("linear_backward", "128x784->256", 2.0, "NumPy dY@W.T, X.T@dY, dY.sum(0)"),
    ("linear_backward", "128x256->128", 2.0, "NumPy dY@W.T, X.T@dY, dY.sum(0)"),
    ("linear_backward", "1024x784->1024", 2.0, "NumPy dY@W.T, X.T@dY, dY.sum(0)"),
    ("softmax_cross_entropy", "128x10", 15.0, "textbook NumPy"),
    ("softmax_cross_entropy", "32768x1000", 5.0, "textbook NumPy"),
]
EPOCH_TARGETS = [("textbook", 4.0), ("torch", 5.0)]
T98_TARGET_SECONDS = 1.0


_QUIET = False


def _log(msg):
    if not _QUIET:
        print(msg, flush=True)


# =============================================================== machine & peak

def _cpuinfo():
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return info
    cores = set()
    phys = None
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, value = (s.strip() for s in line.split(":", 1))
        if key in ("model name", "cpu family", "model", "stepping", "flags", "vendor_id") and key not in info:
            info[key] = value
        if key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
    if cores:
        info["physical_cores"] = len(cores)
    return info


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _cpu_times():
    """(seconds the whole machine's CPUs were busy, seconds this process used), or None."""
    try:
        import resource
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal, without guest time
        own = resource.getrusage(resource.RUSAGE_SELF)
        return busy, own.ru_utime + own.ru_stime
    except (OSError, ValueError, ImportError, IndexError):
        return None


def other_load(start, end, wall, cpus):
    """Fraction of the machine's CPU time that other processes used between two _cpu_times()."""
    if not start or not end or wall <= 0:
        return None
    others = (end[0] - start[0]) - (end[1] - start[1])
    return max(0.0, others / (wall * cpus))


def machine_info():
    """CPU model, ISA, cores, threads, memory, OS and library versions."""
    from importlib import metadata

    import fastnn
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    isa_flags = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16",
                             "avx512_vnni", "amx_tile") if f in flags]
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gib = round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    versions = {"python": platform.python_version(), "fastnn": fastnn.__version__}
    for dist in ("numpy", "numba", "llvmlite", "torch", "scikit-learn", "matplotlib"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    blas = None
    try:
        import threadpoolctl
        blas = [{k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture", "threading_layer")}
                for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]
    except Exception:  # threadpoolctl is optional
        pass
    return {
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        "cpu_vendor": cpu.get("vendor_id"),
        "cpu_family_model": f"family {cpu.get('cpu family')} model {cpu.get('model')} stepping {cpu.get('stepping')}"
        if cpu.get("cpu family") else None,
        "isa_flags": isa_flags,
        "logical_cpus": os.cpu_count(),
        "physical_cores": cpu.get("physical_cores"),
        "usable_cpus": affinity,
        "memory_gib": mem_gib,
        "os": platform.platform(),
        "fastnn": fastnn.info(),
        "versions": versions,
        "numpy_blas": blas,
    }


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


# ================================================================ kernel timing

class Candidate:
    """One implementation of a case: `fn()` runs it once (returning its result);
    `backend` is the fastnn backend to activate first (None: leave as is)."""

    __slots__ = ("name", "backend", "fn")

    def __init__(self, name, fn, backend=None):
        self.name, self.fn, self.backend = name, fn, backend


def _activate(name):
    if name is not None:
        backends.set_active(name)


def _as_numpy(value):
    if isinstance(value, (tuple, list)):
        return [_as_numpy(v) for v in value]
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().numpy()
    return np.asarray(value, dtype=np.float64)


def _agrees(got, want):
    got, want = _as_numpy(got), _as_numpy(want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(_agrees(g, w) for g, w in zip(got, want))
    if got.shape != want.shape:
        return False
    scale = float(np.max(np.abs(want))) if want.size else 1.0
    return bool(np.allclose(got, want, rtol=2e-3, atol=2e-3 * max(scale, 1e-3)))


QUIET_SHARE = 0.10  # a round is "quiet" when other processes used at most this share of the CPUs


def run_rounds(one_round, reps, max_reps, cpus):
    """Call one_round(r) for r = 0, 1, ... and keep the `reps` quietest rounds.

    On a shared machine other processes can steal the CPUs for a while, and a
    2-thread kernel that loses one of its threads slows down many times over.
    So each round (every candidate once) is charged with the share of the CPUs
    that *other* processes used meanwhile (from /proc/stat and our own
    rusage); when fewer than `reps` rounds were quiet, more rounds run, up to
    `max_reps`; then the `reps` quietest rounds are kept. A round is kept or
    dropped as a whole, so every candidate is judged on the same rounds.
    Returns (results of the kept rounds, their shares, all shares).
    """
    results, shares = [], []
    cpus = max(1, cpus or 1)
    while True:
        before, t = _cpu_times(), time.perf_counter()
        results.append(one_round(len(results)))
        shares.append(other_load(before, _cpu_times(), time.perf_counter() - t, cpus))
        n = len(results)
        if n >= max(reps, max_reps) or (n >= reps and (any(v is None for v in shares)
                                                      or sum(v <= QUIET_SHARE for v in shares) >= reps)):
            break
    if any(v is None for v in shares):
        keep = list(range(len(results)))
    else:
        keep = sorted(sorted(range(len(results)), key=lambda i: shares[i])[:reps])
    return [results[i] for i in keep], [shares[i] for i in keep], shares


def settle(max_wait):
    """Wait (at most `max_wait` seconds) until no thread of this process is
    still busy-waiting after the previous candidate.

    After a parallel call, OpenBLAS (NumPy), libgomp (fastnn, Numba) and
    PyTorch's OpenMP keep their worker threads spinning for a while (up to
    ~0.1 s). On few cores the next candidate's threads would share the CPUs
    with those spinners and run several times slower -- an artefact of
    interleaving that a program using one library would not see. (Measured on
    2 cores: a 128x784x256 matmul right after the other library's took up to
    3x longer than alone; after a 0.1 s pause, the same as alone.) So this
    sleeps in 10 ms steps until the process used less than a fifth of a CPU
    during a step. The sample then starts with one untimed call, which wakes
    the candidate's own threads: samples measure back-to-back calls, as in a
    training loop.
    """
    if max_wait <= 0:
        return
    deadline = time.perf_counter() + max_wait
    while True:
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(0.01)
        busy = (time.process_time() - cpu) / max(time.perf_counter() - wall, 1e-6)
        if busy < 0.2 or time.perf_counter() > deadline:
            return


def time_interleaved(candidates, reps, min_time, warmup=2, check=True, max_reps=None, cpus=None, pause=0.0):
    """Median seconds per call for each candidate, timed interleaved.

    Returns (medians, speedups, info, errors, mismatches). Each candidate is
    warmed up (`warmup` calls), then calibrated to `inner` calls per sample
    (about `min_time` seconds); then rounds run every candidate once each, in
    a rotating order so that no one always runs first or last (see
    run_rounds for which rounds count). medians: seconds per call;
    speedups: the median over the kept rounds of textbook time / candidate
    time within the same round (paired, so slow phases of the machine cancel).
    """
    errors, mismatches, live = {}, [], []
    baseline = None
    for c in candidates:
        try:
            _activate(c.backend)
            settle(pause)
            result = None
            for _ in range(warmup):
                result = c.fn()
            single = float("inf")
            for _ in range(3):  # the time of one warm call, to size the samples
                t = time.perf_counter()
                c.fn()
                single = min(single, time.perf_counter() - t)
                if single > min_time:
                    break
        except Exception as exc:
            errors[c.name] = f"{type(exc).__name__}: {exc}"
            continue
        if check and result is not None:
            if baseline is None:
                baseline = result
            elif not _agrees(result, baseline):
                mismatches.append(c.name)
        live.append((c, max(1, min(int(min_time / max(single, 1e-7)), 1_000_000))))
    def one_round(r):
        times = {}
        k = r % len(live) if live else 0
        for c, inner in live[k:] + live[:k]:
            _activate(c.backend)
            fn = c.fn
            settle(pause)
            if inner > 1:
                fn()  # wake this candidate's threads: the samples measure back-to-back calls
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            times[c.name] = (time.perf_counter() - t) / inner
        return times

    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        kept, kept_shares, all_shares = run_rounds(one_round, reps, max_reps or reps, cpus)
    finally:
        if gc_enabled:
            gc.enable()
    medians = {c.name: float(np.median([rd[c.name] for rd in kept])) for c, _ in live}
    base = live[0][0].name if live else None
    speedups = {c.name: float(np.median([rd[base] / rd[c.name] for rd in kept]))
                for c, _ in live[1:]} if base == "textbook" else {}
    info = {"samples": {c.name: [float(rd[c.name]) for rd in kept] for c, _ in live},
            "calls_per_sample": {c.name: inner for c, inner in live},
            "rounds_run": len(all_shares), "rounds_kept": len(kept),
            "others_share_kept": [None if v is None else round(v, 3) for v in kept_shares],
            "others_share_all": [None if v is None else round(v, 3) for v in all_shares]}
    return medians, speedups, info, errors, mismatches


# ================================================================= kernel cases

def _shapes(mode):
    """{kernel: [(group, shape), ...]}; shapes are tuples, labels come from _label."""
    s = MODES[mode]["large_scale"]
    big_rows, big_n = 32768 // (s * s), 1000
    cube = 1024 // s
    # On MNIST's own images, unless the run is on synthetic data.
    images = [] if MODES[mode]["synthetic"] else [("mlp", (128, 784, 256, MNIST_INPUT))]
    return {
        "relu": [("mlp", (128, 256)), ("large", (4096 // s, 1024))],
        "sigmoid": [("mlp", (128, 256)), ("large", (4096 // s, 1024))],
        "tanh": [("mlp", (128, 256)), ("large", (4096 // s, 1024))],
        "softmax": [("mlp", (128, 10)), ("large", (big_rows, big_n))],
        "log_softmax": [("mlp", (128, 10)), ("large", (big_rows, big_n))],
        "cross_entropy": [("mlp", (128, 10)), ("large", (big_rows, big_n))],
        "softmax_cross_entropy": [("mlp", (128, 10)), ("large", (big_rows, big_n))],
        "matmul": [("mlp", (128, 784, 256)), ("mlp", (256, 784, 512)), ("large", (cube, cube, cube))],
        "linear": [("mlp", (128, 784, 256)), ("mlp", (128, 256, 128)), ("large", (cube, 784, cube))] + images,
        "linear_backward": [("mlp", (128, 784, 256)), ("mlp", (128, 256, 128)),
                            ("large", (cube, 784, cube))] + images,
        "adam_step": [("mlp", "784-256-128-10"), ("large", (4096 // s, 1024 // s))],
    }


# The input of a linear case that is a batch of MNIST images (81% zeros) instead of random numbers.
MNIST_INPUT = "MNIST pixels"


def _label(kernel, shape):
    if isinstance(shape, str):
        return shape
    if kernel in ("linear", "linear_backward"):
        return f"{shape[0]}x{shape[1]}->{shape[2]}" + (f" ({shape[3]})" if len(shape) > 3 else "")
    return "x".join(str(d) for d in shape)


def _mnist_batch(rows, rng):
    """`rows` random MNIST training images, flattened, in [0, 1]."""
    from .datasets import load_mnist
    (x, _), _ = load_mnist()
    return np.ascontiguousarray(x[rng.choice(x.shape[0], rows, replace=False)], dtype=np.float32)


def _torch_module():
    try:
        import torch
    except Exception:
        return None
    return torch


def _kernel_case(kernel, shape, rng, torch, backend_names):
    """(work, unit, candidates) for one case; work is FLOPs (unit GFLOP/s) or bytes (GB/s)."""
    import fastnn.functional as F
    f32 = np.float32
    cands = []

    def add_backends(make):
        for name in backend_names:
            cands.append(Candidate(name, make(name), backend=name))

    if kernel in ("relu", "sigmoid", "tanh"):
        x = rng.standard_normal(shape).astype(f32)
        cands.append(Candidate("textbook", lambda: getattr(ref, kernel)(x)))
        add_backends(lambda _name: (lambda: getattr(F, kernel)(x)))
        if torch is not None:
            xt, tfn = torch.from_numpy(x), getattr(torch, kernel)
            cands.append(Candidate("torch", lambda: tfn(xt)))
        return 8.0 * x.size, "GB/s", cands

    if kernel in ("softmax", "log_softmax", "cross_entropy", "softmax_cross_entropy"):
        n, c = shape
        # Unit-variance logits: no probability falls near the textbook's 1e-7 guard,
        # so every implementation must agree with it (the check in time_interleaved).
        x = rng.standard_normal((n, c)).astype(f32)
        t = rng.integers(0, c, n).astype(np.int64)
        if kernel == "softmax":
            work = 8.0 * n * c
            cands.append(Candidate("textbook", lambda: ref.softmax(x)))
            add_backends(lambda _name: (lambda: F.softmax(x)))
        elif kernel == "log_softmax":
            work = 8.0 * n * c
            cands.append(Candidate("textbook", lambda: ref.log_softmax(x)))
            add_backends(lambda _name: (lambda: F.log_softmax(x)))
        elif kernel == "cross_entropy":
            work = 4.0 * n * c + 8.0 * n
            cands.append(Candidate("textbook", lambda: ref.cross_entropy(x, t)))
            add_backends(lambda _name: (lambda: F.cross_entropy(x, t)))
        else:
            work = 8.0 * n * c + 8.0 * n
            cands.append(Candidate("textbook", lambda: ref.softmax_cross_entropy(x, t)))
            add_backends(lambda _name: (lambda: F.softmax_cross_entropy(x, t)))
        if torch is not None:
            xt, tt = torch.from_numpy(x), torch.from_numpy(t)
            tf = torch.nn.functional
            if kernel == "softmax":
                fn = lambda: torch.softmax(xt, dim=1)  # noqa: E731
            elif kernel == "log_softmax":
                fn = lambda: torch.log_softmax(xt, dim=1)  # noqa: E731
            elif kernel == "cross_entropy":
                fn = lambda: tf.cross_entropy(xt, tt)  # noqa: E731
            else:
                def fn():
                    leaf = xt.detach().requires_grad_()
                    loss = tf.cross_entropy(leaf, tt)
                    (grad,) = torch.autograd.grad(loss, leaf)
                    return loss.detach(), grad
            cands.append(Candidate("torch", fn))
        return work, "GB/s", cands

    if kernel == "matmul":
        m, k, n = shape
        a = rng.standard_normal((m, k)).astype(f32)
        b = rng.standard_normal((k, n)).astype(f32)
        cands.append(Candidate("textbook", lambda: ref.matmul(a, b)))
        add_backends(lambda _name: (lambda: F.matmul(a, b)))
        if torch is not None:
            at, bt = torch.from_numpy(a), torch.from_numpy(b)
            cands.append(Candidate("torch", lambda: torch.mm(at, bt)))
        return 2.0 * m * k * n, "GFLOP/s", cands

    if kernel in ("linear", "linear_backward"):
        m, k, n = shape[:3]
        x = _mnist_batch(m, rng) if len(shape) > 3 else rng.standard_normal((m, k)).astype(f32)
        # On images fastnn skips the zeros: its rate counts the dense product's FLOPs.
        gflops = "GFLOP/s" if len(shape) == 3 else "GFLOP/s dense-equiv."
        W = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(f32)
        b = rng.standard_normal(n).astype(f32)
        dy = rng.standard_normal((m, n)).astype(f32)
        if kernel == "linear":
            cands.append(Candidate("textbook", lambda: ref.linear(x, W, b)))
            add_backends(lambda _name: (lambda: F.linear(x, W, b)))
            if torch is not None:
                xt, Wt, bt = torch.from_numpy(x), torch.from_numpy(W), torch.from_numpy(b)
                cands.append(Candidate("torch", lambda: torch.addmm(bt, xt, Wt)))
            return 2.0 * m * k * n + m * n, gflops, cands
        cands.append(Candidate("textbook", lambda: ref.linear_backward(x, W, dy)))
        add_backends(lambda _name: (lambda: F.linear_backward(x, W, dy)))
        if torch is not None:
            xt, Wt, dyt = torch.from_numpy(x), torch.from_numpy(W), torch.from_numpy(dy)
            cands.append(Candidate("torch", lambda: (dyt.mm(Wt.t()), xt.t().mm(dyt), dyt.sum(0))))
        return 4.0 * m * k * n + m * n, gflops, cands

    if kernel == "adam_step":
        if isinstance(shape, str):  # the MLP's parameters, weight then bias per layer
            shapes = []
            for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
                shapes += [(n_in, n_out), (n_out,)]
        else:
            shapes = [shape]
        grads = [(rng.standard_normal(s) * 1e-2).astype(f32) for s in shapes]
        params0 = [(rng.standard_normal(s) * 0.05).astype(f32) for s in shapes]
        total = sum(int(np.prod(s)) for s in shapes)

        tb_params = {f"p{i}": p.copy() for i, p in enumerate(params0)}
        tb_grads = {f"p{i}": g for i, g in enumerate(grads)}
        tb_opt = ref.Adam(lr=1e-3)
        cands.append(Candidate("textbook", lambda: tb_opt.update(tb_params, tb_grads)))

        def make(name):
            kern = backends.load(name)
            state = [(p.copy(), g, np.zeros_like(p), np.zeros_like(p)) for p, g in zip(params0, grads)]

            def step():
                for p, g, m1, m2 in state:
                    kern.adam_step(p, g, m1, m2, 10, 1e-3)
            return step
        add_backends(make)
        if torch is not None:
            tparams = []
            for p, g in zip(params0, grads):
                tp = torch.from_numpy(p.copy()).requires_grad_()
                tp.grad = torch.from_numpy(g)
                tparams.append(tp)
            topt = torch.optim.Adam(tparams, lr=1e-3)
            cands.append(Candidate("torch", topt.step))
        return 7.0 * 4 * total, "GB/s", cands
    raise ValueError(kernel)


def add_fractions_of_peak(rows, peak, copy):
    """Throughput as a fraction of the FMA peak (GFLOP/s) or of the copy bandwidth (GB/s)."""
    for row in rows:
        if "throughput" not in row:
            continue
        if row["unit"] not in ("GFLOP/s", "GB/s"):
            continue  # dense-equivalent rates of sparse inputs: not comparable to a peak
        ref_value = peak.get("gflops") if row["unit"] == "GFLOP/s" else copy.get("gbs")
        row["fraction_of_peak"] = {k: v / ref_value for k, v in row["throughput"].items()} if ref_value else {}


def _run_case(index, kernel, group, shape, settings, torch, backend_names, cpus):
    """One kernel case, timed; returns (row, failed)."""
    label = _label(kernel, shape)
    row = {"kernel": kernel, "shape": label, "group": group}
    try:
        rng = np.random.default_rng(index)  # the same data whenever the case runs
        work, unit, cands = _kernel_case(kernel, shape, rng, torch, backend_names)
        medians, speedups, info, errors, mismatches = time_interleaved(
            cands, settings["reps"], settings["min_time"], check=kernel != "adam_step",
            max_reps=int(settings["reps"] * settings["max_reps_factor"]), cpus=cpus, pause=settings["pause"])
    except Exception as exc:  # the case could not even be set up
        row["error"] = f"{type(exc).__name__}: {exc}"
        _log(f"  {kernel:22s} {label:16s} FAILED: {row['error']}")
        return row, True
    failed = False
    row.update({
        "unit": unit, "work": work, "seconds": medians, "speedup": speedups, **info,
        "throughput": {k: work / v / 1e9 for k, v in medians.items()},
        "fraction_of_peak": {},
    })
    if errors:
        row["errors"] = errors
        failed = any(k in backends.NAMES for k in errors)
    if mismatches:
        row["mismatch"] = mismatches  # results that disagree with the textbook's
        failed = failed or any(k in backends.NAMES for k in mismatches)
    speed = "  ".join(f"{k} {row['speedup'][k]:.2f}x" for k in COLUMNS if k in row["speedup"])
    share = _median_share(row)
    _log(f"  {kernel:22s} {label:16s} textbook {_fmt_time(medians.get('textbook'))}  {speed}"
         + (f"  (others used {100 * share:.0f}% of the CPUs)" if share and share > QUIET_SHARE else "")
         + (f"  errors: {errors}" if errors else "") + (f"  MISMATCH: {mismatches}" if mismatches else ""))
    return row, failed


def _median_share(row):
    shares = [v for v in row.get("others_share_kept", []) if v is not None]
    return float(np.median(shares)) if shares else None


def run_kernels(mode, settings, torch, backend_names, cpus):
    cases = [(kernel, group, shape) for kernel, lst in _shapes(mode).items() for group, shape in lst]
    rows, failed = [], False
    for index, (kernel, group, shape) in enumerate(cases):
        row, bad = _run_case(index, kernel, group, shape, settings, torch, backend_names, cpus)
        rows.append(row)
        failed = failed or bad
    # Cases measured while other processes were busy get one more chance at the
    # end (a busy spell often passes); the quieter of the two measurements stays.
    for index, (kernel, group, shape) in enumerate(cases):
        share = _median_share(rows[index])
        if settings["retry_noisy"] and share is not None and share > QUIET_SHARE:
            _log("  again, as other processes were busy the first time:")
            row, bad = _run_case(index, kernel, group, shape, settings, torch, backend_names, cpus)
            new_share = _median_share(row)
            if not bad and new_share is not None and new_share < share:
                row["retried"] = True
                rows[index] = row
    return rows, failed


# =================================================================== end to end

def _initial_weights(seed):
    """fastnn's initial (W, b) per layer of the 784-256-128-10 MLP (W is (in, out))."""
    from . import nn
    model = nn.MLP(SIZES, "relu", seed=seed)
    return [(layer.weight.data.copy(), layer.bias.data.copy()) for layer in model.layers
            if isinstance(layer, nn.Linear)]


class FastnnRunner:
    """fastnn's Trainer: MLP 784-256-128-10 ReLU, Adam(lr), batch 128, on one backend."""

    def __init__(self, backend, x, y, seed, lr=1e-3):
        from . import nn, optim
        from .train import Trainer
        self.name, self.backend, self.x, self.y = f"fastnn ({backend})", backend, x, y
        _activate(backend)
        self.model = nn.MLP(SIZES, "relu", seed=seed)
        opt = optim.Adam(self.model.parameters(), lr=lr)
        self.trainer = Trainer(self.model, nn.CrossEntropyLoss(), opt, batch_size=BATCH, epochs=0, seed=seed,
                               verbose=False, progress=False)
        self._seed = seed

    def warmup(self, n):
        from . import nn, optim
        from .train import Trainer
        _activate(self.backend)
        model = nn.MLP(SIZES, "relu", seed=self._seed + 1)
        Trainer(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), batch_size=BATCH,
                epochs=1, seed=self._seed + 1, verbose=False, progress=False).fit(self.x[:n], self.y[:n])

    def epoch(self):
        _activate(self.backend)
        self.trainer.epochs += 1
        t = time.perf_counter()
        self.trainer.fit(self.x, self.y)
        return time.perf_counter() - t

    def test_accuracy(self, x, y):
        _activate(self.backend)
        return float(self.trainer.evaluate(x, y)[1])


class TextbookRunner:
    """The book's MultiLayerNet + Adam in NumPy, on fastnn's initial weights and batches."""

    name = "textbook NumPy"

    def __init__(self, x, y, seed, weights, lr=1e-3):
        self.x, self.y = x, y
        self.net, self.opt = ref.TextbookMLP(weights), ref.Adam(lr=lr)
        self.rng = np.random.default_rng(seed)  # the permutations fastnn's Trainer draws
        self._weights = weights

    def warmup(self, n):
        net, opt = ref.TextbookMLP(self._weights), ref.Adam()
        ref.train_epoch(net, opt, self.x[:n], self.y[:n], np.arange(n), BATCH)

    def epoch(self):
        order = self.rng.permutation(self.x.shape[0])
        t = time.perf_counter()
        ref.train_epoch(self.net, self.opt, self.x, self.y, order, BATCH)
        return time.perf_counter() - t

    def test_accuracy(self, x, y):
        return self.net.accuracy(x, y)


class TorchRunner:
    """nn.Sequential(Linear, ReLU, ...), torch.optim.Adam, CrossEntropyLoss, float32, same batches."""

    name = "PyTorch"

    def __init__(self, torch, x, y, seed, weights, lr=1e-3, max_lr=None, epochs=None, batch=BATCH,
                 label_smoothing=0.0):
        self.torch, self.batch = torch, batch
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.model = self._model(weights)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.sched = None
        if max_lr is not None:  # the OneCycle recipe, stepped per batch
            steps = -(-x.shape[0] // batch)
            self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=max_lr, epochs=epochs,
                                                             steps_per_epoch=steps)
        self.loss = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.rng = np.random.default_rng(seed)
        self._weights = weights

    def _model(self, weights):
        torch = self.torch
        layers = []
        for i, (W, b) in enumerate(weights):
            lin = torch.nn.Linear(W.shape[0], W.shape[1])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if i < len(weights) - 1:
                layers.append(torch.nn.ReLU())
        return torch.nn.Sequential(*layers)

    def _epoch(self, model, opt, sched, order, x, y):
        loss_sum = 0.0
        for s in range(0, order.shape[0], self.batch):
            idx = order[s:s + self.batch]
            xb, yb = x[idx], y[idx]
            opt.zero_grad()
            loss = self.loss(model(xb), yb)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += loss.item()
        return loss_sum

    def warmup(self, n):
        model = self._model(self._weights)
        opt = self.torch.optim.Adam(model.parameters(), lr=1e-3)
        self._epoch(model, opt, None, self.torch.arange(n), self.x, self.y)

    def epoch(self):
        order = self.torch.from_numpy(self.rng.permutation(self.x.shape[0]))
        t = time.perf_counter()
        self._epoch(self.model, self.opt, self.sched, order, self.x, self.y)
        return time.perf_counter() - t

    def test_accuracy(self, x, y):
        with self.torch.no_grad():
            pred = self.model(self.torch.from_numpy(x)).argmax(dim=1).numpy()
        return float(np.mean(pred == y))


class SklearnRunner:
    """MLPClassifier((256, 128), adam, batch 128, lr 1e-3, alpha 0): one partial_fit per epoch."""

    name = "scikit-learn"

    def __init__(self, x, y, seed):
        self.x, self.y, self.seed = x, y, seed
        self.model = self._make(seed)
        self.classes = np.arange(SIZES[-1])

    @staticmethod
    def _make(seed):
        from sklearn.neural_network import MLPClassifier
        return MLPClassifier(hidden_layer_sizes=tuple(SIZES[1:-1]), activation="relu", solver="adam",
                             batch_size=BATCH, learning_rate_init=1e-3, max_iter=1, alpha=0.0, shuffle=True,
                             random_state=seed)

    def _fit(self, model, x, y):
        from sklearn.exceptions import ConvergenceWarning
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.partial_fit(x, y, classes=self.classes)

    def warmup(self, n):
        self._fit(self._make(self.seed + 1), self.x[:n], self.y[:n])

    def epoch(self):
        t = time.perf_counter()
        self._fit(self.model, self.x, self.y)
        return time.perf_counter() - t

    def test_accuracy(self, x, y):
        return float(self.model.score(x, y))


def _load_data(settings):
    """((x_train, t_train), (x_test, t_test), description); synthetic data when MNIST is unavailable."""
    if not settings["synthetic"]:
        try:
            from .datasets import load_mnist
            t = time.perf_counter()
            (x, y), (xt, yt) = load_mnist(normalize=True, flatten=True)
            return (x, y), (xt, yt), f"MNIST (loaded in {time.perf_counter() - t:.1f} s)"
        except Exception as exc:
            reason = f"MNIST unavailable: {type(exc).__name__}: {exc}"
            _log(f"  {reason}; using synthetic data")
    else:
        reason = "synthetic (tiny mode)"
    rng = np.random.default_rng(0)
    n = max(settings["e2e_samples"] or 0, 2048)
    x = rng.random((n, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], n).astype(np.int64)
    return (x, y), (x[:1024].copy(), y[:1024].copy()), f"synthetic random data ({reason})"


def run_epochs(settings, data, torch, sklearn_ok, backend_names, headline, cpus, seed=0):
    (x_all, y_all), (x_test, y_test), _ = data
    n = settings["e2e_samples"] or x_all.shape[0]
    x, y = np.ascontiguousarray(x_all[:n]), np.ascontiguousarray(y_all[:n])
    weights = _initial_weights(seed)
    runners, errors, failed = [], {}, False
    order = [headline] + [b for b in backend_names if b != headline]
    makers = [(f"fastnn ({b})", (lambda b=b: FastnnRunner(b, x, y, seed))) for b in order]
    makers.append(("textbook NumPy", lambda: TextbookRunner(x, y, seed, weights)))
    if torch is not None:
        makers.append(("PyTorch", lambda: TorchRunner(torch, x, y, seed, weights)))
    if sklearn_ok:
        makers.append(("scikit-learn", lambda: SklearnRunner(x, y, seed)))
    warm_n = min(n, 20 * BATCH)
    for name, make in makers:
        try:
            runner = make()
            runner.warmup(warm_n)
            runners.append(runner)
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            failed = failed or name.startswith("fastnn")
            _log(f"  {name}: FAILED: {errors[name]}")
    def one_round(rep):
        times = {}
        k = rep % len(runners) if runners else 0
        for r in runners[k:] + runners[:k]:
            if r.name in errors:
                continue
            try:
                settle(settings["pause"])
                times[r.name] = r.epoch()
            except Exception as exc:
                errors[r.name] = f"{type(exc).__name__}: {exc}"
                _log(f"  {r.name}: FAILED: {errors[r.name]}")
        _log(f"  epoch round {rep + 1}: " + "  ".join(f"{name} {v:.3f}s" for name, v in times.items()))
        return times

    reps = settings["e2e_reps"]
    kept, kept_shares, all_shares = run_rounds(one_round, reps, int(reps * settings["max_reps_factor"]), cpus)
    failed = failed or any(name.startswith("fastnn") for name in errors)
    samples = {r.name: [rd[r.name] for rd in kept if r.name in rd] for r in runners}
    head_name = f"fastnn ({headline})"
    frameworks = []
    for r in runners:
        s = samples[r.name]
        if not s or r.name in errors:
            continue
        try:
            acc = r.test_accuracy(x_test, y_test)
        except Exception as exc:
            acc = None
            errors[r.name + " accuracy"] = f"{type(exc).__name__}: {exc}"
        paired = [rd[r.name] / rd[head_name] for rd in kept if r.name in rd and head_name in rd]
        frameworks.append({"name": r.name, "seconds": float(np.median(s)), "samples": [float(v) for v in s],
                           "relative_to_fastnn": float(np.median(paired)) if paired else None,
                           "test_accuracy_after": acc, "epochs_trained": len(all_shares)})
    _activate(headline)
    return {"samples_per_epoch": int(n), "subset": n < x_all.shape[0], "batch_size": BATCH,
            "architecture": "-".join(map(str, SIZES)) + " ReLU", "optimizer": "Adam lr 1e-3",
            "headline": head_name, "repetitions": len(kept), "rounds_run": len(all_shares),
            "others_share_kept": [None if v is None else round(v, 3) for v in kept_shares],
            "others_share_all": [None if v is None else round(v, 3) for v in all_shares],
            "frameworks": frameworks, "errors": errors}, failed


def _t98_fastnn(x, y, xt, yt, target, seed):
    from . import nn
    from .recipe import DEFAULTS, make_optimizer, make_scheduler
    from .train import Trainer
    hidden = [int(h) for h in str(DEFAULTS["hidden"]).split(",")]
    model = nn.MLP([x.shape[1], *hidden, 10], DEFAULTS["activation"], DEFAULTS["dropout"], seed=seed)
    opt = make_optimizer(DEFAULTS["optimizer"], model.parameters(), DEFAULTS["lr"])
    bs, epochs = DEFAULTS["batch_size"], DEFAULTS["epochs"]
    sched = make_scheduler(DEFAULTS["schedule"], opt, DEFAULTS["lr"], epochs, -(-x.shape[0] // bs))
    trainer = Trainer(model, nn.CrossEntropyLoss(label_smoothing=DEFAULTS["label_smoothing"]), opt, sched,
                      batch_size=bs, epochs=0, seed=seed, verbose=False, progress=False)

    def one_epoch():
        trainer.epochs += 1
        t = time.perf_counter()
        trainer.fit(x, y)
        return time.perf_counter() - t
    return _train_until(one_epoch, lambda: trainer.evaluate(xt, yt)[1], target, epochs)


def _t98_torch(torch, x, y, xt, yt, target, seed):
    from .recipe import DEFAULTS
    weights = _initial_weights(seed)
    runner = TorchRunner(torch, x, y, seed, weights, lr=DEFAULTS["lr"], max_lr=DEFAULTS["lr"],
                         epochs=DEFAULTS["epochs"], batch=DEFAULTS["batch_size"],
                         label_smoothing=DEFAULTS["label_smoothing"])
    return _train_until(runner.epoch, lambda: runner.test_accuracy(xt, yt), target, DEFAULTS["epochs"])


def _train_until(one_epoch, accuracy, target, max_epochs):
    """Train epoch by epoch (timed), evaluating after each (not timed), until accuracy >= target."""
    seconds, curve = 0.0, []
    for epoch in range(1, max_epochs + 1):
        seconds += one_epoch()
        acc = float(accuracy())
        curve.append({"epoch": epoch, "train_seconds": seconds, "test_accuracy": acc})
        if acc >= target:
            return {"reached": True, "seconds": seconds, "epochs": epoch, "accuracy": acc, "curve": curve}
    return {"reached": False, "seconds": None, "epochs": max_epochs, "accuracy": curve[-1]["test_accuracy"],
            "train_seconds": seconds, "curve": curve}


def run_time_to_accuracy(settings, data, torch, headline, cpus, target=0.98, seed=0):
    from .recipe import DEFAULTS
    (x, y), (xt, yt), _ = data
    recipe = (f"fastnn train defaults: {DEFAULTS['hidden']} {DEFAULTS['activation']}, {DEFAULTS['optimizer']}, "
              f"{DEFAULTS['schedule']} max lr {DEFAULTS['lr']}, label smoothing {DEFAULTS['label_smoothing']}, "
              f"batch {DEFAULTS['batch_size']}, "
              f"up to {DEFAULTS['epochs']} epochs, test accuracy after each epoch (not timed)")
    out = {"target_accuracy": target, "recipe": recipe, "repetitions": settings["t98_reps"], "frameworks": [],
           "errors": {}}
    runs = {f"fastnn ({headline})": lambda: _t98_fastnn(x, y, xt, yt, target, seed)}
    if torch is not None and settings["t98_torch"]:
        runs["PyTorch"] = lambda: _t98_torch(torch, x, y, xt, yt, target, seed)
    def one_round(rep):
        got = {}
        for name, fn in runs.items():
            if name in out["errors"]:
                continue
            _activate(headline)
            try:
                settle(settings["pause"])
                r = got[name] = fn()
            except Exception as exc:
                out["errors"][name] = f"{type(exc).__name__}: {exc}"
                continue
            _log(f"  time to {100 * target:.0f}%: {name} run {rep + 1}: "
                 + (f"{r['seconds']:.2f} s ({r['epochs']} epochs, {100 * r['accuracy']:.2f}%)" if r["reached"]
                    else f"not reached ({100 * r['accuracy']:.2f}% after {r['epochs']} epochs)"))
        return got

    reps = settings["t98_reps"]
    kept, kept_shares, all_shares = run_rounds(one_round, reps, int(reps * settings["max_reps_factor"]), cpus)
    out["rounds_run"], out["repetitions"] = len(all_shares), len(kept)
    out["others_share_kept"] = [None if v is None else round(v, 3) for v in kept_shares]
    results = {name: [rd[name] for rd in kept if name in rd] for name in runs}
    failed = any(name.startswith("fastnn") for name in out["errors"])
    for name, rs in results.items():
        if not rs:
            continue
        reached = [r for r in rs if r["reached"]]
        out["frameworks"].append({
            "name": name, "runs": rs, "reached": len(reached) == len(rs),
            "seconds": float(np.median([r["seconds"] for r in reached])) if len(reached) == len(rs) else None,
            "accuracy": float(np.median([r["accuracy"] for r in rs])),
            "epochs": int(np.median([r["epochs"] for r in rs])),
        })
    return out, failed


# ===================================================================== targets

def evaluate_targets(kernels, epoch, t98, headline):
    targets = []
    by_case = {(r["kernel"], r["shape"]): r for r in kernels}
    for kernel, shape, goal, baseline in KERNEL_TARGETS:
        row = by_case.get((kernel, shape))
        value = row.get("speedup", {}).get(headline) if row else None
        targets.append({"name": f"{kernel} {shape}", "vs": baseline, "measured": value, "unit": "x",
                        "target": goal, "comparison": ">=", "met": None if value is None else value >= goal})
    fw = {f["name"]: f for f in (epoch or {}).get("frameworks", [])}
    head = fw.get(f"fastnn ({headline})")
    label = "MNIST epoch" + (f" ({epoch['samples_per_epoch']}-sample subset)" if epoch and epoch.get("subset") else "")
    for other, goal in EPOCH_TARGETS:
        other_name = {"textbook": "textbook NumPy", "torch": "PyTorch"}[other]
        # The median of the per-round ratios, as for the kernels: the two medians
        # of times can come from different rounds, which on a VM with slow
        # phases may have run at different speeds.
        value = fw[other_name]["relative_to_fastnn"] if head and other_name in fw else None
        targets.append({"name": label, "vs": other_name, "measured": value, "unit": "x", "target": goal,
                        "comparison": ">=", "met": None if value is None else value >= goal})
    value, note = None, None
    for f in (t98 or {}).get("frameworks", []):
        if f["name"] == f"fastnn ({headline})":
            value = f["seconds"]
            if not f["reached"]:
                note = f"not reached: {100 * f['accuracy']:.2f}% after {f['epochs']} epochs"
    targets.append({"name": "time to 98% test accuracy", "vs": "fastnn train defaults", "measured": value,
                    "unit": "s", "target": T98_TARGET_SECONDS, "comparison": "<",
                    "met": (False if note else None) if value is None else value < T98_TARGET_SECONDS,
                    **({"note": note} if note else {})})
    return targets


# ================================================================== formatting

def _fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _fmt_ratio(r):
    if r is None:
        return "-"
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x"


def _fmt_target(t, markdown=False):
    if t["measured"] is None:
        measured = "n/a"
    elif t["unit"] == "s":
        measured = f"{t['measured']:.2f} s"
    else:
        measured = _fmt_ratio(t["measured"])
    goal = f"{'<' if t['comparison'] == '<' else '>='} {t['target']:g}{' s' if t['unit'] == 's' else 'x'}"
    if markdown:
        goal = goal.replace(">=", "≥")
        mark = {True: "✅ met", False: "❌ not met", None: "– not measured"}[t["met"]]
    else:
        mark = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
    if t.get("note"):
        measured += f" ({t['note']})"
    return measured, goal, mark


def _machine_line(res):
    m = res["machine"]
    fi = m["fastnn"]
    v = m["versions"]
    cores = m.get("physical_cores") or m["logical_cpus"]
    libs = ", ".join(f"{k} {v[k]}" for k in ("numpy", "numba", "torch", "scikit-learn") if v.get(k))
    return (f"{m['cpu']} ({cores} cores / {m['logical_cpus']} threads, "
            f"{'/'.join(f for f in m['isa_flags'] if f in ('avx2', 'fma', 'avx512f')) or 'no AVX'}), "
            f"{m['memory_gib']} GiB; fastnn {fi['version']} backend {fi['backend']} ISA {fi['isa']}, "
            f"{res['threads']} threads; Python {v['python']}, {libs}")


def _peak_line(res):
    p, c = res["peak"], res["copy_bandwidth"]
    fma = (f"{p['gflops']:.0f} GFLOP/s for {p['threads']} threads ({p['gflops_1thread']:.0f} on 1 thread; "
           f"{p['estimate']})" if p.get("gflops") else f"not measured ({p.get('error')})")
    return f"measured float32 FMA peak {fma}; copy bandwidth {c['gbs']:.1f} GB/s"


def _rounds_note(res):
    rows = [r for r in res["kernels"] if "rounds_run" in r]
    run, kept = sum(r["rounds_run"] for r in rows), sum(r["rounds_kept"] for r in rows)
    e = res["end_to_end"]["epoch"]
    note = (f"{res['settings']['reps']} rounds per kernel case and {e['repetitions']} epochs per framework kept")
    if run > kept or e.get("rounds_run", 0) > e["repetitions"]:
        note += (f"; more rounds ran while other processes were busy ({run} kernel rounds, "
                 f"{e.get('rounds_run')} epoch rounds in all) and the quietest were kept")
    return note


def _others_note(res):
    share = res["machine"].get("other_processes_cpu_share")
    return "" if share is None else f" Other processes used {100 * share:.0f}% of the CPUs during the run."


def format_terminal(res):
    head = res["headline"]
    lines = [f"fastnn bench ({res['mode']}) -- {res['date']}", "machine: " + _machine_line(res),
             "peak:    " + _peak_line(res) + "." + _others_note(res), ""]
    cols = ["kernel", "shape", "textbook"] + [c for c in COLUMNS] + [f"{head} thru", "% peak"]
    rows = []
    for r in res["kernels"]:
        if "error" in r:
            rows.append([r["kernel"], r["shape"], "ERROR"] + [""] * (len(cols) - 3))
            continue
        thr = r["throughput"].get(head)
        frac = r["fraction_of_peak"].get(head)
        rows.append([r["kernel"], r["shape"], _fmt_time(r["seconds"].get("textbook"))]
                    + [_fmt_ratio(r["speedup"].get(c)) for c in COLUMNS]
                    + [f"{thr:.1f} {r['unit']}" if thr else "-", f"{100 * frac:.0f}%" if frac else "-"])
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *rows)]
    fmt = lambda row: "  ".join(str(v).ljust(w) if i < 2 else str(v).rjust(w)  # noqa: E731
                                for i, (v, w) in enumerate(zip(row, widths)))
    lines.append("Kernels: median time of the textbook NumPy code, and speed-up over it (higher is faster)")
    lines += [fmt(cols), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    e = res["end_to_end"]["epoch"]
    lines += ["", f"MNIST epoch ({e['samples_per_epoch']} samples{', SUBSET' if e['subset'] else ''}, "
                  f"{e['architecture']}, {e['optimizer']}, batch {e['batch_size']}; median of {e['repetitions']}):"]
    for f in e["frameworks"]:
        acc = f"test acc {100 * f['test_accuracy_after']:.2f}% after {f['epochs_trained']} epochs" \
            if f["test_accuracy_after"] is not None else ""
        rel = f"{f['relative_to_fastnn']:.2f}x fastnn's time" if f["relative_to_fastnn"] else ""
        lines.append(f"  {f['name']:16s} {f['seconds']:8.3f} s   {rel:24s} {acc}")
    for name, err in e.get("errors", {}).items():
        lines.append(f"  {name:16s} ERROR {err}")
    t = res["end_to_end"].get("time_to_98")
    if t:
        lines += ["", f"Time to {100 * t['target_accuracy']:.0f}% test accuracy ({t['recipe']}):"]
        for f in t["frameworks"]:
            lines.append(f"  {f['name']:16s} " + (f"{f['seconds']:.2f} s of training, {f['epochs']} epochs, "
                                                  f"{100 * f['accuracy']:.2f}%" if f["reached"] else
                                                  f"not reached ({100 * f['accuracy']:.2f}% after {f['epochs']} epochs)"))
    else:
        lines += ["", "Time to 98%: " + res["skipped"].get("time_to_98", f"not measured in {res['mode']} mode")]
    lines += ["", "Targets:"]
    trows = [[t["name"], "vs " + t["vs"], *_fmt_target(t)] for t in res["targets"]]
    tw = [max(len(x) for x in col) for col in zip(*trows)]
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(r, tw)) for r in trows]
    if res.get("busy_machine"):
        lines += ["", f"WARNING: other processes used {100 * res['machine']['other_processes_cpu_share']:.0f}% "
                      f"of the {res['machine']['usable_cpus']} CPUs during the run (load average "
                      f"{res['machine']['load_average_at_start']} at its start): timings are unreliable."]
    if res["peak"].get("warning"):
        lines += ["", "WARNING: " + res["peak"]["warning"]]
    lines += ["", "Rounds: " + _rounds_note(res) + "."]
    if res["mode"] != "full":
        lines += ["", f"NOTE: {res['mode']} mode -- fewer repetitions"
                      + (", a subset epoch" if e["subset"] else "") + "; numbers are indicative only."]
    return "\n".join(lines)


def format_markdown(res, image_dir=""):
    head = res["headline"]
    e = res["end_to_end"]["epoch"]
    out = [f"Measured on **{res['date']}** ({res['mode']} run of `fastnn bench`) on: {_machine_line(res)}.",
           "",
           f"Method: every candidate is warmed up first; then all candidates of a case run interleaved, "
           f"one round after another ({_rounds_note(res)}); times are medians over the kept rounds and "
           f"ratios are medians of the per-round ratios: speed-ups over the textbook NumPy code (higher is "
           f"faster). Baseline: {_peak_line(res)}. float32 throughout.{_others_note(res)}", ""]
    if res.get("busy_machine"):
        out += [f"> **Busy machine**: other processes used "
                f"{100 * res['machine']['other_processes_cpu_share']:.0f}% of the "
                f"{res['machine']['usable_cpus']} CPUs during the run — timings are unreliable.", ""]
    if res["mode"] != "full":
        out += [f"> **{res['mode']} mode**: fewer repetitions"
                + (f", epoch on a {e['samples_per_epoch']}-sample subset" if e["subset"] else "")
                + " — indicative numbers only.", ""]
    out += ["**Targets**", "", "| target | vs | measured | goal | |", "|---|---|---:|---:|---|"]
    for t in res["targets"]:
        measured, goal, mark = _fmt_target(t, markdown=True)
        out.append(f"| {t['name']} | {t['vs']} | {measured} | {goal} | {mark} |")
    out += ["", "**Kernels** — time of the textbook NumPy code; speed-up of each backend over it; "
                f"throughput of the {head} backend and its share of the measured peak (FMA peak for GFLOP/s, "
                "copy bandwidth for GB/s: small shapes run from cache and can exceed it)", "",
            "| kernel | shape | textbook NumPy | " + " | ".join(COLUMN_TITLES[c] for c in COLUMNS)
            + f" | {head} throughput | of peak |",
            "|---|---|---:|" + "---:|" * len(COLUMNS) + "---:|---:|"]
    for r in res["kernels"]:
        if "error" in r:
            out.append(f"| {r['kernel']} | {r['shape']} | error: {r['error']} |" + " |" * (len(COLUMNS) + 2))
            continue
        thr = r["throughput"].get(head)
        frac = r["fraction_of_peak"].get(head)
        cells = [f"**{_fmt_ratio(r['speedup'].get(c))}**" if c == head and r["speedup"].get(c)
                 else _fmt_ratio(r["speedup"].get(c)) for c in COLUMNS]
        thr_cell = f"{thr:.1f} {r['unit']}" if thr else "–"
        frac_cell = f"{100 * frac:.0f}%" if frac else "–"
        shape = re.sub(r"(?<=\d)x(?=\d)", "×", r["shape"])  # 128x784, not "MNIST pixels"
        out.append(f"| {r['kernel']} | {shape} | {_fmt_time(r['seconds'].get('textbook'))} | "
                   + " | ".join(cells) + f" | {thr_cell} | {frac_cell} |")
    out += ["", f"**MNIST epoch** — {e['architecture']}, {e['optimizer']}, batch {e['batch_size']}, "
                f"{e['samples_per_epoch']} samples, same initial weights and batches "
                f"(scikit-learn: same architecture, optimizer and batch size, its own shuffling)", "",
            "| framework | seconds per epoch | relative to fastnn | test accuracy after |",
            "|---|---:|---:|---:|"]
    for f in e["frameworks"]:
        acc = f"{100 * f['test_accuracy_after']:.2f}% ({f['epochs_trained']} ep.)" \
            if f["test_accuracy_after"] is not None else "–"
        rel = f"{f['relative_to_fastnn']:.2f}×" if f["relative_to_fastnn"] else "–"
        out.append(f"| {f['name']} | {f['seconds']:.3f} | {rel} | {acc} |")
    t = res["end_to_end"].get("time_to_98")
    if t and t["frameworks"]:
        out += ["", f"**Time to {100 * t['target_accuracy']:.0f}% test accuracy** — {t['recipe']}; "
                    f"median of {t['repetitions']}", "",
                "| framework | training seconds | epochs | test accuracy |", "|---|---:|---:|---:|"]
        for f in t["frameworks"]:
            secs = f"{f['seconds']:.2f}" if f["reached"] else "not reached"
            out.append(f"| {f['name']} | {secs} | {f['epochs']} | {100 * f['accuracy']:.2f}% |")
    if image_dir is not None:
        prefix = (image_dir.rstrip("/") + "/") if image_dir else ""
        out += ["", f"![Kernel speed-ups over textbook NumPy]({prefix}kernels.png)",
                "", f"![MNIST epoch time per framework]({prefix}epoch.png)"]
    return "\n".join(out) + "\n"


# ====================================================================== charts

def plot_kernels(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in res["kernels"] if "speedup" in r]
    cols = [c for c in COLUMNS if any(c in r["speedup"] for r in rows)]
    colors = {"numpy": "#9e9e9e", "numba": "#f2a93b", "cpp": "#2b7bba", "torch": "#d9534f"}
    targets = {(k, s): g for k, s, g, _ in KERNEL_TARGETS}
    height = 0.8 / max(len(cols), 1)
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.5 * len(rows)))
    ys = np.arange(len(rows))[::-1]
    for j, c in enumerate(cols):
        vals = [r["speedup"].get(c, np.nan) for r in rows]
        offs = ys + 0.4 - height * (j + 0.5)
        ax.barh(offs, vals, height=height, color=colors.get(c), label=COLUMN_TITLES[c])
        if c == res["headline"]:
            for y, v in zip(offs, vals):
                if np.isfinite(v):
                    ax.text(v * 1.05, y, f"{v:.1f}x" if v >= 10 else f"{v:.2f}x", va="center", fontsize=7,
                            zorder=5, bbox=dict(boxstyle="square,pad=0.1", facecolor="white", edgecolor="none",
                                                alpha=1.0))
    first = True
    for y, r in zip(ys, rows):
        goal = targets.get((r["kernel"], r["shape"]))
        if goal:
            ax.plot([goal, goal], [y - 0.45, y + 0.45], color="black", lw=2, zorder=3,
                    label="target" if first else None)
            first = False
    ax.axvline(1.0, color="black", lw=0.8, ls="--", label="textbook NumPy (= 1x)")
    ax.set_xscale("log")
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r['kernel']}  {r['shape']}" for r in rows], fontsize=8)
    for k in range(1, len(rows)):  # separate the kernels
        if rows[k]["kernel"] != rows[k - 1]["kernel"]:
            ax.axhline(ys[k] + 0.5, color="#cccccc", lw=0.6)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("speed-up over the textbook NumPy code (x, log scale; higher is faster)")
    ax.set_ylabel("kernel and shape (float32)")
    fig.suptitle(f"fastnn kernels: speed-up over textbook NumPy (float32) — {res['machine']['cpu']}, "
                 f"{res['threads']} threads, {res['date']} ({res['mode']} run)", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.25)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=6, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_epochs(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = res["end_to_end"]["epoch"]
    t98 = res["end_to_end"].get("time_to_98") or {}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    fws = e["frameworks"]
    names = [f["name"] for f in fws][::-1]
    secs = [f["seconds"] for f in fws][::-1]
    colors = ["#2b7bba" if n.startswith("fastnn") else "#9e9e9e" for n in names]
    ax.barh(names, secs, color=colors)
    for i, f in enumerate(fws[::-1]):
        rel = f" ({f['relative_to_fastnn']:.1f}x)" if f["relative_to_fastnn"] and f["name"] != e["headline"] else ""
        ax.text(f["seconds"], i, f" {f['seconds']:.2f} s{rel}", va="center", fontsize=8)
    if secs:
        ax.set_xlim(0, max(secs) * 1.35)
    ax.set_xlabel(f"seconds per epoch (lower is better); (n x) = time relative to {e['headline']}")
    ax.set_title(f"One MNIST epoch: {e['architecture']}, Adam, batch {e['batch_size']}\n"
                 f"{e['samples_per_epoch']} samples{' (subset)' if e['subset'] else ''}, "
                 f"median of {e['repetitions']}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    tf = t98.get("frameworks", [])
    if tf:
        names2 = [f["name"] for f in tf][::-1]
        vals = [f["seconds"] if f["reached"] else 0 for f in tf][::-1]
        ax2.barh(names2, vals, height=0.5 if len(names2) > 1 else 0.35,
                 color=["#2b7bba" if n.startswith("fastnn") else "#9e9e9e" for n in names2])
        for i, f in enumerate(tf[::-1]):
            txt = (f" {f['seconds']:.2f} s, {f['epochs']} ep., {100 * f['accuracy']:.2f}%" if f["reached"]
                   else f" not reached ({100 * f['accuracy']:.2f}%)")
            ax2.text(vals[i], i, txt, va="center", fontsize=8)
        ax2.axvline(T98_TARGET_SECONDS, color="black", ls="--", lw=1, label=f"target {T98_TARGET_SECONDS:g} s")
        ax2.set_xlim(0, max(vals + [T98_TARGET_SECONDS]) * 1.8)
        ax2.legend(loc="lower right", fontsize=8)
        from .recipe import DEFAULTS
        ax2.set_title(f"Training time to {100 * t98['target_accuracy']:.0f}% test accuracy\n"
                      f"(fastnn train defaults: OneCycle max lr {DEFAULTS['lr']:g})", fontsize=10)
    else:
        ax2.text(0.5, 0.5, "time to 98% not measured\nin this mode", ha="center", va="center",
                 transform=ax2.transAxes)
        ax2.set_title("Training time to 98% test accuracy", fontsize=10)
        ax2.set_yticks([])
    ax2.set_xlabel("training seconds, evaluation excluded (lower is better)")
    ax2.grid(axis="x", alpha=0.3)
    fig.suptitle(f"fastnn vs other frameworks — {res['machine']['cpu']}, {res['threads']} threads, "
                 f"{res['date']} ({res['mode']})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# ====================================================================== README

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def update_readme(readme, markdown):
    """Put `markdown` into the README's Performance section, between the bench markers
    (adding the markers, or the section, when missing)."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    block = f"{START}\n{markdown.rstrip()}\n{END}"
    if START in text and END in text and text.index(START) < text.index(END):
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        lines = text.split("\n")
        heading = next((i for i, line in enumerate(lines) if line.strip().lower() == "## performance"), None)
        if heading is None:
            text = text.rstrip("\n") + f"\n\n## Performance\n\n{block}\n"
        else:
            end = next((i for i in range(heading + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
            tail = "\n".join(lines[end:])
            text = "\n".join(lines[:heading + 1]) + f"\n\n{block}\n" + ("\n" + tail if tail else "")
    tmp = readme + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, readme)


# ======================================================================== main

def main(quick=False, out="bench-out", *, tiny=False, update_readme_path=None, verbose=True):
    """Run the suite and write results.json, results.md, kernels.png and
    epoch.png into `out`; returns 0, or 1 when a fastnn kernel or training run failed."""
    import fastnn
    mode = "tiny" if tiny else ("quick" if quick else "full")
    settings = dict(MODES[mode])
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()
    load_at_start, cpu_at_start = _loadavg(), _cpu_times()
    previous = backends.active().NAME
    headline = previous
    global _QUIET
    quiet_before, _QUIET = _QUIET, not verbose
    try:
        backend_names = []
        skipped = {}
        for name in backends.NAMES[::-1]:  # numpy, numba, cpp
            try:
                backends.load(name)
                backend_names.append(name)
            except ImportError as exc:
                skipped[name] = f"cannot load: {exc}"
        _activate(headline)
        threads = fastnn.info()["threads"]
        if "cpp" in backend_names:
            threads = backends.load("cpp")._core.num_threads()
        torch, sklearn_ok = None, False
        if settings["others"]:
            torch = _torch_module()
            if torch is not None:
                torch.set_num_threads(threads)
            else:
                skipped["torch"] = "not installed"
            try:
                import sklearn.neural_network  # noqa: F401
                sklearn_ok = True
            except Exception:
                skipped["scikit-learn"] = "not installed"
        else:
            skipped["torch"] = skipped["scikit-learn"] = f"not run in {mode} mode"

        _log(f"fastnn bench: {mode} mode, writing into {out}")
        machine = machine_info()
        _log(f"  {machine['cpu']}; {machine['fastnn']}; load average {load_at_start}")
        peaks = [measure_fma_peak(threads, settings["peak_seconds"], settings["peak_reps"])]
        copies = [measure_copy_bandwidth(settings["copy_mib"], reps=max(3, settings["peak_reps"]))]
        _log(f"  FMA peak {peaks[0].get('gflops') or 0:.0f} GFLOP/s ({threads} threads), "
             f"copy bandwidth {copies[0]['gbs']:.1f} GB/s")

        phases = {"setup_and_peaks": time.perf_counter() - started}
        _log("kernels:")
        t_phase = time.perf_counter()
        kernels, k_failed = run_kernels(mode, settings, torch, backend_names, machine["usable_cpus"])
        phases["kernels"] = time.perf_counter() - t_phase

        _log("end to end:")
        t_phase = time.perf_counter()
        data = _load_data(settings)
        epoch, e_failed = run_epochs(settings, data, torch, sklearn_ok, backend_names, headline,
                                     machine["usable_cpus"])
        epoch["data"] = data[2]
        phases["epochs"] = time.perf_counter() - t_phase
        t98, t_failed = None, False
        head_epoch = next((f["seconds"] for f in epoch["frameworks"] if f["name"] == epoch["headline"]), None)
        t98_estimate = (head_epoch * data[0][0].shape[0] / epoch["samples_per_epoch"] * 4 * settings["t98_reps"]
                        if head_epoch else None)
        if settings["t98_budget"] and (t98_estimate is None or t98_estimate > settings["t98_budget"]):
            skipped["time_to_98"] = (f"skipped: the {mode} run's budget is {settings['t98_budget']} s and "
                                     f"4 full epochs would take about {t98_estimate or float('nan'):.0f} s")
            _log("  time to 98%: " + skipped["time_to_98"])
        elif settings["t98_reps"] and not data[2].startswith("synthetic"):
            t_phase = time.perf_counter()
            t98, t_failed = run_time_to_accuracy(settings, data, torch, headline, machine["usable_cpus"])
            phases["time_to_98"] = time.perf_counter() - t_phase
        _activate(headline)

        # The peaks again, at the end: on a shared machine either measurement may be
        # depressed by other work, and a peak is the best the hardware did.
        peaks.append(measure_fma_peak(threads, settings["peak_seconds"], settings["peak_reps"]))
        copies.append(measure_copy_bandwidth(settings["copy_mib"], reps=max(3, settings["peak_reps"])))
        peak = dict(max(peaks, key=lambda p: p.get("gflops") or 0))
        peak["gflops_all_threads"] = peak.get("gflops")
        peak["gflops_1thread"] = max((p.get("gflops_1thread") or 0) for p in peaks) or None
        peak["runs"] = [p.get("gflops") for p in peaks]
        if peak["gflops_1thread"] and peak["gflops_1thread"] * threads > 1.05 * (peak["gflops"] or 0):
            # Other work on the machine kept the threads from running together: the
            # per-core peak times the thread count is then the better estimate.
            peak["gflops"] = peak["gflops_1thread"] * threads
            peak["estimate"] = f"1-thread peak x {threads} threads (the all-thread run was lower)"
        else:
            peak["estimate"] = f"measured on {threads} threads at once"
        copy = dict(max(copies, key=lambda c: c["gbs"]))
        copy["runs"] = [c["gbs"] for c in copies]
        add_fractions_of_peak(kernels, peak, copy)
        gemm = [v for r in kernels if r.get("unit") == "GFLOP/s" for v in r.get("throughput", {}).values()]
        if peak.get("gflops") and gemm:
            peak["fastest_gemm_gflops"] = max(gemm)
            if max(gemm) > peak["gflops"]:
                peak["warning"] = "a GEMM ran faster than the measured peak: the peak is under-measured"
        machine["load_average_at_end"] = _loadavg()
        machine["load_average_at_start"] = load_at_start
        others = other_load(cpu_at_start, _cpu_times(), time.perf_counter() - started, machine["usable_cpus"])
        machine["other_processes_cpu_share"] = others
        busy = others is not None and others > 0.1

        res = {
            "date": datetime.date.today().isoformat(),
            "timestamp": datetime.datetime.now().isoformat(timespec="seconds"),
            "mode": mode, "headline": headline, "threads": threads, "dtype": "float32",
            "settings": settings, "machine": machine, "peak": peak, "copy_bandwidth": copy,
            "method": ("warm-up, then rounds that run every candidate of a case once, in a rotating order; "
                       "each sample is the mean of enough calls to last min_time; each round is charged with "
                       "the CPU share other processes used meanwhile, extra rounds run (up to max_reps_factor "
                       "x reps) while fewer than reps rounds were quiet, and the reps quietest rounds are "
                       "kept; times are medians over the kept rounds; speed-up = median over the kept rounds "
                       "of textbook time / candidate time. Kernels run through fastnn.functional (adam_step "
                       "through the backend's fused kernel). GFLOP/s count 2*M*N*K per GEMM; GB/s count the "
                       "bytes each kernel must read and write once."),
            "skipped": skipped,
            "busy_machine": bool(busy),
            "kernels": kernels,
            "end_to_end": {"epoch": epoch, "time_to_98": t98},
        }
        res["targets"] = evaluate_targets(kernels, epoch, t98, headline)
        res["phase_seconds"] = phases
        res["seconds_total"] = time.perf_counter() - started  # before writing the outputs

        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(res, f, indent=1)
        with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
            f.write(format_markdown(res))
        plot_kernels(res, os.path.join(out, "kernels.png"))
        plot_epochs(res, os.path.join(out, "epoch.png"))
        if update_readme_path:
            readme_dir = os.path.dirname(os.path.abspath(update_readme_path))
            rel = os.path.relpath(os.path.abspath(out), readme_dir)
            update_readme(update_readme_path, format_markdown(res, None if rel.startswith("..") else rel))
        _log("")
        _log(format_terminal(res))
        _log(f"\nwrote {out}/results.json, results.md, kernels.png, epoch.png "
             f"in {res['seconds_total']:.0f} s")
        failed = k_failed or e_failed or t_failed
        if failed:
            _log("some fastnn benchmarks FAILED (see errors above / in results.json)")
        return 1 if failed else 0
    finally:
        _QUIET = quiet_before
        _activate(previous)


def cli(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastnn.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run (under 2 minutes)")
    p.add_argument("--out", default="bench-out", help="output folder (default: bench-out)")
    p.add_argument("--update-readme", metavar="README", nargs="?", const="README.md", default=None,
                   help="replace the Performance section of README (default README.md) with the results")
    args = p.parse_args(argv)
    return main(quick=args.quick, out=args.out, update_readme_path=args.update_readme)


if __name__ == "__main__":
    sys.exit(cli())
