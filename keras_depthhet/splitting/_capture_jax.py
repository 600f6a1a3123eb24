"""JAX capture: `dL/d(output)` is `jax.grad` with respect to zero "probes"
that the hook adds to every call's output; one `jax.jit` per step."""

import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp

from keras_depthhet.splitting.capture import CallSites, hooked, layer_terms
from keras_depthhet.utils.keras_internals import float32_compute


def derivative(fn: Callable, z, order: int):
    """Elementwise `order`-th derivative of the elementwise `fn` at `z`."""
    for _ in range(order):
        fn = jax.grad(lambda u, fn=fn: jnp.sum(fn(u)))
    return fn(z)


def _hooked_forward(model, layers, hook, trainable, non_trainable, x):
    """`model`'s float32 inference output with `hook` on `layers`."""
    # As Keras's trainer: `training` only where `call` takes it.
    parameters = inspect.signature(model.call).parameters
    kwargs = {"training": False} if "training" in parameters else {}
    with hooked(layers, hook), float32_compute(model):
        return model.stateless_call(trainable, non_trainable, x, **kwargs)[0]


def _values(model):
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
    )


def trace(model, layers, hook, x) -> None:
    """Runs `hook` on `layers` for `x`, traced only (shapes, no values)."""
    jax.eval_shape(
        lambda t, n, xs: _hooked_forward(model, layers, hook, t, n, xs),
        *_values(model),
        x,
    )


def make_step(model, layers: dict, loss_fn: Callable, transform: Callable):
    """`step(x, y, sample_weight, scale)`: `layer_terms` of the scaled loss."""

    def forward(trainable, non_trainable, probes, x):
        sites = CallSites(layers)

        def hook(layer, inputs, preactivation, outputs):
            i = sites.record(layer, (inputs, preactivation))
            probe = probes.get(sites.key(layer))
            return outputs if probe is None else outputs + probe[i]

        y_pred = _hooked_forward(
            model, layers.values(), hook, trainable, non_trainable, x
        )
        return y_pred, sites.records

    @jax.jit
    def jitted(trainable, non_trainable, x, y, sample_weight, scale):
        shapes = jax.eval_shape(forward, trainable, non_trainable, {}, x)[1]
        probes = {
            key: [jnp.zeros(z.shape, z.dtype) for _, z in calls]
            for key, calls in shapes.items()
        }

        def loss_of(probes):
            y_pred, captured = forward(trainable, non_trainable, probes, x)
            loss = loss_fn(y, y_pred, sample_weight)
            return jnp.asarray(loss, "float32") * scale, captured

        grads, captured = jax.grad(loss_of, has_aux=True)(probes)
        return layer_terms(layers, captured, grads, transform, derivative)

    def step(x, y, sample_weight, scale):
        terms, finite = jitted(
            *_values(model), x, y, sample_weight, jnp.float32(scale)
        )
        # jit returns dicts sorted by key; restore the layer order.
        return tuple({key: d[key] for key in layers} for d in (terms, finite))

    return step


def compile_solver(solve: Callable) -> Callable:
    """`solve` as one `jax.jit` program, float64 enabled inside it only."""
    compiled = jax.jit(solve)

    def run(*arrays):
        with jax.enable_x64(True):
            return compiled(*jax.device_put(arrays))

    return run
