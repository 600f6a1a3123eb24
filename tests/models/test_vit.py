from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from keras_depthhet.layers import GrowableDense
from keras_depthhet.models import (
    deit_base,
    deit_small,
    deit_tiny,
    growable_layers,
    vit,
)


def _tiny(**kwargs):
    defaults = dict(
        image_size=8,
        patch_size=4,
        num_channels=1,
        num_classes=10,
        dim=16,
        depth=2,
        num_heads=2,
    )
    return vit(**{**defaults, **kwargs})


@pytest.mark.integration
@pytest.mark.parametrize(
    "builder, kwargs, expected",
    [
        (deit_tiny, {}, 5_717_416),
        (deit_small, {}, 22_050_664),
        (deit_base, {}, 86_567_656),
        (deit_small, {"num_classes": 100}, 21_704_164),
        (
            deit_small,
            {"num_classes": 100, "attention_width": 0.5, "mlp_width": 0.5},
            11_071_204,
        ),
    ],
)
def test_parameter_counts_match_timm_and_the_paper(builder, kwargs, expected):
    assert builder(**kwargs).count_params() == expected


@pytest.mark.integration
def test_reduced_widths_halve_qkv_proj_fc1_fc2():
    model = deit_small(num_classes=100, attention_width=0.5, mlp_width=0.5)
    layers = {layer.name: layer for layer in growable_layers(model)}
    assert len(layers) == 48
    assert layers["block_0_attn_qkv"].units == 3 * 192
    assert layers["block_0_attn_proj"].input_dim == 192
    assert layers["block_11_mlp_fc1"].units == 768
    assert layers["block_11_mlp_fc2"].input_dim == 768
    assert layers["block_11_mlp_fc2"].units == 384


def test_layer_names_are_stable_and_documented():
    model = _tiny(depth=3)
    names = [layer.name for layer in growable_layers(model)]
    assert names == [
        f"block_{i}_{part}"
        for i in range(3)
        for part in ("attn_qkv", "attn_proj", "mlp_fc1", "mlp_fc2")
    ]
    assert model.get_layer("block_1").attn.qkv is growable_layers(model)[4]


def test_growable_layers_of_a_plain_model_and_of_a_layer():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3)(inputs)
    model = keras.Model(inputs, GrowableDense(2, name="g")(hidden))
    assert [layer.name for layer in growable_layers(model)] == ["g"]
    single = GrowableDense(2)
    assert growable_layers(single) == [single]
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert growable_layers(plain) == []


def test_attention_matches_numpy_reference(rng):
    model = _tiny(dim=12, num_heads=3, attention_width=0.5)
    attn = model.get_layer("block_0").attn
    tokens = rng.normal(size=(2, 5, 12)).astype("float32")
    out = ops.convert_to_numpy(attn(tokens))
    heads, head_dim = 3, 2
    qkv_layer, proj_layer = attn.qkv, attn.proj
    qkv = tokens @ ops.convert_to_numpy(
        qkv_layer.kernel
    ) + ops.convert_to_numpy(qkv_layer.bias)
    qkv = qkv.reshape(2, 5, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    mixed = (weights @ v).transpose(0, 2, 1, 3).reshape(2, 5, heads * head_dim)
    expected = mixed @ ops.convert_to_numpy(
        proj_layer.kernel
    ) + ops.convert_to_numpy(proj_layer.bias)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def _grow_randomly(model, rng, neurons=5, rounds=2):
    for _ in range(rounds):
        for layer in growable_layers(model):
            layer.grow(rng.choice(layer.units, neurons, replace=False))


@pytest.mark.integration
def test_reduced_deit_small_grown_everywhere_keeps_logits_and_saves(
    rng, tmp_path
):
    model = deit_small(
        num_classes=100, image_size=32, attention_width=0.5, mlp_width=0.5
    )
    images = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    before = ops.convert_to_numpy(model(images))
    params = model.count_params()
    _grow_randomly(model, rng, neurons=7, rounds=2)
    grown = ops.convert_to_numpy(model(images))
    np.testing.assert_allclose(grown, before, atol=1e-4)
    expected_added = sum(
        layer.growth_cost(layer.num_grown) for layer in growable_layers(model)
    )
    assert model.count_params() == params + expected_added
    path = tmp_path / "reduced_grown.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded(images)), grown, rtol=1e-6, atol=1e-6
    )
    for original, restored in zip(
        growable_layers(model), growable_layers(loaded), strict=True
    ):
        assert original.name == restored.name
        assert [r.tolist() for r in original.growth_rounds] == [
            r.tolist() for r in restored.growth_rounds
        ]


def test_grown_model_rebuilds_from_config(rng):
    model = _tiny(attention_width=0.5, mlp_width=0.5)
    _grow_randomly(model, rng, neurons=3)
    model.set_weights(
        [w + 0.05 * rng.normal(size=w.shape) for w in model.get_weights()]
    )
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    images = rng.normal(size=(3, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(clone(images)),
        ops.convert_to_numpy(model(images)),
        rtol=1e-6,
        atol=1e-6,
    )
    assert [v.path for v in clone.weights] == [v.path for v in model.weights]


def test_model_trains(rng):
    # One block (with stochastic depth) compiles in half the time of two.
    model = _tiny(drop_path_rate=0.1, depth=1)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    images = rng.normal(size=(32, 8, 8, 1)).astype("float32")
    labels = rng.integers(0, 10, size=(32,))
    history = model.fit(images, labels, epochs=15, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.8 * history.history["loss"][0]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"image_size": 30}, "image_size"),
        ({"patch_size": 0}, "patch_size"),
        ({"num_classes": 0}, "num_classes"),
        ({"dim": 15}, "dim"),
        ({"attention_width": 0}, "attention_width"),
        ({"mlp_width": -1.0}, "mlp_width"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"depth": 2.0}, "depth"),
    ],
)
def test_bad_builder_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        _tiny(**{"image_size": 32, "patch_size": 4, **kwargs})


def test_presets_refuse_to_change_their_architecture():
    with pytest.raises(ValueError, match="`dim`"):
        deit_small(dim=128)


def test_model_saved_by_an_earlier_version_loads_with_the_same_logits():
    """A grown tiny ViT saved when the patch embedding ran as a Conv2D.

    `data/` holds the `.keras` file and the images and logits it gave.
    """
    data = Path(__file__).parent / "data"
    saved = np.load(data / "grown_tiny_vit_before_patch_matmul.npz")
    model = keras.saving.load_model(
        data / "grown_tiny_vit_before_patch_matmul.keras"
    )
    assert [len(layer.growth_rounds) for layer in growable_layers(model)] == [
        1,
        1,
        1,
        1,
    ]
    np.testing.assert_allclose(
        ops.convert_to_numpy(model(saved["images"])),
        saved["logits"],
        rtol=1e-5,
        atol=1e-6,
    )
