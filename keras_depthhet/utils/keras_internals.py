"""The one place where private Keras APIs are touched.

Keras locks a layer's state after `build()`; growth must add variables to a
built layer, and tools that analyse a model must walk nested layers. Both need
Keras internals, which are wrapped here once so that a Keras upgrade breaks a
single, tested module (`tests/utils/test_keras_internals.py`).
"""

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterator

import keras


@contextlib.contextmanager
def unlocked_state(layer: keras.layers.Layer) -> Iterator[None]:
    """Lets `layer` create variables although it is already built.

    The previous lock state is restored on exit, also when the body raises.
    """
    tracker = layer._tracker
    was_locked = tracker.locked
    tracker.unlock()
    try:
        yield
    finally:
        if was_locked:
            tracker.lock()


def is_compiled_trace(tensor) -> bool:
    """Whether a layer call runs inside a trace that a compiled function keeps.

    True inside `tf.function` graphs and `jax.jit` traces (those of
    `fit`, `predict`, `evaluate`, ...); False in eager calls and in Keras's
    own symbolic shape inference (functional model construction,
    `compute_output_spec`), which runs under Keras's `SymbolicScope`.
    """
    from keras.src.backend.common.symbolic_scope import in_symbolic_scope

    if in_symbolic_scope():
        return False
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.inside_function()
    if backend == "jax":
        import jax

        return isinstance(tensor, jax.core.Tracer)
    return False


def untrack_variable(layer: keras.layers.Layer, variable) -> None:
    """Removes `variable` from `layer`'s tracked state (used for rollback)."""
    layer._untrack_variable(variable)


def iter_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Yields `layer`'s sub-layers depth first (not `layer` itself), once each.

    Input layers are skipped, as in `Model.layers`.

    Works for functional, sequential and subclassed models and for layers
    that own other layers.
    """
    for _, sub in iter_layer_paths(layer):
        yield sub


def iter_layer_paths(
    layer: keras.layers.Layer,
) -> Iterator[tuple[str, keras.layers.Layer]]:
    """Like `iter_layers`, with each layer's path of container names.

    The path of a direct sub-layer is its name; deeper ones are joined
    with "/" (`"branch_a/dense"`). A layer reachable in several ways is
    yielded once, with the first path found.
    """
    seen = set()
    stack = [(sub.name, sub) for sub in reversed(layer._layers)]
    while stack:
        path, sub = stack.pop()
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        if not isinstance(sub, keras.layers.InputLayer):
            yield path, sub
        stack.extend((f"{path}/{c.name}", c) for c in reversed(sub._layers))


@contextlib.contextmanager
def float32_compute(model: keras.layers.Layer) -> Iterator[None]:
    """Makes `model` and its sub-layers compute in float32 inside the block.

    Used while an analysis traces the model, so that under a mixed
    precision policy (`mixed_float16`, `mixed_bfloat16`) its statistics
    are computed in float32; variables keep their dtype and values. The
    layers' policies are restored on exit, also when the body raises.
    """
    float32 = keras.dtype_policies.DTypePolicy("float32")
    layers = [model, *iter_layers(model)]
    saved = [(layer, layer._dtype_policy) for layer in layers]
    try:
        for layer, policy in saved:
            if policy.compute_dtype != "float32":
                layer._dtype_policy = float32
        yield
    finally:
        for layer, policy in saved:
            layer._dtype_policy = policy


def sync_trainer_state(model: keras.Model) -> None:
    """Writes the training state a JAX `fit` holds back into the variables.

    During an epoch the JAX trainer keeps weights, optimizer and metric
    values in `model._jax_state` and empties the variables; the fit loop
    re-reads the variables after a sync, so growth that runs inside `fit`
    (also mid-epoch) sees current values and its new variables are picked
    up by the next step. A no-op on other backends.
    """
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


def reset_optimizer_state(optimizer) -> None:
    """Drops `optimizer`'s per-variable slots so that `build()` runs again.

    The iteration counter and the learning-rate variable are kept (so the
    step count and a schedule's position survive); slot variables, the
    variable index and the weight-decay exclusion cache (keyed by variable
    identity) are cleared. Weight-decay exclusion rules are kept. For a
    `LossScaleOptimizer` its inner optimizer is reset the same way and its
    loss-scale variables are dropped too (`build()` remakes them; the
    caller restores their values).
    """
    keep = {id(optimizer._iterations)}
    if isinstance(optimizer._learning_rate, keras.Variable):
        keep.add(id(optimizer._learning_rate))
    inner = getattr(optimizer, "inner_optimizer", None)
    own = optimizer._variables if inner is not None else optimizer.variables
    for variable in list(own):
        if id(variable) not in keep:
            optimizer._untrack_variable(variable)
    optimizer._trainable_variables_indices.clear()
    optimizer._trainable_variables = []
    optimizer._exclude_from_weight_decay_cache = {}
    optimizer.built = False
    if inner is not None:
        reset_optimizer_state(inner)


EMA_SLOTS = "_model_variables_moving_average"
"""Name of the optimizer's aligned list of moving averages (`use_ema`)."""


def optimizer_slots(optimizer) -> tuple[list, dict[str, list]]:
    """The variables `optimizer` was built for and its per-variable slots.

    Keras optimizers keep each kind of slot (`_momentums`, `_velocities`,
    moving averages, gradient accumulators, ...) in a list aligned with
    the variables they were built for, entries None where a variable has
    none. Such lists are found by shape, not by name, so that any
    optimizer written in that style is covered. For a `LossScaleOptimizer`
    they are its inner optimizer's (its own variables are scalars).

    Returns:
        `(variables, {attribute: aligned list})`.
    """
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    variables = list(optimizer._trainable_variables)
    slots = {}
    for name, value in vars(optimizer).items():
        if (
            name != "_trainable_variables"
            and isinstance(value, (list, tuple))
            and len(value) == len(variables)
            and len(value) > 0
            and all(isinstance(v, (keras.Variable, type(None))) for v in value)
        ):
            slots[name] = list(value)
    return variables, slots


def skip_saved_state_of_other_shapes(optimizer) -> None:
    """Makes `optimizer` skip, with a warning, saved slots of other shapes.

    Keras's `Optimizer.load_own_variables` skips a saved optimizer state
    with another number of variables (it warns "Skipping variable loading
    for optimizer"), but one with the same number of variables and other
    shapes makes it raise midway, after assigning the first ones. Growth
    widens a layer's growth pairs without adding variables once the layer
    has grown, so `model.load_weights` of a file saved before a later
    event (a best-epoch `ModelCheckpoint`) would fail there. This instance
    (and a `LossScaleOptimizer`'s inner optimizer) then skips such a state
    as Keras skips one of another length, and keeps its own.
    `tests/utils/test_keras_internals.py` fails if Keras changes either
    behaviour.
    """
    for target in (optimizer, getattr(optimizer, "inner_optimizer", None)):
        if target is None or "load_own_variables" in vars(target):
            continue
        target.load_own_variables = _skipping_loader(target)


def _skipping_loader(optimizer):
    keras_load = optimizer.load_own_variables

    def load_own_variables(store):
        variables = optimizer.variables
        if len(store.keys()) == len(variables) and any(
            tuple(store[str(i)].shape) != tuple(v.shape)
            for i, v in enumerate(variables)
        ):
            warnings.warn(
                f"Skipping variable loading for optimizer "
                f"'{optimizer.name}', because the shapes of its variables "
                "differ from the saved optimizer's: the model has grown "
                "since the file was saved. The optimizer keeps its state.",
                stacklevel=2,
            )
            return
        keras_load(store)

    return load_own_variables


def reset_compiled_functions(model: keras.Model) -> None:
    """Forgets the model's traced train/test/predict functions.

    Traced functions capture the variable list; after growth they must be
    remade. The train function is remade at once when it existed, because
    a running `fit` calls `model.train_function` without checking it.
    """
    had_train_function = model.train_function is not None
    model.train_function = None
    model.test_function = None
    model.predict_function = None
    if had_train_function:
        model.make_train_function(force=True)


def compile_arguments(model: keras.Model) -> dict:
    """The arguments `model.compile` was last called with, as given.

    `get_compile_config()` serializes them, which would replace the
    optimizer and metric objects with new ones on `compile_from_config`;
    compiling a rebuilt model needs the objects themselves.
    """
    if not getattr(model, "compiled", False):
        raise ValueError(
            f"Model {model.name!r} must be compiled to read its compile "
            "arguments. Call `model.compile(...)` first."
        )
    return dict(model._compile_config.config)


def backup_epoch(backup: keras.callbacks.BackupAndRestore) -> int | None:
    """The number of completed epochs the files of `backup` hold, or None.

    Keras's `BackupAndRestore` records it beside its weights, in a JSON
    file it names `training_metadata.json` (key `"epoch"`), and sets the
    epoch `fit` resumes at from it; it has no public accessor. A subclass
    that must prepare the model for its own backup before the weights are
    loaded (`keras_depthhet.growth.GrowthBackupAndRestore`) reads it here.
    `tests/utils/test_keras_internals.py` fails if Keras changes it.
    """
    path = backup._training_metadata_path
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return int(json.load(f)["epoch"])


def untracked_cache(model: keras.layers.Layer, name: str) -> dict:
    """A plain dict kept on `model` as attribute `name`, made on first use.

    Keras's `Layer.__setattr__` hands whatever is set on a layer to its
    tracker, which wraps a dict in a tracked one and looks inside it for
    variables and layers. A cache of compiled functions keyed by the
    model's state must stay out of that (and out of saving), so it is set
    past the tracker, with `object.__setattr__`.
    `tests/utils/test_keras_internals.py` fails if Keras stops wrapping
    dicts or if such an attribute shows in the model's state.
    """
    cache = model.__dict__.get(name)
    if cache is None:
        cache = {}
        object.__setattr__(model, name, cache)
    return cache


def _tensorflow_trainer():
    from keras.src.backend.tensorflow import trainer

    return trainer


def tensorflow_fit_functions() -> dict[str, Callable]:
    """The functions of Keras's TensorFlow trainer that multi-worker needs.

    `TensorFlowTrainer._maybe_symbolic_build` and the trainer module's
    `reduce_per_replica`, by qualified name, as installed now:
    `keras_depthhet.utils.multi_worker.enable_multi_worker_fit` replaces
    them with `replace_tensorflow_fit_functions`.
    """
    trainer = _tensorflow_trainer()
    return {
        "TensorFlowTrainer._maybe_symbolic_build": (
            trainer.TensorFlowTrainer._maybe_symbolic_build
        ),
        "reduce_per_replica": trainer.reduce_per_replica,
    }


def replace_tensorflow_fit_functions(
    maybe_symbolic_build: Callable, reduce_per_replica: Callable
) -> None:
    """Installs replacements of the functions `tensorflow_fit_functions`
    returns, process-wide (the trainer looks both up at each call)."""
    trainer = _tensorflow_trainer()
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica


def in_multi_worker_mode(strategy) -> bool:
    """Whether Keras's TensorFlow trainer treats `strategy` as multi-worker.

    Keras's own test: a `MultiWorkerMirroredStrategy` whose cluster has
    two or more workers.
    """
    return _tensorflow_trainer()._collective_all_reduce_multi_worker(strategy)


def symbolic_build(model: keras.Model, data_batch) -> None:
    """Builds `model`, its optimizer and metrics from one batch's specs.

    What Keras's trainers do before the first step (`Trainer.
    _symbolic_build`): nothing is computed, only shapes and dtypes read.
    """
    model._symbolic_build(data_batch=data_batch)


def coordination_service_config():
    """TensorFlow's coordination service configuration of this process.

    The `CoordinationServiceConfig` protocol buffer that
    `configure_coordination_service` stored, which the service reads when
    it starts, or None before it is configured. It has no public accessor;
    fields `configure_coordination_service` does not take (such as
    `cluster_register_with_barrier`) can only be set on it.
    """
    from tensorflow.python.eager import context

    return context.context()._coordination_service_config


def initialize_jax_rng() -> None:
    """Gives every JAX process the same Keras seed, unless one is set.

    What `keras.distribution.initialize` does after starting
    `jax.distributed`: each process draws a seed and the processes' seeds
    are summed across them.
    """
    from keras.src.backend.jax.distribution_lib import initialize_rng

    initialize_rng()

