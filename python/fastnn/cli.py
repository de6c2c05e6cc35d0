"""The `fastnn` command: train | bench | info."""
import argparse
import json
import os
import sys
import time

from .recipe import DEFAULTS, OPTIMIZERS, SCHEDULES, make_optimizer, make_scheduler

def _train_parser(sub):
    p = sub.add_parser("train", help="train an MLP (MNIST by default) and write model.npz, metrics.json, curves.png")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], help=f"dataset (default: {DEFAULTS['dataset']})")
    p.add_argument("--hidden", help=f"hidden layer sizes, comma-separated (default: {DEFAULTS['hidden']})")
    p.add_argument("--activation", choices=["relu", "sigmoid", "tanh", "leaky_relu", "elu"],
                   help=f"hidden activation (default: {DEFAULTS['activation']})")
    p.add_argument("--epochs", type=int, help=f"epochs (default: {DEFAULTS['epochs']})")
    p.add_argument("--batch-size", type=int, dest="batch_size",
                   help=f"mini-batch size (default: {DEFAULTS['batch_size']})")
    p.add_argument("--optimizer", choices=OPTIMIZERS,
                   help=f"optimizer (default: {DEFAULTS['optimizer']})")
    p.add_argument("--lr", type=float,
                   help=f"learning rate; the peak rate for onecycle (default: {DEFAULTS['lr']:g})")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help=f"learning-rate schedule (default: {DEFAULTS['schedule']})")
    p.add_argument("--label-smoothing", type=float, dest="label_smoothing",
                   help="label smoothing of the cross-entropy loss, in [0, 1] "
                        f"(default: {DEFAULTS['label_smoothing']:g})")
    p.add_argument("--dropout", type=float,
                   help=f"dropout after each hidden activation (default: {DEFAULTS['dropout']:g})")
    p.add_argument("--seed", type=int, help=f"seed for weights and shuffling (default: {DEFAULTS['seed']})")
    p.add_argument("--backend", choices=["cpp", "numba", "numpy"], help="kernel backend (default: cpp)")
    p.add_argument("--threads", type=int, help="kernel threads (default: all cores)")
    p.add_argument("--matmul-precision", dest="matmul_precision", choices=["highest", "high", "medium"],
                   help="float32 matmul precision, as fastnn.set_float32_matmul_precision (default: highest)")
    p.add_argument("--out", default="runs/latest", help="output folder (default: runs/latest)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue the run saved in this model.npz")
    p.add_argument("--limit", type=int, help="train on the first N training samples only (a quick smoke run)")
    p.add_argument("--no-plot", action="store_true", help="skip curves.png")
    return p


def build_parser():
    parser = argparse.ArgumentParser(prog="fastnn", description="Train small neural networks on the CPU, fast.")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    b = sub.add_parser("bench", help="benchmarks against NumPy (and PyTorch / scikit-learn when installed)")
    b.add_argument("--quick", action="store_true", help="a short run (under 2 minutes)")
    b.add_argument("--out", default="bench-out", help="output folder for the table, JSON and PNGs")
    sub.add_parser("info", help="version, backend, ISA, threads, compiler")
    return parser


def _resolve_args(args):
    """Explicit flags win; on --resume the saved run's settings fill the rest; then the defaults."""
    saved = {}
    checkpoint = None
    if args.resume:
        import fastnn
        checkpoint = fastnn.load(args.resume)
        saved = checkpoint.meta.get("args", {})
    settings = {}
    for key, default in DEFAULTS.items():
        value = getattr(args, key)
        settings[key] = value if value is not None else saved.get(key, default)
    if checkpoint is not None and settings["schedule"] == "onecycle" and settings["epochs"] != saved.get("epochs"):
        raise SystemExit(f"fastnn train: cannot resume a one-cycle schedule planned for {saved.get('epochs')} epochs "
                         f"with --epochs {settings['epochs']}: the cycle's length is fixed when it starts")
    return settings, checkpoint


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
    from . import datasets, nn
    from .train import Trainer

    if args.backend:
        fastnn.set_backend(args.backend)
    if args.threads:
        fastnn.set_num_threads(args.threads)
    if args.matmul_precision:
        fastnn.set_float32_matmul_precision(args.matmul_precision)
    settings, checkpoint = _resolve_args(args)
    os.makedirs(args.out, exist_ok=True)

    load = datasets.load_mnist if settings["dataset"] == "mnist" else datasets.load_fashion_mnist
    t0 = time.perf_counter()
    (x_train, t_train), (x_test, t_test) = load(normalize=True, flatten=True)
    if settings["limit"]:
        x_train, t_train = x_train[:settings["limit"]], t_train[:settings["limit"]]
    print(f"{settings['dataset']}: {x_train.shape[0]} train / {x_test.shape[0]} test samples "
          f"(loaded in {time.perf_counter() - t0:.2f}s); {fastnn.info()}", flush=True)

    hidden = [int(h) for h in str(settings["hidden"]).split(",") if h.strip()]
    if checkpoint is not None:
        model = checkpoint.model
    else:
        model = nn.MLP([x_train.shape[1], *hidden, 10], settings["activation"], settings["dropout"],
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

    model_path = os.path.join(args.out, "model.npz")
    try:
        history = trainer.fit(x_train, t_train, validation_data=(x_test, t_test))
    except KeyboardInterrupt:
        fastnn.save(model_path, model, optimizer, args=settings, trainer=trainer.state_dict())
        print(f"\ninterrupted: checkpoint written to {model_path}; continue with "
              f"`fastnn train --resume {model_path} --out {args.out}`", file=sys.stderr, flush=True)
        return 130

    train_seconds = float(np.sum(history["seconds"]))
    test_loss, test_acc = history["val_loss"][-1], history["val_accuracy"][-1]
    fastnn.save(model_path, model, optimizer, args=settings, trainer=trainer.state_dict(),
                test_accuracy=test_acc)
    metrics = {"history": history, "train_seconds": train_seconds, "test_loss": test_loss,
               "test_accuracy": test_acc, "settings": settings, "info": fastnn.info()}
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    if not args.no_plot:
        _plot(history, os.path.join(args.out, "curves.png"))
    print(f"test accuracy {100 * test_acc:.2f}% after {trainer.epoch} epochs, {train_seconds:.2f}s of training; "
          f"wrote {args.out}/model.npz, metrics.json" + ("" if args.no_plot else ", curves.png"), flush=True)
    return 0


def cmd_info(_args):
    import fastnn
    for key, value in fastnn.info().items():
        print(f"{key:10s} {value}")
    return 0


def cmd_bench(args):
    from . import bench
    return bench.main(quick=args.quick, out=args.out)


def main(argv=None):
    args = build_parser().parse_args(argv)
    return {"train": cmd_train, "bench": cmd_bench, "info": cmd_info}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
