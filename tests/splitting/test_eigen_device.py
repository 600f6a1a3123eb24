"""The matrix-free solve where the captures are, on JAX and TensorFlow.

Both solves are plain JAX or TensorFlow code, so their tests run under
either Keras backend; the end-to-end test checks the backend's own path.
"""

import contextlib
import functools
from types import SimpleNamespace

import jax
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_depthhet.splitting import (
    capture,
    eigen,
    eigen_jax,
    eigen_tensorflow,
    splitting_eigenvalues,
)
from tests.growth.helpers import random_data, tiny_vit
from tests.splitting.test_solvers import _problem, _tridiagonals


def _jax_traced_without_callbacks(solve, x, c):
    """Whether `solve(x, c)` traces as JAX code that calls no host code.

    On the CPU, JAX does not guard device-to-host transfers (NumPy reads
    the buffer in place), so `jax.transfer_guard` cannot see a capture
    being fetched there. Tracing can: fetching a traced capture raises,
    and a host callback would show in the program.
    """
    return "callback" not in str(jax.make_jaxpr(solve)(x, c))


def _tf_traced_without_callbacks(solve, x, c):
    """`_jax_traced_without_callbacks` for TensorFlow: a graph without
    Python functions (`tf.py_function`, `tf.numpy_function`)."""
    concrete = tf.function(solve, autograph=False).get_concrete_function(
        tf.TensorSpec(x.shape, "float32"), tf.TensorSpec(c.shape, "float32")
    )
    graph = concrete.graph.as_graph_def()
    kinds = {node.op for node in graph.node}
    for function in graph.library.function:
        kinds |= {node.op for node in function.node_def}
    return not any("PyFunc" in kind for kind in kinds)


SOLVERS = {
    "jax": SimpleNamespace(
        module=eigen_jax,
        put=jax.device_put,
        array=jax.Array,
        compiled=jax.jit,
        float64=functools.partial(jax.enable_x64, True),
        traced_without_callbacks=_jax_traced_without_callbacks,
        fetch_error=jax.errors.TracerArrayConversionError,
    ),
    "tensorflow": SimpleNamespace(
        module=eigen_tensorflow,
        put=tf.constant,
        array=tf.Tensor,
        compiled=functools.partial(
            tf.function, jit_compile=True, autograph=False
        ),
        float64=contextlib.nullcontext,
        traced_without_callbacks=_tf_traced_without_callbacks,
        fetch_error=NotImplementedError,
    ),
}


@pytest.fixture(params=list(SOLVERS))
def solver(request):
    return SOLVERS[request.param]


def _solve(solver, x, c, **kwargs):
    found = solver.module.lanczos_min_eigen(
        solver.put(x), solver.put(c), **kwargs
    )
    assert all(a is None or isinstance(a, solver.array) for a in found)
    return [None if a is None else np.asarray(a) for a in found]


def _residuals(matrices, values, vectors):
    """`||S_i v_i - lambda_i v_i||` over `||S_i||`, per neuron."""
    product = np.einsum("iab,ib->ia", matrices, vectors)
    scale = np.abs(np.linalg.eigvalsh(matrices)).max(axis=1) + 1e-300
    return np.linalg.norm(product - values[:, None] * vectors, axis=1) / scale


def test_device_solve_matches_dense_eigh_and_host_lanczos(rng, solver):
    # More neurons than one product chunk, one of them without curvature:
    # neurons stop at different steps and the done ones are masked.
    x, c, matrices = _problem(rng, 400, 41, 150)
    c[:, 7] = 0.0
    matrices[7] = 0.0
    values, vectors, steps, converged = _solve(
        solver, x, c, tol=1e-4, max_iter=100, return_vectors=True
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
    host_values, _, host_steps, host_converged = eigen.lanczos_min_eigen(
        x, c, tol=1e-4, max_iter=100
    )
    # The same start vectors, stopping rule and check spacing: the host
    # loop's results, up to float32 rounding in the products.
    assert host_converged.all()
    np.testing.assert_allclose(
        values, host_values, rtol=1e-4, atol=1e-7 * scale
    )
    assert np.abs(steps - host_steps).max() <= eigen.MAX_CHECK_INTERVAL
    assert np.mean(steps == host_steps) > 0.9


def test_fewer_tokens_than_inputs_exhaust_the_krylov_space(rng, solver):
    # S_i has rank at most 12: the solve stops at step 13 at the latest.
    x, c, matrices = _problem(rng, 12, 41, 5)
    values, _, steps, converged = _solve(solver, x, c, tol=1e-4, max_iter=100)
    reference = eigen.dense_min_eigen(matrices)
    np.testing.assert_allclose(
        values, reference, rtol=1e-3, atol=1e-6 * np.abs(reference).max()
    )
    assert converged.all() and steps.max() <= 13


def test_max_iter_bounds_the_steps_and_reports_unconverged(rng, solver):
    x, c, _ = _problem(rng, 600, 97, 8)
    _, _, steps, converged = _solve(solver, x, c, tol=1e-9, max_iter=3)
    assert steps.max() == 3
    assert not converged.any()


@pytest.mark.parametrize("size", [1, 2, 7, 40])
def test_tridiagonal_solves_match_dense_eigh(rng, size, solver):
    alphas, betas, matrices = _tridiagonals(rng, 60, size)
    values, vectors = np.linalg.eigh(matrices)
    scale = np.abs(values).max(axis=1) + 1e-300
    smallest = solver.compiled(solver.module.smallest_ritz)
    with solver.float64():
        theta, last = smallest(alphas, betas)
        guessed = [
            smallest(alphas, betas, guess)[0]
            for guess in (values[:, 0] - scale, values[:, 0] + scale)
        ]
        ritz = solver.compiled(solver.module.ritz_vectors)(
            alphas, betas, values[:, 0]
        )
    for found in [theta, *guessed]:
        np.testing.assert_array_less(
            np.abs(np.asarray(found) - values[:, 0]), 1e-12 * scale
        )
    # Eigenvectors where the eigenvalue is simple and the matrix unreduced
    # (as Lanczos makes them).
    gap = values[:, 1] - values[:, 0] if size > 1 else scale
    simple = (gap > 1e-6 * scale) & (betas != 0).all(axis=1)
    np.testing.assert_allclose(
        np.sqrt(np.asarray(last)[simple]),
        np.abs(vectors[simple, -1, 0]),
        atol=1e-6,
    )
    overlap = np.abs(np.sum(np.asarray(ritz) * vectors[:, :, 0], axis=1))
    np.testing.assert_allclose(overlap[simple], 1.0, atol=1e-6)


def test_solve_fetches_no_capture(rng, solver):
    x, c, matrices = _problem(rng, 300, 33, 70)
    x, c = solver.put(x), solver.put(c)
    kwargs = {"tol": 1e-3, "max_iter": 50}

    def device_solve(x, c):
        return solver.module.lanczos_min_eigen(
            x, c, return_vectors=True, **kwargs
        )

    assert solver.traced_without_callbacks(device_solve, x, c)
    if solver.module is eigen_jax:
        with jax.transfer_guard("disallow"):
            found = jax.block_until_ready(device_solve(x, c))
    else:
        found = device_solve(x, c)
    np.testing.assert_allclose(
        np.asarray(found[0]), eigen.dense_min_eigen(matrices), rtol=1e-3
    )
    # The check fails for the host loop, which fetches the captures.
    with pytest.raises(solver.fetch_error):
        solver.traced_without_callbacks(
            lambda x, c: eigen.lanczos_min_eigen(x, c, **kwargs), x, c
        )


def test_splitting_eigenvalues_solves_where_the_model_runs(monkeypatch):
    own = SOLVERS[keras.backend.backend()]
    model = tiny_vit()
    x, y = random_data(24)
    data = [(x[:12], y[:12]), (x[12:], y[12:])]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    name = "block_1_mlp_fc1"
    solved = []
    solve = eigen.lanczos_min_eigen

    def checked(x, c, **kwargs):
        solved.append(kwargs["products"])
        assert isinstance(x, own.array) and isinstance(c, own.array)

        def traced(x, c):
            products = capture.lanczos_products(x, c)
            return solve(x, c, **dict(kwargs, products=products))

        assert own.traced_without_callbacks(traced, x, c)
        if own.module is eigen_jax:
            with jax.transfer_guard("disallow"):
                return jax.block_until_ready(solve(x, c, **kwargs))
        return solve(x, c, **kwargs)

    monkeypatch.setattr(eigen, "lanczos_min_eigen", checked)
    free, info = splitting_eigenvalues(
        model,
        data,
        loss=loss,
        layers=[name],
        method="matrix_free",
        tol=1e-4,
        return_info=True,
    )
    assert isinstance(solved[0], own.module.DeviceLanczos)
    dense = splitting_eigenvalues(
        model, data, loss=loss, layers=[name], method="dense"
    )
    scale = np.abs(dense[name]).max()
    np.testing.assert_allclose(
        free[name], dense[name], rtol=1e-3, atol=1e-6 * scale
    )
    assert info[name]["steps"].dtype == np.int64
    assert info[name]["converged"].all()
