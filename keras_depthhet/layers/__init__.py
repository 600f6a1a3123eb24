"""Layers: `GrowableDense`, `GrowableEinsumDense` and the ViT/DeiT
building blocks.

`GrowableDense` is a drop-in `keras.layers.Dense` whose output neurons can
be given depth; `GrowableEinsumDense` does the same for the dense-like
`keras.layers.EinsumDense` layers of `keras.layers.MultiHeadAttention`. The
ViT blocks use `GrowableDense` for their linear layers `qkv`, `proj`, `fc1`
and `fc2`; `growable_layers` finds the growable layers of any model. Every
layer round-trips through its config and `.keras` files, grown or not.
"""

from keras_depthhet.layers.embedding import (
    ClassToken,
    ClassTokenPooling,
    PatchEmbedding,
    PositionEmbedding,
)
from keras_depthhet.layers.growable_dense import GrowableDense
from keras_depthhet.layers.growable_einsum_dense import GrowableEinsumDense
from keras_depthhet.layers.growth_pairs import GROWTH_SCALE
from keras_depthhet.layers.lookup import growable_layer_map, growable_layers
from keras_depthhet.layers.transformer_block import (
    Attention,
    Mlp,
    TransformerBlock,
)

__all__ = [
    "GROWTH_SCALE",
    "Attention",
    "ClassToken",
    "ClassTokenPooling",
    "GrowableDense",
    "GrowableEinsumDense",
    "Mlp",
    "PatchEmbedding",
    "PositionEmbedding",
    "TransformerBlock",
    "growable_layer_map",
    "growable_layers",
]
