"""Forward FLOPs per image, counted as multiply-adds (the DeiT convention)."""

import math

import keras

from keras_depthhet.layers import (
    Attention,
    GrowableDense,
    GrowableEinsumDense,
    PatchEmbedding,
)
from keras_depthhet.utils.keras_internals import iter_layers


def _nested_flops(layer: keras.layers.Layer, positions: int) -> int:
    """FLOPs of `layer` and its sub-layers, all applied at `positions`."""
    total = 0
    for sub in [layer, *iter_layers(layer)]:
        if isinstance(sub, (GrowableDense, GrowableEinsumDense)):
            # The flat views; the pairs: one summed column each.
            total += positions * sub.input_dim * (sub.units + sub.num_grown)
        elif isinstance(sub, keras.layers.Dense):
            total += positions * sub.kernel.shape[0] * sub.units
        elif isinstance(sub, Attention):
            # Q K^T and attention-weighted V: each tokens^2 * inner_dim.
            total += 2 * positions * positions * sub.inner_dim
    return total


def count_flops(model: keras.Model) -> int:
    """Counts the forward multiply-adds of one image through `model`.

    As in the DeiT paper, one multiply-add is one FLOP and only matrix
    products count: the patch embedding, every dense layer and the
    attention products `Q K^T` and `A V`. A grown `GrowableDense` or
    `GrowableEinsumDense` adds `input_dim * num_grown` per token (its pairs
    run as one matmul of their summed kernels). DeiT-S at 224 pixels counts
    about 4.6 GFLOPs, the paper's reduced base (halved attention and MLP
    widths) about 2.3.

    Args:
        model: A built functional model, such as one from `vit`, whose
            top-level layers act on the token sequence.

    Returns:
        The number of multiply-adds for one image, as a Python int.

    Raises:
        ValueError: if `model` is not a built functional model.

    Examples:
        >>> model = deit_small(num_classes=1000)
        >>> round(count_flops(model) / 1e9, 1)
        4.6
    """
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise ValueError(
            "Argument `model` must be a functional `keras.Model` (as built by "
            f"`vit` or `deit_small`). Received: model={model!r}"
        )
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        shape = layer.input.shape
        if isinstance(layer, PatchEmbedding):
            patches = layer.output.shape[1]
            total += patches * layer.patch_size**2 * shape[-1] * layer.dim
            continue
        # A `GrowableEinsumDense` may contract several last axes.
        features = 1
        if isinstance(layer, GrowableEinsumDense):
            features = layer._contracted
        positions = math.prod(shape[1 : len(shape) - features])
        total += _nested_flops(layer, positions)
    return int(total)
