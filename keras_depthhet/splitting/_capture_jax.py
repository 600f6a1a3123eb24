"""JAX capture of each hooked layer's input, pre-activation and dL/d(output).

`dL/d(output)` comes from `jax.grad` with respect to zero "probes" that the
analysis hook adds to every hooked layer's output, one per call of the
layer: the gradient of the loss with respect to a probe is exactly the
gradient with respect to that call's output. The whole step (forward in
float32, backward, per-token terms) is one `jax.jit`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from keras_depthhet.splitting.sites import CallSites
from keras_depthhet.utils.keras_internals import float32_compute


def derivative(fn: Callable, z, order: int):
    """Elementwise `order`-th derivative of the elementwise `fn` at `z`."""
    current = fn
    for _ in range(order):
        current = _elementwise_grad(current)
    return current(z)


def _elementwise_grad(fn: Callable) -> Callable:
    return jax.grad(lambda u: jnp.sum(fn(u)))


def _hooked_forward(model, layers, hook, trainable, non_trainable, x):
    """`model`'s float32 inference output with `hook` on `layers`."""
    for layer in layers:
        layer.set_analysis_hook(hook)
    try:
        with float32_compute(model):
            y_pred, _ = model.stateless_call(
                trainable, non_trainable, x, training=False
            )
    finally:
        for layer in layers:
            layer.set_analysis_hook(None)
    return y_pred


def _values(model):
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
    )


def input_shapes(model, layers: dict, x) -> dict[str, list[tuple]]:
    """Each layer's input shape at each of its calls, for `x`."""
    sites = CallSites(layers)

    def hook(layer, inputs, preactivation, outputs):
        sites.record(layer, tuple(inputs.shape))
        return outputs

    jax.eval_shape(
        lambda t, n, xs: _hooked_forward(
            model, layers.values(), hook, t, n, xs
        ),
        *_values(model),
        x,
    )
    return sites.by_key()


def make_step(model, layers: dict, loss_fn: Callable, transform: Callable):
    """Builds `step(x, y, sample_weight, scale) -> (terms, finite)`.

    `terms[key]` is `transform(layer, x, z', g, derivative)` for the loss
    `loss_fn(y, model(x), sample_weight) * scale`, over the tokens of all
    the layer's calls; `finite[key]` says whether all of them are finite.
    """

    def forward(trainable, non_trainable, probes, x):
        sites = CallSites(layers)

        def hook(layer, inputs, preactivation, outputs):
            i = sites.record(layer, (inputs, preactivation))
            probe = probes.get(sites.key(layer))
            return outputs if probe is None else outputs + probe[i]

        y_pred = _hooked_forward(
            model, layers.values(), hook, trainable, non_trainable, x
        )
        return y_pred, sites.by_key()

    @jax.jit
    def jitted(trainable, non_trainable, x, y, sample_weight, scale):
        shapes = jax.eval_shape(
            lambda t, n, xs: forward(t, n, {}, xs)[1],
            trainable,
            non_trainable,
            x,
        )
        probes = {
            key: [jnp.zeros(z.shape, z.dtype) for _, z in calls]
            for key, calls in shapes.items()
        }

        def loss_of(probes):
            y_pred, captured = forward(trainable, non_trainable, probes, x)
            loss = loss_fn(y, y_pred, sample_weight)
            return jnp.asarray(loss, "float32") * scale, captured

        grads, captured = jax.grad(loss_of, has_aux=True)(probes)
        terms, finite = {}, {}
        for key, layer in layers.items():
            inputs, z = CallSites.joined(captured[key])
            g = jnp.concatenate(
                [t.reshape(-1, t.shape[-1]) for t in grads[key]]
            )
            terms[key] = transform(layer, inputs, z, g, derivative)
            finite[key] = jnp.all(
                jnp.stack([jnp.all(jnp.isfinite(t)) for t in terms[key]])
            )
        return terms, finite

    def step(x, y, sample_weight, scale):
        trainable, non_trainable = _values(model)
        terms, finite = jitted(
            trainable, non_trainable, x, y, sample_weight, jnp.float32(scale)
        )
        # jit returns dicts sorted by key; restore the layer order.
        return (
            {key: terms[key] for key in layers},
            {key: finite[key] for key in layers},
        )

    return step


def compile_solver(solve: Callable) -> Callable:
    """`solve` as one `jax.jit` program, float64 enabled inside it only.

    The arrays go to the default device by an explicit `jax.device_put`
    (inside `jax.enable_x64`, so float64 inputs keep their precision):
    the captures are already there, so `jax.transfer_guard("disallow")`
    holds over the call.
    """
    compiled = jax.jit(solve)

    def run(*arrays):
        with jax.enable_x64(True):
            return compiled(*jax.device_put(arrays))

    return run
