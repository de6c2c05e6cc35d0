"""bf16 benchmark: fastnn's float32 matmuls in "medium" precision (inputs
rounded to bfloat16, VDPBF16PS) against NumPy's float32 and PyTorch's bf16
torch.mm, and an MNIST epoch in "medium" against "highest".

Every framework runs alone in its own process (none keeps worker threads
spinning next to another's), one process per framework per round, the order
rotating from round to round; each ratio is the median of the per-round ratios.

    python benchmarks/bench_bf16.py [--rounds 5] [--peak 455] [--no-epoch] [--json FILE]

--peak is the bf16 dot-product peak in GFLOP/s that the shares are of
(~455 on the 2-core Zen 4 development machine, measured with independent
VDPBF16PS chains).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

# name, M, K, N: matmul (M, K) @ (K, N); linear_backward of x (M, K), W (K, N).
MATMULS = [("matmul 128x784x256", 128, 784, 256), ("matmul 256x784x512", 256, 784, 512),
           ("matmul 1024^3", 1024, 1024, 1024)]
BACKWARDS = [("linear_backward 128x784->256", 128, 784, 256), ("linear_backward 1024x784->1024", 1024, 784, 1024)]
KERNEL_FRAMEWORKS = ["fastnn medium", "fastnn highest", "numpy float32", "torch bf16"]
EPOCH_FRAMEWORKS = ["fastnn medium", "fastnn highest"]
# (case prefix, framework, denominator framework, target ratio)
TARGETS = [("matmul", "fastnn medium", "numpy float32", 2.0), ("matmul", "fastnn medium", "torch bf16", 1.0),
           ("linear_backward", "fastnn medium", "numpy float32", 1.8), ("mnist epoch", "fastnn medium",
                                                                      "fastnn highest", 1.3)]


def _median_call(fn, seconds=0.25):
    """Median seconds per call over ~`seconds` of calls, after warm-up."""
    fn()
    fn()
    t = time.perf_counter()
    fn()
    calls = max(5, int(seconds / max(time.perf_counter() - t, 1e-7)))
    ts = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _kernel_functions(framework):
    """{case name: (flops, function)} for one framework."""
    rng = np.random.default_rng(0)
    out = {}
    if framework.startswith("fastnn"):
        from fastnn import _core as core
        core.set_matmul_precision(framework.split()[1])
    elif framework.startswith("torch"):
        import torch
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    for name, M, K, N in MATMULS:
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((K, N)).astype(np.float32)
        c = np.empty((M, N), np.float32)
        if framework.startswith("fastnn"):
            fn = lambda a=a, b=b, c=c: core.matmul(a, b, False, False, c)  # noqa: E731
        elif framework.startswith("numpy"):
            fn = lambda a=a, b=b, c=c: np.matmul(a, b, out=c)  # noqa: E731
        else:
            ta, tb = torch.from_numpy(a).bfloat16(), torch.from_numpy(b).bfloat16()
            tc = torch.empty((M, N), dtype=torch.bfloat16)
            fn = lambda ta=ta, tb=tb, tc=tc: torch.mm(ta, tb, out=tc)  # noqa: E731
        out[name] = (2.0 * M * K * N, fn)
    for name, M, K, N in BACKWARDS:
        x = rng.standard_normal((M, K)).astype(np.float32)
        W = rng.standard_normal((K, N)).astype(np.float32)
        dy = rng.standard_normal((M, N)).astype(np.float32)
        dx, dW, db = np.empty_like(x), np.empty_like(W), np.empty(N, np.float32)
        if framework.startswith("fastnn"):
            fn = lambda x=x, W=W, dy=dy, dx=dx, dW=dW, db=db: core.linear_backward(  # noqa: E731
                x, W, dy, None, "none", True, dx, dW, db)
        elif framework.startswith("numpy"):
            def fn(x=x, W=W, dy=dy, dx=dx, dW=dW, db=db):
                np.matmul(dy, W.T, out=dx)
                np.matmul(x.T, dy, out=dW)
                np.sum(dy, axis=0, out=db)
        else:
            tx, tW, tdy = (torch.from_numpy(v).bfloat16() for v in (x, W, dy))

            def fn(tx=tx, tW=tW, tdy=tdy):
                torch.mm(tdy, tW.t())
                torch.mm(tx.t(), tdy)
                tdy.sum(0)
        out[name] = (4.0 * M * K * N, fn)
    return out


def _epoch_seconds(framework, epochs):
    """Seconds of each of `epochs` MNIST epochs (784-256-128-10, Adam, batch 128) after a warm-up."""
    import fastnn
    from fastnn.bench import FastnnRunner
    from fastnn.datasets import load_mnist
    fastnn.set_float32_matmul_precision(framework.split()[1])
    (x, y), _ = load_mnist(normalize=True, flatten=True)
    runner = FastnnRunner("cpp", x, y, seed=0)
    runner.warmup(4096)
    return [runner.epoch() for _ in range(epochs)]


def worker(framework, what, epochs):
    if what == "kernels":
        result = {name: {"flops": flops, "seconds": _median_call(fn)}
                  for name, (flops, fn) in _kernel_functions(framework).items()}
    else:
        result = {"mnist epoch": {"flops": None, "seconds": float(np.median(_epoch_seconds(framework, epochs)))}}
    print("RESULT " + json.dumps(result), flush=True)


def _run_worker(framework, what, epochs):
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", framework, "--what", what,
                           "--epochs", str(epochs)], capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"bench_bf16: {framework} {what} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(lines[-1][7:])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="rounds; each runs every framework once")
    p.add_argument("--epochs", type=int, default=2, help="timed MNIST epochs per epoch process")
    p.add_argument("--peak", type=float, default=455.0, help="bf16 peak, GFLOP/s (for the shares)")
    p.add_argument("--no-epoch", action="store_true", help="kernels only")
    p.add_argument("--json", help="write the per-round results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--what", default="kernels", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.what, args.epochs)
        return

    import fastnn
    info = fastnn.info()
    print(f"fastnn isa={info['isa']} bf16={info['bf16']} threads={info['threads']}; numpy {np.__version__}; "
          f"{args.rounds} rounds, one process per framework per round; shares of a {args.peak:.0f} GFLOP/s bf16 peak")
    if not info["bf16"]:
        print("note: no AVX512_BF16 here (or FASTNN_ISA caps it): 'medium' runs float32 code")
    jobs = [(fw, "kernels") for fw in KERNEL_FRAMEWORKS]
    if not args.no_epoch:
        jobs += [(fw, "epoch") for fw in EPOCH_FRAMEWORKS]
    rounds = []
    for r in range(args.rounds):
        shift = r % len(jobs)
        results = {}
        for fw, what in jobs[shift:] + jobs[:shift]:
            for case, v in _run_worker(fw, what, args.epochs).items():
                results.setdefault(case, {})[fw] = v
        rounds.append(results)
        print(f"  round {r + 1}/{args.rounds} done", flush=True)

    cases = [c for c in rounds[0]]
    print(f"\n{'case':32s} " + " ".join(f"{fw:>16s}" for fw in KERNEL_FRAMEWORKS) + "   (GFLOP/s; epoch: s)")
    for case in cases:
        cells = []
        for fw in KERNEL_FRAMEWORKS:
            if fw not in rounds[0][case]:
                cells.append(f"{'':>16s}")
                continue
            sec = float(np.median([rd[case][fw]["seconds"] for rd in rounds]))
            flops = rounds[0][case][fw]["flops"]
            if flops is None:
                cells.append(f"{sec:15.3f}s")
            elif fw == "fastnn medium":
                gf = flops / sec / 1e9
                cells.append(f"{gf:7.0f} ({100 * gf / args.peak:3.0f}%)".rjust(16))
            else:
                cells.append(f"{flops / sec / 1e9:16.0f}")
        print(f"{case:32s} " + " ".join(cells))

    print(f"\n{'target':58s} {'ratio':>6s} {'want':>6s}")
    verdicts = []
    for case in cases:
        for prefix, fw, other, want in TARGETS:
            if not case.startswith(prefix) or other not in rounds[0][case]:
                continue
            ratio = float(np.median([rd[case][other]["seconds"] / rd[case][fw]["seconds"] for rd in rounds]))
            ok = ratio >= want
            verdicts.append({"case": case, "framework": fw, "versus": other, "ratio": ratio, "target": want,
                             "met": ok})
            print(f"{case + ': ' + fw + ' vs ' + other:58s} {ratio:6.2f} {want:6.2f}  {'met' if ok else 'MISSED'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "peak_gflops": args.peak, "rounds": rounds, "targets": verdicts}, f, indent=1)


if __name__ == "__main__":
    main()
