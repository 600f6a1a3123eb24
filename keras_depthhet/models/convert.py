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


def _growable(layer, rounds) -> keras.layers.Layer:
    """`layer` as its growable class (with `rounds` of growth, if any)."""
    config = layer.get_config()
    if rounds:
        config["growth_rounds"] = rounds
    return _GROWABLE[type(layer)].from_config(config)


def _growable_copy(layer, rounds) -> keras.layers.Layer:
    """`_growable`, built as `layer`, with its weights (the pairs of
    `rounds` at zero)."""
    new = _growable(layer, rounds)
    if layer.built:
        new.build_from_config(layer.get_build_config())
        extra = new.get_weights()[len(layer.weights) :]
        new.set_weights(layer.get_weights() + extra)
    return new


def _plain_graph(model) -> bool:
    """Whether Keras clones `model` layer by layer: a Sequential or plain
    functional model (not a subclass with its own config, as KerasHub's
    backbones, which are copied from their config)."""
    return isinstance(model, keras.Sequential) or (
        is_functional(model) and type(model).__module__.startswith("keras.")
    )


def _copy_structure(model, targets: dict, chosen: list) -> keras.Model:
    """A copy of `model` without its weights; the layers of its (nested)
    plain graphs whose `id` is in `targets` (`{id: rounds}`) converted."""
    if not _plain_graph(model):
        try:
            copy = model.__class__.from_config(model.get_config())
        except Exception as error:
            words = str(error).split()
            reason = " ".join(words[:16]) + (" ..." if len(words) > 16 else "")
            raise ValueError(
                f"Model {model.name!r} of type {type(model).__name__} cannot "
                "be copied from its config by Keras "
                f"({type(error).__name__}: {reason}), so its layers "
                f"{chosen} cannot be made growable. Give it `get_config`, or "
                "use `keras_depthhet.GrowableDense` where its code creates "
                "`keras.layers.Dense`."
            ) from error
        if model.built and not copy.built:
            copy.build_from_config(model.get_build_config())
        return copy

    def clone(layer):
        if id(layer) in targets:
            return _growable(layer, targets[id(layer)])
        if isinstance(layer, keras.Model):
            return _copy_structure(layer, targets, chosen)
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


def make_growable(
    model: keras.Model,
    layers: Sequence[str] | Callable[[keras.layers.Layer], bool] | None = None,
    growth_rounds: dict[str, list] | None = None,
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
        growth_rounds: Optional `{layer: rounds}`, the `growth_rounds` of
            layers of a grown copy (their keys converted too): the copy
            gets the same structure, pairs at zero, ready for
            `load_weights` of that copy's saved weights. The layers of a
            model graph then keep their initial weights.

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
    rounds = _check_rounds(growth_rounds)
    chosen = _choose(model, layers)
    if rounds:
        named = _choose(model, list(rounds))
        chosen.update(named)
        rounds = {path: rounds[key] for path, key in named.items()}
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
    # Layers of a plain graph are converted as the model is copied; the
    # others (inside layers, or in a subclassed model) in their parents.
    paths = dict(iter_layer_paths(model))
    targets = {}
    for path in chosen:
        parent = _parent(model, paths, path)
        if _plain_graph(parent):
            targets[id(paths[path])] = rounds.get(path)
        elif is_functional(parent):
            raise ValueError(
                f"Layer {path!r} is a node of the graph of {parent.name!r}, a "
                f"{type(parent).__name__} that Keras copies from its config, "
                "so it cannot be replaced there. Leave it out of `layers`."
            )
    copy = _copy_structure(model, targets, list(chosen.values()))
    if model.built and model.weights and not rounds:
        copy.set_weights(model.get_weights())
    copied = dict(iter_layer_paths(copy))
    for path in chosen:
        layer = copied[path]
        if isinstance(layer, tuple(_GROWABLE.values())):
            continue
        parent = _parent(copy, copied, path)
        replace_sublayer(parent, layer, _growable_copy(layer, rounds.get(path)))
    return copy


def _check_rounds(growth_rounds) -> dict:
    """`growth_rounds` as `{key: [[int, ...], ...]}`; raises if malformed."""
    if growth_rounds is None:
        return {}
    try:
        return {
            str(key): [[int(i) for i in r] for r in rounds]
            for key, rounds in dict(growth_rounds).items()
        }
    except (TypeError, ValueError) as error:
        raise ValueError(
            "Argument `growth_rounds` must map layer names to lists of "
            "rounds, each a list of neuron indices, as the layers' "
            f"`growth_rounds` give them. Received: {growth_rounds!r}"
        ) from error


def _parent(model, paths: dict, path: str):
    """The layer that holds the layer at `path` (the model at the top)."""
    head, _, _ = path.rpartition("/")
    return paths[head] if head else model
