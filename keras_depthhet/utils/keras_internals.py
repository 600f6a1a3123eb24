"""The one place where private Keras APIs are touched; each accessor has a
canary test, so that a Keras upgrade breaks this module alone."""

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator

import keras


@contextlib.contextmanager
def unlocked_state(layer: keras.layers.Layer) -> Iterator[None]:
    """Lets built `layer` create variables; restores the lock on exit."""
    tracker = layer._tracker
    was_locked = tracker.locked
    tracker.unlock()
    try:
        yield
    finally:
        if was_locked:
            tracker.lock()


def is_compiled_trace(tensor) -> bool:
    """Whether a layer call runs in a `tf.function` or `jax.jit` trace (not
    in eager calls or Keras's symbolic shape inference)."""
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
    """Yields `layer`'s sub-layers depth first, once each, without inputs."""
    yield from (sub for _, sub in iter_layer_paths(layer))


def iter_layer_paths(
    layer: keras.layers.Layer,
) -> Iterator[tuple[str, keras.layers.Layer]]:
    """Like `iter_layers`, with each layer's path (`"branch_a/dense"`)."""
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
    """Makes `model` and its sub-layers compute in float32 in the block."""
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
    """Writes a running JAX `fit`'s state back into the variables."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


def reset_optimizer_state(optimizer) -> None:
    """Drops all but the iterations and learning rate of `optimizer` (and of
    a `LossScaleOptimizer`'s inner one) so that `build()` runs again."""
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


EMA_SLOTS = "_model_variables_moving_average"  # Moving averages (`use_ema`).


def optimizer_slots(optimizer) -> tuple[list, dict[str, list]]:
    """`(variables, {attribute: aligned list of slots})` of `optimizer`
    (of its inner one for a `LossScaleOptimizer`), found by length."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    variables = list(optimizer._trainable_variables)
    return variables, {
        name: list(value)
        for name, value in vars(optimizer).items()
        if name != "_trainable_variables"
        and isinstance(value, (list, tuple))
        and len(value) == len(variables) > 0
        and all(isinstance(v, (keras.Variable, type(None))) for v in value)
    }


def skip_saved_state_of_other_shapes(optimizer) -> None:
    """Makes `optimizer` skip, with a warning, saved slots of other shapes
    (Keras raises midway on them, e.g. a file saved before an event)."""
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
    """Forgets the traced functions; remakes an existing train function
    (a running `fit` calls it without checking)."""
    had_train_function = model.train_function is not None
    model.train_function = model.test_function = model.predict_function = None
    if had_train_function:
        model.make_train_function(force=True)


class _TrainerRetracingFilter(logging.Filter):
    """Drops TensorFlow's "frequent retracing" warning about the functions
    of Keras's TensorFlow trainer (all models share its key), which every
    growth event retraces once since the variables changed shape."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            "triggered tf.function retracing" in message
            and TRAINER_FUNCTIONS in message
        )


TRAINER_FUNCTIONS = "TensorFlowTrainer._make_function.<locals>."
"""How TensorFlow names the train, test and predict functions of Keras."""
_RETRACING_FILTER = _TrainerRetracingFilter()


def quiet_trainer_retracing(quiet: bool) -> None:
    """Adds (`quiet=True`) or removes the filter of TensorFlow's logger that
    drops its retracing warning about Keras's trainer functions."""
    logger = logging.getLogger("tensorflow")
    if quiet:
        logger.addFilter(_RETRACING_FILTER)
    else:
        logger.removeFilter(_RETRACING_FILTER)


def replace_sublayer(parent, old, new) -> None:
    """Puts layer `new` where `parent` holds layer `old`: every attribute
    and its place among `parent`'s tracked layers (so weights keep their
    order). Raises if `parent` does not hold `old` as an attribute."""
    names = [name for name, value in vars(parent).items() if value is old]
    if not names:
        raise ValueError(
            f"Layer {old.name!r} is not an attribute of {parent.name!r}, so "
            "it cannot be replaced there."
        )
    parent._tracker.replace_tracked_value("layers", old, new)
    for name in names:
        setattr(parent, name, new)


def is_functional(model: keras.Model) -> bool:
    """Whether `model` is a functional model (or a subclass of one, as
    KerasHub's backbones): Keras can rebuild its graph of layers."""
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def compile_arguments(model: keras.Model) -> dict:
    """The arguments `model.compile` was last called with, as objects."""
    if not getattr(model, "compiled", False):
        raise ValueError(
            f"Model {model.name!r} must be compiled to read its compile "
            "arguments. Call `model.compile(...)` first."
        )
    return dict(model._compile_config.config)


def backup_epoch(backup: keras.callbacks.BackupAndRestore) -> int | None:
    """The number of completed epochs the files of `backup` hold, or None."""
    path = backup._training_metadata_path
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return int(json.load(f)["epoch"])


def untracked_cache(model: keras.layers.Layer, name: str) -> dict:
    """A plain dict on `model` as attribute `name`, past Keras's tracker."""
    if model.__dict__.get(name) is None:
        object.__setattr__(model, name, {})
    return model.__dict__[name]


def _tensorflow_trainer():
    from keras.src.backend.tensorflow import trainer

    return trainer


def tensorflow_fit_functions() -> dict[str, Callable]:
    """The TensorFlow trainer functions multi-worker `fit` replaces."""
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
    """Installs replacements of `tensorflow_fit_functions`, process-wide."""
    trainer = _tensorflow_trainer()
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica


def in_multi_worker_mode(strategy) -> bool:
    """Whether Keras's TensorFlow trainer treats `strategy` as multi-worker."""
    return _tensorflow_trainer()._collective_all_reduce_multi_worker(strategy)


def symbolic_build(model: keras.Model, data_batch) -> None:
    """Builds `model`, its optimizer and metrics from one batch's specs."""
    model._symbolic_build(data_batch=data_batch)


def coordination_service_config():
    """This process's `CoordinationServiceConfig` protocol buffer, or None."""
    from tensorflow.python.eager import context

    return context.context()._coordination_service_config


def initialize_jax_rng() -> None:
    """Gives every JAX process the same Keras seed, unless one is set."""
    from keras.src.backend.jax.distribution_lib import initialize_rng

    initialize_rng()
