"""Model builders (ViT, DeiT presets with reduced widths) and model tools.

`vit` builds a Vision Transformer of growable layers whose attention and
MLP widths scale independently of the embedding width; `deit_tiny`,
`deit_small` and `deit_base` fix the DeiT sizes. `count_flops` counts a
model's forward multiply-adds per image. The ViT building blocks and the
layer lookup are re-exported from `keras_depthhet.layers`.
"""

from keras_depthhet.layers import (
    Attention,
    ClassToken,
    ClassTokenPooling,
    Mlp,
    PatchEmbedding,
    PositionEmbedding,
    TransformerBlock,
    growable_layer_map,
    growable_layers,
)
from keras_depthhet.models.convert import make_growable
from keras_depthhet.models.flops import count_flops
from keras_depthhet.models.vit import (
    DEIT_PRESETS,
    deit_base,
    deit_small,
    deit_tiny,
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
    "growable_layer_map",
    "growable_layers",
    "make_growable",
    "vit",
]
