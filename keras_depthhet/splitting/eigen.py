"""`splitting_eigenvalues`; the dense float64 solve (the tests' reference
too) and the costs that choose between it and the matrix-free `lanczos`."""

import time
import warnings
from collections import namedtuple
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_depthhet.splitting import capture, lanczos
from keras_depthhet.utils.validation import choice, fraction, positive_int

METHODS = ("auto", "dense", "matrix_free")
"""Accepted values of `method`."""

DEFAULT_MEMORY_BUDGET = 4 * 2**30
"""Bytes the analysis may hold at once for its matrices or captures."""

FLOAT_BYTES = 4
DENSE_CHUNK_BYTES = 2**28
"""Most bytes of one temporary block while forming or solving `S_i`."""

EXPECTED_ITERATIONS = 30
"""Lanczos steps assumed when choosing a solver by cost (typical at 1e-3)."""

_LayerPlan = namedtuple("_LayerPlan", "key layer method kept working")


def dense_bytes(units: int, dim: int) -> tuple[int, int]:
    """`(kept, working)` bytes of the dense solver for one layer: the
    float64 sum and one batch's float32 matrices (device and host)."""
    kept = units * dim * dim * (8 + 2 * FLOAT_BYTES)
    return kept, 2 * DENSE_CHUNK_BYTES


def matrix_free_bytes(
    tokens: int, units: int, dim: int, max_iter: int
) -> tuple[int, int]:
    """`(kept, working)` bytes of the matrix-free solver for one layer:
    `X~` and `C` twice (joined), then the Lanczos basis and copies of `C`."""
    steps = min(max_iter, dim, tokens + 1)
    kept = 2 * tokens * (dim + units) * FLOAT_BYTES
    working = ((2 * steps + 4) * units * dim + 2 * tokens * units) * FLOAT_BYTES
    return kept, working


def dense_flops(tokens: int, units: int, dim: int) -> float:
    return 2.0 * tokens * units * dim * dim + 4.0 * units * dim**3


def matrix_free_flops(tokens: int, units: int, dim: int) -> float:
    steps = min(EXPECTED_ITERATIONS, dim)
    return steps * (4.0 * tokens * units * dim + 4.0 * steps * units * dim)


def batch_matrices(x, c):
    """`[X~^T diag(c[:, i]) X~ for each i]`, `(n, D, D)`, in chunks."""
    tokens, dim = x.shape
    units = c.shape[1]
    chunk = max(1, DENSE_CHUNK_BYTES // (FLOAT_BYTES * tokens * dim))
    parts = []
    for start in range(0, units, chunk):
        weights = c[:, start : start + chunk]
        width = weights.shape[1]
        scaled = ops.reshape(
            weights[:, :, None] * x[:, None, :], (-1, width * dim)
        )
        block = ops.matmul(ops.transpose(scaled), x)
        parts.append(ops.reshape(block, (width, dim, dim)))
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=0)


def dense_min_eigen(matrices: np.ndarray, return_vectors: bool = False):
    """`values (n,)` float64 `lambda_min` of each `(D, D)` matrix, and
    `vectors (n, D)` their unit eigenvectors with `return_vectors`."""
    units, dim = matrices.shape[0], matrices.shape[1]
    chunk = max(1, DENSE_CHUNK_BYTES // (8 * dim * dim))
    values = np.empty(units)
    vectors = np.empty((units, dim)) if return_vectors else None
    for start in range(0, units, chunk):
        block = matrices[start : start + chunk].astype("float64")
        block = 0.5 * (block + np.swapaxes(block, 1, 2))
        if return_vectors:
            w, v = np.linalg.eigh(block)
            vectors[start : start + chunk] = v[:, :, 0]
        else:
            w = np.linalg.eigvalsh(block)
        values[start : start + chunk] = w[:, 0]
    return (values, vectors) if return_vectors else values


def _plan_layer(key, layer, tokens, method, max_iter, budget) -> _LayerPlan:
    dim = layer.input_dim + int(layer.use_bias)
    units = layer.units
    sizes = {
        "dense": dense_bytes(units, dim),
        "matrix_free": matrix_free_bytes(tokens, units, dim, max_iter),
    }
    if method == "auto":
        fits = [m for m in sizes if sum(sizes[m]) <= budget]
        cost = {
            "dense": dense_flops(tokens, units, dim),
            "matrix_free": matrix_free_flops(tokens, units, dim),
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
    return _LayerPlan(key, layer, method, kept, working)


def _groups(plans: list[_LayerPlan], budget: int) -> list[list[_LayerPlan]]:
    """Consecutive plans in groups that fit (kept bytes + largest working)."""
    groups, current = [], []
    for plan in plans:
        candidate = current + [plan]
        kept = sum(p.kept for p in candidate)
        need = kept + max(p.working for p in candidate)
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

    For each output neuron `i` of the chosen growable layers, the
    smallest eigenvalue of its splitting matrix
    `S_i = sum_{b,t} g[b,t,i] sigma''(z'[b,t,i]) x~[b,t] x~[b,t]^T`
    (defined on the docs' Method page) for the mean loss over all
    analysed samples, in inference mode; the model is not changed.

    `method="dense"` forms every `S_i` and solves it in float64 (small
    layers), `"matrix_free"` runs a batched Lanczos compiled by XLA where
    the model runs (large layers); `"auto"` takes per layer the one with
    fewer flops among those that fit `memory_budget`. Layers are captured
    in groups that fit it, one forward and backward pass per group.

    Args:
        model: A built Keras model with growable layers.
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
        `{layer_name: values}`, float64 `(units,)` arrays in layer order.
        With `return_vectors=True` each entry is `(values, vectors)`,
        `vectors[i]` `(d+1,)` (`(d,)` without bias, the bias component
        last) a unit eigenvector of `S_i` for `values[i]`. With
        `return_info=True`: `(eigenvalues, info)`, `info[name]` a dict of
        `method`, `steps` (Lanczos steps per neuron, 0 for dense),
        `converged` and `seconds`, and `info["capture"]` of the capture's
        `seconds` and `groups`.

    Raises:
        ValueError: on a bad argument, empty data, a model without
            growable layers, unknown layer names, a layer that does not
            fit `memory_budget`, or non-finite gradients (naming the layer
            and the batch).

    Examples:
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
    budget = positive_int("memory_budget", memory_budget)
    chosen, batches = capture.analysis_inputs(
        model, data, loss, num_batches, layers
    )
    total = sum(batch.size for batch in batches)
    per_sample = capture.tokens_per_sample(model, chosen, batches[0])
    plans = [
        _plan_layer(k, layer, total * per_sample[k], method, max_iter, budget)
        for k, layer in chosen.items()
    ]
    results, info, capture_seconds = {}, {}, 0.0
    groups = _groups(plans, budget)
    for group in groups:
        start = time.perf_counter()
        stores = _capture_group(model, group, loss, batches)
        capture_seconds += time.perf_counter() - start
        for plan in group:
            name = plan.key
            start = time.perf_counter()
            results[name], info[name] = _solve(
                plan, stores.pop(name), tol, max_iter, return_vectors
            )
            seconds = info[name]["seconds"] = time.perf_counter() - start
            if verbose:
                steps = int(info[name]["steps"].max())
                print(f"{name}: {plan.method}, {steps} steps, {seconds:.2f}s")
    info["capture"] = {"seconds": capture_seconds, "groups": len(groups)}
    ordered = {key: results[key] for key in chosen}
    return (ordered, info) if return_info else ordered


def _capture_group(model, group, loss, batches) -> dict:
    """Dense layers' float64 sum of `S_i`, matrix-free layers' `(X~, C)`."""
    methods = {plan.key: plan.method for plan in group}
    dense = {id(plan.layer) for plan in group if plan.method == "dense"}

    def transform(layer, x, z, g, derivative):
        x_tilde, c = capture.splitting_terms(layer, x, z, g, derivative)
        if id(layer) in dense:
            return (batch_matrices(x_tilde, c),)
        return x_tilde, c

    kind = ("splitting", tuple(sorted(methods.items())))
    layers = {plan.key: plan.layer for plan in group}
    stores = {name: None for name in methods}
    pieces = {name: [] for name in methods}
    for terms in capture.batch_terms(
        model, layers, loss, transform, kind, batches
    ):
        for name, arrays in terms.items():
            if methods[name] == "dense":
                matrices = ops.convert_to_numpy(arrays[0]).astype("float64")
                if stores[name] is not None:
                    matrices += stores[name]
                stores[name] = matrices
            else:  # kept on the device, where the solve runs
                pieces[name].append(arrays)
        del terms
    for name, parts in pieces.items():
        if parts:
            xs, cs = zip(*parts, strict=True)
            parts.clear()
            stores[name] = tuple(
                p[0] if len(p) == 1 else ops.concatenate(p) for p in (xs, cs)
            )
    return stores


def _solve(plan, store, tol, max_iter, return_vectors):
    units = plan.layer.units
    if plan.method == "dense":
        found = dense_min_eigen(store, return_vectors)
        values, vectors = found if return_vectors else (found, None)
        steps = np.zeros(units, dtype="int64")
        converged = np.ones(units, dtype=bool)
    else:
        found = lanczos.lanczos_min_eigen(
            *store, tol=tol, max_iter=max_iter, return_vectors=return_vectors
        )
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
