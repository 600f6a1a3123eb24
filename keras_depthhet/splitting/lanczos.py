"""The matrix-free splitting solver: batched Lanczos in `keras.ops`.

A layer's matrices are `S_i = X~^T diag(C[:, i]) X~`, `X~` the `(N, D)`
captured inputs and `C` the `(N, n)` per-token weights. Every neuron runs
its own Lanczos recurrence, all in lockstep, so that one step is two
matmuls over `X~` for the active neurons. The whole solve is one compiled
program with fixed shapes (`capture.compile_solver`: `jax.jit` or an
XLA-compiled `tf.function`, float64 enabled): it runs where the captures
are, and nothing goes to the host but the results.

A neuron keeps its position (its row of `C^T`, of the Krylov basis and of
the tridiagonal coefficients) for the whole solve. Done neurons are
masked instead of compacted; the positions of the active ones (`slots`)
feed the products, which run on chunks of `CHUNK` active neurons, so the
matmuls shrink with the active neurons without a new shape per width.
Every per-neuron array has one more position and the basis one more
step, kept at zero (the writes that land there are masked), so inactive
slots read zeros. The tridiagonal work (`tridiagonal`) runs in float64.

Two rules keep XLA from copying the large arrays at every step: the
conditional of the checks only carries the small per-neuron arrays, and
the row loops of the tridiagonal work carry their last row beside the
arrays they write instead of reading them back.
"""

import functools

import keras
import numpy as np
from keras import ops

from keras_depthhet.splitting import capture, tridiagonal

CHUNK = 64
"""Active neurons per product matmul."""

REORTH_BLOCK = 32
"""Krylov steps per block of the re-orthogonalisation."""

CALL_FLOPS = 1e5
"""Flops of matmul that a convergence check's fixed cost is counted as.

A check after Lanczos step `k` is counted as `50 * k` such units (each a
little dearer for wide layers: `1 + m / 1000` for `m` active neurons)
and a step as `4 * N * D * m` flops plus 20 units. Checks are spaced so
that their cost stays near that of the steps between them: every step
for the layers of a DeiT, every few steps for a tiny model.
"""

MAX_CHECK_INTERVAL = 4
"""Most Lanczos steps between two convergence checks."""

_F32 = "float32"
_F64 = "float64"


def start_vectors(units: int, dim: int, seed: int) -> np.ndarray:
    """The seeded random unit start vectors `(units, dim)` of Lanczos."""
    start = np.random.default_rng(seed).standard_normal(
        (units, dim), dtype="float32"
    )
    start /= np.linalg.norm(start, axis=1, keepdims=True)
    return start


def lanczos_min_eigen(
    x,
    c,
    *,
    tol: float,
    max_iter: int,
    return_vectors: bool = False,
    seed: int = 0,
):
    """`lambda_min(S_i)` for every neuron by batched Lanczos.

    Each neuron runs its own Lanczos recurrence (with full
    re-orthogonalisation, needed in float32) from a seeded random start.
    After a step `k` the smallest Ritz value `theta` of a neuron (by
    Laguerre's method on its tridiagonal matrix, `O(k)` per neuron) has
    the error bound `r`, the residual norm of its Ritz vector (`beta_k`
    times the vector's last coordinate); the neuron is done when
    `r <= tol * max(|theta|, 1e-3 * ||T||)`, `||T||` a bound on the norm
    of its tridiagonal matrix (the largest
    `|alpha_j| + beta_{j-1} + beta_j`), so a neuron whose curvature is
    negligible next to its own scale stops early; or when its Krylov
    space is exhausted, or after `min(max_iter, D, N + 1)` steps (the
    Krylov space of a rank-`N` matrix is exhausted after `N + 1` steps).
    Done neurons leave the matmuls. One compiled program per shape and
    setting; fetching the results is the only transfer to the host, and
    the start vectors the only one from it.

    Args:
        x: `(N, D)` float32 `X~`, a backend tensor or NumPy array.
        c: `(N, n)` float32 `C`, likewise.
        tol: Relative accuracy of each `lambda_min`.
        max_iter: Most Lanczos steps per neuron.
        return_vectors: Whether to also return the Ritz vectors.
        seed: Seed of the start vectors.

    Returns:
        `(values (n,) float64, vectors (n, D) float64 or None,
        steps (n,) int32, converged (n,) bool)`, backend tensors.

    Example:

    >>> import numpy as np
    >>> x = np.ones((4, 2), "float32")
    >>> c = np.asarray([[1.0], [0.0], [0.0], [0.0]], "float32")
    >>> values, _, steps, converged = lanczos_min_eigen(
    ...     x, c, tol=1e-3, max_iter=10)
    >>> values, steps, converged = (
    ...     keras.ops.convert_to_numpy(a) for a in (values, steps, converged))
    >>> round(float(values[0]), 6), int(steps[0]), bool(converged[0])
    (0.0, 2, True)
    """
    tokens, dim = x.shape
    solve = _compiled(
        keras.backend.backend(),
        tol=float(tol),
        max_steps=min(int(max_iter), dim, tokens + 1),
        return_vectors=bool(return_vectors),
    )
    return solve(x, c, start_vectors(c.shape[1], dim, seed))


@functools.lru_cache(maxsize=64)
def _compiled(backend, *, tol, max_steps, return_vectors):
    """The compiled solve for one setting (traced once per shape)."""
    del backend  # part of the cache key only
    return capture.compile_solver(
        functools.partial(
            _solve, tol=tol, max_steps=max_steps, return_vectors=return_vectors
        )
    )


def _int(value):
    return ops.convert_to_tensor(value, "int32")


def _solve(x, c, start, *, tol, max_steps, return_vectors):
    tokens, dim = x.shape
    units = c.shape[1]
    # One more neuron position and one more step: the zero sinks.
    positions = -(-units // CHUNK) * CHUNK + 1
    steps = max_steps + 1
    x = ops.cast(x, _F32)
    rows = ops.pad(
        ops.transpose(ops.cast(c, _F32)), [[0, positions - units], [0, 0]]
    )
    basis = ops.pad(
        ops.cast(start, _F32)[:, None, :],
        [[0, positions - units], [0, max_steps], [0, 0]],
    )
    active = ops.arange(positions, dtype="int32") < units
    state = {
        "k": _int(0),
        # Flat rows `position * steps + step`: one gather per read.
        "basis": ops.reshape(basis, (positions * steps, dim)),
        # Step-major: a check reads one step of every neuron at a time.
        "alphas": ops.zeros((max_steps, positions), _F64),
        "betas": ops.zeros((max_steps, positions), _F64),
        "anorm": ops.zeros((positions,), _F64),
        "active": active,
        "slots": _slots(active),
        "count": _int(units),
        "ritz": ops.full((positions,), float("nan"), _F64),
        "drop": ops.zeros((positions,), _F64),
        "pending": ops.convert_to_tensor(0.0, _F64),
        "since": _int(0),
        "values": ops.zeros((positions,), _F64),
        "steps": ops.zeros((positions,), "int32"),
        "converged": ops.zeros((positions,), "bool"),
    }
    step = functools.partial(
        _step, x=x, rows=rows, tol=tol, max_steps=max_steps
    )
    state = ops.while_loop(
        lambda s: (s["k"] < max_steps) & (s["count"] > 0), step, state
    )
    vectors = None
    if return_vectors:
        coordinates = tridiagonal.ritz_vectors(
            ops.transpose(state["alphas"])[:units],
            ops.transpose(state["betas"])[:units, :-1],
            ops.maximum(state["steps"][:units], 1),
        )
        basis = ops.reshape(state["basis"], (positions, steps, dim))
        vectors = ops.einsum(
            "nk,nkd->nd",
            ops.cast(coordinates, _F32),
            basis[:units, :max_steps],
        )
        vectors = ops.cast(vectors, _F64)
        vectors = vectors / ops.sqrt(
            ops.sum(ops.square(vectors), axis=1, keepdims=True)
        )
    return (
        state["values"][:units],
        vectors,
        state["steps"][:units],
        state["converged"][:units],
    )


def _slots(active):
    """Positions of the active neurons first, then the sink (the last)."""
    positions = active.shape[0]
    places = ops.arange(positions, dtype="int32")
    # Unique keys: the order does not depend on the sort's stability.
    keys = ops.where(active, places, places + positions)
    order = ops.cast(ops.argsort(keys), "int32")
    count = ops.sum(ops.cast(active, "int32"))
    return ops.where(places < count, order, positions - 1)


def _step(state, *, x, rows, tol, max_steps):
    """One Lanczos step of every active neuron, then a check if due."""
    k, count = state["k"], state["count"]
    tokens, dim = x.shape
    alphas, betas, basis = _products(
        state["alphas"],
        state["betas"],
        state["basis"],
        state["slots"],
        k,
        count,
        x=x,
        rows=rows,
    )
    beta = betas[k]
    beta_prev = ops.where(k > 0, betas[ops.maximum(k - 1, 0)], 0.0)
    active = state["active"]
    anorm = ops.where(
        active,
        ops.maximum(state["anorm"], ops.abs(alphas[k]) + beta + beta_prev),
        state["anorm"],
    )
    exhausted = active & (beta <= 1e-6 * anorm)
    width = ops.cast(count, _F64)
    pending = state["pending"] + 4.0 * tokens * dim * width + 20 * CALL_FLOPS
    since = state["since"] + 1
    check_cost = CALL_FLOPS * 50 * ops.cast(k + 1, _F64) * (1 + width / 1000)
    last = k + 1 == max_steps
    due = (
        (pending >= check_cost)
        | (since == MAX_CHECK_INTERVAL)
        | last
        | ops.any(exhausted)
    )
    small = {
        name: value
        for name, value in state.items()
        if name not in ("alphas", "betas", "basis")
    }
    small = dict(small, anorm=anorm, pending=pending, since=since)
    small = ops.cond(
        due,
        lambda: _check(small, alphas, betas, exhausted, tol=tol, last=last),
        lambda: small,
    )
    return dict(small, k=k + 1, alphas=alphas, betas=betas, basis=basis)


def _products(alphas, betas, basis, slots, k, count, *, x, rows):
    """Lanczos step `k` of the active neurons, `CHUNK` at a time.

    Writes `alpha_k`, `beta_k` and the next basis vector (normalised) of
    each active neuron; a neuron's basis past step `k` is still zero, so
    the re-orthogonalisation blocks may run past it. The sinks take, as
    zeros, the writes of the inactive slots and of the step past the
    last.
    """
    sink = rows.shape[0] - 1
    steps = basis.shape[0] // rows.shape[0]
    previous = ops.maximum(k - 1, 0)

    def one_chunk(j, carry):
        alphas, betas, basis = carry
        index = ops.slice(slots, [j * CHUNK], [CHUNK])
        valid = index < sink
        q = ops.take(basis, index * steps + k, axis=0)
        w = ops.matmul(
            ops.matmul(q, ops.transpose(x)) * ops.take(rows, index, axis=0),
            x,
        )
        alpha = ops.sum(ops.cast(w, _F64) * ops.cast(q, _F64), axis=1)
        beta_prev = ops.where(k > 0, ops.take(betas[previous], index), 0.0)
        w = w - ops.cast(alpha, _F32)[:, None] * q
        w = w - ops.cast(beta_prev, _F32)[:, None] * ops.take(
            basis, index * steps + previous, axis=0
        )

        def orthogonalise(block, w):
            span = block * REORTH_BLOCK + ops.arange(REORTH_BLOCK)
            flat = index[:, None] * steps + ops.minimum(span, steps - 1)
            basis_block = ops.take(basis, flat, axis=0)
            overlap = ops.einsum("msd,md->ms", basis_block, w)
            return w - ops.einsum("ms,msd->md", overlap, basis_block)

        w = ops.fori_loop(_int(0), k // REORTH_BLOCK + 1, orthogonalise, w)
        beta = ops.sqrt(ops.sum(ops.square(ops.cast(w, _F64)), axis=1))
        inverse = ops.where(beta > 0, 1.0 / ops.maximum(beta, 1e-30), 0.0)
        following = w * ops.cast(inverse, _F32)[:, None]
        written = valid & (k + 1 < steps - 1)
        at_k = ops.stack([ops.zeros_like(index) + k, index], axis=1)
        return (
            ops.scatter_update(alphas, at_k, ops.where(valid, alpha, 0.0)),
            ops.scatter_update(betas, at_k, ops.where(valid, beta, 0.0)),
            ops.scatter_update(
                basis,
                (index * steps + k + 1)[:, None],
                ops.where(written[:, None], following, 0.0),
            ),
        )

    chunks = (count + CHUNK - 1) // CHUNK
    return ops.fori_loop(_int(0), chunks, one_chunk, (alphas, betas, basis))


def _check(state, alphas, betas, exhausted, *, tol, last):
    """Convergence check of the active neurons, on every position."""
    k, active = state["k"], state["active"]
    size = k + 1
    anorm, ritz = state["anorm"], state["ritz"]
    # The smallest Ritz value only decreases: start just left of the
    # last one, by twice its last decrease.
    guess = ritz - 2 * state["drop"] - 1e-6 * anorm
    theta = tridiagonal.laguerre_min(alphas, betas, size, guess, active)
    last_sq = tridiagonal.last_coordinate(alphas, betas, theta, size)
    error = betas[k] * ops.sqrt(last_sq)
    scale = ops.maximum(ops.abs(theta), 1e-3 * anorm)
    ok = (error <= tol * scale) | exhausted
    done = active & (ok | last)
    still = active & ~done
    return dict(
        state,
        drop=ops.where(active, ritz - theta, state["drop"]),
        ritz=ops.where(active, theta, ritz),
        values=ops.where(done, theta, state["values"]),
        steps=ops.where(done, size, state["steps"]),
        converged=ops.where(done, ok, state["converged"]),
        active=still,
        slots=_slots(still),
        count=ops.cast(ops.sum(ops.cast(still, "int32")), "int32"),
        pending=ops.zeros_like(state["pending"]),
        since=ops.zeros_like(state["since"]),
    )
