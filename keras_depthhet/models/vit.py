"""Vision Transformer / DeiT builders with independently scaled widths."""

import keras

from keras_depthhet.layers import (
    ClassToken,
    ClassTokenPooling,
    PatchEmbedding,
    PositionEmbedding,
    TransformerBlock,
    growable_layer_map,  # noqa: F401 (re-exported)
    growable_layers,  # noqa: F401 (re-exported)
)
from keras_depthhet.utils.validation import positive_int, rate, width_ratio

DEIT_PRESETS = {
    "deit_tiny": {"dim": 192, "depth": 12, "num_heads": 3},
    "deit_small": {"dim": 384, "depth": 12, "num_heads": 6},
    "deit_base": {"dim": 768, "depth": 12, "num_heads": 12},
}
"""Constructor arguments of the DeiT variants (Touvron et al. 2021)."""


def vit(
    *,
    image_size: int = 224,
    patch_size: int = 16,
    num_channels: int = 3,
    num_classes: int = 1000,
    dim: int = 384,
    depth: int = 12,
    num_heads: int = 6,
    mlp_ratio: float = 4.0,
    attention_width: float = 1.0,
    mlp_width: float = 1.0,
    qkv_bias: bool = True,
    drop_path_rate: float = 0.0,
    name: str = "vit",
) -> keras.Model:
    """Builds a Vision Transformer whose linear layers are growable.

    A functional model: patch, class-token and position embeddings,
    `depth` blocks `block_{i}` (growable layers `block_{i}_attn_qkv`,
    `_attn_proj`, `_mlp_fc1`, `_mlp_fc2`), a LayerNorm and a `Dense` head
    on the class token.

    Args:
        image_size: Side of the square input images in pixels.
        patch_size: Side of a square patch; must divide `image_size`.
        num_channels: Number of image channels.
        num_classes: Number of output logits.
        dim: Embedding width.
        depth: Number of transformer blocks.
        num_heads: Number of attention heads.
        mlp_ratio: MLP hidden width as a multiple of `dim` (at width 1.0).
        attention_width: Ratio scaling the head width `dim // num_heads`
            (0.5 halves it, as in the paper's reduced base).
        mlp_width: Ratio scaling the MLP hidden width `mlp_ratio * dim`.
        qkv_bias: Whether the `qkv` projection has a bias.
        drop_path_rate: Stochastic-depth rate of the last block; block `i`
            uses `drop_path_rate * i / (depth - 1)`.
        name: Model name.

    Returns:
        An uncompiled `keras.Model` mapping images to logits.

    Raises:
        ValueError: if an argument is invalid, `patch_size` does not divide
            `image_size` or `num_heads` does not divide `dim`.

    Examples:
        ```python
        model = vit(image_size=32, patch_size=8, num_classes=10, dim=64,
                    depth=2, num_heads=2, attention_width=0.5, mlp_width=0.5)
        [layer.name for layer in growable_layers(model)][:2]
        # ['block_0_attn_qkv', 'block_0_attn_proj']
        ```
    """
    image_size = positive_int("image_size", image_size)
    patch_size = positive_int("patch_size", patch_size)
    _check_divisible("image_size", image_size, "patch_size", patch_size)
    num_channels = positive_int("num_channels", num_channels)
    num_classes = positive_int("num_classes", num_classes)
    dim = positive_int("dim", dim)
    depth = positive_int("depth", depth)
    num_heads = positive_int("num_heads", num_heads)
    _check_divisible("dim", dim, "num_heads", num_heads)
    mlp_ratio = width_ratio("mlp_ratio", mlp_ratio)
    attention_width = width_ratio("attention_width", attention_width)
    mlp_width = width_ratio("mlp_width", mlp_width)
    drop_path_rate = rate("drop_path_rate", drop_path_rate)
    head_dim = max(1, round(dim // num_heads * attention_width))
    mlp_hidden_dim = max(1, round(dim * mlp_ratio * mlp_width))

    images = keras.Input((image_size, image_size, num_channels), name="images")
    tokens = PatchEmbedding(patch_size, dim, name="patch_embed")(images)
    tokens = ClassToken(name="cls_token")(tokens)
    tokens = PositionEmbedding(name="pos_embed")(tokens)
    for i in range(depth):
        block_rate = drop_path_rate * i / max(depth - 1, 1)
        tokens = TransformerBlock(
            dim,
            num_heads,
            head_dim=head_dim,
            mlp_hidden_dim=mlp_hidden_dim,
            qkv_bias=qkv_bias,
            drop_path_rate=block_rate,
            name=f"block_{i}",
        )(tokens)
    tokens = keras.layers.LayerNormalization(epsilon=1e-6, name="norm")(tokens)
    cls = ClassTokenPooling(name="cls_pool")(tokens)
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        name="head",
    )(cls)
    return keras.Model(images, logits, name=name)


def _check_divisible(name: str, value: int, by_name: str, by: int) -> None:
    if value % by:
        raise ValueError(
            f"Argument `{name}` must be divisible by `{by_name}`. "
            f"Received: {name}={value}, {by_name}={by}"
        )


def _deit(preset: str, **kwargs) -> keras.Model:
    for key in DEIT_PRESETS[preset]:
        if key in kwargs:
            raise ValueError(
                f"`{preset}` fixes `{key}`; use `vit(...)` to change it. "
                f"Received: {key}={kwargs[key]!r}"
            )
    kwargs.setdefault("name", preset)
    return vit(**DEIT_PRESETS[preset], **kwargs)


def deit_tiny(**kwargs) -> keras.Model:
    """DeiT-Ti (dim 192, 12 blocks, 3 heads); `kwargs` as in `vit`.

    With 1000 classes at width 1.0: 5,717,416 parameters.
    """
    return _deit("deit_tiny", **kwargs)


def deit_small(**kwargs) -> keras.Model:
    """DeiT-S (dim 384, 12 blocks, 6 heads); `kwargs` as in `vit`.

    With 1000 classes: 22,050,664 parameters; with 100 classes 21,704,164,
    and 11,071,204 with `attention_width=0.5, mlp_width=0.5` (the paper's
    reduced base).

    Examples:
        ```python
        base = deit_small(num_classes=100, attention_width=0.5, mlp_width=0.5)
        base.count_params()  # 11071204
        ```
    """
    return _deit("deit_small", **kwargs)


def deit_base(**kwargs) -> keras.Model:
    """DeiT-B (dim 768, 12 blocks, 12 heads); `kwargs` as in `vit`.

    With 1000 classes at width 1.0: 86,567,656 parameters.
    """
    return _deit("deit_base", **kwargs)
