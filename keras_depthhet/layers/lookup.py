"""Finding the growable layers of a model (`GrowableDense`,
`GrowableEinsumDense`): `growable_layer_map`."""

import keras

from keras_depthhet.layers.growable_dense import GrowableDense
from keras_depthhet.layers.growable_einsum_dense import GrowableEinsumDense
from keras_depthhet.utils.keras_internals import iter_layer_paths

GROWABLE_LAYERS = (GrowableDense, GrowableEinsumDense)
"""The layer classes whose units can grow."""

GrowableLayer = GrowableDense | GrowableEinsumDense


def growable_layer_map(model: keras.layers.Layer) -> dict[str, GrowableLayer]:
    """The growable layers of `model` by the key that names them.

    The growable layers are the `GrowableDense` and `GrowableEinsumDense`
    layers. Growth plans, scores and events name a layer by this key: its
    `name`, or, where several layers of the model share that name (equal
    names in nested models), its path of container names, e.g.
    `"branch_a/dense"`. A layer used at several places in the model appears
    once.

    Args:
        model: Any Keras model or layer.

    Returns:
        `{key: layer}` in definition order.

    Examples:
        ```python
        model = vit(
            image_size=8, patch_size=4, num_channels=1, num_classes=10,
            dim=16, depth=1, num_heads=2)
        list(growable_layer_map(model))
        # ['block_0_attn_qkv', 'block_0_attn_proj', 'block_0_mlp_fc1',
        #  'block_0_mlp_fc2']
        ```
    """
    if isinstance(model, GROWABLE_LAYERS):
        return {model.name: model}
    found = [
        (path, layer)
        for path, layer in iter_layer_paths(model)
        if isinstance(layer, GROWABLE_LAYERS)
    ]
    names = [layer.name for _, layer in found]
    return {
        (layer.name if names.count(layer.name) == 1 else path): layer
        for path, layer in found
    }


def growable_layers(model: keras.layers.Layer) -> list[GrowableLayer]:
    """All growable layers of `model` (`GrowableDense`,
    `GrowableEinsumDense`), nested ones included, in order.

    Args:
        model: Any Keras model or layer.

    Returns:
        The layers in definition order (for the ViT builders: block by
        block, `qkv`, `proj`, `fc1`, `fc2`).
    """
    return list(growable_layer_map(model).values())
