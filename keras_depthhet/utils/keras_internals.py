"""The one place where private Keras APIs are touched.

Keras locks a layer's state after `build()`; growth must add variables to a
built layer, and tools that analyse a model must walk nested layers. Both need
Keras internals, which are wrapped here once so that a Keras upgrade breaks a
single, tested module (`tests/utils/test_keras_internals.py`).
"""

import contextlib
from collections.abc import Iterator

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


def untrack_variable(layer: keras.layers.Layer, variable) -> None:
    """Removes `variable` from `layer`'s tracked state (used for rollback)."""
    layer._untrack_variable(variable)


def iter_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Yields `layer`'s sub-layers depth first (not `layer` itself), once each.

    Input layers are skipped, as in `Model.layers`.

    Works for functional, sequential and subclassed models and for layers
    that own other layers.
    """
    seen = set()
    stack = list(reversed(layer._layers))
    while stack:
        sub = stack.pop()
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        if not isinstance(sub, keras.layers.InputLayer):
            yield sub
        stack.extend(reversed(sub._layers))


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
    identity) are cleared. Weight-decay exclusion rules are kept.
    """
    keep = {id(optimizer._iterations)}
    if isinstance(optimizer._learning_rate, keras.Variable):
        keep.add(id(optimizer._learning_rate))
    for variable in optimizer.variables:
        if id(variable) not in keep:
            optimizer._untrack_variable(variable)
    optimizer._trainable_variables_indices.clear()
    optimizer._trainable_variables = []
    optimizer._exclude_from_weight_decay_cache = {}
    optimizer.built = False


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
