"""The bench's cases, as the parent schedules them: kernels, the MNIST epoch, time to 98%,
the neighbour case and scikit-learn's fit. Standard library only (the workers import
the constants too); each run_* function returns its section of results.json.
"""
from . import harness

SIZES = [784, 256, 128, 10]
BATCH = 128
EPOCH_RECIPE = {"hidden": SIZES[1:-1], "activation": "relu", "dropout": 0.0, "optimizer": "adam", "lr": 1e-3,
                "schedule": "none", "label_smoothing": 0.0, "batch_size": BATCH, "epochs": 1}

MODES = {
    # reps: interleaved rounds per kernel case; min_time: seconds per kernel sample; pause: the
    # longest wait for the previous worker's threads to stop; epoch_samples: None is all 60000.
    "full": dict(reps=11, max_reps_factor=2.0, min_time=0.05, pause=1.0, epoch_samples=None, epoch_reps=9,
                 t98_reps=3, t98_peers=True, fit_samples=None, fit_reps=3, neighbour_rounds=20,
                 neighbour_calls=50, peak_seconds=0.25, peak_reps=7, copy_mib=256, large_scale=1,
                 synthetic=False, peers=True),
    "quick": dict(reps=3, max_reps_factor=1.0, min_time=0.01, pause=0.3, epoch_samples=10000, epoch_reps=3,
                  t98_reps=1, t98_peers=False, fit_samples=10000, fit_reps=1, neighbour_rounds=6,
                  neighbour_calls=30, peak_seconds=0.1, peak_reps=3, copy_mib=128, large_scale=2,
                  synthetic=False, peers=True),
    # tiny: for the test suite -- small "large" shapes, synthetic data, no peers, no time to 98%.
    "tiny": dict(reps=1, max_reps_factor=1.0, min_time=0.001, pause=0.05, epoch_samples=512, epoch_reps=1,
                 t98_reps=0, t98_peers=False, fit_samples=None, fit_reps=0, neighbour_rounds=2,
                 neighbour_calls=5, peak_seconds=0.02, peak_reps=1, copy_mib=16, large_scale=8,
                 synthetic=True, peers=False),
}
TIMEOUTS = {"hello": 300, "prepare": 600, "sample": 120, "epoch": 900, "t98": 1800, "neighbour": 600}

# (kernel, shape, minimum speed-up of fastnn's default backend over the textbook NumPy code, baseline).
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
EPOCH_TARGETS = [("textbook NumPy", 4.0), ("PyTorch", 5.0)]
T98_TARGET_SECONDS = 1.0
NEIGHBOUR_TARGET = 1.2
FIT_TARGET = 5.0
COMPARISONS = {">=": lambda v, goal: v >= goal, "<": lambda v, goal: v < goal, "<=": lambda v, goal: v <= goal}
MNIST_INPUT = "MNIST pixels"  # a linear case whose input is a batch of MNIST images (81% zeros)

# bfloat16: fastnn's cpp backend in matmul precision "medium", against NumPy's float32 and PyTorch's bf16 torch.mm.
MEDIUM = "fastnn-cpp-medium"
BF16_KERNELS = ("matmul", "linear", "linear_backward")
# (kernel, shape, minimum speed-up of "medium" over NumPy float32)
BF16_KERNEL_TARGETS = [
    ("matmul", "128x784x256", 2.0), ("matmul", "256x784x512", 2.0), ("matmul", "1024x1024x1024", 2.0),
    ("linear_backward", "128x784->256", 1.8), ("linear_backward", "1024x784->1024", 1.8),
]
BF16_EPOCH_TARGET = 1.3  # "medium" over "highest"
BF16_T98_TARGET_SECONDS = 0.35


def worker_names(cpus, peers):
    """Every worker the bench starts, in the order of its tables."""
    names = ["textbook", "fastnn-numpy", "fastnn-numba", "fastnn-cpp", MEDIUM]
    if peers:
        names += ["torch-1"] + ([f"torch-{cpus}"] if cpus > 1 else []) + [f"torch-{cpus}-bf16", "jax-jit",
                                                                          "jax-scan", "sklearn"]
    return names + ["neighbour"]


def is_bf16(name):
    """A worker whose matmuls round their inputs to bfloat16: fastnn in "medium", PyTorch on bf16 tensors."""
    return name.endswith(("-medium", "-bf16"))


def kernel_shapes(settings):
    """[(kernel, group, shape)]: MLP-sized and large shapes; shapes are tuples or a label."""
    s = settings["large_scale"]
    rows, cube = 32768 // (s * s), 1024 // s
    images = [] if settings["synthetic"] else [("mlp", (128, 784, 256, MNIST_INPUT))]
    plan = {
        "relu": [("mlp", (128, 256)), ("large", (4096 // s, 1024))],
        "sigmoid": [("mlp", (128, 256)), ("large", (4096 // s, 1024))],
        "tanh": [("mlp", (128, 256)), ("large", (4096 // s, 1024))],
        "softmax": [("mlp", (128, 10)), ("large", (rows, 1000))],
        "log_softmax": [("mlp", (128, 10)), ("large", (rows, 1000))],
        "cross_entropy": [("mlp", (128, 10)), ("large", (rows, 1000))],
        "softmax_cross_entropy": [("mlp", (128, 10)), ("large", (rows, 1000))],
        "matmul": [("mlp", (128, 784, 256)), ("mlp", (256, 784, 512)), ("large", (cube, cube, cube))],
        "linear": [("mlp", (128, 784, 256)), ("mlp", (128, 256, 128)), ("large", (cube, 784, cube))] + images,
        "linear_backward": [("mlp", (128, 784, 256)), ("mlp", (128, 256, 128)),
                            ("large", (cube, 784, cube))] + images,
        "adam_step": [("mlp", "784-256-128-10"), ("large", (4096 // s, 1024 // s))],
    }
    return [(kernel, group, shape) for kernel, cases in plan.items() for group, shape in cases]


def shape_label(kernel, shape):
    if isinstance(shape, str):
        return shape
    if kernel in ("linear", "linear_backward"):
        return f"{shape[0]}x{shape[1]}->{shape[2]}" + (f" ({shape[3]})" if len(shape) > 3 else "")
    return "x".join(str(d) for d in shape)


class Bench:
    """The live workers and what the cases share: settings, the headline worker, logging."""

    def __init__(self, workers, info, settings, headline, cpus, log):
        self.workers, self.info, self.settings = workers, info, settings
        self.headline, self.cpus, self.log = headline, cpus, log

    def pick(self, names):
        return [self.workers[n] for n in names if n in self.workers and self.workers[n].alive]

    def label(self, name):
        return self.info[name]["framework"], self.info[name]["config"]

    def rounds(self, workers, make_request, reps, timeout, log=None):
        s = self.settings
        return harness.interleave(workers, make_request, reps, max(reps, int(reps * s["max_reps_factor"])),
                                  self.cpus, s["pause"], timeout, log)


def _mark_headline(rows, headline_name, key="seconds"):
    """Per framework, the configuration that counts: fastnn's default backend, each peer's fastest."""
    best = {}
    for row in rows:
        if row.get(key) is None:
            continue
        fw = row["framework"]
        if fw == "fastnn":
            if row["worker"] == headline_name:
                best[fw] = row
        elif fw not in best or row[key] < best[fw][key]:
            best[fw] = row
    for row in rows:
        row["headline"] = best.get(row["framework"]) is row


# ===================================================================== kernels

def run_kernels(bench):
    s = bench.settings
    names = [n for n in bench.workers if bench.info[n]["framework"] in ("textbook NumPy", "fastnn", "PyTorch")
             or n == "jax-jit"]
    rows, errors = [], {}
    for index, (kernel, group, shape) in enumerate(kernel_shapes(s)):
        label = shape_label(kernel, shape)
        case_names = [n for n in names if kernel in BF16_KERNELS or not is_bf16(n)]
        request = {"kernel": kernel, "shape": shape, "index": index, "min_time": s["min_time"],
                   "synthetic": s["synthetic"]}
        prepared, case_rows = {}, {}
        for w in bench.pick(case_names):
            try:
                prepared[w.name] = w.request("kernel_prepare", TIMEOUTS["prepare"], **request)
            except harness.WorkerError as exc:
                errors[f"{kernel} {label} {w.name}"] = str(exc)
        live = bench.pick(prepared)
        result = bench.rounds(live, lambda w, r: ("kernel_sample", {}), s["reps"], TIMEOUTS["sample"])
        for name, msg in result["errors"].items():
            errors[f"{kernel} {label} {name}"] = msg
        for w in live:
            if w.alive:
                try:
                    w.request("kernel_release", TIMEOUTS["sample"])
                except harness.WorkerError:
                    pass
        kept = result["rounds"]
        for name, prep in prepared.items():
            framework, config = bench.label(name)
            secs = harness.median(harness.samples(kept, name))
            row = {"kernel": kernel, "shape": label, "group": group, "framework": framework, "config": config,
                   "worker": name, "seconds": secs,
                   "ratio_vs_textbook": harness.paired_ratio(kept, "textbook", name),
                   "ratio_fastnn_faster": harness.paired_ratio(kept, name, bench.headline),
                   "ratio_medium_faster": harness.paired_ratio(kept, name, MEDIUM),
                   "precision": "bfloat16" if is_bf16(name) else "float32", "headline": False,
                   "unit": prep["unit"], "work": prep["work"],
                   "throughput": prep["work"] / secs / 1e9 if secs else None,
                   "agrees_with_textbook": prep["agrees"], "calls_per_sample": prep["calls_per_sample"],
                   "samples": harness.samples(kept, name), "others_share": result["shares_kept"]}
            if name in result["errors"]:
                row["error"] = result["errors"][name]
            case_rows[name] = row
        _mark_headline([r for r in case_rows.values() if r["precision"] == "float32"], bench.headline)
        rows += case_rows.values()
        head = case_rows.get(bench.headline, {})
        peers = "  ".join(f"{r['worker']} {r['ratio_vs_textbook']:.2f}x" for r in case_rows.values()
                          if r["worker"] != "textbook" and r["ratio_vs_textbook"])
        bench.log(f"  {kernel:22s} {label:28s} textbook {_fmt_seconds(case_rows.get('textbook', {}).get('seconds'))}"
                  f"  {peers}" + ("" if head.get("agrees_with_textbook") in (True, None) else "  MISMATCH"))
    return rows, errors


def _fmt_seconds(s):
    if s is None:
        return "-"
    return f"{s * 1e6:.1f} us" if s < 1e-3 else (f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s")


# ======================================================================= epoch

def run_epoch(bench):
    s = bench.settings
    order = [bench.headline] + [n for n in bench.workers if n not in (bench.headline, "neighbour")
                                and (n == MEDIUM or not is_bf16(n))]
    errors, prepared = {}, {}
    for w in bench.pick(order):
        try:
            prepared[w.name] = w.request("epoch_prepare", TIMEOUTS["epoch"], samples=s["epoch_samples"], seed=0,
                                         recipe=EPOCH_RECIPE, synthetic=s["synthetic"])
        except harness.WorkerError as exc:
            errors[w.name] = str(exc)

    def log(r, got):
        bench.log(f"  epoch round {r}: " + "  ".join(f"{n} {v['seconds']:.3f}s" for n, v in got.items()))
    result = bench.rounds(bench.pick(prepared), lambda w, r: ("epoch_run", {}), s["epoch_reps"], TIMEOUTS["epoch"],
                          log)
    errors.update(result["errors"])
    kept, rows = result["rounds"], []
    for name in prepared:
        if name in errors:
            continue
        try:
            acc = bench.workers[name].request("epoch_accuracy", TIMEOUTS["epoch"])
        except harness.WorkerError as exc:
            errors[name] = str(exc)
            continue
        framework, config = bench.label(name)
        rows.append({"framework": framework, "config": config, "worker": name,
                     "seconds": harness.median(harness.samples(kept, name)),
                     "ratio_fastnn_faster": harness.paired_ratio(kept, name, bench.headline),
                     "ratio_medium_faster": harness.paired_ratio(kept, name, MEDIUM),
                     "samples": harness.samples(kept, name), "test_accuracy_after": acc["test_accuracy"],
                     "epochs_trained": acc["epochs_trained"]})
    _mark_headline(rows, bench.headline)
    first = next(iter(prepared.values()), {})
    setup = {"samples_per_epoch": first.get("samples"), "data": first.get("data"),
             "architecture": "-".join(map(str, SIZES)) + " ReLU", "optimizer": "Adam lr 1e-3",
             "batch_size": BATCH, "repetitions": len(kept), "rounds_run": len(result["shares_all"]),
             "others_share_kept": result["shares_kept"], "others_share_all": result["shares_all"],
             "same_work": "same initial weights (fastnn's initialisation) and the same shuffled batches for all, "
                          "scikit-learn its own initial weights; each framework gathers its own batches"}
    return rows, setup, errors


# ================================================================ time to 98%

def run_time_to_98(bench, recipe, target=0.98):
    s = bench.settings
    names = [bench.headline, MEDIUM] + (["textbook", "jax-jit", "jax-scan"] + [n for n in bench.workers
                                                                               if n.startswith("torch-")
                                                                               and not is_bf16(n)]
                                        if s["t98_peers"] else [])
    workers = bench.pick(names)

    def log(r, got):
        for n, v in got.items():
            bench.log(f"  time to {100 * target:.0f}%: {n} run {r}: " + (
                f"{v['seconds']:.2f} s ({v['epochs']} epochs, {100 * v['test_accuracy']:.2f}%)" if v["reached"]
                else f"not reached ({100 * v['test_accuracy']:.2f}% after {v['epochs']} epochs)"))
    result = bench.rounds(workers, lambda w, r: ("time_to", {"target": target, "seed": r, "recipe": recipe,
                                                             "synthetic": s["synthetic"]}),
                          s["t98_reps"], TIMEOUTS["t98"], log)
    rows = []
    for w in workers:
        runs = [rd[w.name] for rd in result["rounds"] if w.name in rd]
        if not runs:
            continue
        framework, config = bench.label(w.name)
        reached = all(r["reached"] for r in runs)
        rows.append({"framework": framework, "config": config, "worker": w.name,
                     "seconds": harness.median([r["seconds"] for r in runs]) if reached else None,
                     "epochs": int(harness.median([r["epochs"] for r in runs])),
                     "test_accuracy": harness.median([r["test_accuracy"] for r in runs]),
                     "reached": reached, "runs": runs})
    _mark_headline(rows, bench.headline)
    setup = {"target_accuracy": target, "recipe": recipe, "repetitions": len(result["rounds"]),
             "others_share_kept": result["shares_kept"],
             "method": "the same recipe (fastnn.recipe.DEFAULTS) for every framework, from the same initial "
                       "weights; training seconds only, test accuracy after each epoch (not timed)"}
    return rows, setup, result["errors"]


# ================================================================== neighbour

def run_neighbour(bench):
    s = bench.settings
    w = bench.workers.get("neighbour")
    if w is None or not w.alive:
        return [], {"neighbour": "the neighbour worker did not start"}
    try:
        rows = w.request("neighbour", TIMEOUTS["neighbour"], rounds=s["neighbour_rounds"],
                         calls=s["neighbour_calls"])["rows"]
    except harness.WorkerError as exc:
        return [], {"neighbour": str(exc)}
    for row in rows:
        row["target"] = NEIGHBOUR_TARGET
        row["met"] = row["slowdown"] <= NEIGHBOUR_TARGET
        bench.log(f"  {row['framework']} {row['op']}: {_fmt_seconds(row['alone_seconds'])} alone, "
                  f"{_fmt_seconds(row['after_fastnn_seconds'])} right after fastnn: {row['slowdown']:.2f}x")
    return rows, {}


# ============================================================ scikit-learn fit

def run_sklearn_fit(bench, hidden=(100,), max_iter=5):
    """fastnn.MLPClassifier vs sklearn's, same parameters, fit on MNIST; or why it is skipped."""
    s = bench.settings
    sk, ours = bench.workers.get("sklearn"), bench.workers.get(bench.headline)
    if sk is None or ours is None or not s["fit_reps"]:
        return [], None, {}
    try:
        reference = sk.request("fit_params", TIMEOUTS["hello"])["params"]
        skipped = ours.request("fit_check", TIMEOUTS["hello"], reference=reference)["skipped"]
    except harness.WorkerError as exc:
        return [], None, {"sklearn_fit": str(exc)}
    if skipped:
        bench.log(f"  skipped: {skipped}")
        return [], skipped, {}
    args = {"samples": s["fit_samples"], "seed": 0, "hidden": list(hidden), "max_iter": max_iter,
            "synthetic": s["synthetic"]}
    result = bench.rounds([ours, sk], lambda w, r: ("fit", args), s["fit_reps"], TIMEOUTS["epoch"])
    kept, rows = result["rounds"], []
    for w in (ours, sk):
        if not harness.samples(kept, w.name):
            continue
        framework, config = bench.label(w.name)
        rows.append({"framework": framework, "config": f"MLPClassifier(hidden_layer_sizes={tuple(hidden)}, "
                                                       f"max_iter={max_iter}); {config}",
                     "worker": w.name, "seconds": harness.median(harness.samples(kept, w.name)),
                     "ratio_fastnn_faster": harness.paired_ratio(kept, w.name, ours.name),
                     "test_accuracy": harness.median(harness.samples(kept, w.name, "test_accuracy")),
                     "samples": kept[0][w.name]["samples"]})
        bench.log(f"  {w.name}: fit {rows[-1]['seconds']:.2f} s, test accuracy {100 * rows[-1]['test_accuracy']:.2f}%")
    return rows, None, result["errors"]


# ===================================================================== targets

def evaluate_targets(res):
    targets, head = [], res["headline_worker"]

    def add(name, vs, measured, goal, comparison=">=", unit="x", note=None):
        met = None if measured is None else COMPARISONS[comparison](measured, goal)
        targets.append({"name": name, "vs": vs, "measured": measured, "unit": unit, "target": goal,
                        "comparison": comparison, "met": met, **({"note": note} if note else {})})
    by_case = {(r["kernel"], r["shape"]): r for r in res["kernels"] if r["worker"] == head}
    for kernel, shape, goal, baseline in KERNEL_TARGETS:
        add(f"{kernel} {shape}", baseline, by_case.get((kernel, shape), {}).get("ratio_vs_textbook"), goal)
    epoch = {r["framework"]: r for r in res["mnist_epoch"] if r["headline"]}
    for other, goal in EPOCH_TARGETS:
        add("MNIST epoch", other, epoch.get(other, {}).get("ratio_fastnn_faster"), goal)
    t98 = next((r for r in res["time_to_98"] if r["worker"] == head), None)
    note = None if not t98 or t98["reached"] else \
        f"not reached: {100 * t98['test_accuracy']:.2f}% after {t98['epochs']} epochs"
    add("time to 98% test accuracy", "fastnn train defaults", t98 and t98["seconds"], T98_TARGET_SECONDS, "<", "s",
        note)
    for row in res["neighbour"]:
        add(f"{row['framework']} op right after a fastnn kernel", "the op alone", row["slowdown"], NEIGHBOUR_TARGET,
            "<=", "x slowdown")
    _bf16_targets(res, add)
    fit = {r["framework"]: r for r in res["sklearn_fit"]}
    add("MLPClassifier fit, MNIST, hidden (100,), max_iter=5", "scikit-learn",
        fit.get("scikit-learn", {}).get("ratio_fastnn_faster"), FIT_TARGET,
        note=res["skipped"].get("sklearn_fit"))
    return targets


def _bf16_targets(res, add):
    """"medium" against NumPy's float32 and PyTorch's bf16 kernels, and the epoch and time to 98% in it."""
    if MEDIUM not in res["isolation"]["workers"]:
        return
    medium = {(r["kernel"], r["shape"]): r for r in res["kernels"] if r["worker"] == MEDIUM}
    torch_bf16 = {(r["kernel"], r["shape"]): r for r in res["kernels"]
                  if r["framework"] == "PyTorch" and r["precision"] == "bfloat16"}
    for kernel, shape, goal in BF16_KERNEL_TARGETS:
        add(f"{kernel} {shape}, medium", "NumPy float32", medium.get((kernel, shape), {}).get("ratio_vs_textbook"),
            goal)
        if kernel == "matmul":
            add(f"{kernel} {shape}, medium", "PyTorch bf16 torch.mm",
                torch_bf16.get((kernel, shape), {}).get("ratio_medium_faster"), 1.0)
    highest = next((r for r in res["mnist_epoch"] if r["worker"] == res["headline_worker"]), {})
    add("MNIST epoch, medium", "highest", highest.get("ratio_medium_faster"), BF16_EPOCH_TARGET)
    t98 = next((r for r in res["time_to_98"] if r["worker"] == MEDIUM), None)
    note = None if not t98 or t98["reached"] else \
        f"not reached: {100 * t98['test_accuracy']:.2f}% after {t98['epochs']} epochs"
    add("time to 98% test accuracy, medium", "fastnn train defaults", t98 and t98["seconds"],
        BF16_T98_TARGET_SECONDS, "<=", "s", note)
