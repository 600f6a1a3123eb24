"""Growth by rebuilding the model between `fit` segments: `fit_with_growth`
(distributed runtimes treat a model's variables as fixed)."""

import time
from collections.abc import Callable

import keras

from keras_depthhet.distributed.runtime import (
    check_global_batch,
    check_model_placement,
    resolve_distribution,
)
from keras_depthhet.growth.callback import GrowthCallback, log_num_params
from keras_depthhet.growth.rebuild import grown_config, rebuild_grown_model
from keras_depthhet.layers.lookup import growable_layer_map
from keras_depthhet.utils.keras_internals import quiet_trainer_retracing
from keras_depthhet.utils.validation import int_at_least


class GrowthRun:
    """What `fit_with_growth` returns.

    Attributes:
        model: The final (grown) model.
        history: One `keras.callbacks.History` over all segments, with true
            epoch numbers.
        events: One dict per growth event, as `GrowthCallback.history`,
            plus `"seconds"`: `{"analysis": ..., "rebuild": ...}`.
        runtime: The `Runtime` the run used.
    """

    def __init__(self, model, history, events, runtime):
        self.model = model
        self.history = history
        self.events = events
        self.runtime = runtime


class _Continuing(keras.callbacks.Callback):
    """Shows `callbacks` the `fit` segments as one run: one `on_train_begin`,
    `on_train_end` at `finish`, a rebuilt model through the base `set_model`
    (no new TensorBoard writers), `num_params` in every epoch's logs."""

    def __init__(self, callbacks):
        super().__init__()
        self.callbacks = list(callbacks)
        self.last_epoch = None
        self._started = False
        # Batch-level hooks make Keras dispatch synchronously.
        base = keras.callbacks.Callback
        self.async_safe = all(
            getattr(cb, "async_safe", False)
            or all(
                getattr(type(cb), h) is getattr(base, h)
                for h in ("on_batch_end", "on_train_batch_end")
            )
            for cb in self.callbacks
        )

    def set_model(self, model):
        super().set_model(model)
        for callback in self.callbacks:
            if self._started:
                keras.callbacks.Callback.set_model(callback, model)
            else:
                callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for callback in self.callbacks:
            callback.set_params(params)

    def on_train_begin(self, logs=None):
        if not self._started:
            self._started = True
            for callback in self.callbacks:
                callback.on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch = epoch + 1
        log_num_params(self.model, logs)
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)

    def _forward(name):
        def hook(self, *args, **kwargs):
            for callback in self.callbacks:
                getattr(callback, name)(*args, **kwargs)

        hook.__name__ = name
        return hook

    finish = _forward("on_train_end")
    on_epoch_begin = _forward("on_epoch_begin")
    on_train_batch_begin = _forward("on_train_batch_begin")
    on_train_batch_end = _forward("on_train_batch_end")
    on_test_begin = _forward("on_test_begin")
    on_test_end = _forward("on_test_end")
    on_test_batch_begin = _forward("on_test_batch_begin")
    on_test_batch_end = _forward("on_test_batch_end")
    del _forward


def _growth_callback(growth) -> GrowthCallback | None:
    if isinstance(growth, dict):
        growth = GrowthCallback(**growth)
    if growth is None:
        return None
    if not isinstance(growth, GrowthCallback):
        raise ValueError(
            "Argument `growth` must be None, a dict of `GrowthCallback` "
            "arguments or a `GrowthCallback`. "
            f"Received: growth of type {type(growth).__name__}"
        )
    if growth.analysis_data is None and growth.criterion != "random":
        raise ValueError(
            "`fit_with_growth` scores neurons on `analysis_data` (it keeps "
            "no training batches between its `fit` segments); pass it in "
            f"`growth`. Received: analysis_data=None with criterion="
            f"{growth.criterion!r}"
        )
    return growth


def _check_callbacks(callbacks) -> list:
    callbacks = list(callbacks or [])
    for callback in callbacks:
        if isinstance(callback, GrowthCallback):
            raise ValueError(
                "Pass the growth schedule as `growth=` (a dict of "
                "`GrowthCallback` arguments or the callback), not in "
                "`callbacks`: it would grow the model in place. "
                f"Received: callbacks containing {callback!r}"
            )
        if not isinstance(callback, keras.callbacks.Callback):
            raise ValueError(
                "Argument `callbacks` must be a list of Keras callbacks. "
                f"Received: {callback!r}"
            )
        if isinstance(callback, keras.callbacks.BackupAndRestore):
            raise ValueError(
                "`BackupAndRestore` does not follow the model that "
                "`fit_with_growth` rebuilds at each event; to back up and "
                "resume, train with `model.fit` and `GrowthCallback`. "
                f"Received: {callback!r}"
            )
        if isinstance(callback, keras.callbacks.EarlyStopping) and (
            callback.restore_best_weights
        ):
            raise ValueError(
                "`EarlyStopping(restore_best_weights=True)` does not follow "
                "the model that `fit_with_growth` rebuilds at each event; use "
                "`model.fit`, `GrowthCallback` and `keras_depthhet.growth."
                f"GrowthEarlyStopping` instead. Received: {callback!r}"
            )
    return callbacks


def fit_with_growth(
    build_model: Callable[[], keras.Model],
    train_data,
    val_data=None,
    *,
    epochs: int,
    growth=None,
    distribution="auto",
    callbacks=None,
    batch_size: int | None = None,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    initial_epoch: int = 0,
    shuffle: bool = True,
    verbose="auto",
) -> GrowthRun:
    """Trains a growing model, one device or many, rebuilding at events.

    `build_model()` is called in the chosen runtime's scope and must return
    a compiled model with `GrowableDense` layers. It trains in `model.fit`
    segments up to each growth event, where the model is rebuilt with its
    optimizer state (`rebuild_grown_model`; in-place growth within float
    tolerance). The callbacks see one run (one `on_train_begin`, true epoch
    numbers, `logs["num_params"]`). Arguments are checked before training.

    Args:
        build_model: Function of no arguments returning a compiled model.
        train_data: Training data as `model.fit` takes it (`(x, y)` arrays
            with `batch_size`, a batched `tf.data.Dataset`, ...).
        val_data: Optional validation data for `model.fit`.
        epochs: Positive integer, the epoch to train up to.
        growth: `None` (no growth), a dict of `GrowthCallback` arguments,
            or a `GrowthCallback` (never passed to `fit`). Unless
            `criterion="random"`, it needs `analysis_data`.
        distribution: A name of `DISTRIBUTIONS`, a strategy or
            distribution object, or a `Runtime` (see
            `resolve_distribution`).
        callbacks: Keras callbacks for the whole run (not
            `BackupAndRestore` or `EarlyStopping(restore_best_weights=
            True)`, which cannot follow a rebuilt model).
        batch_size: Global batch size for array data (default 32).
        steps_per_epoch: As in `model.fit`.
        validation_steps: As in `model.fit`.
        initial_epoch: Epoch to start from (for resumed runs).
        shuffle: As in `model.fit`.
        verbose: As in `model.fit`.

    Returns:
        A `GrowthRun`.

    Examples:
        ```python
        def build_model():
            model = vit(image_size=8, patch_size=4, num_channels=1,
                        num_classes=10, dim=16, depth=1, num_heads=2)
            model.compile("adam", keras.losses.SparseCategoricalCrossentropy())
            return model

        x, y = np.random.rand(32, 8, 8, 1), np.random.randint(0, 10, 32)
        run = fit_with_growth(
            build_model, (x, y), epochs=2, batch_size=16, verbose=0,
            growth=dict(interval=1, warmup=1, param_budget=200,
                        layer_threshold=0, analysis_data=(x, y), verbose=0),
        )
        print(run.model.count_params(), [e["epoch"] for e in run.events])
        ```
    """
    if isinstance(build_model, keras.Model) or not callable(build_model):
        raise ValueError(
            "Argument `build_model` must be a function that builds and "
            "compiles the model (it is called inside the distribution "
            f"scope). Received: build_model={build_model!r}"
        )
    epochs = int_at_least("epochs", epochs, 1)
    initial_epoch = int_at_least("initial_epoch", initial_epoch, 0)
    if initial_epoch >= epochs:
        raise ValueError(
            "Argument `initial_epoch` must be smaller than `epochs`. "
            f"Received: initial_epoch={initial_epoch}, epochs={epochs}"
        )
    growth = _growth_callback(growth)
    callbacks = _check_callbacks(callbacks)
    runtime = resolve_distribution(distribution)
    check_global_batch(train_data, batch_size, runtime)
    with runtime.scope():
        model = build_model()
        if not isinstance(model, keras.Model) or not model.compiled:
            raise ValueError(
                "Argument `build_model` must return a compiled keras.Model. "
                f"Received: {model!r}"
            )
        check_model_placement(model, runtime)
        if growth is not None:
            if not growable_layer_map(model):
                raise ValueError(
                    "`fit_with_growth` with `growth` needs a model with "
                    "growable layers (see `keras_depthhet.make_growable`). "
                    f"Received: model {model.name!r}"
                )
            _check_rebuildable(model)
            growth.set_model(model)
            growth.on_train_begin()  # Checks, and agrees between workers.
        history = keras.callbacks.History()
        run_callbacks = _Continuing([history, *callbacks])
        events = []
        inputs = {"x": train_data}
        if isinstance(train_data, tuple) and len(train_data) in (2, 3):
            keys = ("x", "y", "sample_weight")[: len(train_data)]
            inputs = dict(zip(keys, train_data, strict=True))
        start, ends = initial_epoch, {epochs}
        if growth is not None:
            ends.update(filter(growth.is_event_epoch, range(start + 1, epochs)))
        try:
            for end in sorted(ends):  # All after `start`.
                model.fit(
                    **inputs,
                    validation_data=val_data,
                    epochs=end,
                    initial_epoch=start,
                    batch_size=batch_size,
                    steps_per_epoch=steps_per_epoch,
                    validation_steps=validation_steps,
                    shuffle=shuffle,
                    callbacks=[run_callbacks],
                    verbose=verbose,
                )
                stopped = model.stop_training
                if (
                    growth is not None
                    and run_callbacks.last_epoch == end
                    and growth.is_event_epoch(end)
                ):
                    model, event = _grow_event(model, growth, end)
                    if event is not None:
                        events.append(event)
                        run_callbacks.set_model(model)
                start = end
                if stopped:
                    break
        finally:
            quiet_trainer_retracing(False)  # Added by on_train_begin.
        run_callbacks.finish({k: v[-1] for k, v in history.history.items()})
    history.set_model(model)
    model.history = history
    return GrowthRun(model, history, events, runtime)


def _check_rebuildable(model) -> None:
    """Raises if a growable layer's growth is not in `model`'s config (a
    layer `make_growable` replaced inside another layer), which the
    rebuild at each event would lose."""
    config = model.get_config()
    lost = []
    for key in growable_layer_map(model):
        try:
            grown_config(config, {key: [0]})
        except ValueError:
            lost.append(key)
    if lost:
        raise ValueError(
            "`fit_with_growth` rebuilds the model from its config at each "
            f"event, and the config of model {model.name!r} does not record "
            f"the growth of layers {lost} (layers inside other layers, as "
            "`make_growable` converts them in a MultiHeadAttention or a "
            "KerasHub backbone). Train it with `model.fit` and "
            "`GrowthCallback` instead."
        )


def _grow_event(model, growth: GrowthCallback, epoch: int):
    """`(rebuilt model, event)` at the end of `epoch`, or `(model, None)`."""
    growth.set_model(model)
    start = time.perf_counter()
    decision = growth.plan_growth(epoch)
    if decision is None:
        return model, None
    decided = time.perf_counter()
    plan = decision.pop("plan")
    grown = rebuild_grown_model(model, plan, scale=growth.scale)
    seconds = {
        "analysis": decided - start,
        "rebuild": time.perf_counter() - decided,
    }
    growth.set_model(grown)
    added = grown.count_params() - model.count_params()
    event = {**growth.event_record(decision, plan, added), "seconds": seconds}
    growth.report(event)
    return grown, event
