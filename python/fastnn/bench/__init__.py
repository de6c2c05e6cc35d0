"""fastnn's benchmark suite: `fastnn bench [--quick] [--out DIR]`.

What it measures, fastnn beside the textbook NumPy code (`reference`), PyTorch
(1 thread and all cores), JAX (jax.jit per step, and the epoch as one jax.jit
with lax.scan) and scikit-learn, each when installed:
- kernels at an MNIST MLP's shapes and at large shapes; the matmuls also in
  float32 matmul precision "medium" (bfloat16 inputs) beside PyTorch's bf16 torch.mm;
- one MNIST epoch of a 784-256-128-10 ReLU MLP (Adam 1e-3, batch 128), same
  initial weights and batches for all; fastnn in "highest" and in "medium";
- the training seconds to 98% test accuracy with `fastnn train`'s recipe, in both precisions;
- a NumPy and a PyTorch op right after a fastnn kernel, against the op alone;
- fastnn.MLPClassifier's fit against scikit-learn's, on the same parameters.

How: each framework configuration runs in its own worker process (`harness`);
rounds interleave the workers one at a time, so a slow phase of the machine
hits every framework alike; times are medians over the quietest rounds, ratios
medians of per-round ratios. Outputs (into --out): results.json (the schema is
in benchmarks/README.md), results.md, kernels.png, epoch.png.

`main(quick, out)` returns 1 when a fastnn case failed, else 0. Nothing here
asserts anything about speed.
"""
import argparse
import datetime
import os
import sys
import time

from . import cases, harness, report

__all__ = ["main", "cli"]


def _baseline(bench, threads):
    s = bench.settings
    w = bench.workers.get("textbook")
    if w is None or not w.alive:
        return None
    try:
        return w.request("baseline", cases.TIMEOUTS["prepare"], threads=threads, peak_seconds=s["peak_seconds"],
                         peak_reps=s["peak_reps"], copy_mib=s["copy_mib"])
    except harness.WorkerError as exc:
        return {"peak": {"gflops": None, "error": str(exc)}, "bf16_peak": {"gflops": None, "error": str(exc)},
                "copy_bandwidth": {"gbs": None, "error": str(exc)}}


def _best_peak(peaks, threads):
    """The best of the runs at the start and the end: a peak is the best the hardware did."""
    peak = dict(max(peaks, key=lambda p: p.get("gflops") or 0)) if peaks else {"gflops": None}
    peak["runs"] = [p.get("gflops") for p in peaks]
    one = max((p.get("gflops_1thread") or 0) for p in peaks) if peaks else 0
    if one and one * threads > 1.05 * (peak.get("gflops") or 0):
        # Other work kept the threads from running together: the per-core peak times the threads is the estimate.
        peak.update(gflops=one * threads, estimate=f"1-thread peak x {threads} threads (the all-thread run was lower)")
    elif peak.get("gflops"):
        peak["estimate"] = f"measured on {threads} threads at once"
    return peak


def _best_baseline(runs, threads):
    """(FMA peak, bf16 dot-product peak, copy bandwidth), each the best of the runs."""
    runs = [r for r in runs if r]
    copies = [r["copy_bandwidth"] for r in runs]
    copy = dict(max(copies, key=lambda c: c.get("gbs") or 0)) if copies else {"gbs": None}
    copy["runs"] = [c.get("gbs") for c in copies]
    return (_best_peak([r["peak"] for r in runs], threads),
            _best_peak([r["bf16_peak"] for r in runs if "bf16_peak" in r], threads), copy)


def _headline_worker(live):
    preferred = os.environ.get("FASTNN_BACKEND", "cpp").strip().lower() or "cpp"
    for backend in (preferred, "cpp", "numba", "numpy"):
        if f"fastnn-{backend}" in live:
            return f"fastnn-{backend}"
    return None


def main(quick=False, out="bench-out", *, tiny=False, update_readme_path=None, verbose=True):
    """Run the suite and write results.json, results.md, kernels.png and epoch.png into `out`."""
    from ..recipe import DEFAULTS
    mode = "tiny" if tiny else ("quick" if quick else "full")
    settings = dict(cases.MODES[mode])
    log = print if verbose else (lambda *a, **k: None)
    os.makedirs(out, exist_ok=True)
    started, load_at_start = time.perf_counter(), harness.loadavg()
    cpus = harness.usable_cpus()
    env, unset = harness.worker_environment()
    names = cases.worker_names(cpus, settings["peers"])
    log(f"fastnn bench: {mode} mode, writing into {out}; starting {len(names)} workers")
    workers = {n: harness.Worker.start(n, env) for n in names}  # they import their libraries side by side
    info, skipped, errors = {}, {}, {}
    try:
        for name, w in workers.items():
            try:
                hello = w.request("hello", cases.TIMEOUTS["hello"])
            except harness.WorkerError as exc:
                skipped[name] = f"failed to start: {exc}"
                continue
            if hello["available"]:
                info[name] = hello
            else:
                skipped[name] = hello["reason"]
        if not settings["peers"]:
            skipped["peers"] = f"PyTorch, JAX and scikit-learn are not run in {mode} mode"
        live = {n: w for n, w in workers.items() if n in info}
        headline = _headline_worker(live)
        if headline is None:
            raise RuntimeError("no fastnn backend could start: " + "; ".join(f"{n}: {r}" for n, r in skipped.items()))
        threads = info[headline]["fastnn"]["threads"]
        bench = cases.Bench(live, info, settings, headline, cpus, log)
        overall = harness.CpuMeter(list(live.values()), cpus)
        log(f"  workers: {', '.join(live)}" + (f"; skipped: {', '.join(skipped)}" if skipped else ""))

        phases = {}
        baselines = [_baseline(bench, threads)]
        log("kernels:")
        t = time.perf_counter()
        kernels, errors["kernels"] = cases.run_kernels(bench)
        phases["kernels"] = time.perf_counter() - t
        log("MNIST epoch:")
        t = time.perf_counter()
        epoch, epoch_setup, errors["mnist_epoch"] = cases.run_epoch(bench)
        phases["mnist_epoch"] = time.perf_counter() - t
        t98, t98_setup = [], None
        recipe = dict(DEFAULTS, hidden=[int(h) for h in str(DEFAULTS["hidden"]).split(",")])
        if settings["t98_reps"] and not settings["synthetic"]:
            log("time to 98%:")
            t = time.perf_counter()
            t98, t98_setup, errors["time_to_98"] = cases.run_time_to_98(bench, recipe)
            phases["time_to_98"] = time.perf_counter() - t
            if not settings["t98_peers"]:
                skipped["time_to_98 peers"] = f"only fastnn runs the time to 98% in {mode} mode"
        else:
            skipped["time_to_98"] = f"not run in {mode} mode"
        log("neighbour:")
        neighbour, errors["neighbour"] = cases.run_neighbour(bench)
        log("MLPClassifier fit:")
        fit, fit_skipped, errors["sklearn_fit"] = cases.run_sklearn_fit(bench)
        if fit_skipped:
            skipped["sklearn_fit"] = fit_skipped
        elif not fit and "sklearn" not in live:
            skipped["sklearn_fit"] = skipped.get("sklearn", f"not run in {mode} mode")
        baselines.append(_baseline(bench, threads))
        peak, bf16_peak, copy = _best_baseline(baselines, threads)

        machine = harness.machine_info()
        machine["versions"]["fastnn"] = info[headline]["versions"]["fastnn"]
        machine.update(fastnn=info[headline]["fastnn"], numpy_blas=info.get("textbook", {}).get("numpy_blas"),
                       load_average_at_start=load_at_start, load_average_at_end=harness.loadavg(),
                       other_processes_cpu_share=overall.share(),
                       environment={"unset_in_workers": unset,
                                    "note": "unset so that every library runs its best kernels" if unset else
                                    "nothing unset: no OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the environment"})
        res = {
            "date": datetime.date.today().isoformat(),
            "timestamp": datetime.datetime.now().isoformat(timespec="seconds"),
            "mode": mode, "headline": info[headline]["config"].split()[0], "headline_worker": headline,
            "threads": threads, "dtype": "float32", "settings": settings, "machine": machine,
            "peak": peak, "bf16_peak": bf16_peak, "copy_bandwidth": copy,
            "isolation": {"parent_imports": harness.measured_imports(),
                          "workers": {n: {"framework": i["framework"], "config": i["config"]}
                                      for n, i in info.items()}},
            "method": report.METHOD, "skipped": skipped,
            "errors": {k: v for k, v in errors.items() if v},
            "kernels": kernels, "mnist_epoch": epoch, "mnist_epoch_setup": epoch_setup,
            "time_to_98": t98, "time_to_98_setup": t98_setup,
            "neighbour": neighbour, "sklearn_fit": fit,
        }
        report.add_fractions_of_peak(res)
        res["targets"] = cases.evaluate_targets(res)
        res["phase_seconds"] = phases
        res["seconds_total"] = time.perf_counter() - started
        report.write(res, out, update_readme_path, env)
        log("")
        log(report.format_terminal(res))
        log(f"\nwrote {out}/results.json, results.md, kernels.png, epoch.png in {res['seconds_total']:.0f} s")
        failed = any(k.startswith("fastnn") or " fastnn-" in k for section in res["errors"].values() for k in section)
        failed = failed or any(r["framework"] == "fastnn" and r["agrees_with_textbook"] is False for r in kernels)
        if failed:
            log("some fastnn benchmarks FAILED (see the errors in results.json)")
        return 1 if failed else 0
    finally:
        for w in workers.values():
            w.close()


def cli(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastnn.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run (under 2 minutes)")
    p.add_argument("--out", default="bench-out", help="output folder (default: bench-out)")
    p.add_argument("--update-readme", metavar="README", nargs="?", const="README.md", default=None,
                   help="replace the bench block of README (default README.md) with the results' summary")
    args = p.parse_args(argv)
    return main(quick=args.quick, out=args.out, update_readme_path=args.update_readme)
