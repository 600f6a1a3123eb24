import keras
import numpy as np
import pytest
from keras import ops

from keras_depthhet.layers import (
    Attention,
    ClassToken,
    ClassTokenPooling,
    Mlp,
    PatchEmbedding,
    PositionEmbedding,
    TransformerBlock,
)

LAYERS = [
    (lambda: PatchEmbedding(4, 6, name="pe"), (2, 8, 8, 3)),
    (lambda: ClassToken(name="cls"), (2, 5, 6)),
    (lambda: PositionEmbedding(name="pos"), (2, 5, 6)),
    (lambda: ClassTokenPooling(name="pool"), (2, 5, 6)),
    (lambda: Attention(6, 2, head_dim=2, name="attn"), (2, 5, 6)),
    (lambda: Mlp(6, 10, name="mlp"), (2, 5, 6)),
    (
        lambda: TransformerBlock(
            6, 3, head_dim=1, mlp_hidden_dim=7, drop_path_rate=0.1, name="blk"
        ),
        (2, 5, 6),
    ),
]


@pytest.mark.parametrize("make, shape", LAYERS)
def test_config_round_trip_and_output_shape(rng, make, shape):
    layer = make()
    x = rng.normal(size=shape).astype("float32")
    y = layer(x)
    assert tuple(y.shape) == tuple(layer.compute_output_shape(shape))
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        ops.convert_to_numpy(clone(x)), ops.convert_to_numpy(y), atol=1e-6
    )


def test_grown_block_config_carries_growth_rounds(rng):
    block = TransformerBlock(8, 2, head_dim=2, mlp_hidden_dim=12, name="b")
    x = rng.normal(size=(2, 3, 8)).astype("float32")
    block(x)
    block.attn.qkv.grow([0, 5])
    block.mlp.fc1.grow([11])
    block.mlp.fc1.grow([11, 2])
    rounds = block.get_config()["growth_rounds"]
    assert rounds == {
        "attn": {"qkv": [[0, 5]], "proj": []},
        "mlp": {"fc1": [[11], [11, 2]], "fc2": []},
    }
    clone = TransformerBlock.from_config(block.get_config())
    clone(x)
    assert clone.count_params() == block.count_params()
    assert clone.mlp.fc1.name == "b_mlp_fc1"


def test_stochastic_depth_drops_whole_samples_in_training(rng):
    block = TransformerBlock(4, 2, drop_path_rate=0.5, name="b")
    x = rng.normal(size=(64, 3, 4)).astype("float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(block(x, training=False)),
        ops.convert_to_numpy(block(x)),
    )
    # With both branches dropped a sample passes through unchanged.
    out = ops.convert_to_numpy(block(x, training=True))
    unchanged = np.all(np.isclose(out, x), axis=(1, 2))
    assert 0 < unchanged.sum() < 64


def test_patch_embedding_rejects_indivisible_images():
    with pytest.raises(ValueError, match="divisible by `patch_size`"):
        PatchEmbedding(3, 4).build((None, 8, 8, 1))


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: PatchEmbedding(0, 4), "patch_size"),
        (lambda: Attention(8, 0), "num_heads"),
        (lambda: Mlp(8, -2), "hidden_dim"),
        (lambda: TransformerBlock(8, 2, drop_path_rate=-0.1), "drop_path_rate"),
    ],
)
def test_bad_arguments_raise(make, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        make()


def test_nested_layers_in_a_sequential_model_save(rng, tmp_path):
    model = keras.Sequential(
        [keras.Input((4, 6)), TransformerBlock(6, 2, name="b0")]
    )
    model.get_layer("b0").mlp.fc2.grow([1, 3])
    x = rng.normal(size=(2, 4, 6)).astype("float32")
    path = tmp_path / "seq.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x))
    )


def test_patch_embedding_equals_a_conv2d_with_its_weights(rng):
    layer = PatchEmbedding(4, 6, name="pe")
    images = rng.normal(size=(2, 12, 8, 3)).astype("float32")
    layer.build(images.shape)
    kernel = rng.normal(size=(4, 4, 3, 6)).astype("float32")
    bias = rng.normal(size=(6,)).astype("float32")
    layer.projection.set_weights([kernel, bias])
    conv = keras.layers.Conv2D(6, 4, strides=4)
    conv.build(images.shape)
    conv.set_weights([kernel, bias])
    expected = ops.convert_to_numpy(conv(images)).reshape(2, 3 * 2, 6)
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer(images)), expected, rtol=1e-5, atol=1e-5
    )
    # The weights keep the Conv2D layout and names of earlier versions.
    assert [(w.path, tuple(w.shape)) for w in layer.weights] == [
        ("pe/pe_projection/kernel", (4, 4, 3, 6)),
        ("pe/pe_projection/bias", (6,)),
    ]


def _layer_norm(x, layer):
    gamma, beta = (ops.convert_to_numpy(w) for w in (layer.gamma, layer.beta))
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta


def test_transformer_block_is_pre_norm_residual(rng):
    block = TransformerBlock(8, 2, mlp_hidden_dim=12, name="b")
    x = rng.normal(size=(3, 5, 8)).astype("float32")
    block(x)
    block.set_weights(
        [w + 0.3 * rng.normal(size=w.shape) for w in block.get_weights()]
    )

    def branch(layer, tokens):
        return ops.convert_to_numpy(layer(tokens.astype("float32")))

    expected = x + branch(block.attn, _layer_norm(x, block.norm1))
    expected = expected + branch(block.mlp, _layer_norm(expected, block.norm2))
    np.testing.assert_allclose(
        ops.convert_to_numpy(block(x)), expected, rtol=1e-5, atol=1e-5
    )
