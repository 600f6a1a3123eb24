"""`make_growable`: a Keras model with its Dense layers made growable."""

from collections.abc import Callable, Sequence

import keras

from keras_depthhet.layers import GrowableDense, growable_layer_map
from keras_depthhet.utils.keras_internals import (
    is_functional,
    iter_layer_paths,
)

__all__ = ["make_growable"]

_CONVERTIBLE = {keras.layers.Dense: GrowableDense}
"""The layer classes `make_growable` converts, and the class each becomes."""


def _keyed(found: list) -> dict:
    """`{key: layer}`: a layer's name, or its path where names repeat."""
    names = [layer.name for _, layer in found]
    return {
        (layer.name if names.count(layer.name) == 1 else path): layer
        for path, layer in found
    }


def _output_layers(model) -> set[int]:
    """`id`s of the layers that produce `model`'s outputs (nested models
    followed to their own output layers)."""
    if isinstance(model, keras.Sequential):
        last = model.layers[-1:] if model.layers else []
        if last and isinstance(last[0], keras.Model):
            return _output_layers(last[0])
        return {id(layer) for layer in last}
    found = set()
    for output in keras.tree.flatten(getattr(model, "outputs", None) or []):
        layer = output._keras_history.operation
        if isinstance(layer, keras.Model):
            found |= _output_layers(layer)
        else:
            found.add(id(layer))
    return found


def _choose(model, layers) -> dict:
    """The convertible layers of `model` that `layers` selects, by key."""
    found = [
        (path, layer)
        for path, layer in iter_layer_paths(model)
        if type(layer) in _CONVERTIBLE
    ]
    convertible = _keyed(found)
    if layers is None:
        outputs = _output_layers(model)
        return {k: v for k, v in convertible.items() if id(v) not in outputs}
    if callable(layers):
        return {k: v for k, v in convertible.items() if layers(v)}
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise ValueError(
            "Argument `layers` must be None, a list of layer names (or "
            "paths) or a function of a layer. Received: "
            f"layers={layers!r}"
        )
    every = _keyed(list(iter_layer_paths(model)))
    for key in layers:
        if key in convertible:
            continue
        if key in every:
            raise ValueError(
                f"Layer {key!r} of model {model.name!r} is a "
                f"{type(every[key]).__name__}; `make_growable` converts "
                "`keras.layers.Dense` layers (not their subclasses). "
                f"Convertible: {list(convertible)}. Received: "
                f"layers={list(layers)!r}"
            )
        raise ValueError(
            f"Argument `layers` names {key!r}, which is no layer of model "
            f"{model.name!r}. Convertible: {list(convertible)}. Received: "
            f"layers={list(layers)!r}"
        )
    return {k: v for k, v in convertible.items() if k in layers}


def make_growable(
    model: keras.Model,
    layers: Sequence[str] | Callable[[keras.layers.Layer], bool] | None = None,
) -> keras.Model:
    """A copy of `model` in which the chosen Dense layers can grow.

    Each chosen `keras.layers.Dense` becomes a `GrowableDense` of the same
    config and weights, so the copy computes the same function; every other
    layer is copied as it is (layers already growable keep their growth).
    `GrowthCallback` then grows the copy inside `fit`. `model` itself is
    not changed. Like `keras.models.clone_model`, the copy is not compiled.

    Sequential (with or without `keras.Input`), functional and nested
    models convert. A subclassed model cannot be rebuilt with other layer
    classes: use `GrowableDense` in its code instead of `Dense`.

    Args:
        model: A Sequential or functional `keras.Model`.
        layers: Which `Dense` layers to convert: `None` (default), all but
            those that produce a model output (the classifier head); a
            list of layer names, or of paths such as `"encoder/dense"`
            where names repeat; or a function of a layer returning whether
            to convert it.

    Returns:
        The new, uncompiled model.

    Raises:
        ValueError: if `model` is not a Keras model, `layers` names a layer
            the model lacks or one that is not a `keras.layers.Dense`,
            nothing is chosen, or `model` is subclassed.

    Examples:
        ```python
        model = keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(32, activation="gelu"),
            keras.layers.Dense(10),
        ])
        growable = make_growable(model)
        [type(layer).__name__ for layer in growable.layers]
        # ['GrowableDense', 'Dense']
        ```
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Argument `model` must be a keras.Model. Received: "
            f"model of type {type(model).__name__}"
        )
    chosen = _choose(model, layers)
    if not chosen:
        growable = list(growable_layer_map(model))
        raise ValueError(
            f"Model {model.name!r} has no `keras.layers.Dense` layer to make "
            f"growable with layers={layers!r}"
            + (
                f" (it can grow as it is: growable layers {growable})."
                if growable
                else ". By default the layers that produce a model output "
                "are left as they are; name them in `layers` to convert "
                "them."
            )
        )
    if not isinstance(model, keras.Sequential) and not is_functional(model):
        raise ValueError(
            f"Model {model.name!r} is a subclassed model, which Keras cannot "
            f"rebuild with other layers, so {list(chosen)} cannot be made "
            "growable. Use `keras_depthhet.GrowableDense` where its code "
            "creates `keras.layers.Dense` (same arguments; it computes the "
            "same function until it grows)."
        )
    targets = {id(layer) for layer in chosen.values()}

    def clone(layer):
        config = layer.get_config()
        if id(layer) in targets:
            return _CONVERTIBLE[type(layer)].from_config(config)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    if model.built and model.weights:
        copy.set_weights(model.get_weights())
    return copy
