"""A grown architecture, freshly initialised (the paper's Table 2): is the
shape that growth discovers good in itself, trained from scratch?"""

import json
import math
import os
import zipfile
from collections.abc import Mapping

import keras
from keras import ops

from keras_depthhet.layers.lookup import growable_layers
from keras_depthhet.utils.validation import int_at_least

PAIR_SCALE = 1 / math.sqrt(2)
"""Factor on each of a fresh pair's two kernel draws, so that their sum
has the variance of one draw of the layer's kernel initializer."""


def _architecture(model_or_config):
    """A new model (fresh weights, zero growth pairs) built from a model,
    a config dict or a `.keras` file."""
    if isinstance(model_or_config, keras.Model):
        return type(model_or_config).from_config(model_or_config.get_config())
    if isinstance(model_or_config, (str, os.PathLike)):
        path = os.fspath(model_or_config)
        if not path.endswith(".keras") or not os.path.isfile(path):
            raise ValueError(
                "Argument `model_or_config` must be a model, a model config "
                "or the path of an existing `.keras` file. Received: "
                f"model_or_config={path!r}"
            )
        try:
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
        except (zipfile.BadZipFile, KeyError, ValueError) as error:
            raise ValueError(
                f"Argument `model_or_config`: {path!r} is not a `.keras` "
                f"file with a model config ({error})."
            ) from error
        return keras.saving.deserialize_keras_object(config)
    if isinstance(model_or_config, Mapping):
        config = dict(model_or_config)
        if "class_name" in config and "config" in config:
            return keras.saving.deserialize_keras_object(config)
        return keras.Model.from_config(config)
    raise ValueError(
        "Argument `model_or_config` must be a `keras.Model`, its "
        "`get_config()` (or serialized form) or the path of a `.keras` file. "
        f"Received: model_or_config of type {type(model_or_config).__name__}"
    )


def _seeded(initializer, generator):
    """`initializer` drawing from `generator` (a seeded one would draw the
    same values twice, making `w+` equal `w-`)."""
    config = keras.initializers.serialize(initializer)
    if "seed" not in config.get("config", {}):
        return initializer
    config["config"]["seed"] = None
    clone = keras.initializers.deserialize(config)
    clone.seed = generator
    return clone


def fresh_model(model_or_config, *, seed: int | None = None) -> keras.Model:
    """A randomly initialised model with the architecture of a grown model.

    The model is rebuilt from its config: the same layers, growth rounds
    and parameter count, but every weight drawn anew from its layer's
    initializers. Each of a pair's `w+` and `w-` is an independent kernel
    draw times `1/sqrt(2)`, and `b+ = b- = b/2` for a bias draw `b`: the
    layer computes with the pair's sum only, so each pair starts as one
    fresh neuron of its layer (not zero-sum as growth starts it).

    Args:
        model_or_config: A (grown) `keras.Model`, its `get_config()`, its
            serialized form (`keras.saving.serialize_keras_object`), or
            the path of a `.keras` file (only its config is read).
        seed: Optional integer; when given, `keras.utils.set_random_seed`
            is called with it first (setting Python's, NumPy's and the
            backend's global seeds), so the initialisation is reproducible.

    Returns:
        A new, uncompiled model with the same architecture, fresh weights.

    Raises:
        ValueError: for an invalid `seed`, an argument that is not a model,
            a config or a `.keras` file, or a quantized model.

    Examples:
        ```python
        grown = vit(image_size=8, patch_size=4, num_channels=1, num_classes=10,
                    dim=16, depth=1, num_heads=2)
        grow_model(grown, {"block_0_mlp_fc1": [0, 3]})
        fresh = fresh_model(grown, seed=1)
        fresh.count_params() == grown.count_params()  # True
        ```
    """
    seed = int_at_least("seed", seed, 0, optional=True)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = _architecture(model_or_config)
    generator = keras.random.SeedGenerator(seed)
    for layer in growable_layers(model):
        if layer.quantization_mode is not None:
            raise ValueError(
                f"Layer {layer.name!r} is quantized "
                f"({layer.quantization_mode}); a fresh model is trained, so "
                "build it from the float model and quantize after training. "
                "Received: a quantized model"
            )
        kernel_init = _seeded(layer.kernel_initializer, generator)
        bias_init = _seeded(layer.bias_initializer, generator)
        variables = layer._growth
        if not variables:
            continue
        sizes = [len(indices) for indices in layer.growth_rounds]

        def draw(initializer, variable, sizes=sizes):
            # Round by round: a fan-dependent initializer sees each round's.
            shape, dtype = variable.shape[:-1], variable.dtype
            parts = [initializer((*shape, k), dtype=dtype) for k in sizes]
            return ops.concatenate(parts, axis=-1)

        for suffix in ("kernel_plus", "kernel_minus"):
            variable = variables[suffix]
            variable.assign(draw(kernel_init, variable) * PAIR_SCALE)
        if "bias_plus" in variables:
            plus = variables["bias_plus"]
            bias_draw = draw(bias_init, plus)
            # Two buffers: JAX refuses to donate one held by two variables.
            plus.assign(bias_draw * 0.5)
            variables["bias_minus"].assign(bias_draw * 0.5)
    return model
