"""Growth inside `fit` on models as Keras users write them."""

import keras
import numpy as np
import pytest

from keras_depthhet import GrowableDense, GrowthCallback, make_growable
from tests.growth.helpers import function_probes, grows_inside_fit


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 16)).astype("float32"), rng.integers(0, 4, n)


class NoTrainingArgument(keras.Model):
    """A subclassed model whose `call` has no `training` argument."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = GrowableDense(8, activation="gelu")
        self.head = keras.layers.Dense(4)

    def call(self, x):
        return self.head(self.hidden(x))


def _sequential_without_input():
    return keras.Sequential(
        [GrowableDense(8, activation="gelu"), keras.layers.Dense(4)]
    )


@pytest.mark.parametrize(
    "build", [_sequential_without_input, NoTrainingArgument]
)
@pytest.mark.parametrize("analysis", ["recent", "given"])
def test_unbuilt_and_training_free_models_grow_inside_fit(build, analysis):
    x, y = _data()
    model = build()
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    grower = GrowthCallback(
        warmup=1,
        interval=1,
        param_budget=100,
        layer_threshold=0,
        analysis_data=(x[:32], y[:32]) if analysis == "given" else None,
        verbose=0,
    )
    before, after, changes = function_probes(model, x[:8])
    model.fit(
        x,
        y,
        epochs=2,
        batch_size=16,
        callbacks=[before, grower, after],
        verbose=0,
    )
    assert [e["epoch"] for e in grower.history] == [1, 2]
    assert model.count_params() == grower.history[-1]["params_after"]
    assert (
        grower.history[0]["params_after"] > grower.history[0]["params_before"]
    )
    assert len(changes) == 2 and max(changes) <= 1e-5


def _two_hidden_layers():
    model = keras.Sequential(
        [
            keras.Input((16,)),
            GrowableDense(8, activation="gelu", name="first"),
            GrowableDense(8, activation="gelu", name="second"),
            keras.layers.Dense(4),
        ]
    )
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def test_by_layer_type_takes_the_users_types():
    x, y = _data()
    # Without types the callback says what to pass, before training.
    untyped = GrowthCallback(budget_split="by_layer_type", verbose=0)
    with pytest.raises(ValueError, match=r"\['first', 'second'\].*layer_types"):
        _two_hidden_layers().fit(x, y, epochs=1, callbacks=[untyped], verbose=0)
    with pytest.raises(ValueError, match="must be None, a dict"):
        GrowthCallback(layer_types=["fc1"])
    for types in (
        {"first": "early", "second": "late"},
        lambda layer: {"first": "early", "second": "late"}[layer.name],
    ):
        grower = GrowthCallback(
            warmup=1,
            interval=1,
            # 68 per type: 2 neurons of `first` (34 each: 2 * (16 + 1)),
            # 3 of `second` (18 each: 2 * (8 + 1)).
            param_budget=136,
            layer_threshold=0,
            criterion="random",
            budget_split="by_layer_type",
            layer_types=types,
            seed=0,
            verbose=0,
        )
        _two_hidden_layers().fit(
            x, y, epochs=1, batch_size=16, callbacks=[grower], verbose=0
        )
        neurons = grower.history[0]["neurons"]
        assert neurons == {"first": 2, "second": 3}
    with pytest.raises(ValueError, match=r"not growable layers.*\['third'\]"):
        _two_hidden_layers().fit(
            x,
            y,
            epochs=1,
            callbacks=[
                GrowthCallback(
                    budget_split="by_layer_type", layer_types={"third": "x"}
                )
            ],
            verbose=0,
        )


@pytest.mark.integration  # Two events of a transformer (the fast tier
# grows one in tests/growth/test_grow.py).
def test_functional_multi_head_attention_transformergrows_inside_fit():
    from tests.models.test_make_growable import _transformer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6, 16)).astype("float32")
    y = rng.integers(0, 3, 64)
    model = make_growable(_transformer())
    grower = grows_inside_fit(
        model,
        x,
        y,
        epochs=2,
        param_budget=1500,
        budget_split="by_layer_type",
        layer_types={"fc1": "fc1", "fc2": "fc2"},
    )
    grown = set().union(*(e["neurons"] for e in grower.history))
    assert {"query", "key", "value", "attention_output"} & grown


@pytest.mark.integration  # KerasHub's import and a 4-layer ViT: 30 s.
@pytest.mark.slow
def test_keras_hub_vit_backbone_grows_inside_fit_and_reloads(tmp_path):
    import keras_hub

    from keras_depthhet.models import growable_layer_map

    def classifier():
        backbone = keras_hub.models.ViTBackbone(
            image_shape=(16, 16, 3),
            patch_size=4,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            mlp_dim=32,
            name="backbone",  # Named: the growth rounds name layers by path.
        )
        inputs = keras.Input((16, 16, 3))
        tokens = backbone(inputs)
        head = keras.layers.Dense(4, name="head")
        return keras.Model(inputs, head(tokens[:, 0]))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 4, 64)
    model = make_growable(classifier())
    types = {key.rsplit("/", 1)[-1] for key in growable_layer_map(model)}
    assert types == {
        "query",
        "key",
        "value",
        "attention_output",
        "dense_1",
        "dense_2",
    }
    # Default types from the layers' places: no `layer_types` needed.
    grows_inside_fit(
        model, x, y, epochs=2, param_budget=3000, budget_split="by_layer_type"
    )
    rounds = {
        key: [r.tolist() for r in layer.growth_rounds]
        for key, layer in growable_layer_map(model).items()
    }
    model.save_weights(tmp_path / "grown.weights.h5")
    again = make_growable(classifier(), growth_rounds=rounds)
    again.load_weights(tmp_path / "grown.weights.h5")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again(x[:8])),
        keras.ops.convert_to_numpy(model(x[:8])),
        atol=1e-5,
    )
