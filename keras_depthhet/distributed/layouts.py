"""How the ViT's weights are laid out under `ModelParallel`."""

import keras

VIT_MODEL_PARALLEL_LAYOUT = {
    r"_(qkv|fc1)/kernel$": (None, "model"),
    r"_(qkv|fc1)/bias$": ("model",),
    r"_(proj|fc2)/kernel$": ("model", None),
}
"""Layouts of the ViT's weights: variable-path pattern -> mesh axes.

Megatron-style over a `"model"` axis (one all-reduce per block): `qkv`
and `fc1` split by output neuron, `proj` and `fc2` by input neuron. All
else, growth weights included, is replicated.
"""


def vit_layout_map(
    mesh: keras.distribution.DeviceMesh,
) -> keras.distribution.LayoutMap:
    """A `LayoutMap` of `mesh` for `keras_depthhet.models.vit` models.

    Args:
        mesh: A `DeviceMesh` with a `"model"` axis (and a batch axis).

    Returns:
        A `keras.distribution.LayoutMap` holding
        `VIT_MODEL_PARALLEL_LAYOUT`, for
        `keras.distribution.ModelParallel(layout_map=...)`.

    Raises:
        ValueError: if `mesh` has no `"model"` axis.
    """
    if "model" not in mesh.axis_names:
        raise ValueError(
            "Argument `mesh` must have a 'model' axis. "
            f"Received: mesh with axes {mesh.axis_names}"
        )
    layout_map = keras.distribution.LayoutMap(mesh)
    for pattern, axes in VIT_MODEL_PARALLEL_LAYOUT.items():
        layout_map[pattern] = axes
    return layout_map
