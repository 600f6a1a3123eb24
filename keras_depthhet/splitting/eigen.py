"""Dense splitting eigen-solves (float64 NumPy, the tests' reference too),
and the costs that choose between them and the matrix-free `lanczos`."""

import numpy as np
from keras import ops

FLOAT_BYTES = 4
DENSE_CHUNK_BYTES = 2**28
"""Most bytes of one temporary block while forming or solving `S_i`."""

EXPECTED_ITERATIONS = 30
"""Lanczos steps assumed when choosing a solver by cost (typical at 1e-3)."""


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
