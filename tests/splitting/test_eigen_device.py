"""The matrix-free solve where the captures are, under the Keras backend.

The solver is `keras.ops` code compiled by the backend's XLA
(`capture.compile_solver`); these tests run it on the backend under test
and check it against dense float64 eigen-solves.
"""

import keras
import numpy as np
import pytest

from keras_depthhet.splitting import (
    capture,
    eigen,
    lanczos,
    splitting_eigenvalues,
    tridiagonal,
)
from tests.growth.helpers import random_data, tiny_vit
from tests.splitting.test_solvers import _problem, _solve, _tridiagonals

BACKEND = keras.backend.backend()


def _traced_without_callbacks(solve, x, c):
    """Whether `solve(x, c)` traces as code that calls no host code.

    JAX: on the CPU, JAX does not guard device-to-host transfers (NumPy
    reads the buffer in place), so `jax.transfer_guard` cannot see a
    capture being fetched there. Tracing can: fetching a traced capture
    raises, and a host callback would show in the program. TensorFlow:
    a graph without Python functions (`tf.py_function`,
    `tf.numpy_function`).
    """
    if BACKEND == "jax":
        import jax

        return "callback" not in str(jax.make_jaxpr(solve)(x, c))
    import tensorflow as tf

    concrete = tf.function(solve, autograph=False).get_concrete_function(
        tf.TensorSpec(x.shape, "float32"), tf.TensorSpec(c.shape, "float32")
    )
    graph = concrete.graph.as_graph_def()
    kinds = {node.op for node in graph.node}
    for function in graph.library.function:
        kinds |= {node.op for node in function.node_def}
    return not any("PyFunc" in kind for kind in kinds)


def _fetch_error():
    if BACKEND == "jax":
        import jax

        return jax.errors.TracerArrayConversionError
    return NotImplementedError


def _guarded(solve):
    """`solve()` with JAX's transfers guarded, then synchronised."""
    if BACKEND != "jax":
        return solve()
    import jax

    with jax.transfer_guard("disallow"):
        return jax.block_until_ready(solve())


def _residuals(matrices, values, vectors):
    """`||S_i v_i - lambda_i v_i||` over `||S_i||`, per neuron."""
    product = np.einsum("iab,ib->ia", matrices, vectors)
    scale = np.abs(np.linalg.eigvalsh(matrices)).max(axis=1) + 1e-300
    return np.linalg.norm(product - values[:, None] * vectors, axis=1) / scale


def test_device_solve_matches_dense_eigh(rng):
    # More neurons than one product chunk, one of them without curvature:
    # neurons stop at different steps and the done ones are masked.
    x, c, matrices = _problem(rng, 400, 41, 150)
    c[:, 7] = 0.0
    matrices[7] = 0.0
    x, c = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(c)
    values, vectors, steps, converged = _solve(
        x, c, tol=1e-4, max_iter=100, return_vectors=True
    )
    reference = eigen.dense_min_eigen(matrices)
    scale = np.abs(reference).max()
    np.testing.assert_allclose(values, reference, rtol=1e-3, atol=1e-6 * scale)
    assert converged.all()
    assert values[7] == 0.0 and steps[7] == 1
    others = np.delete(steps, 7)
    assert 1 < others.min() < others.max() < 41
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, 1e-6)
    assert _residuals(matrices, values, vectors).max() < 1e-2
    # Converged to `tol` in the relative error bound: the values are far
    # closer than `rtol=1e-3` to the dense ones.
    error = np.abs(values - reference) / np.maximum(
        np.abs(reference), 1e-3 * scale
    )
    assert np.median(error) < 1e-5


def test_fewer_tokens_than_inputs_exhaust_the_krylov_space(rng):
    # S_i has rank at most 12: the solve stops at step 13 at the latest.
    x, c, matrices = _problem(rng, 12, 41, 5)
    values, _, steps, converged = _solve(x, c, tol=1e-4, max_iter=100)
    reference = eigen.dense_min_eigen(matrices)
    np.testing.assert_allclose(
        values, reference, rtol=1e-3, atol=1e-6 * np.abs(reference).max()
    )
    assert converged.all() and steps.max() <= 13


def test_max_iter_bounds_the_steps_and_reports_unconverged(rng):
    x, c, _ = _problem(rng, 600, 97, 8)
    _, _, steps, converged = _solve(x, c, tol=1e-9, max_iter=3)
    assert steps.max() == 3
    assert not converged.any()


@pytest.mark.parametrize("size", [1, 2, 7, 40, 150])
def test_tridiagonal_solves_match_dense_eigh(rng, size):
    alphas, betas, matrices = _tridiagonals(rng, 60, size)
    values, vectors = np.linalg.eigh(matrices)
    scale = np.abs(values).max(axis=1) + 1e-300
    smallest = capture.compile_solver(tridiagonal.smallest_ritz)
    theta, last = smallest(alphas, betas)
    guessed = [
        smallest(alphas, betas, guess)[0]
        for guess in (values[:, 0] - scale, values[:, 0] + scale)
    ]
    # Guesses left of the smallest eigenvalue are used, others ignored.
    for found in [theta, *guessed]:
        found = keras.ops.convert_to_numpy(found)
        assert found.dtype == np.float64
        np.testing.assert_array_less(
            np.abs(found - values[:, 0]), 1e-12 * scale
        )
    # The last eigenvector coordinate, for unreduced matrices (as Lanczos
    # makes them) where the eigenvalue is simple.
    gap = values[:, 1] - values[:, 0] if size > 1 else scale
    simple = (gap > 1e-6 * scale) & (betas != 0).all(axis=1)
    np.testing.assert_allclose(
        np.sqrt(keras.ops.convert_to_numpy(last)[simple]),
        np.abs(vectors[simple, -1, 0]),
        atol=1e-6,
    )
    # Eigenvectors of each matrix's leading block, zero below it, on the
    # first 20 matrices: each kind `_tridiagonals` makes is among them (a
    # batched float64 eigh of 60 matrices of order 150 takes TensorFlow's
    # XLA, at the suite's low optimisation level, about 15 s).
    sizes = rng.integers(1, size + 1, 20)
    ritz = keras.ops.convert_to_numpy(
        capture.compile_solver(tridiagonal.ritz_vectors)(
            alphas[:20], betas[:20], sizes
        )
    )
    for i, order in enumerate(sizes):
        block_values, block_vectors = np.linalg.eigh(
            matrices[i, :order, :order]
        )
        assert not ritz[i, order:].any()
        if order == 1 or block_values[1] - block_values[0] > 1e-6 * scale[i]:
            overlap = np.abs(ritz[i, :order] @ block_vectors[:, 0])
            np.testing.assert_allclose(overlap, 1.0, atol=1e-6)


def test_solve_fetches_no_capture(rng):
    x, c, matrices = _problem(rng, 300, 33, 70)
    x, c = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(c)
    kwargs = {"tol": 1e-3, "max_iter": 50}

    def device_solve(x, c):
        return lanczos.lanczos_min_eigen(x, c, return_vectors=True, **kwargs)

    assert _traced_without_callbacks(device_solve, x, c)
    found = _guarded(lambda: device_solve(x, c))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(found[0]),
        eigen.dense_min_eigen(matrices),
        rtol=1e-3,
    )
    # The check fails for a solve that fetches a capture to the host.
    with pytest.raises(_fetch_error()):
        _traced_without_callbacks(
            lambda x, c: device_solve(np.asarray(x), c), x, c
        )


def test_splitting_eigenvalues_solves_where_the_model_runs(monkeypatch):
    model = tiny_vit(depth=1)
    x, y = random_data(24)
    data = [(x[:12], y[:12]), (x[12:], y[12:])]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    name = "block_0_mlp_fc1"
    solved = []
    solve = lanczos.lanczos_min_eigen

    def checked(x, c, **kwargs):
        solved.append((x, c))
        assert keras.ops.is_tensor(x) and keras.ops.is_tensor(c)
        assert _traced_without_callbacks(
            lambda x, c: solve(x, c, **kwargs), x, c
        )
        return _guarded(lambda: solve(x, c, **kwargs))

    monkeypatch.setattr(lanczos, "lanczos_min_eigen", checked)
    free, info = splitting_eigenvalues(
        model,
        data,
        loss=loss,
        layers=[name],
        method="matrix_free",
        tol=1e-4,
        return_info=True,
    )
    assert len(solved) == 1
    dense = splitting_eigenvalues(
        model, data, loss=loss, layers=[name], method="dense"
    )
    scale = np.abs(dense[name]).max()
    np.testing.assert_allclose(
        free[name], dense[name], rtol=1e-3, atol=1e-6 * scale
    )
    assert info[name]["steps"].dtype == np.int64
    assert info[name]["converged"].all()
