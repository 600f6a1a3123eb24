"""The same weights and data give the same eigenvalues on JAX and TF."""

import contextlib
import io
import json

import keras
import numpy as np
import pytest

from tests.subprocess_utils import run_python

pytestmark = pytest.mark.integration

CHILD = """
import json
import keras
import keras
import numpy as np
from keras_depthhet.splitting import gradient_proxy, splitting_eigenvalues
from keras_depthhet.models.vit import growable_layers
from tests.growth.helpers import tiny_vit

model = tiny_vit()
growable_layers(model)[2].grow([1, 4, 7])
rng = np.random.default_rng(7)
model.set_weights(
    [rng.normal(scale=0.3, size=w.shape).astype("float32")
     for w in model.get_weights()]
)
x = rng.normal(size=(20, 8, 8, 1)).astype("float32")
y = rng.integers(0, 10, 20)
data = [(x[:12], y[:12]), (x[12:], y[12:])]
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
dense = splitting_eigenvalues(model, data, loss=loss, method="dense")
free = splitting_eigenvalues(model, data, loss=loss, method="matrix_free")
proxy = gradient_proxy(model, data, loss=loss)
print(json.dumps({
    kind: {name: values.tolist() for name, values in result.items()}
    for kind, result in (("dense", dense), ("free", free), ("proxy", proxy))
}))
"""


def _run_here(code: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "child", "exec"), {})
    return json.loads(out.getvalue().strip().splitlines()[-1])


# The comparison is symmetric, so it runs once, in the JAX suite (which
# computes TensorFlow's side in a child process); the TensorFlow suite would
# repeat the same two computations.
if keras.backend.backend() == "jax":

    @pytest.mark.slow
    def test_jax_and_tensorflow_agree():
        # JAX in this process, TensorFlow in a child process.
        jax_result = _run_here(CHILD)
        tf_result = run_python(CHILD, backend="tensorflow")
        for kind in ("dense", "free", "proxy"):
            assert jax_result[kind].keys() == tf_result[kind].keys()
            for name, values in jax_result[kind].items():
                values = np.asarray(values)
                slack = 1e-6 * np.abs(values).max()
                np.testing.assert_allclose(
                    tf_result[kind][name], values, rtol=1e-3, atol=slack
                )
        assert any(np.min(v) < 0 for v in jax_result["dense"].values())
