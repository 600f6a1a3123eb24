"""The transformer MLP with growable `fc1` (GELU) and `fc2`."""

import keras

from keras_depthhet.layers.attention import (
    growable_child,
    growable_children_config,
)
from keras_depthhet.utils.validation import positive_int


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
