"""All 48 growable layers of the reduced DeiT-S, at a small image size."""

import keras
import numpy as np
import pytest

from keras_depthhet.models.vit import deit_small
from keras_depthhet.splitting import splitting_eigenvalues

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_reduced_deit_small_all_layers(rng):
    # 32x32 images with 16x16 patches keep DeiT-S's widths (5 tokens).
    model = deit_small(
        image_size=32,
        patch_size=16,
        num_classes=10,
        attention_width=0.5,
        mlp_width=0.5,
    )
    x = rng.normal(size=(6, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 6)
    data = [(x[:3], y[:3]), (x[3:], y[3:])]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    values, info = splitting_eigenvalues(
        model, data, loss=loss, return_info=True
    )
    assert len(values) == 48
    widths = {"qkv": 576, "proj": 384, "fc1": 768, "fc2": 384}
    for name, layer_values in values.items():
        assert layer_values.shape == (widths[name.rsplit("_", 1)[-1]],)
        assert np.all(np.isfinite(layer_values))
        assert info[name]["method"] == "matrix_free"
        assert info[name]["converged"].all()
    # The matrix-free values of a layer agree with dense eigen-solves.
    name = "block_11_attn_proj"
    dense = splitting_eigenvalues(
        model, data, loss=loss, layers=[name], method="dense"
    )[name]
    most_negative = np.argsort(dense)[:20]
    np.testing.assert_allclose(
        values[name][most_negative], dense[most_negative], rtol=1e-3
    )
