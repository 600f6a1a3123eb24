"""JAX capture of each hooked layer's input, pre-activation and dL/d(output).

`dL/d(output)` comes from `jax.grad` with respect to zero "probes" that the
analysis hook adds to every hooked layer's output: the gradient of the loss
with respect to a probe is exactly the gradient with respect to that output.
The whole step (forward, backward, per-token terms) is one `jax.jit`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp


def derivative(fn: Callable, z, order: int):
    """Elementwise `order`-th derivative of the elementwise `fn` at `z`."""
    current = fn
    for _ in range(order):
        current = _elementwise_grad(current)
    return current(z)


def _elementwise_grad(fn: Callable) -> Callable:
    return jax.grad(lambda u: jnp.sum(fn(u)))


def _hooked_forward(model, layers, hook, trainable, non_trainable, x):
    """`model`'s inference output with `hook` installed on `layers`."""
    for layer in layers:
        layer.set_analysis_hook(hook)
    try:
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


def input_shapes(model, layers, x) -> dict[str, tuple]:
    """Each layer's input shape for `x`, from a shape-only trace."""
    shapes = {}

    def hook(layer, inputs, preactivation, outputs):
        shapes[layer.name] = tuple(inputs.shape)
        return outputs

    jax.eval_shape(
        lambda t, n, xs: _hooked_forward(model, layers, hook, t, n, xs),
        *_values(model),
        x,
    )
    return shapes


def make_step(model, layers, loss_fn: Callable, transform: Callable):
    """Builds `step(x, y, sample_weight, scale) -> (terms, finite)`.

    `terms[name]` is `transform(layer, x, z', g, derivative)` for the loss
    `loss_fn(y, model(x), sample_weight) * scale`; `finite[name]` says
    whether all of those terms are finite.
    """
    by_name = {layer.name: layer for layer in layers}

    def forward(trainable, non_trainable, probes, x):
        captured = {}

        def hook(layer, inputs, preactivation, outputs):
            captured[layer.name] = (inputs, preactivation)
            probe = probes.get(layer.name)
            return outputs if probe is None else outputs + probe

        y_pred = _hooked_forward(
            model, layers, hook, trainable, non_trainable, x
        )
        return y_pred, captured

    @jax.jit
    def jitted(trainable, non_trainable, x, y, sample_weight, scale):
        shapes = jax.eval_shape(
            lambda t, n, xs: forward(t, n, {}, xs)[1],
            trainable,
            non_trainable,
            x,
        )
        probes = {
            name: jnp.zeros(z.shape, z.dtype) for name, (_, z) in shapes.items()
        }

        def loss_of(probes):
            y_pred, captured = forward(trainable, non_trainable, probes, x)
            loss = loss_fn(y, y_pred, sample_weight)
            return jnp.asarray(loss, "float32") * scale, captured

        grads, captured = jax.grad(loss_of, has_aux=True)(probes)
        terms, finite = {}, {}
        for name, layer in by_name.items():
            inputs, z = captured[name]
            terms[name] = transform(layer, inputs, z, grads[name], derivative)
            finite[name] = jnp.all(
                jnp.stack([jnp.all(jnp.isfinite(t)) for t in terms[name]])
            )
        return terms, finite

    def step(x, y, sample_weight, scale):
        trainable, non_trainable = _values(model)
        terms, finite = jitted(
            trainable, non_trainable, x, y, sample_weight, jnp.float32(scale)
        )
        # jit returns dicts sorted by key; restore the layer order.
        return (
            {name: terms[name] for name in by_name},
            {name: finite[name] for name in by_name},
        )

    return step


def lanczos_products(x, c):
    """`None`: the Lanczos products stay in NumPy on this backend.

    Eager `jax.numpy` compiles each new shape, and the active width of a
    Lanczos solve shrinks step by step, so NumPy's BLAS (as fast on the
    CPU) runs them.
    """
    return None
