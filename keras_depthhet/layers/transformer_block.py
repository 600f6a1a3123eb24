"""The ViT encoder block: self-attention and an MLP, both of growable linear
layers, in pre-norm residual branches with stochastic depth."""

import functools

import keras
from keras import ops

from keras_depthhet.layers.growable_dense import GrowableDense
from keras_depthhet.utils.validation import positive_int, rate

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
    return {k: c.get_config()["growth_rounds"] for k, c in children.items()}


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
        head_dim = self.dim // self.num_heads if head_dim is None else head_dim
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


@keras.saving.register_keras_serializable(package="keras_depthhet")
class Mlp(keras.layers.Layer):
    """Two `GrowableDense` layers with the exact (erf) GELU between them.

    Maps `(..., dim)` to the same shape. Sub-layers are named `{name}_fc1`
    and `{name}_fc2`.

    Args:
        dim: Positive integer, the input and output width.
        hidden_dim: Positive integer, the width of `fc1`.
        growth_rounds: Optional `{"fc1": rounds, "fc2": rounds}` used to
            rebuild a grown layer from its config.
        **kwargs: Base layer keyword arguments.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        growth_rounds: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.dim = positive_int("dim", dim)
        self.hidden_dim = positive_int("hidden_dim", hidden_dim)
        rounds = growth_rounds or {}
        self.fc1 = growable_child(
            self, "fc1", self.hidden_dim, rounds, activation="gelu"
        )
        self.fc2 = growable_child(self, "fc2", self.dim, rounds)

    def build(self, input_shape):
        self.fc1.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (self.hidden_dim,))

    def call(self, inputs):
        return self.fc2(self.fc1(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "hidden_dim": self.hidden_dim,
            "growth_rounds": growable_children_config(
                fc1=self.fc1, fc2=self.fc2
            ),
        }


@keras.saving.register_keras_serializable(package="keras_depthhet")
class LayerNorm(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization`, the same function computed faster
    on JAX (the variance of the once-centred input)."""

    def call(self, inputs):
        rank = len(inputs.shape)
        axes = [int(a) % rank for a in keras.tree.flatten(self.axis)]
        on_jax = keras.backend.backend() == "jax"
        if not on_jax or self.rms_scaling or axes != [rank - 1]:
            return super().call(inputs)
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, dtype)
        centred = x - ops.mean(x, axis=-1, keepdims=True)
        variance = ops.mean(centred * centred, axis=-1, keepdims=True)
        outputs = centred * ops.rsqrt(variance + self.epsilon)
        if self.scale:
            outputs = outputs * ops.cast(self.gamma, dtype)
        if self.center:
            outputs = outputs + ops.cast(self.beta, dtype)
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="keras_depthhet")
class TransformerBlock(keras.layers.Layer):
    """`x + attn(norm1(x))`, then `x + mlp(norm2(x))`, as in ViT and DeiT.

    Maps `(batch, tokens, dim)` to the same shape. Each residual branch is
    dropped per sample with probability `drop_path_rate` in training
    (stochastic depth). Sub-layers are named `{name}_norm1`, `{name}_attn`,
    `{name}_norm2` and `{name}_mlp`.

    Args:
        dim: Positive integer, the embedding width.
        num_heads: Positive integer, the number of attention heads.
        head_dim: Width of one head; defaults to `dim // num_heads`.
        mlp_hidden_dim: Width of the MLP's `fc1`; defaults to `4 * dim`.
        qkv_bias: Whether the `qkv` projection has a bias.
        drop_path_rate: Stochastic-depth rate in [0, 1).
        layer_norm_epsilon: Epsilon of both LayerNorms.
        growth_rounds: Optional `{"attn": {...}, "mlp": {...}}` used to
            rebuild a grown block from its config.
        **kwargs: Base layer keyword arguments.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int | None = None,
        mlp_hidden_dim: int | None = None,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        layer_norm_epsilon: float = 1e-6,
        growth_rounds: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.dim = positive_int("dim", dim)
        self.drop_path_rate = rate("drop_path_rate", drop_path_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        growth_rounds = growth_rounds or {}
        layer_norm = functools.partial(
            LayerNorm, epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy
        )
        self.norm1 = layer_norm(name=f"{self.name}_norm1")
        self.attn = Attention(
            self.dim,
            num_heads,
            head_dim=head_dim,
            qkv_bias=qkv_bias,
            growth_rounds=growth_rounds.get("attn"),
            dtype=self.dtype_policy,
            name=f"{self.name}_attn",
        )
        self.norm2 = layer_norm(name=f"{self.name}_norm2")
        self.mlp = Mlp(
            self.dim,
            mlp_hidden_dim if mlp_hidden_dim is not None else 4 * self.dim,
            growth_rounds=growth_rounds.get("mlp"),
            dtype=self.dtype_policy,
            name=f"{self.name}_mlp",
        )
        # Stochastic depth: one Bernoulli draw per sample and branch.
        self.drop_path = keras.layers.Dropout(
            self.drop_path_rate,
            noise_shape=(None, 1, 1),
            dtype=self.dtype_policy,
            name=f"{self.name}_drop_path",
        )

    def build(self, input_shape):
        for layer in (self.norm1, self.attn, self.norm2, self.mlp):
            layer.build(input_shape)

    def call(self, tokens, training=None):
        # A 2-D residual stream: with a 3-D one, XLA's CPU backend
        # recomputed its gradient at every block (quadratic in the depth).
        shape = ops.shape(tokens)
        stream = ops.reshape(tokens, (-1, self.dim))
        branch = self.attn(self.norm1(ops.reshape(stream, shape)))
        stream = stream + self._dropped(branch, shape, training)
        normed = self.norm2(ops.reshape(stream, shape))
        branch = self.mlp(ops.reshape(normed, (-1, self.dim)))
        stream = stream + self._dropped(branch, shape, training)
        return ops.reshape(stream, shape)

    def _dropped(self, branch, shape, training):
        """`branch` with whole samples dropped, as a 2-D residual term."""
        branch = self.drop_path(ops.reshape(branch, shape), training=training)
        return ops.reshape(branch, (-1, self.dim))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "num_heads": self.attn.num_heads,
            "head_dim": self.attn.head_dim,
            "mlp_hidden_dim": self.mlp.hidden_dim,
            "qkv_bias": self.attn.qkv_bias,
            "drop_path_rate": self.drop_path_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "growth_rounds": growable_children_config(
                attn=self.attn, mlp=self.mlp
            ),
        }
