"""Writes the per-round growth files that `test_growable_dense_packing.py`
loads: a `.keras` model and a `.weights.h5` file saved by keras-depthhet
0.x before growth weights were packed into one pair of variables per
layer (commit a69c42f), each growth round then had its own four
variables `growth_{r}_kernel_plus`, ...

Run once with that version installed, from the repository root:

    KERAS_BACKEND=jax python tests/layers/data/make_per_round_files.py

The expected outputs are written beside the files, so that the test
checks the loaded model against what the saving model computed.
"""

import os

import keras
import numpy as np

from keras_depthhet.layers import GrowableDense

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((6,))
    hidden = GrowableDense(5, activation="gelu", name="a")(inputs)
    outputs = GrowableDense(3, use_bias=False, name="b")(hidden)
    model = keras.Model(inputs, outputs)
    a, b = model.get_layer("a"), model.get_layer("b")
    a.grow([0, 3])
    a.grow([3])
    a.grow([1, 4, 2])
    b.grow([2])
    b.grow([0, 2])
    rng = np.random.default_rng(0)
    # Pairs moved apart, as training would move them.
    for variable in a.weights + b.weights:
        if "growth_" in variable.name:
            value = keras.ops.convert_to_numpy(variable)
            variable.assign(value + 0.3 * rng.standard_normal(value.shape))
    x = rng.standard_normal((4, 6)).astype("float32")
    model.save(os.path.join(HERE, "per_round.keras"))
    model.save_weights(os.path.join(HERE, "per_round.weights.h5"))
    np.savez(
        os.path.join(HERE, "per_round_expected.npz"),
        x=x,
        y=keras.ops.convert_to_numpy(model(x)),
    )
    print([v.path for v in model.weights])


if __name__ == "__main__":
    main()
