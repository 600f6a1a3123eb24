"""Patch, class-token and position embeddings of a Vision Transformer."""

import keras
from keras import ops

from keras_depthhet.utils.validation import positive_int


@keras.saving.register_keras_serializable(package="keras_depthhet")
class PatchEmbedding(keras.layers.Layer):
    """Splits an image into patches and projects each to `dim` features.

    Computes a `Conv2D` with kernel size and stride `patch_size` (weights
    of a `Conv2D` sub-layer named `{name}_projection`), its patch grid
    flattened into a token axis. It runs as a reshape into patches and one
    matmul, much faster than XLA's CPU convolution in training.

    Args:
        patch_size: Positive integer, the side of a square patch in pixels.
        dim: Positive integer, the embedding width.
        **kwargs: Base layer keyword arguments.

    Input shape:
        `(batch, height, width, channels)`, height and width divisible by
        `patch_size`.

    Output shape:
        `(batch, (height // patch_size) * (width // patch_size), dim)`.
    """

    def __init__(self, patch_size: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = positive_int("patch_size", patch_size)
        self.dim = positive_int("dim", dim)
        self.projection = keras.layers.Conv2D(
            self.dim,
            self.patch_size,
            strides=self.patch_size,
            padding="valid",
            dtype=self.dtype_policy,
            name=f"{self.name}_projection",
        )

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        for axis, size in (("height", height), ("width", width)):
            if size is not None and size % self.patch_size:
                raise ValueError(
                    f"The image {axis} must be divisible by `patch_size`. "
                    f"Received: {axis}={size}, patch_size={self.patch_size}"
                )
        self.projection.build(input_shape)

    def call(self, images):
        size = self.patch_size
        shape = ops.shape(images)
        rows, cols = shape[1] // size, shape[2] // size
        channels = images.shape[-1]
        patches = ops.reshape(images, (-1, rows, size, cols, size, channels))
        patches = ops.transpose(patches, (0, 1, 3, 2, 4, 5))
        flat = size * size * channels  # The kernel's (h, w, c) order.
        patches = ops.reshape(patches, (-1, rows * cols, flat))
        kernel = ops.reshape(self.projection.kernel, (flat, self.dim))
        tokens = ops.matmul(patches, ops.cast(kernel, patches.dtype))
        return tokens + ops.cast(self.projection.bias, tokens.dtype)

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        tokens = None
        if height is not None and width is not None:
            tokens = (height // self.patch_size) * (width // self.patch_size)
        return (input_shape[0], tokens, self.dim)

    def get_config(self):
        return {
            **super().get_config(),
            "patch_size": self.patch_size,
            "dim": self.dim,
        }


@keras.saving.register_keras_serializable(package="keras_depthhet")
class ClassToken(keras.layers.Layer):
    """Prepends one learned token (the class token) to a token sequence.

    Maps `(batch, tokens, dim)` to `(batch, tokens + 1, dim)`.
    """

    def build(self, input_shape):
        self.token = self.add_weight(
            name="token",
            shape=(1, 1, input_shape[-1]),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )

    def call(self, tokens):
        shape = (ops.shape(tokens)[0], 1, ops.shape(tokens)[-1])
        token = ops.broadcast_to(ops.cast(self.token, tokens.dtype), shape)
        return ops.concatenate([token, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        tokens = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], tokens, input_shape[2])


@keras.saving.register_keras_serializable(package="keras_depthhet")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding to each position of a fixed-length sequence.

    Maps `(batch, tokens, dim)`, `tokens` known when the layer is built, to
    the same shape.
    """

    def build(self, input_shape):
        if input_shape[1] is None:
            raise ValueError(
                "`PositionEmbedding` needs a known sequence length. "
                f"Received: input_shape={input_shape}"
            )
        self.embedding = self.add_weight(
            name="embedding",
            shape=(1, input_shape[1], input_shape[2]),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )

    def call(self, tokens):
        return tokens + ops.cast(self.embedding, tokens.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_depthhet")
class ClassTokenPooling(keras.layers.Layer):
    """Returns the first token (the class token) of a sequence.

    Maps `(batch, tokens, dim)` to `(batch, dim)`.
    """

    def call(self, tokens):
        return tokens[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])
