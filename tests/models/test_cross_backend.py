"""A grown model saved under this backend loads under the other one.

Run under both backends, this covers JAX -> TensorFlow and TensorFlow -> JAX.
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_depthhet.models import growable_layers, vit
from tests.subprocess_utils import run_python

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_grown_model_loads_on_the_other_backend(rng, tmp_path):
    model = vit(
        image_size=8,
        patch_size=4,
        num_channels=1,
        num_classes=5,
        dim=16,
        depth=2,
        num_heads=2,
        attention_width=0.5,
        mlp_width=0.5,
    )
    for layer in growable_layers(model):
        layer.grow(rng.choice(layer.units, 3, replace=False))
    growable_layers(model)[2].grow([0, 1])
    # Trained-looking weights, so the growth pairs no longer cancel.
    model.set_weights(
        [w + 0.1 * rng.normal(size=w.shape) for w in model.get_weights()]
    )
    images = rng.normal(size=(4, 8, 8, 1)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    expected = ops.convert_to_numpy(model(images))
    model.save(tmp_path / "grown.keras")
    other = "tensorflow" if keras.backend.backend() == "jax" else "jax"
    result = run_python(
        f"""
        import json, keras, numpy as np
        import keras_depthhet
        model = keras.saving.load_model({str(tmp_path / "grown.keras")!r})
        images = np.load({str(tmp_path / "images.npy")!r})
        logits = keras.ops.convert_to_numpy(model(images))
        rounds = [
            [r.tolist() for r in layer.growth_rounds]
            for layer in keras_depthhet.models.growable_layers(model)
        ]
        print(json.dumps({{
            "backend": keras.backend.backend(),
            "logits": logits.tolist(),
            "rounds": rounds,
            "params": model.count_params(),
        }}))
        """,
        backend=other,
    )
    assert result["backend"] == other
    np.testing.assert_allclose(
        np.array(result["logits"]), expected, rtol=1e-5, atol=1e-5
    )
    assert result["rounds"] == [
        [r.tolist() for r in layer.growth_rounds]
        for layer in growable_layers(model)
    ]
    assert result["params"] == model.count_params()
