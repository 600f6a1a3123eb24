"""`splitting_eigenvalues`: lambda_min of every neuron's splitting matrix."""

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from keras_depthhet.splitting import capture, eigen, lanczos
from keras_depthhet.splitting.curvature import splitting_terms
from keras_depthhet.utils.validation import choice, fraction, positive_int

METHODS = ("auto", "dense", "matrix_free")
"""Accepted values of `method`."""

DEFAULT_MEMORY_BUDGET = 4 * 2**30
"""Bytes the analysis may hold at once for its matrices or captures."""


@dataclass
class _LayerPlan:
    key: str
    layer: object
    method: str
    tokens: int
    kept: int
    working: int


def _plan_layer(key, layer, tokens, method, max_iter, budget) -> _LayerPlan:
    dim = layer.input_dim + int(layer.use_bias)
    units = layer.units
    sizes = {
        "dense": eigen.dense_bytes(units, dim),
        "matrix_free": eigen.matrix_free_bytes(tokens, units, dim, max_iter),
    }
    if method == "auto":
        fits = [m for m in sizes if sum(sizes[m]) <= budget]
        cost = {
            "dense": eigen.dense_flops(tokens, units, dim),
            "matrix_free": eigen.matrix_free_flops(tokens, units, dim),
        }
        method = min(fits or sizes, key=lambda m: (cost[m], m))
    kept, working = sizes[method]
    if kept + working > budget:
        raise ValueError(
            f"Layer {key!r} needs about "
            f"{(kept + working) / 2**30:.2f} GiB with method={method!r} "
            f"({tokens} tokens, {units} units, input size {dim}), more than "
            f"`memory_budget` ({budget / 2**30:.2f} GiB). Analyse fewer "
            "batches, choose another method or raise the budget. "
            f"Received: memory_budget={budget}"
        )
    return _LayerPlan(key, layer, method, tokens, kept, working)


def _groups(plans: list[_LayerPlan], budget: int) -> list[list[_LayerPlan]]:
    """Consecutive layers packed so that each group fits the budget.

    A group keeps all its layers' captures at once but solves its layers
    one by one, so it needs their kept bytes plus the largest working set.
    """
    groups, current = [], []
    for plan in plans:
        candidate = current + [plan]
        need = sum(p.kept for p in candidate) + max(
            p.working for p in candidate
        )
        if current and need > budget:
            groups.append(current)
            candidate = [plan]
        current = candidate
    groups.append(current)
    return groups


def splitting_eigenvalues(
    model: keras.Model,
    data,
    *,
    loss=None,
    num_batches: int | None = None,
    layers: Sequence[str] | None = None,
    method: str = "auto",
    tol: float = 1e-3,
    max_iter: int = 300,
    return_vectors: bool = False,
    memory_budget: int = 4 * 2**30,
    verbose: int = 0,
    return_info: bool = False,
):
    """Smallest eigenvalue of every output neuron's splitting matrix.

    For each chosen `GrowableDense` layer and output neuron `i` this
    computes `lambda_min(S_i)` with (see the docs' Method page)
    `S_i = sum_{b,t} g[b,t,i] sigma''(z'[b,t,i]) x~[b,t] x~[b,t]^T`,
    `x~ = [x; 1]` (`x~ = x` without bias), `z'` the grown pre-activation,
    `sigma` the layer's activation (the exact GELU for linear layers) and
    `g` the gradient of `L` with respect to the layer's output. `L` is the
    mean loss over all analysed samples: each batch's loss (the Keras
    batch mean, sample weights included) is weighted by its number of
    samples over the total.

    The inputs `x` and gradients `g` are captured with the backend's own
    autodiff in inference mode (`training=False`: no dropout or drop
    path). The model's weights, optimizer and structure are not changed,
    and no hook stays installed.

    Solvers: `"dense"` forms every `S_i` (`units * (d+1)**2` floats) batch
    by batch and calls a symmetric eigen-solver in float64;
    `"matrix_free"` runs a batched Lanczos iteration over all neurons of a
    layer with products `S_i v` as two matmuls over the captured inputs
    (`tokens * (d+1 + units)` floats held per layer). The whole solve
    runs where the model runs (JAX's default device, TensorFlow's
    device), as one XLA program per layer shape, compiled at the first
    analysis and reused at later ones of the same shapes. `"auto"` takes,
    per layer, the one with fewer flops among those that fit
    `memory_budget`.
    Layers are processed in groups that fit the budget together; each
    group costs one forward and backward pass over the batches.

    Memory: dense keeps `units * (d+1)**2` float64 values per layer plus a
    float32 copy of one batch's; for the reduced DeiT-S at 224 pixels the
    48 layers' matrices are 5.3e9 values (21 GiB in float32), so dense is
    only for small layers. Matrix-free keeps `X~` and `C`,
    `tokens * (d+1 + units)` float32 values per layer (35 MiB per image
    for all 48 layers of the reduced DeiT-S at 224 pixels, twice that
    while the batches are joined) and, while one layer is solved, its
    Lanczos basis. The input batches are read once into host memory, so
    every pass sees the same samples.

    Args:
        model: A built Keras model with `GrowableDense` layers.
        data: A `tf.data.Dataset`, a `keras.utils.PyDataset`, any
            iterable of `(x, y)` or `(x, y, sample_weight)` batches
            (NumPy arrays or tensors), or one such tuple of whole arrays,
            cut into batches of 32 (like `model.fit`'s default).
        loss: A Keras `Loss`, loss name or function `(y_true, y_pred)`;
            `None` uses the model's compiled loss.
        num_batches: Most batches to read from `data` (None: all).
        layers: Names of the growable layers to analyse (None: all).
        method: `"auto"`, `"dense"` or `"matrix_free"`.
        tol: Relative accuracy of each `lambda_min` for `"matrix_free"`.
        max_iter: Most Lanczos steps per neuron for `"matrix_free"`.
        return_vectors: Also return the eigenvectors.
        memory_budget: Bytes the analysis may hold at once (default 4 GiB).
        verbose: 0 silent, 1 one line per layer.
        return_info: Also return per-layer solver information.

    Returns:
        `{layer_name: values}` with `values` a float64 array `(units,)`, in
        layer order. With `return_vectors=True` each entry is a tuple
        `(values, vectors)` with `vectors` `(units, d+1)` (`(units, d)`
        without bias): row `i` is a unit eigenvector of `S_i` for
        `values[i]`, the bias component last. With `return_info=True` the
        result is `(eigenvalues, info)`, `info[name]` a dict with
        `method`, `steps` (Lanczos steps per neuron, 0 for dense),
        `converged` and `seconds` (solve time), plus `info["capture"]`
        with the capture time and number of groups.

    Raises:
        ValueError: on a bad argument, empty data, a model without
            growable layers, unknown layer names, a layer that does not
            fit `memory_budget`, or non-finite gradients (naming the layer
            and the batch).

    Example:

    ```python
    model = vit(image_size=8, patch_size=4, num_channels=1, num_classes=10,
                dim=16, depth=2, num_heads=2)
    x = np.random.rand(16, 8, 8, 1).astype("float32")
    y = np.random.randint(0, 10, 16)
    values = splitting_eigenvalues(
        model, [(x, y)],
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    values["block_0_mlp_fc1"].shape  # (32,)
    ```
    """
    method = choice("method", method, METHODS)
    tol = fraction("tol", tol)
    max_iter = positive_int("max_iter", max_iter)
    memory_budget = positive_int("memory_budget", memory_budget)
    chosen, batches = capture.analysis_inputs(
        model, data, loss, num_batches, layers
    )
    total = sum(batch.size for batch in batches)
    per_sample = capture.tokens_per_sample(model, chosen, batches[0])
    plans = [
        _plan_layer(
            key,
            layer,
            total * per_sample[key],
            method,
            max_iter,
            memory_budget,
        )
        for key, layer in chosen.items()
    ]
    results, info = {}, {}
    capture_seconds = 0.0
    groups = _groups(plans, memory_budget)
    for group in groups:
        start = time.perf_counter()
        stores = _capture_group(model, group, loss, batches, total)
        capture_seconds += time.perf_counter() - start
        for plan in group:
            name = plan.key
            start = time.perf_counter()
            results[name], info[name] = _solve(
                plan, stores.pop(name), tol, max_iter, return_vectors
            )
            info[name]["seconds"] = time.perf_counter() - start
            if verbose:
                print(
                    f"{name}: {plan.method}, "
                    f"{int(info[name]['steps'].max())} steps, "
                    f"{info[name]['seconds']:.2f}s"
                )
    info["capture"] = {"seconds": capture_seconds, "groups": len(groups)}
    ordered = {key: results[key] for key in chosen}
    return (ordered, info) if return_info else ordered


def _capture_group(model, group, loss, batches, total) -> dict:
    """Captures the group's layers over all batches.

    Dense layers keep only their running float64 sum of `S_i`; matrix-free
    layers keep their concatenated `(X~, C)`.
    """
    methods = {plan.key: plan.method for plan in group}
    dense = {id(plan.layer) for plan in group if plan.method == "dense"}

    def transform(layer, x, z, g, derivative):
        x_tilde, c = splitting_terms(layer, x, z, g, derivative)
        if id(layer) in dense:
            return (eigen.batch_matrices(x_tilde, c),)
        return x_tilde, c

    kind = ("splitting", tuple(sorted(methods.items())))
    step = capture.make_step(
        model, {plan.key: plan.layer for plan in group}, loss, transform, kind
    )
    stores = {name: None for name in methods}
    pieces = {name: [] for name in methods}
    for index, batch in enumerate(batches):
        terms = capture.run_step(
            step, batch, index, batch.size / total, model
        )
        for name, arrays in terms.items():
            if methods[name] == "dense":
                matrices = ops.convert_to_numpy(arrays[0]).astype("float64")
                if stores[name] is not None:
                    matrices += stores[name]
                stores[name] = matrices
            else:
                # Kept as backend tensors, on the device: the solve runs
                # there.
                pieces[name].append(arrays)
        del terms
    for name, parts in pieces.items():
        if parts:
            xs, cs = zip(*parts, strict=True)
            parts.clear()
            stores[name] = (_joined(xs), _joined(cs))
    return stores


def _joined(tensors):
    return tensors[0] if len(tensors) == 1 else ops.concatenate(tensors)


def _solve(plan, store, tol, max_iter, return_vectors):
    units = plan.layer.units
    if plan.method == "dense":
        found = eigen.dense_min_eigen(store, return_vectors)
        values, vectors = found if return_vectors else (found, None)
        steps = np.zeros(units, dtype="int64")
        converged = np.ones(units, dtype=bool)
    else:
        x, c = store
        found = lanczos.lanczos_min_eigen(
            x, c, tol=tol, max_iter=max_iter, return_vectors=return_vectors
        )
        # The results' only trip to the host: the solve ran on the
        # device.
        values, vectors, steps, converged = (
            None if a is None else np.asarray(a) for a in found
        )
        steps = steps.astype("int64")
        if not converged.all():
            warnings.warn(
                f"Layer {plan.key!r}: {int((~converged).sum())} of "
                f"{units} neurons did not reach tol={tol} in "
                f"max_iter={max_iter} Lanczos steps; their values are the "
                "best estimates found.",
                stacklevel=3,
            )
    info = {"method": plan.method, "steps": steps, "converged": converged}
    return ((values, vectors) if return_vectors else values), info
