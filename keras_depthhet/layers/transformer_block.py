"""Pre-norm transformer encoder block with stochastic depth."""

import keras
from keras import ops

from keras_depthhet.layers.attention import (
    Attention,
    growable_children_config,
)
from keras_depthhet.layers.mlp import Mlp
from keras_depthhet.utils.validation import positive_int, rate


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
        self.norm1 = LayerNorm(
            epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name=f"{self.name}_norm1",
        )
        self.attn = Attention(
            self.dim,
            num_heads,
            head_dim=head_dim,
            qkv_bias=qkv_bias,
            growth_rounds=growth_rounds.get("attn"),
            dtype=self.dtype_policy,
            name=f"{self.name}_attn",
        )
        self.norm2 = LayerNorm(
            epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name=f"{self.name}_norm2",
        )
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
