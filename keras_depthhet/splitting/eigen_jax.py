"""The matrix-free Lanczos solve on the JAX backend's default device.

The method of `eigen.lanczos_min_eigen` (every neuron's Lanczos recurrence
in lockstep with full re-orthogonalisation, per-neuron stopping on the
Ritz residual, Laguerre's method for the Ritz values, checks spaced by
cost, the same start vectors) as one jitted `lax.while_loop` with fixed
shapes: on an accelerator the products and the convergence checks run
where the captures already are, and nothing goes to the host but the
results.

A neuron keeps its position (its row of `C^T`, of the Krylov basis and of
the tridiagonal coefficients) for the whole solve. Done neurons are masked
instead of compacted; the positions of the active ones (`slots`, a stable
sort of the mask) feed the products, which run on chunks of `CHUNK`
active neurons, so the matmuls shrink with the active neurons as in NumPy
without a new shape per width. The checks run on every position (`O(k)`
per neuron and Laguerre iteration) with the done ones masked. The
tridiagonal work runs in float64 (`jax.enable_x64` around the solve only).

Two rules keep XLA from copying the large arrays at every step: the
conditional of the checks only carries the small per-neuron arrays, and
the row loops of the tridiagonal work carry their last row beside the
arrays they write instead of reading them back.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from keras_depthhet.splitting import eigen

CHUNK = 64
"""Active neurons per product matmul."""

REORTH_BLOCK = 32
"""Krylov steps per block of the re-orthogonalisation."""

_F32 = jnp.float32
_F64 = jnp.float64


class DeviceLanczos:
    """The products of `eigen.lanczos_min_eigen` as one solve on the device.

    What the JAX backend's `lanczos_products` returns: `eigen` hands the
    whole solve to `solve` (this module's `lanczos_min_eigen`) instead of
    running its host loop.

    Args:
        x: `(N, D)` float32 `X~`, a JAX array.
        c: `(N, n)` float32 `C`, a JAX array.
    """

    def __init__(self, x, c):
        self.x = x
        self.c = c

    def solve(self, *, tol, max_iter, return_vectors, seed):
        return lanczos_min_eigen(
            self.x,
            self.c,
            tol=tol,
            max_iter=max_iter,
            return_vectors=return_vectors,
            seed=seed,
        )


def lanczos_min_eigen(
    x,
    c,
    *,
    tol: float,
    max_iter: int,
    return_vectors: bool = False,
    seed: int = 0,
):
    """`lambda_min(S_i)` for every neuron, solved where `x` and `c` are.

    Same arguments, stopping rule and results as
    `eigen.lanczos_min_eigen`, as JAX arrays left on the device: fetching
    them (`np.asarray`) is the only transfer to the host, and the start
    vectors (`eigen.start_vectors`) the only one from it.

    Args:
        x: `(N, D)` float32 `X~`, a JAX array.
        c: `(N, n)` float32 `C`, a JAX array.
        tol: Relative accuracy of each `lambda_min`.
        max_iter: Most Lanczos steps per neuron.
        return_vectors: Whether to also return the Ritz vectors.
        seed: Seed of the start vectors.

    Returns:
        `(values (n,) float64, vectors (n, D) float64 or None,
        steps (n,) int32, converged (n,) bool)`, JAX arrays.

    Example:

    >>> import jax.numpy as jnp
    >>> x = jnp.ones((4, 2))
    >>> c = jnp.asarray([[1.0], [0.0], [0.0], [0.0]])
    >>> values, _, steps, converged = lanczos_min_eigen(
    ...     x, c, tol=1e-3, max_iter=10)
    >>> round(float(values[0]), 6), int(steps[0]), bool(converged[0])
    (0.0, 2, True)
    """
    # Uncommitted, the start vectors follow `x` and `c` into the jit.
    start = jax.device_put(eigen.start_vectors(c.shape[1], x.shape[1], seed))
    with jax.enable_x64(True):
        return _solve(
            x,
            c,
            start,
            tol=float(tol),
            # The Krylov space of a rank-N matrix is exhausted after
            # N + 1 steps, which bounds the basis (as the memory plan).
            max_steps=min(int(max_iter), x.shape[1], x.shape[0] + 1),
            return_vectors=bool(return_vectors),
        )


def smallest_ritz(alphas, betas, guess=None, max_iter: int = 50):
    """Smallest eigenvalue of each symmetric tridiagonal matrix, in JAX.

    Laguerre's method as in `eigen.smallest_ritz` (always: a dense `eigh`
    would cost `O(k**3)` per matrix), vectorised over the matrices with
    per-matrix stopping by masks, and the residual's last coordinate from
    the twisted factorisation. Call it under `jax.enable_x64(True)` for
    float64.

    Args:
        alphas: `(m, k)` diagonals.
        betas: `(m, k - 1)` off-diagonals.
        guess: Optional `(m,)` starting points (see `eigen.smallest_ritz`).
        max_iter: Most Laguerre iterations.

    Returns:
        `theta (m,)`, the smallest eigenvalues, and `last (m,)`, the
        squared last component of their unit eigenvectors.
    """
    a, b, size = _columns(alphas, betas)
    if guess is None:
        guess = jnp.full(a.shape[1], jnp.nan, _F64)
    theta = _laguerre(a, b, size, jnp.asarray(guess, _F64), max_iter)
    return theta, _last_coordinate(a, b, theta, size)


def ritz_vectors(alphas, betas, theta):
    """Unit eigenvectors of symmetric tridiagonal matrices for `theta`.

    Args:
        alphas: `(m, k)` diagonals.
        betas: `(m, k - 1)` off-diagonals.
        theta: `(m,)` eigenvalues, one per matrix.

    Returns:
        `(m, k)`, the unit eigenvectors (signs arbitrary).
    """
    a, b, size = _columns(alphas, betas)
    sizes = jnp.full(a.shape[1], size)
    return _ritz_vectors(a, b, jnp.asarray(theta, _F64), sizes).T


def _columns(alphas, betas):
    """`(K, m)` float64 columns; `b` padded to `K` rows."""
    a = jnp.asarray(alphas, _F64).T
    b = jnp.asarray(betas, _F64).T
    b = jnp.pad(jnp.abs(b), ((0, a.shape[0] - b.shape[0]), (0, 0)))
    return a, b, a.shape[0]


def _gershgorin(a, b, size):
    """Per column: `max |a_j| + r_j`, `min a_j - r_j`, first `size` rows."""

    def row(j, bounds):
        after = jnp.where(j < size - 1, b[j], 0.0)
        radius = after + jnp.where(j > 0, b[jnp.maximum(j - 1, 0)], 0.0)
        top, bottom = bounds
        return (
            jnp.maximum(top, jnp.abs(a[j]) + radius),
            jnp.minimum(bottom, a[j] - radius),
        )

    start = (jnp.zeros_like(a[0]), jnp.full_like(a[0], jnp.inf))
    return lax.fori_loop(0, size, row, start)


def _laguerre(a, b, size, guess, max_iter, todo=True):
    """`eigen.smallest_ritz`'s Laguerre iteration on `(K, m)` columns.

    `b` is read on the first `size - 1` rows only; `todo` masks the
    columns to solve (the others get 0).
    """
    scale, lower = _gershgorin(a, b, size)
    zero = scale == 0  # a zero matrix: theta = 0
    scale = jnp.maximum(scale, eigen._TINY)
    lower = lower - 1e-3 * scale
    guessed = jnp.isfinite(guess) & (guess > lower)
    # Stop at a step below 1e-9 of the scale (cubic convergence).
    close = 1e-9 * scale
    order = jnp.asarray(size, _F64)

    def iterate(carry):
        i, x, theta, todo, guessed = carry
        g, h, left = _laguerre_terms(a, b, x, size)
        root = jnp.sqrt(jnp.maximum((order - 1) * (order * h - g * g), 0.0))
        moved = x - order / (g - root)
        # As in NumPy: a guess right of an eigenvalue restarts from
        # Gershgorin's bound; a zero pivot after an exact split means x
        # is an eigenvalue of a leading block.
        restart = ~left & guessed
        stuck = ~restart & (~left | ~jnp.isfinite(moved))
        moved = jnp.where(stuck, x, jnp.where(restart, lower, moved))
        done = stuck | (~restart & (jnp.abs(moved - x) <= close))
        theta = jnp.where(todo, moved, theta)
        x = jnp.where(todo, moved, x)
        return i + 1, x, theta, todo & ~done, jnp.zeros_like(guessed)

    def going(carry):
        i, _, _, todo, _ = carry
        return (i < max_iter) & todo.any()

    x = jnp.where(guessed, guess, lower)
    carry = (0, x, jnp.zeros_like(x), ~zero & todo, guessed)
    return lax.while_loop(going, iterate, carry)[2]


def _laguerre_terms(a, b, x, size):
    """`eigen._laguerre_terms` over the first `size` rows, in a loop."""

    def row(j, carry):
        d, r, s, g, h, left = carry
        u = b[j - 1] ** 2 / d
        d = a[j] - x - u
        u = u / d
        s = u * (s - 2.0 * r * r)
        r = u * r - 1.0 / d
        return d, r, s, g + r, h + r * r - s, left & (d > 0)

    d = a[0] - x
    r = -1.0 / d
    carry = (d, r, jnp.zeros_like(d), r, r * r, d > 0)
    _, _, _, g, h, left = lax.fori_loop(1, size, row, carry)
    return g, h, left


def _pivot(shifted, j, b_j, neighbour):
    """Pivot `j` of a factorisation of `T - theta I` from its neighbour's.

    `neighbour` and the result are `(pivot, total, flips)`: the pivot,
    the running sum of `log|b / pivot|` (log-ratios of eigenvector
    coordinates) and the running count of positive pivots (sign flips of
    `-b / pivot`).
    """
    previous, total, flips = neighbour
    safe = _nonzero(previous)
    return (
        shifted[j] - b_j**2 / safe,
        total + jnp.log(b_j) - jnp.log(jnp.abs(safe)),
        flips + (safe > 0),
    )


def _last_coordinate(a, b, theta, size):
    """Squared last coordinate of the unit eigenvectors for `theta`.

    `eigen._last_coordinate`'s twisted factorisation without arrays of
    the eigenvectors: the top-down loop stores its pivots, log-ratio sums
    `top` and `log sum_{i<j} exp(-2 top_i)`; the bottom-up loop keeps, at
    the best twist row `r` so far, what the norm and the last coordinate
    need (`log|y_last / y_r| = bottom_r`).
    """
    shifted = a - theta

    def down(j, carry):
        stored, (pivot, top, spread) = carry
        made_pivot, made_top, _ = _pivot(shifted, j, b[j - 1], (pivot, top, 0))
        made = (made_pivot, made_top, jnp.logaddexp(spread, -2.0 * top))
        return _store(stored, j, made), made

    def up(i, carry):
        j = size - 1 - i
        (pivot, bottom, spread), best = carry
        made_pivot, made_bottom, _ = _pivot(
            shifted, j, b[j], (pivot, bottom, 0)
        )
        made = (
            jnp.where(i == 0, shifted[j], made_pivot),
            jnp.where(i == 0, 0.0, made_bottom),
            jnp.where(i == 0, -jnp.inf, jnp.logaddexp(spread, -2.0 * bottom)),
        )
        gap = jnp.abs(plus[j] + made[0] - shifted[j])
        # Ties go to the lower row, like `np.argmin`.
        better = gap <= best[0]
        row = (gap, top[j], top_spread[j], made[1], made[2])
        best = tuple(
            jnp.where(better, new, old)
            for new, old in zip(row, best, strict=True)
        )
        return made, best

    zero = jnp.zeros_like(theta)
    first = (shifted[0], zero, jnp.full_like(zero, -jnp.inf))
    arrays = tuple(jnp.broadcast_to(value, a.shape) for value in first)
    (plus, top, top_spread), _ = lax.fori_loop(1, size, down, (arrays, first))
    best = (jnp.full_like(zero, jnp.inf), zero, zero, zero, zero)
    _, (_, top_r, top_spread_r, bottom_r, bottom_spread_r) = lax.fori_loop(
        0, size, up, (first, best)
    )
    log_norm = jnp.logaddexp(
        jnp.logaddexp(0.0, 2.0 * top_r + top_spread_r),
        2.0 * bottom_r + bottom_spread_r,
    )
    return jnp.nan_to_num(jnp.exp(2.0 * bottom_r - log_norm))


def _ritz_vectors(a, b, theta, sizes):
    """Unit eigenvectors of the `(K, m)` tridiagonals for `theta`.

    The twisted factorisation with the signs: the vector is `1` at the
    twist row `r` and, moving away from it, the product of the ratios
    `-b / pivot`. Each column has its own order `sizes`; `b` is read on
    its first `size - 1` rows.
    """
    rows = jnp.arange(a.shape[0])[:, None]
    shifted = a - theta
    length = sizes.max()
    zero = jnp.zeros_like(theta)
    arrays = (shifted, jnp.zeros_like(shifted), jnp.zeros_like(shifted))

    def down(j, carry):
        made = _pivot(shifted, j, b[j - 1], carry[1])
        return _store(carry[0], j, made), made

    def up(i, carry):
        # Each column starts afresh at its own last row.
        j = length - 1 - i
        made = _pivot(shifted, j, b[j], carry[1])
        fresh = j >= sizes - 1
        made = tuple(
            jnp.where(fresh, new, old)
            for new, old in zip((shifted[j], zero, zero), made, strict=True)
        )
        return _store(carry[0], j, made), made

    # log|y_i / y_r| is top[r] - top[i] above the twist row r and
    # bottom[r] - bottom[i] below it.
    (plus, top, top_flips), _ = lax.fori_loop(
        1, length, down, (arrays, (shifted[0], zero, zero))
    )
    (minus, bottom, bottom_flips), _ = lax.fori_loop(
        0, length, up, (arrays, (shifted[0], zero, zero))
    )
    inside = rows < sizes
    gap = jnp.where(inside, jnp.abs(plus + minus - shifted), jnp.inf)
    twist = jnp.argmin(gap, axis=0)[None, :]

    def from_twist(values):
        return jnp.take_along_axis(values, twist, axis=0) - values

    above = rows < twist
    log_y = jnp.where(above, from_twist(top), from_twist(bottom))
    flips = jnp.where(above, from_twist(top_flips), from_twist(bottom_flips))
    # An exact split (b = 0) on both sides of a row gives -inf - -inf.
    log_y = jnp.where(jnp.isnan(log_y) | ~inside, -jnp.inf, log_y)
    log_y = jnp.where(rows == twist, 0.0, log_y)
    peak = log_y.max(axis=0)
    norm = 0.5 * jnp.log(jnp.exp(2.0 * (log_y - peak)).sum(axis=0)) + peak
    return jnp.where(flips % 2 == 1, -1.0, 1.0) * jnp.exp(log_y - norm)


def _store(arrays, j, rows):
    return tuple(
        array.at[j].set(row) for array, row in zip(arrays, rows, strict=True)
    )


def _nonzero(pivot):
    return jnp.where(jnp.abs(pivot) < eigen._PIVOT_MIN, eigen._PIVOT_MIN, pivot)


@functools.partial(
    jax.jit, static_argnames=("tol", "max_steps", "return_vectors")
)
def _solve(x, c, start, *, tol, max_steps, return_vectors):
    tokens, dim = x.shape
    units = c.shape[1]
    width = -(-units // CHUNK) * CHUNK
    x = x.astype(_F32)
    rows = jnp.zeros((width, tokens), _F32).at[:units].set(c.T.astype(_F32))
    active = jnp.arange(width) < units
    state = {
        "k": jnp.int32(0),
        "basis": jnp.zeros((width, max_steps, dim), _F32)
        .at[:units, 0]
        .set(start),
        # Step-major: a check reads one step of every neuron at a time.
        "alphas": jnp.zeros((max_steps, width), _F64),
        "betas": jnp.zeros((max_steps, width), _F64),
        "anorm": jnp.zeros(width, _F64),
        "active": active,
        "slots": _slots(active),
        "count": jnp.int32(units),
        "ritz": jnp.full(width, jnp.nan, _F64),
        "drop": jnp.zeros(width, _F64),
        "pending": jnp.float64(0.0),
        "since": jnp.int32(0),
        "values": jnp.zeros(width, _F64),
        "steps": jnp.zeros(width, jnp.int32),
        "converged": jnp.zeros(width, bool),
    }
    step = functools.partial(
        _step, x=x, rows=rows, tol=tol, max_steps=max_steps
    )
    state = lax.while_loop(
        lambda s: (s["k"] < max_steps) & (s["count"] > 0), step, state
    )
    vectors = None
    if return_vectors:
        coordinates = _ritz_vectors(
            state["alphas"],
            jnp.abs(state["betas"]),
            state["values"],
            jnp.maximum(state["steps"], 1),
        )
        vectors = jnp.einsum(
            "kn,nkd->nd",
            coordinates[:, :units].astype(_F32),
            state["basis"][:units],
            preferred_element_type=_F64,
        )
        vectors = vectors / jnp.linalg.norm(vectors, axis=1, keepdims=True)
    return (
        state["values"][:units],
        vectors,
        state["steps"][:units],
        state["converged"][:units],
    )


def _slots(active):
    """Positions of the active neurons first, then out-of-range ones."""
    width = active.shape[0]
    # A stable sort: `jnp.nonzero` compiles to a slow scan on the CPU.
    order = jnp.argsort(~active, stable=True).astype(jnp.int32)
    return jnp.where(jnp.arange(width) < active.sum(), order, width)


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
    beta_prev = jnp.where(k > 0, betas[jnp.maximum(k - 1, 0)], 0.0)
    active = state["active"]
    anorm = jnp.where(
        active,
        jnp.maximum(state["anorm"], jnp.abs(alphas[k]) + beta + beta_prev),
        state["anorm"],
    )
    exhausted = active & (beta <= 1e-6 * anorm)
    # The check spacing of `eigen.lanczos_min_eigen`, on the same counts.
    pending = (
        state["pending"]
        + 4.0 * tokens * dim * count.astype(_F64)
        + 20 * eigen.CALL_FLOPS
    )
    since = state["since"] + 1
    check_cost = (
        eigen.CALL_FLOPS * 50 * (k + 1) * (1 + count.astype(_F64) / 1000)
    )
    last = k + 1 == max_steps
    due = (
        (pending >= check_cost)
        | (since == eigen.MAX_CHECK_INTERVAL)
        | last
        | exhausted.any()
    )
    small = {
        name: value
        for name, value in state.items()
        if name not in ("alphas", "betas", "basis")
    }
    small = dict(small, anorm=anorm, pending=pending, since=since)
    check = functools.partial(_check, tol=tol, last=last)
    small = lax.cond(
        due, check, lambda s, *_: s, small, alphas, betas, exhausted
    )
    return dict(small, k=k + 1, alphas=alphas, betas=betas, basis=basis)


def _products(alphas, betas, basis, slots, k, count, *, x, rows):
    """Lanczos step `k` of the active neurons, `CHUNK` at a time.

    Writes `alpha_k`, `beta_k` and the next basis vector (normalised) of
    each active neuron; a neuron's basis past step `k` is still zero, so
    the re-orthogonalisation blocks may run past it.
    """
    previous = jnp.maximum(k - 1, 0)

    def one_chunk(j, carry):
        alphas, betas, basis = carry
        index = lax.dynamic_slice_in_dim(slots, j * CHUNK, CHUNK)
        q = _take(basis, (index, k))
        w = ((q @ x.T) * _take(rows, (index,))) @ x
        alpha = jnp.einsum("md,md->m", w.astype(_F64), q.astype(_F64))
        beta_prev = jnp.where(k > 0, _take(betas, (previous, index)), 0.0)
        w = w - alpha.astype(_F32)[:, None] * q
        w = w - beta_prev.astype(_F32)[:, None] * _take(
            basis, (index, previous)
        )

        def orthogonalise(block, w):
            span = block * REORTH_BLOCK + jnp.arange(REORTH_BLOCK)
            basis_block = _take(basis, (index[:, None], span[None, :]))
            overlap = jnp.einsum("msd,md->ms", basis_block, w)
            return w - jnp.einsum("ms,msd->md", overlap, basis_block)

        w = lax.fori_loop(0, k // REORTH_BLOCK + 1, orthogonalise, w)
        beta = jnp.sqrt(jnp.einsum("md,md->m", w.astype(_F64), w))
        inverse = jnp.where(beta > 0, 1.0 / jnp.maximum(beta, 1e-30), 0.0)
        return (
            alphas.at[k, index].set(alpha, mode="drop"),
            betas.at[k, index].set(beta, mode="drop"),
            # Past the last step the index is out of range: dropped.
            basis.at[index, k + 1].set(
                w * inverse.astype(_F32)[:, None], mode="drop"
            ),
        )

    chunks = (count + CHUNK - 1) // CHUNK
    return lax.fori_loop(0, chunks, one_chunk, (alphas, betas, basis))


def _take(array, index):
    """`array[index]`, zero where an index is out of range."""
    return array.at[index].get(mode="fill", fill_value=0)


def _check(state, alphas, betas, exhausted, *, tol, last):
    """Convergence check of the active neurons, on every position."""
    k, active = state["k"], state["active"]
    size = k + 1
    anorm, ritz = state["anorm"], state["ritz"]
    # The smallest Ritz value only decreases: start just left of the
    # last one, by twice its last decrease.
    guess = ritz - 2 * state["drop"] - 1e-6 * anorm
    theta = _laguerre(alphas, betas, size, guess, 50, todo=active)
    error = betas[k] * jnp.sqrt(_last_coordinate(alphas, betas, theta, size))
    scale = jnp.maximum(jnp.abs(theta), 1e-3 * anorm)
    ok = (error <= tol * scale) | exhausted
    done = active & (ok | last)
    still = active & ~done
    return dict(
        state,
        drop=jnp.where(active, ritz - theta, state["drop"]),
        ritz=jnp.where(active, theta, ritz),
        values=jnp.where(done, theta, state["values"]),
        steps=jnp.where(done, size, state["steps"]),
        converged=jnp.where(done, ok, state["converged"]),
        active=still,
        slots=_slots(still),
        count=still.sum(dtype=jnp.int32),
        pending=jnp.zeros_like(state["pending"]),
        since=jnp.zeros_like(state["since"]),
    )
