"""TensorFlow capture: the hook has the `tf.GradientTape` watch every call's
output; one `tf.function` per step (XLA when the model's `jit_compile` is)."""

import functools
from collections.abc import Callable

import tensorflow as tf

from keras_depthhet.splitting.capture import CallSites, hooked, layer_terms
from keras_depthhet.utils.keras_internals import float32_compute


def derivative(fn: Callable, z, order: int):
    """Elementwise `order`-th derivative of the elementwise `fn` at `z`."""
    if order == 0:
        return fn(z)
    with tf.GradientTape() as tape:
        tape.watch(z)
        lower = derivative(fn, z, order - 1)
    return tape.gradient(lower, z)


def trace(model, layers, hook, x):
    """`model(x)` in float32 inference mode with `hook` on `layers`."""
    with hooked(layers, hook), float32_compute(model):
        return model(x, training=False)


def make_step(model, layers: dict, loss_fn: Callable, transform: Callable):
    """`step(x, y, sample_weight, scale)`: `layer_terms` of the scaled loss."""

    def traced(x, y, sample_weight, scale):
        sites = CallSites(layers)
        with tf.GradientTape(watch_accessed_variables=False) as tape:

            def hook(layer, inputs, preactivation, outputs):
                tape.watch(outputs)
                sites.record(layer, (inputs, preactivation, outputs))
                return outputs

            y_pred = trace(model, layers.values(), hook, x)
            loss = tf.cast(loss_fn(y, y_pred, sample_weight), "float32") * scale
        captured = sites.records
        outputs = [[c[2] for c in captured[key]] for key in layers]
        grads = tape.gradient(
            loss, outputs, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        grads = dict(zip(layers, grads, strict=True))
        return layer_terms(layers, captured, grads, transform, derivative)

    # XLA as `model.jit_compile` resolves it (off for "auto" on a CPU). The
    # partial is TF's key for counting traces: each step's own (a growth
    # event makes a new step, traced once, not a retrace of the last).
    traced = tf.function(
        functools.partial(traced),
        jit_compile=bool(getattr(model, "jit_compile", False)),
    )

    def step(x, y, sample_weight, scale):
        return traced(x, y, sample_weight, tf.constant(scale, "float32"))

    return step


def compile_solver(solve: Callable) -> Callable:
    """`solve` as one XLA `tf.function` (its loops are TF's: no AutoGraph)."""
    return tf.function(solve, jit_compile=True, autograph=False)
