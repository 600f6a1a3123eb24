"""Layers: `GrowableDense` and the ViT/DeiT building blocks."""

from keras_depthhet.layers.attention import Attention
from keras_depthhet.layers.embedding import (
    ClassToken,
    ClassTokenPooling,
    PatchEmbedding,
    PositionEmbedding,
)
from keras_depthhet.layers.growable_dense import GROWTH_SCALE, GrowableDense
from keras_depthhet.layers.mlp import Mlp
from keras_depthhet.layers.transformer_block import TransformerBlock

__all__ = [
    "GROWTH_SCALE",
    "Attention",
    "ClassToken",
    "ClassTokenPooling",
    "GrowableDense",
    "Mlp",
    "PatchEmbedding",
    "PositionEmbedding",
    "TransformerBlock",
]
