"""Model builders (ViT, DeiT presets with reduced widths) and model tools.

`vit` builds a Vision Transformer whose `qkv`, `proj`, `fc1` and `fc2`
layers are `GrowableDense`, with the attention and MLP widths scaled
independently of the embedding width (`attention_width`, `mlp_width`; 0.5
halves them, the paper's reduced base). `deit_tiny`, `deit_small` and
`deit_base` fix the sizes of the DeiT variants (`DEIT_PRESETS`).
`growable_layers` lists the growable layers of any model and `count_flops`
counts its forward multiply-adds per image. The ViT building blocks and the
layer lookup (`growable_layer_map`, `growable_layers`, defined in
`keras_depthhet.layers`) are re-exported from `keras_depthhet.layers`.
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
    "vit",
]
