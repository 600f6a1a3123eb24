"""Applying a growth plan in place: the only code that changes a model."""

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
                "Argument `plan` names a layer that is not a growable "
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
    """The scope new variables of `model` go in: its TensorFlow strategy's,
    or on JAX the active `keras.distribution`'s."""
    if keras.backend.backend() == "tensorflow":
        owner = getattr(model, "distribute_strategy", None)
    else:
        owner = keras.distribution.distribution()
    return contextlib.nullcontext() if owner is None else owner.scope()


def _optimizer_state(optimizer) -> tuple[list, dict, dict]:
    """The optimizer's variables, slot values `{attribute: [array or None]}`
    aligned with them, and its other variables' values by (unique) path."""
    variables, slots = optimizer_slots(optimizer)
    aligned = {id(v) for values in slots.values() for v in values}
    slot_values = {
        name: [
            None if v is None else keras.ops.convert_to_numpy(v) for v in values
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

    The optimizer object, its config and schedule are kept; its slots are
    made again. A variable it knew (by identity, or the one it `replaces`)
    gets its old slots back, in the first columns if it is wider; other
    slots start as built (moving averages of `use_ema=True` at the variable
    itself). The iteration count and learning rate stay, other
    optimizer variables (e.g. a loss scale) keep their values by path. A
    saved state with other slot shapes is then skipped with a warning.

    Args:
        optimizer: A built `keras.optimizers.Optimizer`.
        trainable_variables: The model's trainable variables after growth.
        replaces: Optional `{id(new variable): old variable}` for variables
            that replace others (a rebuilt model, widened growth pairs).

    Returns:
        The number of per-variable slots that start anew, wholly or in
        their new columns.
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
            # As built (zeros, or Adagrad's constant), or the weight for a
            # moving average; a copy, as on JAX no slot may share a buffer.
            base = variable if name == EMA_SLOTS else slot
            start = np.array(keras.ops.convert_to_numpy(base))
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
        len(old) == len(new) > 0 and old[:-1] == new[:-1] and old[-1] < new[-1]
    )


def grow_model(
    model: keras.Model, plan: Mapping[str, np.ndarray], *, scale: float = 0.2
) -> int:
    """Grows `model` in place by `plan`, keeping its training state.

    Each planned layer gets one growth round (`GrowableDense.grow`), so the
    model computes the same function; a built optimizer is rebuilt with
    `rebuild_optimizer` and the traced functions are remade. Safe inside
    `fit` (from a callback), under a distribution too. An empty plan
    changes nothing.

    Args:
        model: A built Keras model containing growable layers.
        plan: `{layer_name: distinct neuron indices}`, e.g. from
            `select_neurons`.
        scale: Scale factor `s` of the new neuron pairs.

    Returns:
        The number of parameters added.

    Raises:
        ValueError: for an invalid plan, or an optimizer state that cannot
            be carried over, before anything changes.

    Examples:
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
                for suffix, variable in before.items():
                    replaces[id(layer._growth[suffix])] = variable
        if rebuild:
            rebuild_optimizer(
                optimizer, model.trainable_variables, replaces=replaces
            )
    reset_compiled_functions(model)
    return added
