"""The capture step: the chosen layers' terms, by the backend's autodiff.

`make_step` builds (and caches on the model) the step that runs the model
on a batch and returns, for each chosen layer, a transform of its inputs,
pre-activations and output gradients; `run_step` runs it and refuses
non-finite terms. Everything here is backend-neutral: the one small
module per backend (`_capture_jax`, `_capture_tensorflow`) traces or runs
the model with that backend's own autodiff.
"""

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


def select_layers(
    model, layers: Sequence[str] | None
) -> dict[str, GrowableDense]:
    """The model's `GrowableDense` layers named in `layers` (all if None).

    Returns `{key: layer}` in model order, keyed as `growable_layer_map`
    keys them (the layer name, or its path where names repeat).
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            "Argument `model` must be a Keras model or layer. "
            f"Received: model of type {type(model).__name__}"
        )
    available = growable_layer_map(model)
    if not available:
        raise ValueError(
            "Argument `model` must contain at least one `GrowableDense` "
            f"layer. Received: model={model.name!r} without any"
        )
    unbuilt = [key for key, layer in available.items() if not layer.built]
    if unbuilt:
        raise ValueError(
            "Argument `model` must be built (call it on a batch first). "
            f"Received: unbuilt growable layers {unbuilt}"
        )
    if layers is None:
        return available
    if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
        raise ValueError(
            "Argument `layers` must be a list of layer names or None. "
            f"Received: layers={layers!r}"
        )
    unknown = [name for name in layers if name not in available]
    if unknown:
        raise ValueError(
            f"Argument `layers` names layers that are not growable layers of "
            f"model {model.name!r}: {unknown}. Growable layers: "
            f"{list(available)}. Received: layers={list(layers)!r}"
        )
    if len(set(layers)) != len(layers):
        raise ValueError(
            f"Argument `layers` must not repeat a name. Received: "
            f"layers={list(layers)!r}"
        )
    wanted = set(layers)
    return {k: layer for k, layer in available.items() if k in wanted}


def analysis_inputs(
    model, data, loss, num_batches: int | None, layers: Sequence[str] | None
) -> tuple[dict[str, GrowableDense], list[Batch]]:
    """The chosen layers and the batches read, every input checked.

    The model, `layers` and `loss` are checked before any data is read,
    the labels once it is; a JAX `fit`'s training state is written back
    into the variables (`sync_trainer_state`) so that the analysis sees
    the current weights.

    Returns:
        `(select_layers(model, layers), read_batches(data, num_batches))`.
    """
    chosen = select_layers(model, layers)
    resolve_loss(model, loss)
    batches = read_batches(data, num_batches)
    check_labels(model, loss, batches)
    sync_trainer_state(model)
    return chosen, batches


def check_finite_weights(model) -> None:
    """Raises naming the model's first non-finite weights, if any."""
    bad = [
        v.path
        for v in model.weights
        if not np.all(np.isfinite(ops.convert_to_numpy(v)))
    ]
    if bad:
        raise ValueError(
            f"Model {model.name!r} has non-finite weights (NaN or Inf): "
            f"{bad[:5]}{' ...' if len(bad) > 5 else ''}. Training diverged; "
            "its neurons cannot be scored. Check the learning rate, the "
            "loss and the data."
        )


def _backend_module():
    backend = keras.backend.backend()
    if backend == "jax":
        from keras_depthhet.splitting import _capture_jax as module
    elif backend == "tensorflow":
        from keras_depthhet.splitting import _capture_tensorflow as module
    else:
        raise ValueError(
            "Splitting analysis supports the 'jax' and 'tensorflow' backends. "
            f"Received: backend={backend!r}"
        )
    return module


def tokens_per_sample(model, layers: dict, batch: Batch) -> dict[str, int]:
    """Tokens each layer sees per sample, over all its calls.

    1 for `(B, d)` inputs, T for `(B, T, d)`, summed over the layer's calls;
    read from the layers' input shapes for one sample, traced without
    running the model where the backend allows it.
    """
    one = keras.tree.map_structure(lambda t: t[:1], batch.x)
    shapes = _backend_module().input_shapes(model, layers, one)
    return {
        key: sum(int(np.prod(shape[:-1])) for shape in calls)
        for key, calls in shapes.items()
    }


def compile_solver(solve: Callable) -> Callable:
    """`solve(*arrays)` compiled by the backend's XLA, float64 enabled.

    `jax.jit` on JAX, a `tf.function` with `jit_compile=True` on
    TensorFlow; used by the matrix-free solver (`lanczos`).
    """
    return _backend_module().compile_solver(solve)


_CACHE_ATTRIBUTE = "_keras_depthhet_splitting_steps"


def make_step(model, layers, loss, transform: Callable, kind: tuple):
    """The backend's capture step (see `_capture_jax.make_step`), cached.

    A step is reused while the model's variables (the same objects and
    shapes), the layers, the loss and the `kind` of `transform` are the same, so
    repeated analyses of an unchanged model skip tracing and compilation;
    growth changes the variables and so makes a new step. The cache lives
    on the model (`untracked_cache`), so it goes with it.
    """
    key = (
        keras.backend.backend(),
        tuple((k, id(layer)) for k, layer in layers.items()),
        kind,
        tuple((id(v), tuple(v.shape)) for v in model.weights),
        bool(getattr(model, "jit_compile", False)),
    )
    cache = untracked_cache(model, _CACHE_ATTRIBUTE)
    cached = cache.get(key)
    # None means the compiled loss with its loss weights, not the same as
    # passing `model.loss` itself.
    given = ("compiled", model.loss) if loss is None else ("given", loss)
    if cached is not None and (cached[0] is given or cached[0] == given):
        return cached[1]
    loss_fn = resolve_loss(model, loss)
    step = _backend_module().make_step(model, layers, loss_fn, transform)
    cache[key] = (given, step)
    return step


def run_step(
    step, batch: Batch, index: int, scale: float, model=None
) -> dict:
    """Runs `step` on `batch`; raises if a layer's terms are not finite.

    With `model`, non-finite weights are named as such (not as data).
    """
    terms, finite = step(batch.x, batch.y, batch.sample_weight, scale)
    for name, ok in finite.items():
        if not bool(ops.convert_to_numpy(ok)):
            if model is not None:
                check_finite_weights(model)
            raise ValueError(
                f"Non-finite values in the gradients or inputs of layer "
                f"{name!r} at batch {index} (0-based). Check the data and "
                "the loss (NaN/Inf inputs, log of zero)."
            )
    return terms
