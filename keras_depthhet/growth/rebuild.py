"""Growing functionally: a new model from the grown config, as distributed
runtimes, which treat a model's variables as fixed, need."""

import copy
from collections.abc import Mapping

import keras
import numpy as np

from keras_depthhet.growth.grow import (
    _check_plan,
    _variable_scope,
    rebuild_optimizer,
)
from keras_depthhet.layers.lookup import growable_layer_map
from keras_depthhet.utils.keras_internals import (
    compile_arguments,
    sync_trainer_state,
)
from keras_depthhet.utils.validation import positive_number


def _append_round(node, name: str, indices: list[int], found: list) -> None:
    """Appends `indices` to layer `name`'s growth rounds in config `node`
    (its own, or its parent's keyed by role: `{parent}_{role}`)."""
    if isinstance(node, list):
        for item in node:
            _append_round(item, name, indices, found)
        return
    if not isinstance(node, dict):
        return
    config = node.get("config")
    if isinstance(config, dict) and "growth_rounds" in config:
        _append_to_rounds(
            config["growth_rounds"], config.get("name"), name, indices, found
        )
    for key, value in node.items():
        if key != "growth_rounds":
            _append_round(value, name, indices, found)


def _append_to_rounds(rounds, prefix, name, indices, found) -> None:
    if isinstance(rounds, list) or rounds is None:
        if prefix == name:
            found.append(prefix)
            rounds.append(list(indices))
        return
    for role, child in rounds.items():
        child_name = f"{prefix}_{role}"
        if child_name == name and (child is None or isinstance(child, list)):
            found.append(child_name)
            if child is None:
                rounds[role] = child = []
            child.append(list(indices))
        elif isinstance(child, dict):
            _append_to_rounds(child, child_name, name, indices, found)


def grown_config(config: dict, plan: Mapping[str, np.ndarray]) -> dict:
    """The config of the model `config` describes, grown by `plan`.

    Each planned layer gets one more growth round; `config` is unchanged.

    Args:
        config: A model config, `model.get_config()`.
        plan: `{layer_name: neuron indices}`.

    Returns:
        A new config for `type(model).from_config` (zero growth weights).

    Raises:
        ValueError: if a planned layer is not found exactly once.
    """
    grown = copy.deepcopy(config)
    for name, indices in plan.items():
        found = []
        _append_round(grown, name, [int(i) for i in np.asarray(indices)], found)
        if len(found) != 1:
            raise ValueError(
                "Argument `plan` names a layer whose growth rounds appear "
                f"{len(found)} times in the model config (expected once). "
                f"Received: {name!r}"
            )
    return grown


def _carry_growth(layer, indices, scale: float, values: dict) -> None:
    """Sets `layer`'s old pairs (by path in `values`), then those of its
    new round at `indices`, as `GrowableDense.grow` would."""
    growth = layer._growth.items()
    saved = {s: values[v.path] for s, v in growth if v.path in values}
    kernel, bias = layer._flat_view(
        values[layer.kernel.path],
        values[layer.bias.path] if layer.use_bias else None,
    )
    # Checks the new round as `grow` does (finite, not overflowing).
    layer._pair_values(kernel, bias, indices, scale)
    layer._assign_growth(layer._growth_values(saved, kernel, bias, scale))


def rebuild_grown_model(
    model: keras.Model, plan: Mapping[str, np.ndarray], *, scale: float = 0.2
) -> keras.Model:
    """A new model equal to `model` grown by `plan`, with its training state.

    The new model is built from `grown_config` in `model`'s strategy scope
    (on JAX, under the active `keras.distribution`); every variable gets
    its old value by path and each new pair `+/- scale * (W[:, i], b[i])`,
    so it computes the same function. A compiled `model`'s compile
    arguments and optimizer go to the new model (`rebuild_optimizer`): the
    old model keeps its weights, but train only the new one.

    Args:
        model: A built Keras model with `GrowableDense` layers, whose
            `get_config()` rebuilds it (functional and ViT models do).
        plan: `{layer_name: distinct neuron indices}`, e.g. from
            `select_neurons`.
        scale: Scale factor `s` of the new neuron pairs.

    Returns:
        The grown model (or `model` when the plan is empty).

    Raises:
        ValueError: for an invalid plan or `scale`, before anything is built.

    Examples:
        ```python
        grown = rebuild_grown_model(model, {"block_0_mlp_fc1": [0, 5]})
        grown.count_params() - model.count_params()  # 2 * 2 * (dim + 1)
        ```
    """
    layers = growable_layer_map(model)
    plan = _check_plan(plan, layers)
    if not plan:
        return model
    scale = float(positive_number("scale", scale))
    sync_trainer_state(model)
    optimizer = getattr(model, "optimizer", None)
    compiled = getattr(model, "compiled", False) and optimizer is not None
    values = {v.path: keras.ops.convert_to_numpy(v) for v in model.variables}
    config = grown_config(model.get_config(), plan)
    with _variable_scope(model):
        grown = type(model).from_config(config)
        for variable in grown.variables:
            old = values.get(variable.path)
            # Planned layers' growth pairs are wider now: set below.
            if old is not None and old.shape == tuple(variable.shape):
                variable.assign(old)
        new_layers = growable_layer_map(grown)
        for name, indices in plan.items():
            _carry_growth(new_layers[name], indices, scale, values)
        if compiled:
            arguments = {**compile_arguments(model), "optimizer": optimizer}
            grown.compile(**arguments)
            if optimizer.built:
                old = {v.path: v for v in model.trainable_variables}
                new = grown.trainable_variables
                replaces = {id(v): old[v.path] for v in new if v.path in old}
                rebuild_optimizer(optimizer, new, replaces=replaces)
    return grown
