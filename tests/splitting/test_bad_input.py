"""Bad input to the splitting analysis gets a Keras-style ValueError."""

import keras
import numpy as np
import pytest

from keras_depthhet.splitting import gradient_proxy, splitting_eigenvalues
from tests.growth.helpers import random_data, tiny_vit

LOSS = "sparse_categorical_crossentropy"


@pytest.fixture
def model():
    return tiny_vit()


@pytest.fixture
def data():
    x, y = random_data(8)
    return [(x, y)]


@pytest.mark.parametrize("analyse", [splitting_eigenvalues, gradient_proxy])
def test_empty_data(model, analyse):
    with pytest.raises(ValueError, match="at least one batch"):
        analyse(model, [], loss=LOSS)


def test_model_without_growable_layers(data):
    plain = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="growable layer.*make_growable"):
        splitting_eigenvalues(plain, data, loss=LOSS)


@pytest.mark.parametrize("analyse", [splitting_eigenvalues, gradient_proxy])
def test_unknown_layer_names(model, data, analyse):
    with pytest.raises(ValueError, match=r"nope.*block_0_attn_qkv"):
        analyse(model, data, loss=LOSS, layers=["block_0_mlp_fc1", "nope"])


def test_layers_must_be_a_list_of_names(model, data):
    with pytest.raises(ValueError, match="list of layer names"):
        splitting_eigenvalues(model, data, loss=LOSS, layers="block_0_mlp_fc1")


def test_non_finite_gradients_name_layer_and_batch(model):
    x, y = random_data(8)
    bad = x.copy()
    bad[0] = np.inf
    data = [(x, y), (bad, y)]
    with pytest.raises(
        ValueError, match=r"layer 'block_0_attn_qkv' at batch 1"
    ):
        splitting_eigenvalues(model, data, loss=LOSS)
    with pytest.raises(ValueError, match="at batch 1"):
        gradient_proxy(model, data, loss=LOSS)


def test_unknown_method(model, data):
    with pytest.raises(ValueError, match="Received: method='eig'"):
        splitting_eigenvalues(model, data, loss=LOSS, method="eig")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tol": 0.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"num_batches": 0}, "num_batches"),
        ({"memory_budget": -1}, "memory_budget"),
    ],
)
def test_bad_numbers(model, data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        splitting_eigenvalues(model, data, loss=LOSS, **kwargs)


def test_uncompiled_model_needs_a_loss(model, data):
    with pytest.raises(ValueError, match="`loss` is required"):
        splitting_eigenvalues(model, data)


def test_unknown_loss_name(model, data):
    with pytest.raises(ValueError, match="not a known Keras loss"):
        splitting_eigenvalues(model, data, loss="no_such_loss")


def test_batches_must_be_tuples(model):
    x, _ = random_data(8)
    with pytest.raises(
        ValueError, match=r"\(x, y\) or \(x, y, sample_weight\)"
    ):
        splitting_eigenvalues(model, x, loss=LOSS)


def test_unbuilt_model():
    from tests.splitting.helpers import GrowableDense

    model = keras.Sequential([GrowableDense(3)])
    with pytest.raises(ValueError, match="must be built"):
        splitting_eigenvalues(model, [(np.ones((2, 4)), np.ones((2, 3)))])


def test_tuple_of_arrays_is_read_as_batches_of_32(model):
    x, y = random_data(80)
    whole = splitting_eigenvalues(model, (x, y), loss=LOSS, method="dense")
    as_batches = splitting_eigenvalues(
        model,
        [(x[i : i + 32], y[i : i + 32]) for i in (0, 32, 64)],
        loss=LOSS,
        method="dense",
    )
    one_batch = splitting_eigenvalues(
        model, [(x, y)], loss=LOSS, method="dense"
    )
    for name, values in whole.items():
        np.testing.assert_array_equal(values, as_batches[name])
        # The mean loss over all samples does not depend on the batching.
        np.testing.assert_allclose(
            values, one_batch[name], rtol=1e-3, atol=1e-6
        )
    # Only the first of the three batches.
    first = splitting_eigenvalues(
        model, (x, y), loss=LOSS, num_batches=1, method="dense"
    )
    head = splitting_eigenvalues(
        model, [(x[:32], y[:32])], loss=LOSS, method="dense"
    )
    for name, values in first.items():
        np.testing.assert_array_equal(values, head[name])
