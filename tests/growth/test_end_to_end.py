"""End to end: a tiny ViT grows on scikit-learn's digits by splitting."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from keras_depthhet.growth import GrowthCallback
from tests.growth.helpers import tiny_vit


def _digits():
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


@pytest.mark.slow
@pytest.mark.parametrize("criterion", ["splitting", "gradient_proxy"])
def test_digits_grows_by_splitting_and_learns(criterion):
    (x, y), (x_test, y_test) = _digits()
    model = tiny_vit()
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    initial = model.count_params()
    grower = GrowthCallback(
        warmup=1,
        interval=1,
        param_budget=340,  # 10 neurons of an FC1 layer (2 * (16 + 1) each)
        layer_threshold=2,
        target_params=initial + 680,
        analysis_data=[(x[:128], y[:128])],
        layers=["block_0_mlp_fc1", "block_1_mlp_fc1"],
        criterion=criterion,
        verbose=0,
    )
    model.fit(x, y, batch_size=64, epochs=5, callbacks=[grower], verbose=0)
    grown = [e for e in grower.history if e["neurons"]]
    assert len(grown) >= 2
    assert initial + 340 < model.count_params() <= initial + 680
    assert model.count_params() == grower.history[-1]["params_after"]
    for event in grower.history:
        assert event["params_added"] <= 340
        eligible = {
            name
            for name, summary in event["scores"].items()
            if summary["num_negative"] >= 2
        }
        assert set(event["neurons"]) <= eligible
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy > 0.5
