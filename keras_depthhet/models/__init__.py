"""Model builders (ViT, DeiT presets with reduced widths) and model tools."""

from keras_depthhet.layers import (
    Attention,
    ClassToken,
    ClassTokenPooling,
    Mlp,
    PatchEmbedding,
    PositionEmbedding,
    TransformerBlock,
)
from keras_depthhet.models.flops import count_flops
from keras_depthhet.models.vit import (
    DEIT_PRESETS,
    deit_base,
    deit_small,
    deit_tiny,
    growable_layers,
    vit,
)

__all__ = [
    "DEIT_PRESETS",
    "Attention",
    "ClassToken",
    "ClassTokenPooling",
    "Mlp",
    "PatchEmbedding",
    "PositionEmbedding",
    "TransformerBlock",
    "count_flops",
    "deit_base",
    "deit_small",
    "deit_tiny",
    "growable_layers",
    "vit",
]
