"""Tiny models and data shared by the growth tests."""

import keras
import numpy as np

from keras_depthhet.growth import GrowthCallback
from keras_depthhet.layers import GrowableDense, growable_layer_map
from keras_depthhet.models.vit import growable_layers, vit


def tiny_vit(depth: int = 2) -> keras.Model:
    """An 8x8x1 ViT with 2 blocks of width 16 (a few thousand weights)."""
    return vit(
        image_size=8,
        patch_size=4,
        num_channels=1,
        num_classes=10,
        dim=16,
        depth=depth,
        num_heads=2,
        attention_width=0.5,
        mlp_width=0.5,
    )


def random_data(n: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, n)
    return x, y


def _compiled(model, optimizer, jit_compile) -> keras.Model:
    """`model` compiled for sparse labels and accuracy (Adam by default)."""
    model.compile(
        optimizer or keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def compiled_tiny_vit(optimizer=None, jit_compile="auto", depth: int = 2):
    """`tiny_vit` compiled for sparse labels and accuracy.

    `jit_compile="auto"` is Keras's default: XLA on JAX, and on a CPU-only
    TensorFlow a `tf.function` without XLA, whose tracing costs about half
    of XLA's compile for these models. Tests of compiled functions as such
    pass `jit_compile=True` (or both values).
    """
    return _compiled(tiny_vit(depth), optimizer, jit_compile)


def tiny_mlp(width: int = 16) -> keras.Model:
    """8x8x1 inputs, flattened, through two `GrowableDense` layers of
    `width` GELU neurons (`"fc1"`, `"fc2"`) to a 10-class `Dense` head.

    The growth machinery finds and grows `GrowableDense` layers in any
    model; tests whose subject is not the ViT run on this model, whose
    compiled steps cost a fraction of the ViT's. A neuron of `fc1` costs
    `2 * (64 + 1)` parameters, one of `fc2` `2 * (width + 1)`.
    """
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Flatten()(inputs)
    hidden = GrowableDense(width, activation="gelu", name="fc1")(hidden)
    hidden = GrowableDense(width, activation="gelu", name="fc2")(hidden)
    outputs = keras.layers.Dense(10, name="head")(hidden)
    return keras.Model(inputs, outputs, name="tiny_mlp")


def compiled_tiny_mlp(optimizer=None, jit_compile="auto", width: int = 16):
    """`tiny_mlp` compiled as `compiled_tiny_vit` compiles the ViT."""
    return _compiled(tiny_mlp(width), optimizer, jit_compile)


def fixed_batch_loss(model, x, y) -> float:
    y_pred = model(x, training=False)
    return float(
        keras.ops.convert_to_numpy(model.compute_loss(x=x, y=y, y_pred=y_pred))
    )


def values_by_path(variables) -> dict:
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in variables}


def layer_costs(model) -> dict:
    return {
        layer.name: layer.growth_cost(1) for layer in growable_layers(model)
    }


def function_probes(model: keras.Model, x):
    """`(before, after, changes)`: callbacks to list first and last in
    `fit`; at each epoch's end, `changes` gets the largest change of
    `model(x)` across the callbacks between them (growth events)."""
    outputs, changes = [], []

    def record(epoch, logs):
        outputs.append(keras.ops.convert_to_numpy(model(x)))

    def compare(epoch, logs):
        record(epoch, logs)
        changes.append(float(np.max(np.abs(outputs[-1] - outputs[-2]))))

    before = keras.callbacks.LambdaCallback(on_epoch_end=record)
    after = keras.callbacks.LambdaCallback(on_epoch_end=compare)
    return before, after, changes


def tiny_transformer() -> keras.Model:
    """8x8x1 inputs as 8 tokens of 8 through `keras.layers.MultiHeadAttention`
    (2 heads of 4) and a Dense MLP (`"fc1"` 16 GELU, `"fc2"` 8) to a
    10-class head, made growable by `make_growable`: the query, key, value
    and output projections become `GrowableEinsumDense`, the MLP
    `GrowableDense`."""
    from keras_depthhet import make_growable

    inputs = keras.Input((8, 8, 1))
    # Every layer named: two models built in one process have equal paths.
    tokens = keras.layers.Reshape((8, 8), name="rows")(inputs)
    attended = keras.layers.MultiHeadAttention(2, 4, name="mha")(tokens, tokens)
    tokens = keras.layers.LayerNormalization(name="norm")(tokens + attended)
    hidden = keras.layers.Dense(16, activation="gelu", name="fc1")(tokens)
    tokens = tokens + keras.layers.Dense(8, name="fc2")(hidden)
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(tokens)
    outputs = keras.layers.Dense(10, name="head")(pooled)
    return make_growable(keras.Model(inputs, outputs, name="tiny_transformer"))


def compiled_tiny_transformer(optimizer=None, jit_compile="auto"):
    """`tiny_transformer` compiled as `compiled_tiny_vit` compiles the ViT."""
    return _compiled(tiny_transformer(), optimizer, jit_compile)


def grows_inside_fit(model, x, y, epochs=3, **growth):
    """Fits `model` (compiled here) with events after epochs 1 and 2 and
    checks the function unchanged at each event and the new pairs trained
    (their two halves no longer cancel)."""
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    grower = GrowthCallback(
        warmup=1, interval=1, layer_threshold=0, verbose=0, **growth
    )
    before, after, changes = function_probes(model, x[:8])
    model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=16,
        callbacks=[before, grower, after],
        verbose=0,
    )
    assert [e["epoch"] for e in grower.history] == list(range(1, epochs + 1))
    assert max(changes) <= 1e-5
    first = grower.history[0]["neurons"]
    assert first
    layers = growable_layer_map(model)
    for key in first:
        pairs = layers[key]._growth
        total = keras.ops.convert_to_numpy(
            pairs["kernel_plus"] + pairs["kernel_minus"]
        )
        assert np.abs(total).max() > 1e-6, key
    return grower
