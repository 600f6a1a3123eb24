"""Applying a growth plan in place: the only code that changes a model.

`grow_model` adds the planned neuron pairs to the model's `GrowableDense`
layers, gives the optimizer slots for the new weights while keeping every
existing slot value, the iteration count and the learning-rate schedule's
position, and makes the model retrace its train/test/predict functions.
It works between `fit` calls and inside `fit` (from a callback) on the
JAX and TensorFlow backends, with or without a distribution.
"""

import contextlib
from collections.abc import Mapping

import keras
import numpy as np

from keras_depthhet.layers import GROWTH_SCALE, GrowableDense
from keras_depthhet.models.vit import growable_layers
from keras_depthhet.utils.keras_internals import (
    reset_compiled_functions,
    reset_optimizer_state,
    sync_trainer_state,
)


def _check_plan(plan, layers: Mapping[str, GrowableDense]) -> dict:
    if not isinstance(plan, Mapping):
        raise ValueError(
            "Argument `plan` must be a dict {layer_name: neuron indices}. "
            f"Received: plan of type {type(plan).__name__}"
        )
    checked = {}
    for name, indices in plan.items():
        if name not in layers:
            raise ValueError(
                "Argument `plan` names a layer that is not a GrowableDense "
                f"layer of the model. Received: {name!r}; known layers: "
                f"{sorted(layers)}"
            )
        layer = layers[name]
        if not layer.built:
            raise ValueError(
                f"Layer {name!r} must be built before it can grow. Build the "
                "model (call it on data) first."
            )
        array = np.asarray(indices)
        if (
            array.ndim != 1
            or array.size == 0
            or array.dtype == bool
            or not np.issubdtype(array.dtype, np.integer)
            or np.any((array < 0) | (array >= layer.units))
            or np.unique(array).size != array.size
        ):
            raise ValueError(
                "Argument `plan` must map each layer to a non-empty 1-D array "
                f"of distinct integers in [0, units={layer.units}). "
                f"Received: plan[{name!r}]={indices!r}"
            )
        checked[name] = array
    return checked


def _variable_scope(model: keras.Model):
    """Where new variables must be created for the model's distribution.

    TensorFlow creates mirrored variables only inside the model's strategy
    scope; JAX lays variables out from the active `keras.distribution`,
    which needs no scope here.
    """
    strategy = getattr(model, "distribute_strategy", None)
    if keras.backend.backend() == "tensorflow" and strategy is not None:
        return strategy.scope()
    return contextlib.nullcontext()


def _slot_values(optimizer) -> dict[str, np.ndarray]:
    """Optimizer variable values by path; raises if growth cannot keep them."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            "Growth cannot yet carry over the state of a "
            f"`LossScaleOptimizer`. Received: optimizer={optimizer!r}"
        )
    values = {}
    for variable in optimizer.variables:
        if variable.path in values:
            raise ValueError(
                "Cannot carry the optimizer state over growth: two optimizer "
                f"variables share the path {variable.path!r}. Give the "
                "model's weights unique paths (unique layer names)."
            )
        values[variable.path] = keras.ops.convert_to_numpy(variable)
    return values


def rebuild_optimizer(optimizer, trainable_variables) -> int:
    """Rebuilds `optimizer` for new `trainable_variables`, keeping its state.

    The optimizer object is kept (so `model.optimizer`, its config, its
    weight-decay exclusions and its learning-rate schedule stay the same);
    its slot variables are created again for `trainable_variables` and
    every slot whose path existed before gets its old value back, while
    slots of new variables start at zero. The iteration count and the
    learning-rate variable are never replaced.

    Args:
        optimizer: A built `keras.optimizers.Optimizer`.
        trainable_variables: The model's trainable variables after growth.

    Returns:
        The number of optimizer variables that start from zero.
    """
    old = _slot_values(optimizer)
    reset_optimizer_state(optimizer)
    optimizer.build(list(trainable_variables))
    fresh = 0
    for variable in optimizer.variables:
        value = old.get(variable.path)
        if value is not None and value.shape == tuple(variable.shape):
            variable.assign(value)
        else:
            fresh += 1
    return fresh


def grow_model(
    model: keras.Model,
    plan: Mapping[str, np.ndarray],
    *,
    scale: float = GROWTH_SCALE,
) -> int:
    """Grows `model` in place by `plan`, keeping its training state.

    Each planned layer gets one growth round at the planned neurons
    (`GrowableDense.grow`), so the model computes the same function. When
    the model has a built optimizer it is rebuilt with `rebuild_optimizer`
    (old slots kept by variable path, zero slots for the new weights, the
    iteration count kept), and the traced train/test/predict functions are
    remade so that the next step trains the new weights. Safe to call from
    a callback inside `fit`: on JAX the trainer's in-flight state is first
    written back to the variables; under a TensorFlow `tf.distribute`
    strategy the new variables are created in the model's strategy scope.

    The whole plan is validated before anything changes; an empty plan
    changes nothing.

    Args:
        model: A built Keras model containing `GrowableDense` layers.
        plan: `{layer_name: distinct neuron indices}`, e.g. from
            `select_neurons`.
        scale: Scale factor `s` of the new neuron pairs.

    Returns:
        The number of parameters added, `sum over layers of
        growth_cost(len(indices))`.

    Example:

    >>> model = vit(image_size=8, patch_size=4, num_channels=1,
    ...             num_classes=10, dim=16, depth=1, num_heads=2)
    >>> grow_model(model, {"block_0_mlp_fc1": [0, 5]})  # 2 * 2 * (16 + 1)
    68
    """
    layers = {layer.name: layer for layer in growable_layers(model)}
    plan = _check_plan(plan, layers)
    if not plan:
        return 0
    sync_trainer_state(model)
    optimizer = getattr(model, "optimizer", None)
    rebuild = optimizer is not None and optimizer.built
    if rebuild:
        _slot_values(optimizer)  # Fails early, before any layer changes.
    added = 0
    with _variable_scope(model):
        for name, layer in layers.items():
            if name in plan:
                added += layer.grow(plan[name], scale=scale)
        if rebuild:
            rebuild_optimizer(optimizer, model.trainable_variables)
    reset_compiled_functions(model)
    return added
