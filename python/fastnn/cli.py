"""The `fastnn` command: train | predict | evaluate | bench | info.

Mistakes in the command line are argparse errors (one line, exit status 2);
errors at run time are one line naming what and where, with a hint (exit
status 1). `--debug` or FASTNN_DEBUG=1 adds the traceback.
"""
import argparse
import json
import os
import sys
import textwrap
import time

from . import __version__
from .recipe import DEFAULTS, OPTIMIZERS, SCHEDULES, make_optimizer, make_scheduler

EPILOG = """examples:
  fastnn train --epochs 4 --out runs/mnist     # MNIST: runs/mnist/{model.npz,metrics.json,curves.png}
  fastnn train --data mine.csv --label-column species --out runs/mine && \\
    fastnn predict runs/mine/model.npz new.csv  # your data; writes new.predictions.csv
"""


def _paragraph(text):
    """text wrapped to the terminal's usual width (the raw formatter keeps the epilog's layout)."""
    return textwrap.fill(" ".join(text.split()), 79)


class CLIError(Exception):
    """A run-time error shown to the user as one line (what, where, and a hint)."""


# ------------------------------------------------------------------ argument types
# Each raises ArgumentTypeError, which argparse turns into "fastnn train: error: argument --x: ...".

def _int_at_least(minimum, expected):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "an integer >= 0")


def _float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text):
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def unit_fraction(text):
    """A number in [0, 1): label smoothing and dropout."""
    value = _float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


def hidden_sizes(text):
    """'256,128' -> '256,128' (validated, spaces dropped)."""
    parts = [part.strip() for part in text.split(",")]
    try:
        sizes = [int(part) for part in parts]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive layer sizes like 256,128, got {text!r}")
    return ",".join(str(s) for s in sizes)


def existing_file(text):
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"not a file: {text}")
    return text


# ------------------------------------------------------------------ parser

class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake answered in one line (the usage is a --help away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(p):
    """Options every command takes."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the Python traceback of a run-time error (also FASTNN_DEBUG=1)")
    p.add_argument("--backend", choices=["cpp", "numba", "numpy"], help="kernel backend (default: cpp)")
    p.add_argument("--threads", type=positive_int, help="kernel threads (default: all cores)")


def _data_options(p, what, dataset_help):
    source = p.add_mutually_exclusive_group()
    source.add_argument("--dataset", choices=["mnist", "fashion-mnist"], help=dataset_help)
    source.add_argument("--data", type=existing_file, metavar="FILE",
                   help=f"{what} this .npz (x_train, y_train, optional x_test, y_test) or .csv "
                        "(a label column and number columns) instead of a built-in dataset")
    p.add_argument("--label-column", dest="label_column", metavar="NAME_OR_INDEX",
                   help="the CSV column holding the label: a header name or a 0-based index (default: the first)")


def _train_parser(sub):
    p = sub.add_parser(
        "train", help="train an MLP and write model.npz, metrics.json and curves.png into --out",
        description=_paragraph("Train an MLP on MNIST, Fashion-MNIST or your own data (--data). Writes model.npz "
                    "(the checkpoint), metrics.json (history, test accuracy, settings) and curves.png "
                    "(loss and accuracy per epoch) into --out. Settings not given come from --resume's "
                    "checkpoint, then from the defaults."),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _data_options(p, "train on", f"built-in dataset (default: {DEFAULTS['dataset']})")
    p.add_argument("--hidden", type=hidden_sizes,
                   help=f"hidden layer sizes, comma-separated (default: {DEFAULTS['hidden']})")
    p.add_argument("--activation", choices=["relu", "sigmoid", "tanh", "leaky_relu", "elu"],
                   help=f"hidden activation (default: {DEFAULTS['activation']})")
    p.add_argument("--epochs", type=positive_int, help=f"epochs (default: {DEFAULTS['epochs']})")
    p.add_argument("--batch-size", type=positive_int, dest="batch_size",
                   help=f"mini-batch size (default: {DEFAULTS['batch_size']})")
    p.add_argument("--optimizer", choices=OPTIMIZERS,
                   help=f"optimizer (default: {DEFAULTS['optimizer']})")
    p.add_argument("--lr", type=positive_float,
                   help=f"learning rate; the peak rate for onecycle (default: {DEFAULTS['lr']:g})")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help=f"learning-rate schedule (default: {DEFAULTS['schedule']})")
    p.add_argument("--label-smoothing", type=unit_fraction, dest="label_smoothing",
                   help="label smoothing of the cross-entropy loss, in [0, 1) "
                        f"(default: {DEFAULTS['label_smoothing']:g})")
    p.add_argument("--dropout", type=unit_fraction,
                   help=f"dropout after each hidden activation, in [0, 1) (default: {DEFAULTS['dropout']:g})")
    p.add_argument("--seed", type=non_negative_int,
                   help=f"seed for weights and shuffling (default: {DEFAULTS['seed']})")
    p.add_argument("--matmul-precision", dest="matmul_precision", choices=["highest", "high", "medium"],
                   help="float32 matmul precision, as fastnn.set_float32_matmul_precision (default: highest)")
    _common(p)
    p.add_argument("--out", default="runs/latest", help="output folder (default: runs/latest)")
    p.add_argument("--resume", type=existing_file, metavar="CHECKPOINT",
                   help="continue the run saved in this model.npz")
    p.add_argument("--limit", type=positive_int, help="train on the first N training samples only (a quick smoke run)")
    p.add_argument("--no-plot", action="store_true", help="skip curves.png")
    return p


def _predict_parser(sub):
    p = sub.add_parser(
        "predict", help="write the predicted class of every sample in FILE",
        description=_paragraph(
            "Predict the class of every sample (row) in FILE with a model.npz written by `fastnn train`. "
            "FILE is an .npy array of features, or a CSV of feature columns (a label column, if the file "
            "has one more column than the model has inputs, is left out). Writes one label per sample: "
            "an .npy for .npy input, else a CSV with a 'prediction' column; to --out, or by default "
            "beside FILE as FILE.predictions.npy / .csv."),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=existing_file, metavar="MODEL.npz", help="a checkpoint written by fastnn train")
    p.add_argument("file", type=existing_file, metavar="FILE", help="the samples: .npy or .csv")
    p.add_argument("--out", metavar="PATH", help="where to write the predictions (default: beside FILE)")
    p.add_argument("--label-column", dest="label_column", metavar="NAME_OR_INDEX",
                   help="the CSV's label column to leave out (default: the one used in training, else the first)")
    _common(p)
    return p


def _evaluate_parser(sub):
    p = sub.add_parser(
        "evaluate", help="print a model's test accuracy and loss",
        description=_paragraph("Print the test accuracy and mean cross-entropy loss of a model.npz written by `fastnn "
                    "train`: on the test split of the dataset it was trained on, or on --data (its x_test, "
                    "y_test; an .npz without them, or a CSV, is used whole). Writes nothing."),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=existing_file, metavar="MODEL.npz", help="a checkpoint written by fastnn train")
    _data_options(p, "test on", "built-in dataset to test on (default: the one the model was trained on)")
    _common(p)
    return p


def build_parser():
    parser = _Parser(
        prog="fastnn", description="Train small neural networks on the CPU, fast.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fastnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of a run-time error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parser(sub)
    _predict_parser(sub)
    _evaluate_parser(sub)
    b = sub.add_parser("bench", help="benchmarks against NumPy (and PyTorch / scikit-learn when installed)")
    b.add_argument("--quick", action="store_true", help="a short run (under 2 minutes)")
    b.add_argument("--out", default="bench-out", help="output folder for the table, JSON and PNGs")
    sub.add_parser("info", help="print version, backend, ISA, threads, compiler")
    return parser


# ------------------------------------------------------------------ run-time helpers

def _apply_runtime_options(args):
    import fastnn
    if getattr(args, "backend", None):
        fastnn.set_backend(args.backend)
    if getattr(args, "threads", None):
        fastnn.set_num_threads(args.threads)
    if getattr(args, "matmul_precision", None):
        fastnn.set_float32_matmul_precision(args.matmul_precision)


def _load_checkpoint(path, flag):
    import fastnn
    try:
        return fastnn.load(path)
    except ValueError as exc:
        raise CLIError(f"{flag} {exc}; hint: give a model.npz written by `fastnn train`".strip()) from exc
    except OSError as exc:
        raise CLIError(f"{flag} cannot read {path}: {exc.strerror or exc}".strip()) from exc


def _load_builtin(name):
    from . import datasets
    load = datasets.load_mnist if name == "mnist" else datasets.load_fashion_mnist
    try:
        return load(normalize=True, flatten=True)
    except (datasets.DatasetUnavailableError, datasets.DatasetChecksumError, datasets.IdxFormatError,
            OSError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CLIError(f"dataset {name}: {first_line}; hint: connect to the network once, copy the files into "
                       f"{datasets.cache_root()}, or train on your own data with --data FILE") from exc


def _read_data(path, label_column):
    from .datafiles import DataFileError, read_labelled
    try:
        return read_labelled(path, label_column)
    except DataFileError as exc:
        raise CLIError(f"--data {exc}") from exc


def _model_shape(model):
    """(input features, outputs) of a model's first and last Linear layer."""
    params = [p.data for p in model.parameters() if p.data.ndim == 2]
    return params[0].shape[0], params[-1].shape[1]


def _check_writable_folder(out):
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".fastnn-write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as exc:
        raise CLIError(f"--out {out}: cannot write there ({exc.strerror or exc}); hint: choose another folder "
                       "with --out") from exc


def _resolve_args(args):
    """Explicit flags win; on --resume the saved run's settings fill the rest; then the defaults."""
    saved = {}
    checkpoint = None
    if args.resume:
        checkpoint = _load_checkpoint(args.resume, "--resume")
        saved = checkpoint.meta.get("args", {})
    settings = {}
    for key, default in DEFAULTS.items():
        value = getattr(args, key)
        settings[key] = value if value is not None else saved.get(key, default)
    if checkpoint is not None and settings["schedule"] == "onecycle" and settings["epochs"] != saved.get("epochs"):
        raise CLIError(f"--resume {args.resume}: cannot resume a one-cycle schedule planned for "
                       f"{saved.get('epochs')} epochs with --epochs {settings['epochs']}: the cycle's length is "
                       f"fixed when it starts; hint: leave out --epochs")
    return settings, checkpoint


def _training_data(settings, checkpoint):
    """(x_train, y_train, x_test, y_test, classes, description); y as class indices, test arrays may be None."""
    import numpy as np

    from .datafiles import encode_labels
    if settings["data"] is None:
        (x_train, y_train), (x_test, y_test) = _load_builtin(settings["dataset"])
        return x_train, y_train, x_test, y_test, None, settings["dataset"]
    data = _read_data(settings["data"], settings["label_column"])
    labels = [data["y_train"]] + ([data["y_test"]] if "y_test" in data else [])
    if checkpoint is not None and "classes" in checkpoint.meta:
        classes = np.asarray(checkpoint.meta["classes"])
    else:
        try:
            classes = np.unique(np.concatenate(labels))
        except TypeError:  # numbers in one split and words in the other
            raise CLIError(f"--data {settings['data']}: y_train and y_test mix numbers and words") from None
    if len(classes) < 2:
        raise CLIError(f"--data {settings['data']}: y_train has a single class ({classes[0]!r}); "
                       "a classifier needs at least two")
    try:
        y_train = encode_labels(classes, data["y_train"], settings["data"], "y_train")
        y_test = encode_labels(classes, data["y_test"], settings["data"], "y_test") if "y_test" in data else None
    except ValueError as exc:
        raise CLIError(f"--data {exc}") from exc
    return data["x_train"], y_train, data.get("x_test"), y_test, classes, settings["data"]


# ------------------------------------------------------------------ commands

def _plot(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["loss"], "o-", label="train")
    if any(v is not None for v in history["val_loss"]):
        ax_loss.plot(epochs, history["val_loss"], "o-", label="test")
    ax_loss.set(title="Loss (cross-entropy)", xlabel="epoch", ylabel="loss")
    ax_acc.plot(epochs, [100 * a for a in history["accuracy"]], "o-", label="train")
    if any(v is not None for v in history["val_accuracy"]):
        ax_acc.plot(epochs, [100 * a for a in history["val_accuracy"]], "o-", label="test")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("fastnn train")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_train(args):
    import numpy as np

    import fastnn
    from . import nn
    from .train import Trainer

    _apply_runtime_options(args)
    settings, checkpoint = _resolve_args(args)
    _check_writable_folder(args.out)

    t0 = time.perf_counter()
    x_train, t_train, x_test, t_test, classes, source = _training_data(settings, checkpoint)
    if settings["limit"]:
        x_train, t_train = x_train[:settings["limit"]], t_train[:settings["limit"]]
    n_classes = 10 if classes is None else len(classes)
    test_note = f"{x_test.shape[0]} test" if x_test is not None else "no test"
    print(f"{source}: {x_train.shape[0]} train / {test_note} samples, {x_train.shape[1]} features, {n_classes} "
          f"classes (loaded in {time.perf_counter() - t0:.2f}s); {fastnn.info()}", flush=True)

    hidden = [int(h) for h in str(settings["hidden"]).split(",")]
    if checkpoint is not None:
        model = checkpoint.model
        expected = _model_shape(model)
        if expected != (x_train.shape[1], n_classes):
            raise CLIError(f"--resume {args.resume}: the model takes {expected[0]} features to {expected[1]} "
                           f"classes, but {source} has {x_train.shape[1]} features and {n_classes} classes")
    else:
        model = nn.MLP([x_train.shape[1], *hidden, n_classes], settings["activation"], settings["dropout"],
                       seed=settings["seed"])
    optimizer = make_optimizer(settings["optimizer"], model.parameters(), settings["lr"])
    steps_per_epoch = -(-x_train.shape[0] // settings["batch_size"])
    scheduler = make_scheduler(settings["schedule"], optimizer, settings["lr"], settings["epochs"], steps_per_epoch)
    loss = nn.CrossEntropyLoss(label_smoothing=settings["label_smoothing"])
    trainer = Trainer(model, loss, optimizer, scheduler, batch_size=settings["batch_size"],
                      epochs=settings["epochs"], seed=settings["seed"])
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint.optimizer_state)
        trainer.load_state_dict(checkpoint.meta["trainer"])
        print(f"resuming from {args.resume} at epoch {trainer.epoch}", flush=True)
        if trainer.epoch >= trainer.epochs:
            print(f"fastnn train: {args.resume} has done all {trainer.epochs} epochs already; "
                  f"pass --epochs N with N > {trainer.epochs} to train more", file=sys.stderr)
            return 2

    model_path = os.path.join(args.out, "model.npz")
    extra = {} if classes is None else {"classes": classes}
    validation = None if x_test is None else (x_test, t_test)
    try:
        history = trainer.fit(x_train, t_train, validation_data=validation)
    except KeyboardInterrupt:
        fastnn.save(model_path, model, optimizer, args=settings, trainer=trainer.state_dict(), **extra)
        print(f"\ninterrupted: checkpoint written to {model_path}; continue with "
              f"`fastnn train --resume {model_path} --out {args.out}`", file=sys.stderr, flush=True)
        return 130

    train_seconds = float(np.sum(history["seconds"]))
    test_loss, test_acc = history["val_loss"][-1], history["val_accuracy"][-1]
    fastnn.save(model_path, model, optimizer, args=settings, trainer=trainer.state_dict(),
                test_accuracy=test_acc, **extra)
    metrics = {"history": history, "train_seconds": train_seconds, "test_loss": test_loss,
               "test_accuracy": test_acc, "settings": settings, "info": fastnn.info()}
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    if not args.no_plot:
        _plot(history, os.path.join(args.out, "curves.png"))
    result = (f"test accuracy {100 * test_acc:.2f}%" if test_acc is not None
              else f"train accuracy {100 * history['accuracy'][-1]:.2f}% (no test split)")
    print(f"{result} after {trainer.epoch} epochs, {train_seconds:.2f}s of training; "
          f"wrote {args.out}/model.npz, metrics.json" + ("" if args.no_plot else ", curves.png"), flush=True)
    return 0


def _classes_of(checkpoint, n_outputs):
    import numpy as np
    return np.asarray(checkpoint.meta["classes"]) if "classes" in checkpoint.meta else np.arange(n_outputs)


def _predict_outputs(model, x):
    """Model outputs for x in eval mode, in batches."""
    import numpy as np
    model.eval()
    return np.concatenate([model(x[s:s + 4096]) for s in range(0, x.shape[0], 4096)])


def cmd_predict(args):
    import numpy as np

    from . import datafiles

    _apply_runtime_options(args)
    checkpoint = _load_checkpoint(args.model, "")
    n_features, n_outputs = _model_shape(checkpoint.model)
    ext = os.path.splitext(args.file)[1].lower()
    try:
        if ext == ".npy":
            x = datafiles.read_npy(args.file)
        elif ext == ".csv":
            label_column = args.label_column or checkpoint.meta.get("args", {}).get("label_column")
            x, _, _ = datafiles.read_csv(args.file, label_column, n_features=n_features)
        else:
            raise datafiles.DataFileError(f"{args.file}: unknown format {ext or '(no extension)'}; "
                                          "predict reads .npy (features) or .csv")
    except datafiles.DataFileError as exc:
        raise CLIError(str(exc)) from exc
    if x.shape[1] != n_features:
        raise CLIError(f"{args.file}: {x.shape[1]} features per sample, but {args.model} takes {n_features}")
    predictions = _classes_of(checkpoint, n_outputs)[_predict_outputs(checkpoint.model, x).argmax(axis=1)]

    out = args.out or os.path.splitext(args.file)[0] + (".predictions.npy" if ext == ".npy" else ".predictions.csv")
    try:
        if out.lower().endswith(".npy"):
            np.save(out, predictions)
        else:
            with open(out, "w") as f:
                f.write("prediction\n")
                f.writelines(f"{p}\n" for p in predictions)
    except OSError as exc:
        raise CLIError(f"--out {out}: cannot write the predictions ({exc.strerror or exc}); hint: choose "
                       "another path with --out") from exc
    print(f"wrote {len(predictions)} predictions to {out}")
    return 0


def cmd_evaluate(args):
    import numpy as np

    from . import functional as F
    from .datafiles import DataFileError, encode_labels

    _apply_runtime_options(args)
    checkpoint = _load_checkpoint(args.model, "")
    n_features, n_outputs = _model_shape(checkpoint.model)
    saved = checkpoint.meta.get("args", {})
    if args.data is not None:
        data = _read_data(args.data, args.label_column or saved.get("label_column"))
        split = "test" if "x_test" in data else "train"
        x, labels = data[f"x_{split}"], data[f"y_{split}"]
        try:
            y = encode_labels(_classes_of(checkpoint, n_outputs), labels, args.data, f"y_{split}")
        except DataFileError as exc:
            raise CLIError(f"--data {exc}") from exc
        source = f"{args.data} ({'x_test' if split == 'test' else 'all'} {x.shape[0]} samples)"
    else:
        dataset = args.dataset or saved.get("dataset", DEFAULTS["dataset"])
        if saved.get("data") and not args.dataset:
            raise CLIError(f"{args.model} was trained on {saved['data']}, not a built-in dataset; hint: give the "
                           "test data with --data FILE")
        _, (x, y) = _load_builtin(dataset)
        source = f"{dataset} test set ({x.shape[0]} samples)"
    if x.shape[1] != n_features:
        raise CLIError(f"{args.data or source}: {x.shape[1]} features per sample, but {args.model} takes "
                       f"{n_features}")
    logits = _predict_outputs(checkpoint.model, x)
    loss = float(F.cross_entropy(logits, y))
    accuracy = float(np.mean(logits.argmax(axis=1) == y))
    print(f"test accuracy {100 * accuracy:.2f}%, loss {loss:.4f} on {source}")
    return 0


def cmd_info(args):
    import fastnn
    _apply_runtime_options(args)
    for key, value in fastnn.info().items():
        print(f"{key:10s} {value}")
    return 0


def cmd_bench(args):
    from . import bench
    return bench.main(quick=args.quick, out=args.out)


COMMANDS = {"train": cmd_train, "predict": cmd_predict, "evaluate": cmd_evaluate, "bench": cmd_bench,
            "info": cmd_info}


def main(argv=None):
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("FASTNN_DEBUG", "") not in ("", "0")
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"fastnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- every failure is answered in one line
        if debug:
            import traceback
            traceback.print_exc()
        if isinstance(exc, CLIError):
            message = str(exc)
        else:  # a bug or an unforeseen failure: still one line, with the way to see more
            message = f"{type(exc).__name__}: {exc}".splitlines()[0] + " (run with --debug for the traceback)"
        print(f"fastnn {args.command}: error: {message.strip()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
