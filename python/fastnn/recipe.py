"""The default training recipe, shared by `fastnn train` and `fastnn bench`.

The defaults are tuned for the least training time to >= 98% MNIST test
accuracy: a short one-cycle schedule with label smoothing.
"""

DEFAULTS = {
    "dataset": "mnist", "hidden": "256,128", "activation": "relu", "epochs": 2, "batch_size": 128,
    "optimizer": "adam", "lr": 1e-2, "schedule": "onecycle", "label_smoothing": 0.1, "dropout": 0.0, "seed": 0,
    "limit": None, "data": None, "label_column": None,
}

OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("none", "onecycle", "cosine", "step", "plateau")


def make_optimizer(name, params, lr):
    """The optimizer called `name` (one of OPTIMIZERS) over params at learning rate lr."""
    from . import optim
    if name == "sgd":
        return optim.SGD(params, lr=lr)
    if name == "momentum":
        return optim.SGD(params, lr=lr, momentum=0.9)
    return {"adagrad": optim.Adagrad, "rmsprop": optim.RMSprop, "adam": optim.Adam, "adamw": optim.AdamW}[name](
        params, lr=lr)


def make_scheduler(name, optimizer, lr, epochs, steps_per_epoch):
    """The schedule called `name` (one of SCHEDULES), or None for 'none'; lr is onecycle's peak."""
    from .optim import lr_scheduler
    if name == "onecycle":
        return lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch)
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
    return None
