"""Smallest eigenvalues of all splitting matrices of a layer at once.

A layer's matrices are `S_i = X~^T diag(C[:, i]) X~` with `X~` the `(N, D)`
captured inputs (a ones column for the bias) and `C` the `(N, n)` per-token
weights `g * sigma''(z')`. Two solvers share that form:

- dense: accumulate every `S_i` (`n * D * D` floats) batch by batch with
  matmuls, then one batched symmetric eigen-solve in float64;
- matrix-free: Lanczos on all `n` neurons in lockstep, where one product
  `S_i v_i` for every active neuron is two matmuls over `X~` and `C`
  (`4 * N * n * D` flops) and a neuron leaves the batch once converged.

Each batch's matrices are formed inside the backend's traced capture step
(`keras.ops`) and summed on the host in float64; the eigen-solves run in
NumPy (float64 for the dense and tridiagonal problems, float32 BLAS for the
Lanczos products, which need no compilation per shape).
"""

import numpy as np
from keras import ops

FLOAT_BYTES = 4
DENSE_CHUNK_BYTES = 2**28
"""Most bytes of one temporary `(N, m * D)` block while forming `S_i`."""

EXPECTED_ITERATIONS = 30
"""Lanczos steps assumed when choosing a solver by cost (typical at 1e-3)."""

_DENSE_EIGH_CHUNK_BYTES = 2**28


def dense_bytes(units: int, dim: int) -> tuple[int, int]:
    """`(kept, working)` bytes of the dense solver for one layer.

    Kept through the capture: a float64 running sum of the matrices and
    one batch's float32 matrices on the device and on the host. Working:
    the temporary blocks of the capture and of the eigen-solve.
    """
    kept = units * dim * dim * (8 + 2 * FLOAT_BYTES)
    return kept, DENSE_CHUNK_BYTES + _DENSE_EIGH_CHUNK_BYTES


def matrix_free_bytes(
    tokens: int, units: int, dim: int, max_iter: int
) -> tuple[int, int]:
    """`(kept, working)` bytes of the matrix-free solver for one layer.

    Kept through the capture: `X~` and `C`, counted twice because they are
    concatenated from the per-batch captures. Working, while the layer is
    solved: the Lanczos basis (at most `tokens + 1` useful steps, as `S_i`
    has rank at most `tokens`) and copies of `C`.
    """
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
    """`[X~^T diag(c[:, i]) X~ for each i]`, `(n, D, D)`, in `keras.ops`.

    Runs inside the backend's traced capture step. Neurons are processed in
    chunks so the temporary `(N, m * D)` block stays under
    `DENSE_CHUNK_BYTES`.
    """
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
    """`lambda_min` (and its unit eigenvector) of each `(D, D)` matrix.

    Returns:
        `values (n,)` float64, and `vectors (n, D)` with `return_vectors`.
    """
    units, dim = matrices.shape[0], matrices.shape[1]
    chunk = max(1, _DENSE_EIGH_CHUNK_BYTES // (8 * dim * dim))
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


def _matvec(x, c, v):
    """`S_i v_i` for every row `i` of `v` (`(m, D)`): two matmuls."""
    projected = x @ v.T
    projected *= c
    return projected.T @ x


def _ritz(alphas, betas, steps):
    """Ritz values and the vectors' coordinates, per active neuron."""
    count = alphas.shape[0]
    tri = np.zeros((count, steps, steps))
    diag = np.arange(steps)
    tri[:, diag, diag] = alphas[:, :steps]
    off = np.arange(steps - 1)
    tri[:, off, off + 1] = betas[:, : steps - 1]
    tri[:, off + 1, off] = betas[:, : steps - 1]
    return np.linalg.eigh(tri)


def lanczos_min_eigen(
    x: np.ndarray,
    c: np.ndarray,
    *,
    tol: float,
    max_iter: int,
    return_vectors: bool = False,
    seed: int = 0,
):
    """`lambda_min(S_i)` for every neuron by batched Lanczos.

    Each neuron runs its own Lanczos recurrence (with full
    re-orthogonalisation, needed in float32) from a seeded random start,
    all in lockstep, so that every step is two large matmuls. After step
    `k` the smallest Ritz value `theta` of a neuron has the error estimate
    `min(r, r**2 / gap)`, `r` the residual norm of its Ritz vector and
    `gap` the distance to the next Ritz value; the neuron is done when
    that is at most `tol * max(|theta|, 1e-3 * max|Ritz values|)` (so a
    neuron whose curvature is negligible next to its own scale stops
    early), when its Krylov space is exhausted, or after
    `min(max_iter, D)` steps. Done neurons leave the matmuls.

    Args:
        x: `(N, D)` float32 array `X~`.
        c: `(N, n)` float32 array `C`.
        tol: Relative accuracy of each `lambda_min`.
        max_iter: Most Lanczos steps per neuron.
        return_vectors: Whether to also return the Ritz vectors.
        seed: Seed of the start vectors.

    Returns:
        `(values (n,), vectors (n, D) or None, steps (n,) int,
        converged (n,) bool)`.
    """
    x = np.asarray(x, dtype="float32")
    dim = x.shape[1]
    units = c.shape[1]
    max_steps = min(max_iter, dim)
    start = np.random.default_rng(seed).standard_normal((units, dim))
    start /= np.linalg.norm(start, axis=1, keepdims=True)
    # The basis grows by doubling: most neurons stop after a few dozen steps.
    basis = np.zeros((units, min(max_steps, 32), dim), dtype="float32")
    basis[:, 0] = start
    alphas = np.zeros((units, max_steps))
    betas = np.zeros((units, max_steps))
    beta_prev = np.zeros(units)
    anorm = np.zeros(units)
    active = np.arange(units)
    active_c = np.asarray(c, dtype="float32")
    values = np.zeros(units)
    vectors = np.zeros((units, dim)) if return_vectors else None
    steps = np.zeros(units, dtype="int64")
    converged = np.zeros(units, dtype=bool)
    for k in range(max_steps):
        q = basis[:, k]
        w = _matvec(x, active_c, q)
        alpha = np.einsum("md,md->m", w, q, dtype="float64")
        w -= alpha[:, None].astype("float32") * q
        if k:
            w -= beta_prev[:, None].astype("float32") * basis[:, k - 1]
        previous = basis[:, : k + 1]
        overlap = np.matmul(previous, w[:, :, None])
        w -= np.matmul(overlap.transpose(0, 2, 1), previous)[:, 0]
        beta = np.sqrt(np.einsum("md,md->m", w, w, dtype="float64"))
        alphas[active, k] = alpha
        betas[active, k] = beta
        anorm = np.maximum(anorm, np.abs(alpha) + beta + beta_prev)
        exhausted = beta <= 1e-6 * anorm
        last = k + 1 == max_steps
        if k < 32 or k % 4 == 3 or last or exhausted.any():
            theta, y = _ritz(alphas[active], betas[active], k + 1)
            residual = beta * np.abs(y[:, -1, 0])
            error = residual
            scale = np.maximum(
                np.abs(theta[:, 0]), 1e-3 * np.abs(theta).max(axis=1)
            )
            ok = (error <= tol * scale) | exhausted
            done = ok | last
            if done.any():
                chosen = active[done]
                values[chosen] = theta[done, 0]
                steps[chosen] = k + 1
                converged[chosen] = ok[done]
                if return_vectors:
                    vectors[chosen] = np.matmul(
                        y[done, :, :1].transpose(0, 2, 1),
                        basis[done, : k + 1],
                    )[:, 0]
                keep = np.flatnonzero(~done)
                if keep.size == 0:
                    break
                active = active[keep]
                basis = basis[keep, : max(k + 2, 32)]
                active_c = active_c[:, keep]
                w, beta, anorm = w[keep], beta[keep], anorm[keep]
        if k + 1 < max_steps:
            if k + 1 == basis.shape[1]:
                grown = min(2 * basis.shape[1], max_steps)
                basis = np.concatenate(
                    [basis, np.zeros_like(basis[:, : grown - basis.shape[1]])],
                    axis=1,
                )
            inverse = np.where(beta > 0, 1.0 / np.maximum(beta, 1e-30), 0.0)
            basis[:, k + 1] = w * inverse[:, None].astype("float32")
        beta_prev = beta
    if return_vectors:
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return values, vectors, steps, converged
