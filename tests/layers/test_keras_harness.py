"""Keras's own layer test harness on GrowableDense and the ViT blocks.

`keras.src.testing.TestCase.run_layer_test` (as keras-hub uses it) builds
the layer from its config, checks shapes, serialization, a training step,
mixed precision and the weight counts; grown layers are built from a
config that holds their growth rounds.
"""

from keras.src import testing

from keras_depthhet.layers import (
    Attention,
    ClassToken,
    ClassTokenPooling,
    GrowableDense,
    Mlp,
    PatchEmbedding,
    PositionEmbedding,
    TransformerBlock,
)


class GrowableDenseHarnessTest(testing.TestCase):
    def test_before_growth(self):
        self.run_layer_test(
            GrowableDense,
            init_kwargs={"units": 5, "activation": "gelu"},
            input_shape=(2, 3, 4),
            expected_output_shape=(2, 3, 5),
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=0,
            supports_masking=True,
        )

    def test_after_growth(self):
        self.run_layer_test(
            GrowableDense,
            init_kwargs={
                "units": 5,
                "activation": "gelu",
                "growth_rounds": [[0, 2], [2, 3, 4]],
            },
            input_shape=(2, 4),
            expected_output_shape=(2, 5),
            expected_num_trainable_weights=2 + 4,  # rounds packed
            expected_num_non_trainable_weights=0,
            supports_masking=True,
        )

    def test_after_growth_without_bias_with_constraint_and_regularizer(self):
        self.run_layer_test(
            GrowableDense,
            init_kwargs={
                "units": 4,
                "use_bias": False,
                "kernel_constraint": "max_norm",
                "kernel_regularizer": "l2",
                "growth_rounds": [[1, 3]],
            },
            input_shape=(3, 6),
            expected_output_shape=(3, 4),
            expected_num_trainable_weights=1 + 2,
            expected_num_losses=2,
            supports_masking=True,
        )

    def test_quantized_after_growth(self):
        # The int8 kernel and its scale are not trainable; the bias and the
        # growth pairs stay float and train.
        self.run_layer_test(
            GrowableDense,
            init_kwargs={
                "units": 5,
                "activation": "gelu",
                "growth_rounds": [[0, 2], [2, 3, 4]],
                "dtype": "int8_from_float32",
            },
            input_shape=(2, 3, 4),
            expected_output_shape=(2, 3, 5),
            expected_num_trainable_weights=1 + 4,  # rounds packed
            expected_num_non_trainable_weights=2,
            supports_masking=True,
        )


class VitBlocksHarnessTest(testing.TestCase):
    def test_attention(self):
        self.run_layer_test(
            Attention,
            init_kwargs={
                "dim": 8,
                "num_heads": 2,
                "head_dim": 2,
                "growth_rounds": {"qkv": [[0, 5]], "proj": [[1]]},
            },
            input_shape=(2, 5, 8),
            expected_output_shape=(2, 5, 8),
            expected_num_trainable_weights=4 + 4 + 4,
        )

    def test_mlp(self):
        self.run_layer_test(
            Mlp,
            init_kwargs={
                "dim": 8,
                "hidden_dim": 6,
                "growth_rounds": {"fc1": [[0], [0, 5]]},
            },
            input_shape=(2, 5, 8),
            expected_output_shape=(2, 5, 8),
            expected_num_trainable_weights=4 + 4,  # rounds packed
        )

    def test_transformer_block(self):
        self.run_layer_test(
            TransformerBlock,
            init_kwargs={
                "dim": 8,
                "num_heads": 2,
                "mlp_hidden_dim": 12,
                "drop_path_rate": 0.1,
                "growth_rounds": {"mlp": {"fc2": [[3]]}},
            },
            input_shape=(2, 5, 8),
            expected_output_shape=(2, 5, 8),
            expected_num_trainable_weights=2 + 4 + 2 + 4 + 4,
            expected_num_seed_generators=1,
        )

    def test_patch_embedding(self):
        self.run_layer_test(
            PatchEmbedding,
            init_kwargs={"patch_size": 2, "dim": 6},
            input_shape=(2, 4, 4, 3),
            expected_output_shape=(2, 4, 6),
            expected_num_trainable_weights=2,
        )

    def test_class_token(self):
        self.run_layer_test(
            ClassToken,
            init_kwargs={},
            input_shape=(2, 4, 6),
            expected_output_shape=(2, 5, 6),
            expected_num_trainable_weights=1,
        )

    def test_position_embedding(self):
        self.run_layer_test(
            PositionEmbedding,
            init_kwargs={},
            input_shape=(2, 5, 6),
            expected_output_shape=(2, 5, 6),
            expected_num_trainable_weights=1,
        )

    def test_class_token_pooling(self):
        self.run_layer_test(
            ClassTokenPooling,
            init_kwargs={},
            input_shape=(2, 5, 6),
            expected_output_shape=(2, 6),
            expected_num_trainable_weights=0,
        )
