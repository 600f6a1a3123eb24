"""Constraints, regularizers and saved weights treat a +/- pair as one neuron.

A pair starts with `w- = -w+`; whatever a user sets on the layer must not
break that at growth (function preservation) nor make the regularized
loss jump; a weights file saved before growth loads into the grown layer.
"""

import keras
import numpy as np
import pytest

from keras_depthhet.layers import GrowableDense


def _model(**layer_kwargs):
    inputs = keras.Input((6,))
    hidden = GrowableDense(8, activation="gelu", name="grow", **layer_kwargs)(
        inputs
    )
    outputs = keras.layers.Dense(3, name="head")(hidden)
    return keras.Model(inputs, outputs)


def _data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = rng.normal(size=(n, 3)).astype("float32")
    return x, y


CONSTRAINTS = {
    "non_neg": lambda: keras.constraints.NonNeg(),
    "max_norm": lambda: keras.constraints.MaxNorm(0.5),
    "unit_norm": lambda: keras.constraints.UnitNorm(),
    "min_max_norm": lambda: keras.constraints.MinMaxNorm(0.5, 1.0),
}


@pytest.mark.parametrize("name", sorted(CONSTRAINTS))
def test_constraints_keep_the_function_through_training_steps(name):
    from keras_depthhet.growth import grow_model

    x, y = _data()
    model = _model(
        kernel_constraint=CONSTRAINTS[name](),
        bias_constraint=(
            keras.constraints.NonNeg() if name == "non_neg" else None
        ),
        bias_initializer="ones",
    )
    model.compile(keras.optimizers.SGD(learning_rate=0.0), "mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # constrains kernel
    before = model.predict(x, verbose=0)
    grow_model(model, {"grow": [0, 2, 5]})
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), before, rtol=1e-5, atol=1e-6
    )


def test_the_minus_weight_obeys_the_mirrored_constraint():
    from keras_depthhet.growth import grow_model

    x, y = _data()
    model = _model(kernel_constraint="non_neg")
    model.compile(keras.optimizers.SGD(learning_rate=0.1), "mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    grow_model(model, {"grow": [1, 3]})
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    layer = model.get_layer("grow")
    weights = {v.name: keras.ops.convert_to_numpy(v) for v in layer.weights}
    assert weights["growth_kernel_plus"].min() >= 0.0
    assert weights["growth_kernel_minus"].max() <= 0.0
    assert weights["kernel"].min() >= 0.0
    pair = weights["growth_kernel_plus"] + weights["growth_kernel_minus"]
    assert np.abs(pair).max() > 0.0  # the pair trained


@pytest.mark.parametrize("kind", ["l2", "l1", "l1_l2"])
def test_regularized_loss_does_not_jump_at_growth(kind):
    from keras_depthhet.growth import grow_model

    regularizer = {
        "l2": keras.regularizers.L2(0.1),
        "l1": keras.regularizers.L1(0.1),
        "l1_l2": keras.regularizers.L1L2(0.05, 0.1),
    }[kind]
    x, y = _data()
    model = _model(kernel_regularizer=regularizer, bias_regularizer=regularizer)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    penalty = float(sum(keras.ops.convert_to_numpy(t) for t in model.losses))
    loss = model.evaluate(x, y, verbose=0)
    grow_model(model, {"grow": [0, 1, 2, 7]})
    assert len(model.losses) == 4  # kernel, bias, one per pair part
    grown = float(sum(keras.ops.convert_to_numpy(t) for t in model.losses))
    assert grown == pytest.approx(penalty, rel=1e-6)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(loss, rel=1e-5)


def test_pair_regularizer_is_the_regularizer_of_the_sum():
    from keras_depthhet.growth import grow_model

    model = _model(kernel_regularizer=keras.regularizers.L2(0.1))
    grow_model(model, {"grow": [0, 1]})
    layer = model.get_layer("grow")
    weights = {v.name: v for v in layer.weights}
    rng = np.random.default_rng(1)
    plus = rng.normal(size=(6, 2)).astype("float32")
    minus = rng.normal(size=(6, 2)).astype("float32")
    weights["growth_kernel_plus"].assign(plus)
    weights["growth_kernel_minus"].assign(minus)
    kernel = keras.ops.convert_to_numpy(weights["kernel"])
    expected = 0.1 * (np.sum(kernel**2) + np.sum((plus + minus) ** 2))
    total = float(sum(keras.ops.convert_to_numpy(t) for t in model.losses))
    assert total == pytest.approx(expected, rel=1e-5)


def test_weights_saved_before_growth_load_into_the_grown_layer(tmp_path):
    from keras_depthhet.growth import grow_model

    x, y = _data()
    model = _model()
    model.compile("adam", "mse")
    model.fit(x, y, epochs=1, verbose=0)
    grow_model(model, {"grow": [0, 4]})
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "early.weights.h5"
    model.save_weights(path)
    early = model.predict(x, verbose=0)
    grow_model(model, {"grow": [1, 2, 3]})
    model.fit(x, y, epochs=2, verbose=0)
    assert np.abs(model.predict(x, verbose=0) - early).max() > 1e-4
    with pytest.warns(UserWarning, match="optimizer"):
        model.load_weights(path)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), early, rtol=1e-5, atol=1e-6
    )
    layer = model.get_layer("grow")
    assert len(layer.growth_rounds) == 2
    weights = {v.name: keras.ops.convert_to_numpy(v) for v in layer.weights}
    np.testing.assert_allclose(
        weights["growth_kernel_plus"][:, 2:],  # round 1, after round 0
        0.2 * weights["kernel"][:, [1, 2, 3]],
        rtol=1e-6,
    )


def test_weights_of_another_growth_history_are_refused(tmp_path):
    from keras_depthhet.growth import grow_model

    model = _model()
    grow_model(model, {"grow": [0, 4]})
    grow_model(model, {"grow": [1]})
    model.save_weights(tmp_path / "grown.weights.h5")
    other = _model()
    grow_model(other, {"grow": [0, 5]})
    grow_model(other, {"grow": [1]})
    with pytest.raises(ValueError, match="another growth history"):
        other.load_weights(tmp_path / "grown.weights.h5")
    fresh = _model()
    with pytest.raises(ValueError, match="grown further"):
        fresh.load_weights(tmp_path / "grown.weights.h5")
