"""Multi-head self-attention with growable `qkv` and `proj` projections."""

import keras
from keras import ops

from keras_depthhet.layers.growable_dense import GrowableDense
from keras_depthhet.utils.validation import positive_int

LINEAR_INITIALIZER = {
    "class_name": "TruncatedNormal",
    "config": {"stddev": 0.02},
}


def growable_child(parent, key: str, units: int, rounds: dict, **kwargs):
    """`parent`'s `GrowableDense` sub-layer `{parent.name}_{key}`."""
    return GrowableDense(
        units,
        kernel_initializer=LINEAR_INITIALIZER,
        growth_rounds=rounds.get(key),
        dtype=parent.dtype_policy,
        name=f"{parent.name}_{key}",
        **kwargs,
    )


def growable_children_config(**children) -> dict:
    """The `growth_rounds` of each child's config, by key."""
    return {
        key: child.get_config()["growth_rounds"]
        for key, child in children.items()
    }


@keras.saving.register_keras_serializable(package="keras_depthhet")
class Attention(keras.layers.Layer):
    """Multi-head self-attention whose `qkv` and `proj` are `GrowableDense`.

    Maps `(batch, tokens, dim)` to the same shape. The inner width
    `num_heads * head_dim` is independent of `dim`; halving `head_dim` gives
    the paper's reduced attention. Sub-layers are named `{name}_qkv` and
    `{name}_proj`.

    Args:
        dim: Positive integer, the embedding width (input and output).
        num_heads: Positive integer, the number of attention heads.
        head_dim: Width of one head; defaults to `dim // num_heads`.
        qkv_bias: Whether the fused `qkv` projection has a bias.
        growth_rounds: Optional `{"qkv": rounds, "proj": rounds}` used to
            rebuild a grown layer from its config.
        **kwargs: Base layer keyword arguments.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        growth_rounds: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.dim = positive_int("dim", dim)
        self.num_heads = positive_int("num_heads", num_heads)
        if head_dim is None:
            head_dim = self.dim // self.num_heads
        self.head_dim = positive_int("head_dim", head_dim)
        self.qkv_bias = bool(qkv_bias)
        self.inner_dim = self.num_heads * self.head_dim
        rounds = growth_rounds or {}
        self.qkv = growable_child(
            self, "qkv", 3 * self.inner_dim, rounds, use_bias=self.qkv_bias
        )
        self.proj = growable_child(self, "proj", self.dim, rounds)

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.proj.build(tuple(input_shape[:-1]) + (self.inner_dim,))

    def call(self, tokens):
        qkv = self.qkv(tokens)
        qkv = ops.reshape(
            qkv, (-1, ops.shape(tokens)[1], 3, self.num_heads, self.head_dim)
        )
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        scale = self.head_dim**-0.5
        if keras.backend.backend() == "jax":
            mixed = _head_major_attention(query, key, value, scale)
        else:
            mixed = ops.dot_product_attention(query, key, value, scale=scale)
        mixed = ops.reshape(mixed, (-1, ops.shape(tokens)[1], self.inner_dim))
        return self.proj(mixed)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "qkv_bias": self.qkv_bias,
            "growth_rounds": growable_children_config(
                qkv=self.qkv, proj=self.proj
            ),
        }


def _head_major_attention(query, key, value, scale):
    """Attention for JAX: faster on XLA's CPU than its own, and it runs
    `mixed_float16` there (float16 products, float32 softmax)."""
    query = ops.transpose(query, (0, 2, 1, 3))
    key = ops.transpose(key, (0, 2, 3, 1))
    value = ops.transpose(value, (0, 2, 1, 3))
    scores = ops.matmul(query * ops.cast(scale, query.dtype), key)
    weights = ops.softmax(ops.cast(scores, "float32"), axis=-1)
    mixed = ops.matmul(ops.cast(weights, value.dtype), value)
    return ops.transpose(mixed, (0, 2, 1, 3))
