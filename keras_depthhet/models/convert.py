"""`make_growable`: a copy of a Keras model whose Dense and EinsumDense
layers can grow."""

from collections.abc import Callable, Sequence

import keras

from keras_depthhet.layers import (
    GrowableDense,
    GrowableEinsumDense,
    growable_layer_map,
)
from keras_depthhet.layers.growable_einsum_dense import dense_like_axes
from keras_depthhet.utils.keras_internals import (
    is_functional,
    iter_layer_paths,
    replace_sublayer,
)

__all__ = ["make_growable"]

_GROWABLE = {
    keras.layers.Dense: GrowableDense,
    keras.layers.EinsumDense: GrowableEinsumDense,
}
"""The layer classes `make_growable` converts, and the class each becomes."""


def _why_not(layer) -> str | None:
    """Why `make_growable` cannot convert `layer`, or None if it can."""
    if type(layer) not in _GROWABLE:
        return (
            f"a {type(layer).__name__}; `make_growable` converts "
            "`keras.layers.Dense` and `keras.layers.EinsumDense` layers "
            "(not their subclasses)"
        )
    if isinstance(layer, keras.layers.EinsumDense):
        try:
            dense_like_axes(layer.equation)
        except ValueError as error:
            return str(error)
    if layer.quantization_mode is not None or getattr(
        layer, "lora_enabled", False
    ):
        return "quantized or LoRA-enabled; convert the float model"
    return None


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
        last = model.layers[-1:]
        if last and isinstance(last[0], keras.Model):
            return _output_layers(last[0])
        return {id(layer) for layer in last}
    found = set()
    outputs = model.outputs if is_functional(model) else []
    for output in keras.tree.flatten(outputs):
        layer = output._keras_history.operation
        if isinstance(layer, keras.Model):
            found |= _output_layers(layer)
        else:
            found.add(id(layer))
    return found


def _choose(model, layers) -> dict[str, str]:
    """`{path: key}` of the layers of `model` that `layers` selects."""
    every = list(iter_layer_paths(model))
    keys = {id(layer): key for key, layer in _keyed(every).items()}
    convertible = {
        keys[id(layer)]: (path, layer)
        for path, layer in every
        if _why_not(layer) is None
    }
    if layers is None:
        outputs = _output_layers(model)
        chosen = [
            k for k, (_, x) in convertible.items() if id(x) not in outputs
        ]
    elif callable(layers):
        chosen = [k for k, (_, x) in convertible.items() if layers(x)]
    elif isinstance(layers, str) or not isinstance(layers, Sequence):
        raise ValueError(
            "Argument `layers` must be None, a list of layer names (or "
            "paths) or a function of a layer. Received: "
            f"layers={layers!r}"
        )
    else:
        by_key = _keyed(every)
        for key in layers:
            if key not in by_key:
                raise ValueError(
                    f"Argument `layers` names {key!r}, which is no layer of "
                    f"model {model.name!r}. Convertible: "
                    f"{list(convertible)}. Received: layers={list(layers)!r}"
                )
            why = _why_not(by_key[key])
            if why is not None:
                raise ValueError(
                    f"Layer {key!r} of model {model.name!r} cannot be made "
                    f"growable: it is {why}. Convertible: {list(convertible)}"
                )
        chosen = [key for key in convertible if key in layers]
    return {convertible[key][0]: key for key in chosen}


def _growable_copy(layer) -> keras.layers.Layer:
    """`layer` as its growable class, built, with its weights."""
    new = _GROWABLE[type(layer)].from_config(layer.get_config())
    if layer.built:
        new.build_from_config(layer.get_build_config())
        new.set_weights(layer.get_weights())
    return new


def _copy(model, graph_paths: set) -> keras.Model:
    """A copy of `model` with its weights; the layers of its (nested)
    graphs at `graph_paths` converted on the way."""
    if not isinstance(model, keras.Sequential) and not is_functional(model):
        try:
            copy = model.__class__.from_config(model.get_config())
        except Exception as error:
            raise ValueError(
                f"Model {model.name!r} is a subclassed model that Keras cannot "
                f"copy from its config ({type(error).__name__}: {error}). "
                "Give it `get_config`, or use `keras_depthhet.GrowableDense` "
                "where its code creates `keras.layers.Dense`."
            ) from error
        if model.built:
            copy.build_from_config(model.get_build_config())
    else:
        targets = {
            id(layer)
            for path, layer in iter_layer_paths(model)
            if path in graph_paths
        }

        def clone(layer):
            if id(layer) in targets:
                return _GROWABLE[type(layer)].from_config(layer.get_config())
            return layer.__class__.from_config(layer.get_config())

        copy = keras.models.clone_model(
            model, clone_function=clone, recursive=True
        )
    if model.built and model.weights:
        copy.set_weights(model.get_weights())
    return copy


def make_growable(
    model: keras.Model,
    layers: Sequence[str] | Callable[[keras.layers.Layer], bool] | None = None,
) -> keras.Model:
    """A copy of `model` in which the chosen Dense layers can grow.

    Each chosen `keras.layers.Dense` becomes a `GrowableDense`, and each
    chosen `keras.layers.EinsumDense` of a dense-like equation (the query,
    key, value and output projections of `keras.layers.MultiHeadAttention`)
    a `GrowableEinsumDense`, of the same config and weights, so the copy
    computes the same function; every other layer is copied as it is
    (growable layers keep their growth). `GrowthCallback` then grows the
    copy inside `fit`. `model` itself is not changed. Like
    `keras.models.clone_model`, the copy is not compiled.

    Sequential (with or without `keras.Input`), functional and nested
    models convert, and so do layers inside other layers (the projections
    of a `MultiHeadAttention`, the layers of a KerasHub backbone's
    transformer blocks) and subclassed models that Keras can copy from
    their config. A layer inside another layer is replaced in its parent,
    whose config does not record it: save such a model's weights
    (`save_weights`) and see the "Grow your own model" guide for loading.

    Args:
        model: A `keras.Model`.
        layers: Which layers to convert: `None` (default), all but those
            that produce a model output (the classifier head); a list of
            layer names, or of paths such as `"encoder/dense"` where names
            repeat; or a function of a layer returning whether to convert
            it (it sees the convertible layers only).

    Returns:
        The new, uncompiled model.

    Raises:
        ValueError: if `model` is not a Keras model, `layers` names a layer
            the model lacks or one that cannot be converted (the error
            says why), nothing is chosen, or the model cannot be copied.

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
            f"Model {model.name!r} has no Dense or EinsumDense layer to make "
            f"growable with layers={layers!r}"
            + (
                f" (it can grow as it is: growable layers {growable})."
                if growable
                else ". By default the layers that produce a model output "
                "are left as they are; name them in `layers` to convert "
                "them."
            )
        )
    # Layers of a model's graph are converted as the model is copied; the
    # others (inside layers, or in a subclassed model) in their parents.
    paths = dict(iter_layer_paths(model))
    graph = {
        path
        for path in chosen
        if isinstance(_parent(model, paths, path), keras.Sequential)
        or is_functional(_parent(model, paths, path))
    }
    copy = _copy(model, graph)
    copied = dict(iter_layer_paths(copy))
    for path in chosen:
        layer = copied[path]
        if isinstance(layer, tuple(_GROWABLE.values())):
            continue
        parent = _parent(copy, copied, path)
        replace_sublayer(parent, layer, _growable_copy(layer))
    return copy


def _parent(model, paths: dict, path: str):
    """The layer that holds the layer at `path` (the model at the top)."""
    head, _, _ = path.rpartition("/")
    return paths[head] if head else model
