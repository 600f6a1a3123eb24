"""Dense splitting eigen-solves, and the costs that choose a solver.

A layer's matrices are `S_i = X~^T diag(C[:, i]) X~` with `X~` the `(N, D)`
captured inputs (a ones column for the bias) and `C` the `(N, n)` per-token
weights `g * sigma''(z')`. Two solvers share that form:

- dense: accumulate every `S_i` (`n * D * D` floats) batch by batch with
  matmuls, then one batched symmetric eigen-solve in float64 (here);
- matrix-free: Lanczos on all `n` neurons in lockstep, where one product
  `S_i v_i` for every active neuron is two matmuls over `X~` and `C`
  (`4 * N * n * D` flops) and a neuron leaves the batch once converged
  (`lanczos`).

Each batch's matrices are formed inside the backend's traced capture step
(`keras.ops`) and summed on the host in float64; the dense eigen-solves run
in NumPy (float64) and are also the tests' reference for the matrix-free
solver.
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
