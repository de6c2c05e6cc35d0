"""A bench worker: `python -m fastnn.bench.worker NAME`, one framework configuration per process.

NAME is textbook | fastnn-<backend>[-medium] | torch-<threads>[-bf16] | jax-jit | jax-scan | sklearn |
neighbour.
The worker reads one JSON request per line on stdin and answers each with one
JSON line, {"ok": true, ...} or {"ok": false, "error": ...}, on the stdout it
was started with; whatever the libraries print goes to stderr instead.
"""
import json
import os
import platform
import sys
import time
import warnings
from importlib import metadata


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


BF16_TOLERANCE = 2e-2  # inputs rounded to 8 significant bits, sums of hundreds of products


class Worker:
    """The commands every worker answers; subclasses say how their framework runs the work."""

    framework = config = None
    tolerance = 2e-3  # float32 rounding; workers whose matmuls round their inputs to bfloat16 allow more

    def __init__(self):
        self._kernel = self._trainer = None

    def hello(self):
        return {"available": True, "framework": self.framework, "config": self.config, "pid": os.getpid(),
                "python": platform.python_version(), **self.details()}

    def details(self):
        return {}

    # ------------------------------------------------------------- kernels
    def kernel_fn(self, kernel, inputs):
        raise NotImplementedError(f"{self.framework} has no kernel cases")

    def kernel_prepare(self, kernel, shape, index, min_time, synthetic):
        from . import workloads
        shape = shape if isinstance(shape, str) else tuple(shape)
        inputs = workloads.kernel_inputs(kernel, shape, index, synthetic)
        work, unit = workloads.kernel_work(kernel, shape, inputs)
        # The textbook result, computed here, checks this framework's (the optimizer step changes state: not checked).
        want = workloads.textbook_kernel(kernel, inputs)() if kernel != "adam_step" else None
        workloads.settle_self(1.0)  # NumPy's threads, spinning after the reference, would slow the warm-up
        self._kernel = workloads.TimedKernel(self.kernel_fn(kernel, inputs), min_time)
        agrees = None if want is None else workloads.agrees(self._kernel.result, want, self.tolerance)
        return {"work": work, "unit": unit, "calls_per_sample": self._kernel.inner, "agrees": agrees}

    def kernel_sample(self):
        return {"seconds": self._kernel.sample()}

    def kernel_release(self):
        self._kernel = None
        return {}

    # ------------------------------------------------------------ training
    def trainer(self, x, y, weights, seed, recipe):
        raise NotImplementedError(f"{self.framework} has no training loop")

    def _new_trainer(self, samples, seed, recipe, synthetic):
        from . import workloads
        (x, y), _, data = workloads.load_data(synthetic)
        n = samples or x.shape[0]
        x, y = x[:n], y[:n]
        sizes = [x.shape[1], *recipe["hidden"], 10]
        trainer = self.trainer(x, y, workloads.initial_weights(sizes, seed), seed, recipe)
        trainer.warmup()
        return trainer, data, n

    def epoch_prepare(self, samples, seed, recipe, synthetic):
        self._trainer, data, n = self._new_trainer(samples, seed, recipe, synthetic)
        self._epochs, self._synthetic = 0, synthetic
        return {"data": data, "samples": n}

    def epoch_run(self):
        self._epochs += 1
        return {"seconds": self._trainer.epoch()}

    def epoch_accuracy(self):
        from . import workloads
        _, (xt, yt), _ = workloads.load_data(self._synthetic)
        acc = self._trainer.accuracy(xt, yt)
        self._trainer = None
        return {"test_accuracy": acc, "epochs_trained": self._epochs}

    def time_to(self, target, seed, recipe, synthetic):
        from . import workloads
        trainer, data, _ = self._new_trainer(None, seed, recipe, synthetic)
        _, (xt, yt), _ = workloads.load_data(synthetic)
        return {"data": data, **workloads.time_to_accuracy(trainer, xt, yt, target, recipe["epochs"])}


class TextbookWorker(Worker):
    framework, config = "textbook NumPy", "NumPy's default BLAS threads"

    def __init__(self):
        super().__init__()
        import numpy  # noqa: F401

    def details(self):
        try:
            import threadpoolctl
            blas = [{k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture",
                                           "threading_layer")}
                    for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]
        except ImportError:
            blas = None
        return {"versions": {"numpy": _version("numpy")}, "numpy_blas": blas}

    def kernel_fn(self, kernel, inputs):
        from . import workloads
        return workloads.textbook_kernel(kernel, inputs)

    def trainer(self, x, y, weights, seed, recipe):
        from . import workloads
        return workloads.TextbookTrainer(x, y, weights, seed, recipe)

    def baseline(self, threads, peak_seconds, peak_reps, copy_mib):
        from . import baseline
        return {"peak": baseline.measure_peak("fma", threads, peak_seconds, peak_reps),
                "bf16_peak": baseline.measure_peak("bf16_dot", threads, peak_seconds, peak_reps),
                "copy_bandwidth": baseline.measure_copy_bandwidth(copy_mib, max(3, peak_reps))}


class FastnnWorker(Worker):
    framework = "fastnn"

    def __init__(self, backend, precision="highest"):
        super().__init__()
        import fastnn
        fastnn.set_backend(backend)
        fastnn.set_float32_matmul_precision(precision)
        self.backend, self.config = backend, f"{backend} backend"
        if precision != "highest":
            self.config += f", matmul precision {precision!r} (bfloat16 inputs)"
            self.tolerance = BF16_TOLERANCE

    def hello(self):
        import fastnn
        info = fastnn.info()
        if info["matmul_precision"] != "highest" and not info["bf16"]:
            return {"available": False, "reason": "this CPU has no AVX512_BF16: 'medium' would run the float32 code"}
        return super().hello()

    def details(self):
        import fastnn
        return {"fastnn": fastnn.info(), "versions": {"fastnn": fastnn.__version__, "numba": _version("numba")}}

    def kernel_fn(self, kernel, inputs):
        from . import workloads
        return workloads.fastnn_kernel(kernel, inputs, self.backend)

    def trainer(self, x, y, weights, seed, recipe):
        from . import workloads
        return workloads.FastnnTrainer(x, y, weights, seed, recipe)

    def fit_check(self, reference):
        """Why fastnn.MLPClassifier cannot yet be asked for scikit-learn's fit, or None."""
        import fastnn
        ours = json.loads(json.dumps(fastnn.MLPClassifier().get_params(), default=str))
        missing = [k for k in reference if k not in ours]
        differ = [f"{k} ({ours[k]!r} vs {reference[k]!r})" for k in reference if k in ours and ours[k] != reference[k]]
        if not missing and not differ:
            return {"skipped": None}
        return {"skipped": "fastnn.MLPClassifier does not take scikit-learn's parameters yet"
                           + (f"; missing: {', '.join(missing)}" if missing else "")
                           + (f"; other defaults: {', '.join(differ)}" if differ else "")}

    def fit(self, samples, seed, hidden, max_iter, synthetic):
        import fastnn
        return _timed_fit(fastnn.MLPClassifier(hidden_layer_sizes=tuple(hidden), max_iter=max_iter,
                                               random_state=seed), samples, synthetic)


class TorchWorker(Worker):
    framework = "PyTorch"

    def __init__(self, threads, dtype="float32"):
        super().__init__()
        import torch
        torch.set_num_threads(threads)
        self.torch, self.dtype, self.config = torch, dtype, f"torch.set_num_threads({threads})"
        if dtype != "float32":
            self.config += f", {dtype} tensors"
            self.tolerance = BF16_TOLERANCE

    def details(self):
        return {"versions": {"torch": self.torch.__version__}, "threads": self.torch.get_num_threads()}

    def kernel_fn(self, kernel, inputs):
        from . import workloads
        return workloads.torch_kernel(self.torch, kernel, inputs, self.dtype)

    def trainer(self, x, y, weights, seed, recipe):
        if self.dtype != "float32":
            raise NotImplementedError(f"the {self.dtype} worker runs kernels only")
        from . import workloads
        return workloads.TorchTrainer(x, y, weights, seed, recipe)


class JaxWorker(Worker):
    framework = "JAX"
    CONFIGS = {"jit": "jax.jit of the whole step, batches gathered in NumPy",
               "scan": "jax.jit of the whole epoch (lax.scan over the batches), data on the device"}

    def __init__(self, idiom):
        super().__init__()
        import jax
        self.jax, self.idiom, self.config = jax, idiom, self.CONFIGS[idiom]

    def details(self):
        return {"versions": {"jax": self.jax.__version__, "jaxlib": _version("jaxlib")},
                "devices": [str(d) for d in self.jax.devices()]}

    def kernel_fn(self, kernel, inputs):
        if self.idiom != "jit":
            raise NotImplementedError("kernels run in the jax.jit worker")
        from . import workloads
        return workloads.jax_kernel(self.jax, kernel, inputs)

    def trainer(self, x, y, weights, seed, recipe):
        from . import workloads
        return workloads.JaxTrainer(x, y, weights, seed, recipe, self.idiom)


class SklearnWorker(Worker):
    framework, config = "scikit-learn", "MLPClassifier, NumPy's default BLAS threads"

    def __init__(self):
        super().__init__()
        import sklearn.neural_network  # noqa: F401

    def details(self):
        return {"versions": {"scikit-learn": _version("scikit-learn")}}

    def trainer(self, x, y, weights, seed, recipe):
        from . import workloads
        return workloads.SklearnTrainer(x, y, weights, seed, recipe)

    def fit_params(self):
        """MLPClassifier's parameters and defaults, without lbfgs's own max_fun."""
        from sklearn.neural_network import MLPClassifier
        params = json.loads(json.dumps(MLPClassifier().get_params(), default=str))
        params.pop("max_fun", None)
        return {"params": params}

    def fit(self, samples, seed, hidden, max_iter, synthetic):
        from sklearn.neural_network import MLPClassifier
        return _timed_fit(MLPClassifier(hidden_layer_sizes=tuple(hidden), max_iter=max_iter, random_state=seed),
                          samples, synthetic)


class NeighbourWorker(Worker):
    framework, config = "fastnn + NumPy + PyTorch", "one process, each library at its defaults"

    def __init__(self):
        super().__init__()
        import fastnn
        fastnn.set_backend("cpp")

    def neighbour(self, rounds, calls):
        from . import workloads
        return {"rows": workloads.neighbour(rounds, calls)}


def _timed_fit(model, samples, synthetic):
    """Seconds of model.fit on the first `samples` training images, and the test accuracy."""
    from . import workloads
    (x, y), (xt, yt), data = workloads.load_data(synthetic)
    n = samples or x.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=5 stops before convergence on purpose
        t = time.perf_counter()
        model.fit(x[:n], y[:n])
        seconds = time.perf_counter() - t
    return {"seconds": seconds, "test_accuracy": float(model.score(xt, yt)), "samples": n, "data": data}


def make_worker(name):
    """textbook, fastnn-<backend>[-<matmul precision>], torch-<threads>[-bf16], jax-<idiom>, sklearn, neighbour."""
    framework, _, config = name.partition("-")
    if framework == "textbook":
        return TextbookWorker()
    if framework == "fastnn":
        return FastnnWorker(*config.split("-"))
    if framework == "torch":
        threads, _, dtype = config.partition("-")
        return TorchWorker(int(threads), {"": "float32", "bf16": "bfloat16"}[dtype])
    if framework == "jax":
        return JaxWorker(config)
    if framework == "sklearn":
        return SklearnWorker()
    if framework == "neighbour":
        return NeighbourWorker()
    raise ValueError(f"unknown worker {name!r}")


COMMANDS = ("hello", "kernel_prepare", "kernel_sample", "kernel_release", "epoch_prepare", "epoch_run",
            "epoch_accuracy", "time_to", "baseline", "fit_check", "fit_params", "fit", "neighbour")


def main(name):
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # prints from the libraries, C code included, must not break the protocol
    sys.stdout = sys.stderr
    try:
        worker, unavailable = make_worker(name), None
    except ImportError as exc:  # the framework is not installed: reported as skipped
        worker, unavailable = None, f"not installed ({exc})"
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request.pop("cmd")
        if cmd == "exit":
            break
        if worker is None:
            reply = {"ok": True, "available": False, "reason": unavailable} if cmd == "hello" else \
                {"ok": False, "error": unavailable}
        elif cmd not in COMMANDS or not hasattr(worker, cmd):
            reply = {"ok": False, "error": f"{name} does not answer {cmd!r}"}
        else:
            try:
                reply = {"ok": True, **getattr(worker, cmd)(**request)}
            except Exception as exc:  # one failed case is reported; the worker goes on
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        protocol.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
