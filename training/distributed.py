"""Distributed training with growth: `fit_with_growth`.

Growth changes a model's set of variables, which distributed runtimes
treat as fixed. `fit_with_growth` therefore trains in `model.fit`
segments between growth events and, at each event, analyses the model,
selects neurons and rebuilds the model functionally
(`rebuild_grown_model`: a new model from the grown config, created in the
TensorFlow strategy scope or under the active `keras.distribution`, with
weights and optimizer slots carried over by path), then continues with
`initial_epoch`. One code path serves one device and many.

The runtimes (see `docs/guides/distributed.md`):

- TensorFlow: `"mirrored"` (`tf.distribute.MirroredStrategy` over the
  local GPUs, or the logical CPUs when there is no GPU) and
  `"multi_worker_mirrored"` (`tf.distribute.MultiWorkerMirroredStrategy`,
  configured by the `TF_CONFIG` environment variable).
- JAX: `"data_parallel"` (`keras.distribution.DataParallel` over all
  devices, of all processes after `initialize_multi_host`) and
  `"model_parallel"` (`keras.distribution.ModelParallel` on a
  `(batch, model)` mesh, the ViT's `qkv`/`fc1` kernels split by output
  and `proj`/`fc2` kernels by input neuron, everything else replicated).
- Both: `"none"`, and `"auto"`: the backend's data-parallel runtime when
  more than one device is visible, else `"none"`. A
  `tf.distribute.Strategy` or `keras.distribution.Distribution` object
  is also accepted.
"""

import json
import time
from collections.abc import Callable

import keras

from keras_depthhet.growth.callback import GrowthCallback
from keras_depthhet.growth.rebuild import rebuild_grown_model
from keras_depthhet.models.vit import growable_layers
from training.distributed_runtime import (
    Runtime,
    check_global_batch,
    check_model_placement,
    resolve_distribution,
)

__all__ = ["GrowthRun", "fit_with_growth"]


class GrowthRun:
    """What `fit_with_growth` returns.

    Attributes:
        model: The final (grown) model.
        history: One `keras.callbacks.History` over all segments, with true
            epoch numbers.
        events: One dict per growth event, as `GrowthCallback.history`,
            plus `"seconds"`: `{"analysis": ..., "rebuild": ...}`.
        runtime: The `Runtime` the run used (name, replicas, strategy or
            distribution).
    """

    def __init__(self, model, history, events, runtime):
        self.model = model
        self.history = history
        self.events = events
        self.runtime = runtime


def _has_batch_end(callback) -> bool:
    base = keras.callbacks.Callback
    return any(
        getattr(type(callback), name) is not getattr(base, name)
        for name in ("on_batch_end", "on_train_batch_end")
    )


class _Continuing(keras.callbacks.Callback):
    """Forwards callbacks of consecutive `fit` segments as one run.

    `on_train_begin` reaches the callbacks only in the first segment (so
    `CSVLogger` writes one file, `EarlyStopping` keeps its patience) and
    `on_train_end` only when `finish` is called. A rebuilt model is handed
    over with the base `Callback.set_model`, which only swaps the model
    (`TensorBoard.set_model` would also open new writers).
    Every epoch `logs["num_params"]` is set before the callbacks see it.
    """

    def __init__(self, callbacks):
        super().__init__()
        self.callbacks = list(callbacks)
        self.last_epoch = None
        self._started = False
        # Batch-level hooks make Keras dispatch synchronously; keep async
        # dispatch when none of the wrapped callbacks needs them.
        self.async_safe = all(
            getattr(cb, "async_safe", False) or not _has_batch_end(cb)
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

    def finish(self, logs=None):
        for callback in self.callbacks:
            callback.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch = epoch + 1
        if logs is not None:
            logs["num_params"] = int(self.model.count_params())
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)

    def _forward(name):
        def hook(self, *args, **kwargs):
            for callback in self.callbacks:
                getattr(callback, name)(*args, **kwargs)

        hook.__name__ = name
        return hook

    on_train_batch_begin = _forward("on_train_batch_begin")
    on_train_batch_end = _forward("on_train_batch_end")
    on_test_begin = _forward("on_test_begin")
    on_test_end = _forward("on_test_end")
    on_test_batch_begin = _forward("on_test_batch_begin")
    on_test_batch_end = _forward("on_test_batch_end")
    del _forward


class _Planner:
    """Decides growth plans with a `GrowthCallback`'s `plan_growth`.

    The callback is never given to `fit` (it would grow in place); its
    schedule (`is_event_epoch`), scores and budget rule
    (`plan_growth`) decide, and its `history` and `log_path` record.
    """

    def __init__(self, policy: GrowthCallback, model):
        self.policy = policy
        policy.set_model(model)
        policy.on_train_begin()  # Checks the layers before training.

    def plan(self, model, epoch: int):
        """`(plan, event)` for the event after `epoch`, or `None`."""
        self.policy.set_model(model)
        start = time.perf_counter()
        decision = self.policy.plan_growth(epoch)
        if decision is None:
            return None
        plan = decision.pop("plan")
        decision["seconds"] = {"analysis": time.perf_counter() - start}
        return plan, decision

    def report(self, event: dict) -> None:
        policy = self.policy
        policy.history.append(event)
        if policy.log_path is not None:
            with open(policy.log_path, "a") as f:
                f.write(json.dumps(event) + "\n")
        if policy.verbose:
            print(
                f"fit_with_growth: epoch {event['epoch']}: grew "
                f"{sum(event['neurons'].values())} neurons, parameters "
                f"{event['params_before']:,} -> {event['params_after']:,} "
                f"(analysis {event['seconds']['analysis']:.2f} s, rebuild "
                f"{event['seconds']['rebuild']:.2f} s)."
            )


def _growth_policy(growth) -> GrowthCallback | None:
    if growth is None or isinstance(growth, GrowthCallback):
        return growth
    if isinstance(growth, dict):
        return GrowthCallback(**growth)
    raise ValueError(
        "Argument `growth` must be None, a dict of `GrowthCallback` "
        "arguments or a `GrowthCallback`. "
        f"Received: growth of type {type(growth).__name__}"
    )


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
    return callbacks


def _event_epochs(policy, start: int, epochs: int) -> list[int]:
    if policy is None:
        return []
    return [e for e in range(start + 1, epochs + 1) if policy.is_event_epoch(e)]


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

    `build_model()` is called in the chosen runtime's scope (TensorFlow
    strategy scope, or with the JAX `keras.distribution` active) and must
    return a compiled model with `GrowableDense` layers. Training runs in
    `model.fit` segments ending at the growth events of `growth` (the end
    of epoch `e`, counting from 1, when `e >= warmup` and
    `(e - warmup) % interval == 0`, as `GrowthCallback`). At each event
    the model is analysed (`GrowthCallback.compute_scores`), neurons are
    selected (`select_neurons`) and the model is rebuilt functionally
    (`rebuild_grown_model`), with the same optimizer and its state; the
    next segment starts at `initial_epoch=e`. The result equals in-place
    growth with `GrowthCallback` within float tolerance.

    The callbacks see one run: `on_train_begin`/`on_train_end` once,
    true epoch numbers, the current model, and `logs["num_params"]` every
    epoch (one CSV file, one TensorBoard run). Training stops early when
    a callback sets `model.stop_training`.

    Everything that can be checked is checked before the first step: the
    distribution against the backend and devices, the growth arguments,
    the model's placement (built in the scope), and that the global batch
    divides evenly among the replicas.

    Args:
        build_model: Function of no arguments returning a compiled model.
        train_data: Training data as `model.fit` takes it (`(x, y)` arrays
            with `batch_size`, a batched `tf.data.Dataset`, ...).
        val_data: Optional validation data for `model.fit`.
        epochs: Positive integer, the epoch to train up to.
        growth: `None` (no growth), a dict of `GrowthCallback` arguments,
            or a `GrowthCallback` (used for its schedule, scores and
            `history`/`log_path`; never passed to `fit`).
        distribution: `"auto"`, `"none"`, `"mirrored"`,
            `"multi_worker_mirrored"`, `"data_parallel"`,
            `"model_parallel"`, a strategy or distribution object, or a
            `training.distributed_runtime.Runtime`.
        callbacks: Keras callbacks for the whole run.
        batch_size: Global batch size for array data (default 32).
        steps_per_epoch: As in `model.fit`.
        validation_steps: As in `model.fit`.
        initial_epoch: Epoch to start from (for resumed runs).
        shuffle: As in `model.fit`.
        verbose: As in `model.fit`.

    Returns:
        A `GrowthRun` with the final `model`, the `history`, the `events`
        and the `runtime`.

    Example:

    ```python
    run = fit_with_growth(
        lambda: compiled_model(),
        (x_train, y_train),
        (x_val, y_val),
        epochs=40,
        growth=dict(interval=8, warmup=12, param_budget=3000,
                    layer_threshold=4, analysis_data=(x_an, y_an)),
        distribution="auto",
        batch_size=64,
    )
    run.model.count_params()
    ```
    """
    if isinstance(build_model, keras.Model) or not callable(build_model):
        raise ValueError(
            "Argument `build_model` must be a function that builds and "
            "compiles the model (it is called inside the distribution "
            f"scope). Received: build_model={build_model!r}"
        )
    for name, value, low in (
        ("epochs", epochs, 1),
        ("initial_epoch", initial_epoch, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(
                f"Argument `{name}` must be an integer >= {low}. "
                f"Received: {name}={value!r}"
            )
    if initial_epoch >= epochs:
        raise ValueError(
            "Argument `initial_epoch` must be smaller than `epochs`. "
            f"Received: initial_epoch={initial_epoch}, epochs={epochs}"
        )
    policy = _growth_policy(growth)
    callbacks = _check_callbacks(callbacks)
    runtime: Runtime = resolve_distribution(distribution)
    check_global_batch(train_data, batch_size, runtime)
    with runtime.scope():
        model = build_model()
        if not isinstance(model, keras.Model) or not model.compiled:
            raise ValueError(
                "Argument `build_model` must return a compiled keras.Model. "
                f"Received: {model!r}"
            )
        check_model_placement(model, runtime)
        if policy is not None and not growable_layers(model):
            raise ValueError(
                "`fit_with_growth` with `growth` needs a model with "
                f"GrowableDense layers. Received: model {model.name!r}"
            )
        planner = None if policy is None else _Planner(policy, model)
        history = keras.callbacks.History()
        run_callbacks = _Continuing([history, *callbacks])
        events = []
        start = initial_epoch
        for end in sorted({*_event_epochs(policy, start, epochs), epochs}):
            if end > start:
                model.fit(
                    **_fit_inputs(train_data),
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
                planner is not None
                and run_callbacks.last_epoch == end
                and policy.is_event_epoch(end)
            ):
                model, event = _grow_event(model, planner, end, run_callbacks)
                if event is not None:
                    events.append(event)
            start = end
            if stopped:
                break
        run_callbacks.finish(_last_logs(history))
    history.set_model(model)
    model.history = history
    return GrowthRun(model, history, events, runtime)


def _fit_inputs(data) -> dict:
    """`model.fit`'s `x`, `y`, `sample_weight` from `(x, y[, w])` or data."""
    if isinstance(data, tuple) and len(data) in (2, 3):
        return dict(zip(("x", "y", "sample_weight"), data, strict=False))
    return {"x": data}


def _last_logs(history) -> dict:
    return {key: values[-1] for key, values in history.history.items()}


def _grow_event(model, planner: _Planner, epoch: int, run_callbacks):
    decided = planner.plan(model, epoch)
    if decided is None:
        return model, None
    plan, event = decided
    start = time.perf_counter()
    grown = rebuild_grown_model(model, plan, scale=planner.policy.scale)
    event["seconds"]["rebuild"] = time.perf_counter() - start
    event["params_after"] = int(grown.count_params())
    event["params_added"] = event["params_after"] - event["params_before"]
    event["total_grown"] = {
        layer.name: layer.num_grown for layer in growable_layers(grown)
    }
    planner.report(event)
    if grown is not model:
        run_callbacks.set_model(grown)
    return grown, event
