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

from keras_depthhet.layers import GrowableDense
from keras_depthhet.layers.lookup import growable_layer_map
from keras_depthhet.utils.keras_internals import (
    EMA_SLOTS,
    optimizer_slots,
    reset_compiled_functions,
    reset_optimizer_state,
    skip_saved_state_of_other_shapes,
    sync_trainer_state,
)
from keras_depthhet.utils.validation import distinct_indices


def _check_plan(plan, layers: Mapping[str, GrowableDense]) -> dict:
    """`plan` with each layer's indices checked as `GrowableDense.grow`
    checks them; raises naming the layer before anything changes."""
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
        layer._check_growable()
        try:
            checked[name] = distinct_indices("indices", indices, layer.units)
        except ValueError as error:
            raise ValueError(
                "Argument `plan` must map each layer to a non-empty 1-D array "
                f"of distinct integers in [0, units={layer.units}); for "
                f"layer {name!r}: {error}"
            ) from None
    return checked


def _variable_scope(model: keras.Model):
    """Where new variables of `model` are created: on TensorFlow the scope
    of the strategy the model was created with, on JAX that of the active
    `keras.distribution` (as `keras_depthhet.distributed.model_runtime`).
    """
    if keras.backend.backend() == "tensorflow":
        strategy = getattr(model, "distribute_strategy", None)
        if strategy is not None:
            return strategy.scope()
        return contextlib.nullcontext()
    distribution = keras.distribution.distribution()
    if distribution is not None:
        return distribution.scope()
    return contextlib.nullcontext()


def _optimizer_state(optimizer) -> tuple[list, dict, dict]:
    """What `rebuild_optimizer` carries over, read before the rebuild.

    Returns the variables the optimizer was built for, the values of its
    per-variable slots (`{attribute: [array or None]}`, aligned with
    them), and the values of its other variables (iteration counts, loss
    scale, ...) by path. Raises if those paths are not unique.
    """
    variables, slots = optimizer_slots(optimizer)
    aligned = {id(v) for values in slots.values() for v in values}
    slot_values = {
        name: [
            None if v is None else keras.ops.convert_to_numpy(v)
            for v in values
        ]
        for name, values in slots.items()
    }
    others = {}
    for variable in optimizer.variables:
        if id(variable) in aligned:
            continue
        if variable.path in others:
            raise ValueError(
                "Cannot carry the optimizer state over growth: two optimizer "
                f"variables that are not per-weight slots share the path "
                f"{variable.path!r}. Received: optimizer={optimizer!r}"
            )
        others[variable.path] = keras.ops.convert_to_numpy(variable)
    return variables, slot_values, others


def rebuild_optimizer(
    optimizer, trainable_variables, *, replaces: Mapping | None = None
) -> int:
    """Rebuilds `optimizer` for new `trainable_variables`, keeping its state.

    The optimizer object is kept (so `model.optimizer`, its config, its
    weight-decay exclusions and its learning-rate schedule stay the same);
    its slot variables are created again for `trainable_variables`. Each
    variable the optimizer already knew gets its old slots back (matched
    by the variable itself, so equal names or paths in nested models do
    not matter); slots of new variables start at zero, except moving
    averages (`use_ema=True`), which start at the new variable's own
    value, as Keras's first step would set them. A variable that replaces
    a narrower one (`replaces`; growth widens a layer's packed pairs)
    gets the old slots in its first columns and fresh values, as a new
    variable's, in the others. The iteration count and
    the learning-rate variable are never replaced; other optimizer
    variables (e.g. a `LossScaleOptimizer`'s loss scale under mixed
    precision) keep their values by path.

    Args:
        optimizer: A built `keras.optimizers.Optimizer`.
        trainable_variables: The model's trainable variables after growth.
        replaces: A dict `{id(new variable): old variable}` for
            variables that replace others (a rebuilt model, or packed
            growth pairs widened by a round); by default each variable
            keeps its own slots.

    Returns:
        The number of per-variable slots that start anew, wholly or in
        their new columns.

    The optimizer then skips, with a warning, a saved state whose slots
    have other shapes (a weights file saved before a later growth event),
    as Keras skips one with another number of variables.
    """
    old_variables, old_slots, others = _optimizer_state(optimizer)
    old_index = {id(v): i for i, v in enumerate(old_variables)}
    replaces = replaces or {}
    reset_optimizer_state(optimizer)
    trainable_variables = list(trainable_variables)
    optimizer.build(trainable_variables)
    for variable in optimizer.variables:
        if variable.path in others:
            variable.assign(others[variable.path])
    _, slots = optimizer_slots(optimizer)
    fresh = 0
    for name, values in slots.items():
        for variable, slot in zip(trainable_variables, values, strict=True):
            if slot is None:
                continue
            source = replaces.get(id(variable), variable)
            i = old_index.get(id(source))
            value = None if i is None else old_slots.get(name, [])[i]
            if value is not None and value.shape == tuple(slot.shape):
                slot.assign(value)
                continue
            fresh += 1
            # Fresh values: the slot's as built (zeros for most optimizers,
            # a constant for Adagrad), the weight itself for a moving
            # average. A copy: on JAX the slot must not share a buffer.
            start = np.array(
                keras.ops.convert_to_numpy(
                    variable if name == EMA_SLOTS else slot
                )
            )
            widened = value is not None and _widened(
                value.shape, tuple(slot.shape)
            )
            if widened:
                start[..., : value.shape[-1]] = value
            if widened or name == EMA_SLOTS:
                slot.assign(start)
    skip_saved_state_of_other_shapes(optimizer)
    return fresh


def _widened(old: tuple, new: tuple) -> bool:
    """Whether shape `new` is `old` with a longer last axis."""
    return (
        len(old) == len(new)
        and len(old) > 0
        and old[:-1] == new[:-1]
        and old[-1] < new[-1]
    )


def grow_model(
    model: keras.Model,
    plan: Mapping[str, np.ndarray],
    *,
    scale: float = 0.2,
) -> int:
    """Grows `model` in place by `plan`, keeping its training state.

    Each planned layer gets one growth round at the planned neurons
    (`GrowableDense.grow`), so the model computes the same function. When
    the model has a built optimizer it is rebuilt with `rebuild_optimizer`
    (old slots kept, also in the first columns of a layer's widened growth
    pairs, zero slots for the new pairs, the iteration count kept), and
    the traced train/test/predict functions are remade so that the next
    step trains the new weights. Safe to call from a callback inside
    `fit`: on JAX the trainer's in-flight state is first
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
    layers = growable_layer_map(model)
    plan = _check_plan(plan, layers)
    if not plan:
        return 0
    sync_trainer_state(model)
    optimizer = getattr(model, "optimizer", None)
    rebuild = optimizer is not None and optimizer.built
    if rebuild:
        _optimizer_state(optimizer)  # Fails early, before layers change.
    added = 0
    replaces = {}
    with _variable_scope(model):
        for name, layer in layers.items():
            if name in plan:
                before = dict(layer._growth)
                added += layer._grow(plan[name], scale=scale)
                replaces.update(
                    {
                        id(layer._growth[suffix]): variable
                        for suffix, variable in before.items()
                    }
                )
        if rebuild:
            rebuild_optimizer(
                optimizer, model.trainable_variables, replaces=replaces
            )
    reset_compiled_functions(model)
    return added
