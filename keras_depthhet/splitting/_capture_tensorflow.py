"""TensorFlow capture of each hooked layer's input, pre-activation and g.

The analysis hook asks the enclosing `tf.GradientTape` to watch the output
tensor of every call of a hooked layer; `tape.gradient` then gives
`dL/d(output)` directly. The model runs in float32.
The step is one `tf.function`, compiled with XLA when the model's
`jit_compile` is on. The captures stay in TensorFlow: the matrix-free
solve (`lanczos`) runs there too, always compiled with XLA.
"""

from collections.abc import Callable

import tensorflow as tf

from keras_depthhet.splitting.sites import CallSites
from keras_depthhet.utils.keras_internals import float32_compute


def derivative(fn: Callable, z, order: int):
    """Elementwise `order`-th derivative of the elementwise `fn` at `z`."""
    if order == 0:
        return fn(z)
    with tf.GradientTape() as tape:
        tape.watch(z)
        lower = derivative(fn, z, order - 1)
    return tape.gradient(lower, z)


def _hooked_call(model, layers, hook, x):
    """`model(x)` in float32 inference mode with `hook` on `layers`."""
    for layer in layers:
        layer.set_analysis_hook(hook)
    try:
        with float32_compute(model):
            return model(x, training=False)
    finally:
        for layer in layers:
            layer.set_analysis_hook(None)


def input_shapes(model, layers: dict, x) -> dict[str, list[tuple]]:
    """Each layer's input shape at each of its calls (one eager pass)."""
    sites = CallSites(layers)

    def hook(layer, inputs, preactivation, outputs):
        sites.record(layer, tuple(inputs.shape))
        return outputs

    _hooked_call(model, layers.values(), hook, x)
    return sites.by_key()


def make_step(model, layers: dict, loss_fn: Callable, transform: Callable):
    """Builds `step(x, y, sample_weight, scale) -> (terms, finite)`.

    `terms[key]` is `transform(layer, x, z', g, derivative)` for the loss
    `loss_fn(y, model(x), sample_weight) * scale`, over the tokens of all
    the layer's calls; `finite[key]` says whether all of them are finite.
    """

    # XLA when the model trains with it (`model.jit_compile`, as Keras
    # resolves it: off for "auto" on a CPU-only machine).
    @tf.function(jit_compile=bool(getattr(model, "jit_compile", False)))
    def traced(x, y, sample_weight, scale):
        sites = CallSites(layers)
        with tf.GradientTape(watch_accessed_variables=False) as tape:

            def hook(layer, inputs, preactivation, outputs):
                tape.watch(outputs)
                sites.record(layer, (inputs, preactivation, outputs))
                return outputs

            y_pred = _hooked_call(model, layers.values(), hook, x)
            loss = tf.cast(loss_fn(y, y_pred, sample_weight), "float32")
            loss = loss * scale
        captured = sites.by_key()
        outputs = [[c[2] for c in captured[key]] for key in layers]
        grads = tape.gradient(
            loss, outputs, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        terms, finite = {}, {}
        for (key, layer), grad in zip(layers.items(), grads, strict=True):
            inputs, z = CallSites.joined([c[:2] for c in captured[key]])
            g = tf.concat([tf.reshape(t, (-1, t.shape[-1])) for t in grad], 0)
            terms[key] = transform(layer, inputs, z, g, derivative)
            finite[key] = tf.reduce_all(
                tf.stack(
                    [tf.reduce_all(tf.math.is_finite(t)) for t in terms[key]]
                )
            )
        return terms, finite

    def step(x, y, sample_weight, scale):
        return traced(x, y, sample_weight, tf.constant(scale, "float32"))

    return step


def compile_solver(solve: Callable) -> Callable:
    """`solve` as one XLA-compiled `tf.function` (traced once per shape)."""
    # Plain TensorFlow loops: nothing for AutoGraph to convert.
    return tf.function(solve, jit_compile=True, autograph=False)
