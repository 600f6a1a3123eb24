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
slots read zeros. The tridiagonal work runs in float64.

Two rules keep XLA from copying the large arrays at every step: the
conditional of the checks only carries the small per-neuron arrays, and
the row loops of the tridiagonal work carry their last row beside the
arrays they write instead of reading them back.
"""

import functools

import keras
import numpy as np
from keras import ops

from keras_depthhet.splitting import capture

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
_TINY = float(np.finfo("float64").tiny)
_PIVOT_MIN = 1e-290
_INF = float("inf")


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


def smallest_ritz(alphas, betas, guess=None, max_iter: int = 50):
    """Smallest eigenvalue of each symmetric tridiagonal matrix.

    Laguerre's method on `det(T - x I)` from a point left of every
    eigenvalue: for a polynomial with real roots it moves monotonically
    right and converges cubically to the smallest root without passing
    it, so every evaluation sees positive pivots. `O(k)` work per matrix
    and iteration, vectorised over the matrices with per-matrix stopping
    by masks. The squared last coordinate of the eigenvector comes from
    the twisted factorisation. Run it compiled
    (`capture.compile_solver`) for float64.

    Args:
        alphas: `(m, k)` diagonals.
        betas: `(m, k - 1)` off-diagonals.
        guess: Optional `(m,)` starting points, used where they are left
            of every eigenvalue (NaN or a point that is not: Gershgorin's
            lower bound is used instead).
        max_iter: Most Laguerre iterations.

    Returns:
        `theta (m,)`, the smallest eigenvalues, and `last (m,)`, the
        squared last component of their unit eigenvectors (for
        unreduced matrices, with every off-diagonal non-zero, as Lanczos
        makes them).
    """
    a, b, size = _columns(alphas, betas)
    if guess is None:
        guess = ops.full((a.shape[1],), float("nan"), _F64)
    theta = _laguerre(a, b, size, ops.cast(guess, _F64), max_iter)
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
    sizes = ops.full((a.shape[1],), size, "int32")
    return ops.transpose(_ritz_vectors(a, b, ops.cast(theta, _F64), sizes))


def _columns(alphas, betas):
    """`(K, m)` float64 columns; `b` padded to `K` rows."""
    a = ops.transpose(ops.cast(alphas, _F64))
    b = ops.abs(ops.transpose(ops.cast(betas, _F64)))
    b = ops.pad(b, [[0, a.shape[0] - b.shape[0]], [0, 0]])
    return a, b, a.shape[0]


def _int(value):
    return ops.convert_to_tensor(value, "int32")


def _gershgorin(a, b, size):
    """Per column: `max |a_j| + r_j`, `min a_j - r_j`, first `size` rows."""
    rows = ops.arange(a.shape[0], dtype="int32")[:, None]
    after = ops.where(rows < size - 1, b, 0.0)
    radius = after + ops.pad(after[:-1], [[1, 0], [0, 0]])
    inside = rows < size
    top = ops.max(ops.where(inside, ops.abs(a) + radius, 0.0), axis=0)
    return top, ops.min(ops.where(inside, a - radius, _INF), axis=0)


def _laguerre(a, b, size, guess, max_iter, todo=True):
    """Laguerre's iteration (see `smallest_ritz`) on `(K, m)` columns.

    `b` is read on the first `size - 1` rows only; `todo` masks the
    columns to solve (the others get 0).
    """
    scale, lower = _gershgorin(a, b, size)
    zero = scale == 0  # a zero matrix: theta = 0
    scale = ops.maximum(scale, _TINY)
    lower = lower - 1e-3 * scale
    guessed = ops.isfinite(guess) & (guess > lower)
    # Stop at a step below 1e-9 of the scale: near a simple root the
    # convergence is cubic, so the error left is far smaller.
    close = 1e-9 * scale
    order = ops.cast(size, _F64)

    def iterate(i, x, theta, todo, guessed):
        g, h, left = _laguerre_terms(a, b, x, size)
        root = ops.sqrt(ops.maximum((order - 1) * (order * h - g * g), 0.0))
        moved = x - order / (g - root)
        # A guess right of an eigenvalue restarts from Gershgorin's bound.
        # An exact split (beta = 0) can later put x on an eigenvalue of a
        # leading block (a zero pivot): x is then that eigenvalue.
        restart = ~left & guessed
        stuck = ~restart & (~left | ~ops.isfinite(moved))
        moved = ops.where(stuck, x, ops.where(restart, lower, moved))
        done = stuck | (~restart & (ops.abs(moved - x) <= close))
        theta = ops.where(todo, moved, theta)
        x = ops.where(todo, moved, x)
        return i + 1, x, theta, todo & ~done, ops.zeros_like(guessed)

    def going(i, x, theta, todo, guessed):
        return (i < max_iter) & ops.any(todo)

    x = ops.where(guessed, guess, lower)
    carry = (_int(0), x, ops.zeros_like(x), ~zero & todo, guessed)
    return ops.while_loop(going, iterate, carry)[2]


def _laguerre_terms(a, b, x, size):
    """The log-derivatives of `det(T - x I)` for Laguerre's method.

    The pivots of the `LDL^T` factorisation of `T - x I` follow
    `d_j = a_j - x - b_{j-1}**2 / d_{j-1}`; with `r_j = d_j' / d_j` and
    `s_j = d_j'' / d_j` (derivatives in `x`), `det = prod_j d_j` gives
    `G = sum_i 1 / (x - theta_i) = sum_j r_j` and
    `H = sum_i 1 / (x - theta_i)**2 = sum_j (r_j**2 - s_j)`. Also returns
    whether every pivot is positive (`x` left of every eigenvalue).
    """

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
    carry = (d, r, ops.zeros_like(d), r, r * r, d > 0)
    _, _, _, g, h, left = ops.fori_loop(_int(1), size, row, carry)
    return g, h, left


def _nonzero(pivot):
    """`pivot` with exact or underflowing zeros moved off zero."""
    return ops.where(ops.abs(pivot) < _PIVOT_MIN, _PIVOT_MIN, pivot)


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
        total + ops.log(b_j) - ops.log(ops.abs(safe)),
        flips + ops.cast(safe > 0, flips.dtype),
    )


def _logaddexp(u, v):
    """`log(exp(u) + exp(v))`, kept in float64.

    Not `ops.logaddexp`: Keras's type promotion on JAX turns float64
    into float32.
    """
    top = ops.maximum(u, v)
    spread = ops.log1p(ops.exp(-ops.abs(u - v)))
    # Both -inf (or both +inf): the sum, not NaN.
    return ops.where(ops.isnan(u - v), u + v, top + spread)


def _store(arrays, j, rows):
    return tuple(
        ops.scatter_update(array, ops.reshape(j, (1, 1)), row[None])
        for array, row in zip(arrays, rows, strict=True)
    )


def _last_coordinate(a, b, theta, size):
    """Squared last coordinate of the unit eigenvectors for `theta`.

    The twisted factorisation of `T - theta I` (Dhillon and Parlett): the
    top-down pivots `D+` and bottom-up pivots `D-` meet at the row `r`
    where `|D+_r + D-_r - (a_r - theta)|` is smallest, the eigenvector is
    `1` there, and moving away from `r` it is the product of the ratios
    `-b / D`, taken in logs (so tiny coordinates are resolved and
    nothing overflows). Without arrays of the eigenvectors: the top-down
    loop stores its pivots, log-ratio sums `top` and
    `log sum_{i<j} exp(-2 top_i)`; the bottom-up loop keeps, at the best
    twist row `r` so far, what the norm and the last coordinate need
    (`log|y_last / y_r| = bottom_r`).
    """
    shifted = a - theta
    zero = ops.zeros_like(theta)

    def down(j, carry):
        stored, (pivot, top, spread) = carry
        made_pivot, made_top, _ = _pivot(
            shifted, j, b[j - 1], (pivot, top, zero)
        )
        made = (made_pivot, made_top, _logaddexp(spread, -2.0 * top))
        return _store(stored, j, made), made

    def up(i, carry):
        j = size - 1 - i
        (pivot, bottom, spread), best = carry
        made_pivot, made_bottom, _ = _pivot(
            shifted, j, b[j], (pivot, bottom, zero)
        )
        first = i == 0
        made = (
            ops.where(first, shifted[j], made_pivot),
            ops.where(first, 0.0, made_bottom),
            ops.where(first, -_INF, _logaddexp(spread, -2.0 * bottom)),
        )
        gap = ops.abs(plus[j] + made[0] - shifted[j])
        # Ties go to the lower row, like `np.argmin`.
        better = gap <= best[0]
        row = (gap, top[j], top_spread[j], made[1], made[2])
        best = tuple(
            ops.where(better, new, old)
            for new, old in zip(row, best, strict=True)
        )
        return made, best

    first = (shifted[0], zero, ops.full_like(zero, -_INF))
    arrays = tuple(ops.broadcast_to(value, a.shape) for value in first)
    (plus, top, top_spread), _ = ops.fori_loop(
        _int(1), size, down, (arrays, first)
    )
    best = (ops.full_like(zero, _INF), zero, zero, zero, zero)
    _, (_, top_r, top_spread_r, bottom_r, bottom_spread_r) = ops.fori_loop(
        _int(0), size, up, (first, best)
    )
    log_norm = _logaddexp(
        _logaddexp(zero, 2.0 * top_r + top_spread_r),
        2.0 * bottom_r + bottom_spread_r,
    )
    return ops.nan_to_num(ops.exp(2.0 * bottom_r - log_norm))


def _ritz_vectors(a, b, theta, sizes):
    """Unit eigenvectors of the `(K, m)` tridiagonals for `theta`.

    The twisted factorisation with the signs: the vector is `1` at the
    twist row `r` and, moving away from it, the product of the ratios
    `-b / pivot`. Each column has its own order `sizes`; `b` is read on
    its first `size - 1` rows.
    """
    rows = ops.arange(a.shape[0], dtype="int32")[:, None]
    shifted = a - theta
    length = ops.max(sizes)
    zero = ops.zeros_like(theta)
    arrays = (shifted, ops.zeros_like(shifted), ops.zeros_like(shifted))

    def down(j, carry):
        made = _pivot(shifted, j, b[j - 1], carry[1])
        return _store(carry[0], j, made), made

    def up(i, carry):
        # Each column starts afresh at its own last row.
        j = length - 1 - i
        made = _pivot(shifted, j, b[j], carry[1])
        fresh = j >= sizes - 1
        made = tuple(
            ops.where(fresh, new, old)
            for new, old in zip((shifted[j], zero, zero), made, strict=True)
        )
        return _store(carry[0], j, made), made

    # log|y_i / y_r| is top[r] - top[i] above the twist row r and
    # bottom[r] - bottom[i] below it.
    (plus, top, top_flips), _ = ops.fori_loop(
        _int(1), length, down, (arrays, (shifted[0], zero, zero))
    )
    (minus, bottom, bottom_flips), _ = ops.fori_loop(
        _int(0), length, up, (arrays, (shifted[0], zero, zero))
    )
    inside = rows < sizes[None, :]
    gap = ops.where(inside, ops.abs(plus + minus - shifted), _INF)
    twist = ops.cast(ops.argmin(gap, axis=0), "int32")[None, :]

    def from_twist(values):
        return ops.take_along_axis(values, twist, axis=0) - values

    above = rows < twist
    log_y = ops.where(above, from_twist(top), from_twist(bottom))
    flips = ops.where(above, from_twist(top_flips), from_twist(bottom_flips))
    # An exact split (b = 0) on both sides of a row gives -inf - -inf.
    log_y = ops.where(ops.isnan(log_y) | ~inside, -_INF, log_y)
    log_y = ops.where(rows == twist, 0.0, log_y)
    peak = ops.max(log_y, axis=0)
    norm = 0.5 * ops.log(ops.sum(ops.exp(2.0 * (log_y - peak)), axis=0))
    return (1.0 - 2.0 * (flips % 2)) * ops.exp(log_y - norm - peak)


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
        coordinates = _ritz_vectors(
            state["alphas"],
            state["betas"],
            state["values"],
            ops.maximum(state["steps"], 1),
        )
        basis = ops.reshape(state["basis"], (positions, steps, dim))
        vectors = ops.einsum(
            "kn,nkd->nd",
            ops.cast(coordinates[:, :units], _F64),
            ops.cast(basis[:units, :max_steps], _F64),
        )
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
            span = block * REORTH_BLOCK + ops.arange(REORTH_BLOCK, dtype="int32")
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
    theta = _laguerre(alphas, betas, size, guess, 50, todo=active)
    error = betas[k] * ops.sqrt(_last_coordinate(alphas, betas, theta, size))
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
