"""The matrix-free solver: batched Lanczos in `keras.ops`, one program.
Each neuron runs its own fully re-orthogonalised recurrence on
`S_i = X~^T diag(C[:, i]) X~`, `CHUNK` active neurons per matmul; done ones
are masked, an extra position and step (zero sinks) taking masked writes."""

import functools

import keras
import numpy as np
from keras import ops

from keras_depthhet.splitting import capture, tridiagonal
from keras_depthhet.splitting.tridiagonal import int32

CHUNK = 64
"""Active neurons per product matmul."""

REORTH_BLOCK = 32
"""Krylov steps per block of the re-orthogonalisation."""

CALL_FLOPS = 1e5
"""Cost unit of the check spacing: a check after step `k` costs
`50 * k * (1 + m / 1000)` units, a step `4 * N * D * m` flops + 20 units."""

MAX_CHECK_INTERVAL = 4
"""Most Lanczos steps between two convergence checks."""

_F32 = "float32"
_F64 = "float64"


def lanczos_min_eigen(
    x,
    c,
    *,
    tol: float,
    max_iter: int,
    return_vectors: bool = False,
    seed: int = 0,
):
    """`(values, vectors or None, steps, converged)` of every neuron, as
    backend tensors, from seeded random unit start vectors."""
    tokens, dim = x.shape
    start = np.random.default_rng(seed).standard_normal(
        (c.shape[1], dim), dtype="float32"
    )
    start /= np.linalg.norm(start, axis=1, keepdims=True)
    solve = _compiled(
        keras.backend.backend(),
        tol=float(tol),
        max_steps=min(int(max_iter), dim, tokens + 1),
        return_vectors=bool(return_vectors),
    )
    return solve(x, c, start)


@functools.lru_cache(maxsize=64)
def _compiled(backend, **settings):
    del backend  # part of the cache key only
    return capture.compile_solver(functools.partial(_solve, **settings))


def _solve(x, c, start, *, tol, max_steps, return_vectors):
    tokens, dim = x.shape
    units = c.shape[1]
    # One more neuron position and one more step: the zero sinks.
    positions = -(-units // CHUNK) * CHUNK + 1
    steps = max_steps + 1
    x = ops.cast(x, _F32)
    extra = positions - units
    rows = ops.pad(ops.transpose(ops.cast(c, _F32)), [[0, extra], [0, 0]])
    start = ops.cast(start, _F32)[:, None, :]
    basis = ops.pad(start, [[0, extra], [0, max_steps], [0, 0]])
    active = ops.arange(positions, dtype="int32") < units
    state = {
        "k": int32(0),
        # Flat rows `position * steps + step`: one gather per read.
        "basis": ops.reshape(basis, (positions * steps, dim)),
        # Step-major: a check reads one step of every neuron at a time.
        "alphas": ops.zeros((max_steps, positions), _F64),
        "betas": ops.zeros((max_steps, positions), _F64),
        "anorm": ops.zeros((positions,), _F64),
        "active": active,
        "slots": _slots(active),
        "count": int32(units),
        "ritz": ops.full((positions,), float("nan"), _F64),
        "drop": ops.zeros((positions,), _F64),
        "pending": ops.convert_to_tensor(0.0, _F64),
        "since": int32(0),
        "values": ops.zeros((positions,), _F64),
        "steps": ops.zeros((positions,), "int32"),
        "converged": ops.zeros((positions,), "bool"),
    }
    state = ops.while_loop(
        lambda s: (s["k"] < max_steps) & (s["count"] > 0),
        functools.partial(_step, x=x, rows=rows, tol=tol, max_steps=max_steps),
        state,
    )
    vectors = None
    if return_vectors:
        coordinates = tridiagonal.ritz_vectors(
            ops.transpose(state["alphas"])[:units],
            ops.transpose(state["betas"])[:units, :-1],
            ops.maximum(state["steps"][:units], 1),
        )
        basis = ops.reshape(state["basis"], (positions, steps, dim))
        basis = basis[:units, :max_steps]
        vectors = ops.einsum("nk,nkd->nd", ops.cast(coordinates, _F32), basis)
        vectors = ops.cast(vectors, _F64)
        vectors = vectors / ops.sqrt(
            ops.sum(ops.square(vectors), axis=1, keepdims=True)
        )
    values, steps, converged = (
        state[name][:units] for name in ("values", "steps", "converged")
    )
    return values, vectors, steps, converged


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
    alphas, betas, basis = _products(state, x=x, rows=rows)
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
    due = (pending >= check_cost) | (since == MAX_CHECK_INTERVAL) | last
    due = due | ops.any(exhausted)
    big = {"alphas": alphas, "betas": betas, "basis": basis}
    # The conditional carries only the small per-neuron arrays.
    small = {n: v for n, v in state.items() if n not in big}
    small.update(anorm=anorm, pending=pending, since=since)
    small = ops.cond(
        due,
        lambda: _check(small, alphas, betas, exhausted, tol=tol, last=last),
        lambda: small,
    )
    return dict(small, k=k + 1, **big)


def _products(state, *, x, rows):
    """`alpha_k`, `beta_k` and the next basis vector of the active neurons,
    `CHUNK` at a time; the sinks take the masked writes, as zeros."""
    alphas, betas, basis = (state[n] for n in ("alphas", "betas", "basis"))
    k, count, slots = state["k"], state["count"], state["slots"]
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

        w = ops.fori_loop(int32(0), k // REORTH_BLOCK + 1, orthogonalise, w)
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
    return ops.fori_loop(int32(0), chunks, one_chunk, (alphas, betas, basis))


def _check(state, alphas, betas, exhausted, *, tol, last):
    """Ends the neurons whose Ritz residual `r <= tol * max(|theta|,
    1e-3 * ||T||)`, or whose Krylov space is exhausted, or at the last step."""
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
