"""The backend-neutral capture step: the chosen layers' terms by the
backend's autodiff (`_capture_jax`, `_capture_tensorflow`), recorded per
layer and per call (a shared layer's matrix sums over all its calls), and
the per-token terms themselves in `keras.ops`."""

import contextlib
import importlib
import math
from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import ops

from keras_depthhet.layers.growable_dense import GrowableDense
from keras_depthhet.layers.lookup import growable_layer_map
from keras_depthhet.splitting.data import Batch, check_labels, read_batches
from keras_depthhet.splitting.loss import resolve_loss
from keras_depthhet.utils.keras_internals import (
    sync_trainer_state,
    untracked_cache,
)


@contextlib.contextmanager
def hooked(layers, hook):
    """Sets the analysis `hook` of `layers` in the block."""
    for layer in layers:
        layer.set_analysis_hook(hook)
    try:
        yield
    finally:
        for layer in layers:
            layer.set_analysis_hook(None)


class CallSites:
    """`records`: `{key: [value of each call]}` of the hooked layers."""

    def __init__(self, layers: dict):
        self._keys = {id(layer): key for key, layer in layers.items()}
        self.records = {key: [] for key in layers}

    def key(self, layer) -> str:
        return self._keys[id(layer)]

    def record(self, layer, value) -> int:
        """Appends `value` for this call of `layer`; returns the call index."""
        calls = self.records[self.key(layer)]
        calls.append(value)
        return len(calls) - 1


def _tokens(tensors):
    """The `(..., k)` tensors of all calls as one `(tokens, k)`."""
    flat = [ops.reshape(t, (-1, t.shape[-1])) for t in tensors]
    return flat[0] if len(flat) == 1 else ops.concatenate(flat)


def layer_terms(layers, captured, grads, transform, derivative):
    """`(terms, finite)` per key: `transform(layer, x, z', g, derivative)`
    over the tokens of all calls, and whether all of it is finite."""
    terms, finite = {}, {}
    for key, layer in layers.items():
        if not captured[key]:
            raise ValueError(
                "A growable layer chosen for analysis is not called when the "
                "model runs, so its neurons cannot be scored; leave it out "
                "of `layers`."
            )
        inputs = _tokens([call[0] for call in captured[key]])
        z = _tokens([call[1] for call in captured[key]])
        g = _tokens(grads[key])
        terms[key] = transform(layer, inputs, z, g, derivative)
        finite[key] = ops.all(
            ops.stack([ops.all(ops.isfinite(t)) for t in terms[key]])
        )
    return terms, finite


def analysis_inputs(
    model, data, loss, num_batches: int | None, layers: Sequence[str] | None
) -> tuple[dict[str, GrowableDense], list[Batch]]:
    """`({key: layer}, batches)` of `layers` (None: all growable layers) and
    `data`, all checked; a JAX `fit`'s state is written into the variables."""
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            "Argument `model` must be a Keras model or layer. "
            f"Received: model of type {type(model).__name__}"
        )
    available = growable_layer_map(model)
    if not available:
        raise ValueError(
            "Argument `model` must contain at least one growable layer "
            "(see `keras_depthhet.make_growable`). Received: "
            f"model={model.name!r} without any"
        )
    unbuilt = [key for key, layer in available.items() if not layer.built]
    if unbuilt:
        raise ValueError(
            "Argument `model` must be built (call it on a batch first). "
            f"Received: unbuilt growable layers {unbuilt}"
        )
    chosen = available
    if layers is not None:
        if isinstance(layers, str) or not all(
            isinstance(n, str) for n in layers
        ):
            raise ValueError(
                "Argument `layers` must be a list of layer names or None. "
                f"Received: layers={layers!r}"
            )
        unknown = [name for name in layers if name not in available]
        if unknown:
            raise ValueError(
                "Argument `layers` names layers that are not growable layers "
                f"of model {model.name!r}: {unknown}. Growable layers: "
                f"{list(available)}. Received: layers={list(layers)!r}"
            )
        if len(set(layers)) != len(layers):
            raise ValueError(
                "Argument `layers` must not repeat a name. Received: "
                f"layers={list(layers)!r}"
            )
        chosen = {k: v for k, v in available.items() if k in layers}
    resolve_loss(model, loss)
    batches = read_batches(data, num_batches)
    check_labels(model, loss, batches)
    sync_trainer_state(model)
    return chosen, batches


def _backend_module():
    backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow"):
        raise ValueError(
            "Splitting analysis supports the 'jax' and 'tensorflow' backends. "
            f"Received: backend={backend!r}"
        )
    return importlib.import_module(f"{__package__}._capture_{backend}")


def tokens_per_sample(model, layers: dict, batch: Batch) -> dict[str, int]:
    """Tokens per sample of each layer, over its calls (T for `(B, T, d)`)."""
    sites = CallSites(layers)

    def hook(layer, inputs, preactivation, outputs):
        sites.record(layer, tuple(inputs.shape))
        return outputs

    one = keras.tree.map_structure(lambda t: t[:1], batch.x)
    _backend_module().trace(model, layers.values(), hook, one)
    return {
        key: sum(int(np.prod(shape[:-1])) for shape in calls)
        for key, calls in sites.records.items()
    }


def compile_solver(solve: Callable) -> Callable:
    """`solve(*arrays)` compiled by the backend's XLA, float64 enabled."""
    return _backend_module().compile_solver(solve)


def make_step(model, layers, loss, transform: Callable, kind: tuple):
    """The backend's capture step, cached on the model while its variables,
    the layers, the loss and `kind` (naming `transform`) are the same."""
    key = (
        keras.backend.backend(),
        tuple((k, id(layer)) for k, layer in layers.items()),
        kind,
        tuple((id(v), tuple(v.shape)) for v in model.weights),
        bool(getattr(model, "jit_compile", False)),
    )
    cache = untracked_cache(model, "_keras_depthhet_splitting_steps")
    cached = cache.get(key)
    # None (the compiled loss with its loss weights) differs from model.loss.
    given = ("compiled", model.loss) if loss is None else ("given", loss)
    if cached is not None and (cached[0] is given or cached[0] == given):
        return cached[1]
    loss_fn = resolve_loss(model, loss)
    step = _backend_module().make_step(model, layers, loss_fn, transform)
    cache[key] = (given, step)
    return step


def batch_terms(model, layers, loss, transform: Callable, kind, batches):
    """Yields each batch's terms (`make_step`), the loss scaled by the
    batch's share of the samples; raises on non-finite weights or terms."""
    step = make_step(model, layers, loss, transform, kind)
    total = sum(batch.size for batch in batches)
    for index, batch in enumerate(batches):
        scale = batch.size / total
        terms, finite = step(batch.x, batch.y, batch.sample_weight, scale)
        for name, ok in finite.items():
            if bool(ops.convert_to_numpy(ok)):
                continue
            bad = [
                v.path
                for v in model.weights
                if not np.all(np.isfinite(ops.convert_to_numpy(v)))
            ]
            if bad:
                raise ValueError(
                    f"Model {model.name!r} has non-finite weights (NaN or "
                    f"Inf): {bad[:5]}{' ...' if len(bad) > 5 else ''}. "
                    "Training diverged; its neurons cannot be scored. Check "
                    "the learning rate, the loss and the data."
                )
            raise ValueError(
                f"Non-finite values in the gradients or inputs of layer "
                f"{name!r} at batch {index} (0-based). Check the data and "
                "the loss (NaN/Inf inputs, log of zero)."
            )
        del finite
        yield terms
        del terms  # before the next step: one batch's terms at a time


_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gelu_first_derivative(z):
    """d/dz of the exact GELU `z * Phi(z)`: `Phi(z) + z * phi(z)`."""
    pdf = _INV_SQRT_2PI * ops.exp(-0.5 * z * z)
    cdf = 0.5 * (1.0 + ops.erf(z / math.sqrt(2.0)))
    return cdf + z * pdf


def gelu_second_derivative(z):
    """d2/dz2 of the exact GELU: `phi(z) * (2 - z**2)`."""
    return _INV_SQRT_2PI * ops.exp(-0.5 * z * z) * (2.0 - z * z)


def _is_linear(layer) -> bool:
    return layer.activation in (None, keras.activations.linear)


def splitting_sigma_second(layer, z, derivative: Callable):
    """`sigma''(z')` of the activation (of the exact GELU for linear layers)."""
    if _is_linear(layer) or layer.activation is keras.activations.gelu:
        return gelu_second_derivative(z)
    return derivative(layer.activation, z, 2)


def activation_first(layer, z, derivative: Callable):
    """`act'(z')`, so that `dL/dz' = g * act'(z')` (1 for linear layers)."""
    if _is_linear(layer):
        return ops.ones_like(z)
    if layer.activation is keras.activations.gelu:
        return gelu_first_derivative(z)
    return derivative(layer.activation, z, 1)


def splitting_terms(layer, x, z, g, derivative: Callable):
    """`(x~, c)` of the `(M, ...)` tokens: `(M, d+1)` with a ones column (none
    without bias) and `(M, n)`, so that `S_i = sum_t c[t, i] x~[t] x~[t]^T`."""
    x2 = ops.cast(x, "float32")
    if layer.use_bias:
        x2 = ops.concatenate([x2, ops.ones_like(x2[:, :1])], axis=1)
    z32 = ops.cast(z, "float32")
    c = ops.cast(g, "float32") * splitting_sigma_second(layer, z32, derivative)
    return x2, c


def proxy_terms(
    layer, x, z, g, derivative: Callable, include_bias: bool = False
):
    """`(r,)`, `r[i] = sum_t (sum_a x[t, a]) dL/dz'[t, i]` the sum of neuron
    `i`'s weight-gradient row, plus `dL/db_i` with `include_bias`."""
    x2 = ops.cast(x, "float32")
    z32 = ops.cast(z, "float32")
    delta = ops.cast(g, "float32") * activation_first(layer, z32, derivative)
    bias_term = 1.0 if include_bias and layer.use_bias else 0.0
    row_sums = ops.sum(x2, axis=1) + bias_term
    return (ops.matmul(row_sums[None, :], delta)[0],)
