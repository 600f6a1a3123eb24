"""The matrix-free Lanczos solve on TensorFlow's device.

The TensorFlow twin of `eigen_jax` (same method, start vectors, stopping
rule, check spacing and results): one `tf.function` compiled with XLA,
whose `tf.while_loop` runs every Lanczos step and convergence check where
the captures are, with fixed shapes. Done neurons are masked; the products
run on chunks of `CHUNK` active neurons. Where `eigen_jax` drops writes
and fills reads out of range, this module gives every per-neuron array one
more position and every basis one more step, kept at zero (the writes that
land there are masked to zero), so that inactive slots read zeros.
"""

import functools

import tensorflow as tf

from keras_depthhet.splitting import eigen

CHUNK = 64
"""Active neurons per product matmul."""

REORTH_BLOCK = 32
"""Krylov steps per block of the re-orthogonalisation."""

_F32 = tf.float32
_F64 = tf.float64


class DeviceLanczos:
    """The products of `eigen.lanczos_min_eigen` as one solve in TensorFlow.

    What the TensorFlow backend's `lanczos_products` returns: `eigen`
    hands the whole solve to `solve` (this module's `lanczos_min_eigen`)
    instead of running its host loop.

    Args:
        x: `(N, D)` float32 `X~`, a tensor.
        c: `(N, n)` float32 `C`, a tensor.
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
    `eigen.lanczos_min_eigen`, as tensors: fetching them (`.numpy()`) is
    the only transfer to the host, and the start vectors
    (`eigen.start_vectors`) the only one from it. One compiled function
    per shape and setting.

    Args:
        x: `(N, D)` float32 `X~`, a tensor.
        c: `(N, n)` float32 `C`, a tensor.
        tol: Relative accuracy of each `lambda_min`.
        max_iter: Most Lanczos steps per neuron.
        return_vectors: Whether to also return the Ritz vectors.
        seed: Seed of the start vectors.

    Returns:
        `(values (n,) float64, vectors (n, D) float64 or None,
        steps (n,) int32, converged (n,) bool)`, tensors.

    Example:

    >>> import tensorflow as tf
    >>> x = tf.ones((4, 2))
    >>> c = tf.constant([[1.0], [0.0], [0.0], [0.0]])
    >>> values, _, steps, converged = lanczos_min_eigen(
    ...     x, c, tol=1e-3, max_iter=10)
    >>> round(float(values[0]), 6), int(steps[0]), bool(converged[0])
    (0.0, 2, True)
    """
    tokens, dim = x.shape
    units = c.shape[1]
    start = tf.constant(eigen.start_vectors(units, dim, seed))
    solve = _compiled(
        tuple(x.shape),
        tuple(c.shape),
        tol=float(tol),
        # The Krylov space of a rank-N matrix is exhausted after N + 1
        # steps, which bounds the basis (as the memory plan).
        max_steps=min(int(max_iter), dim, tokens + 1),
        return_vectors=bool(return_vectors),
    )
    return solve(x, c, start)


@functools.lru_cache(maxsize=64)
def _compiled(x_shape, c_shape, *, tol, max_steps, return_vectors):
    """The compiled solve for one shape and setting (no retracing)."""
    solve = functools.partial(
        _solve, tol=tol, max_steps=max_steps, return_vectors=return_vectors
    )
    return tf.function(
        solve,
        jit_compile=True,
        # Plain TensorFlow loops: nothing for AutoGraph to convert.
        autograph=False,
        input_signature=[
            tf.TensorSpec(x_shape, _F32),
            tf.TensorSpec(c_shape, _F32),
            tf.TensorSpec((c_shape[1], x_shape[1]), _F32),
        ],
    )


def smallest_ritz(alphas, betas, guess=None, max_iter: int = 50):
    """Smallest eigenvalue of each symmetric tridiagonal matrix.

    `eigen_jax.smallest_ritz` in TensorFlow (float64).

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
        guess = tf.fill([a.shape[1]], tf.constant(float("nan"), _F64))
    theta = _laguerre(a, b, size, tf.cast(guess, _F64), max_iter)
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
    sizes = tf.fill([a.shape[1]], size)
    return tf.transpose(_ritz_vectors(a, b, tf.cast(theta, _F64), sizes))


def _columns(alphas, betas):
    """`(K, m)` float64 columns; `b` padded to `K` rows."""
    a = tf.transpose(tf.cast(alphas, _F64))
    b = tf.abs(tf.transpose(tf.cast(betas, _F64)))
    b = tf.pad(b, [[0, a.shape[0] - b.shape[0]], [0, 0]])
    return a, b, a.shape[0]


def _loop(lower, upper, body, carry):
    """`lax.fori_loop`: `carry = body(j, carry)` for `lower <= j < upper`."""
    return tf.while_loop(
        lambda j, _: j < upper,
        lambda j, carry: (j + 1, body(j, carry)),
        (tf.convert_to_tensor(lower, tf.int32), carry),
    )[1]


def _gershgorin(a, b, size):
    """Per column: `max |a_j| + r_j`, `min a_j - r_j`, first `size` rows."""

    def row(j, bounds):
        after = tf.where(j < size - 1, b[j], 0.0)
        radius = after + tf.where(j > 0, b[tf.maximum(j - 1, 0)], 0.0)
        top, bottom = bounds
        return (
            tf.maximum(top, tf.abs(a[j]) + radius),
            tf.minimum(bottom, a[j] - radius),
        )

    start = (tf.zeros_like(a[0]), tf.fill(tf.shape(a[0]), _inf()))
    return _loop(0, size, row, start)


def _inf():
    return tf.constant(float("inf"), _F64)


def _laguerre(a, b, size, guess, max_iter, todo=None):
    """`eigen.smallest_ritz`'s Laguerre iteration on `(K, m)` columns.

    As `eigen_jax._laguerre`: `b` is read on the first `size - 1` rows
    only; `todo` masks the columns to solve (the others get 0).
    """
    scale, lower = _gershgorin(a, b, size)
    zero = tf.equal(scale, 0.0)  # a zero matrix: theta = 0
    scale = tf.maximum(scale, eigen._TINY)
    lower = lower - 1e-3 * scale
    guessed = tf.math.is_finite(guess) & (guess > lower)
    # Stop at a step below 1e-9 of the scale (cubic convergence).
    close = 1e-9 * scale
    order = tf.cast(size, _F64)

    def iterate(i, x, theta, todo, guessed):
        g, h, left = _laguerre_terms(a, b, x, size)
        root = tf.sqrt(tf.maximum((order - 1) * (order * h - g * g), 0.0))
        moved = x - order / (g - root)
        # As in NumPy: a guess right of an eigenvalue restarts from
        # Gershgorin's bound; a zero pivot after an exact split means x
        # is an eigenvalue of a leading block.
        restart = ~left & guessed
        stuck = ~restart & (~left | ~tf.math.is_finite(moved))
        moved = tf.where(stuck, x, tf.where(restart, lower, moved))
        done = stuck | (~restart & (tf.abs(moved - x) <= close))
        theta = tf.where(todo, moved, theta)
        x = tf.where(todo, moved, x)
        return i + 1, x, theta, todo & ~done, tf.zeros_like(guessed)

    def going(i, x, theta, todo, guessed):
        return (i < max_iter) & tf.reduce_any(todo)

    x = tf.where(guessed, guess, lower)
    todo = ~zero if todo is None else ~zero & todo
    carry = (tf.constant(0), x, tf.zeros_like(x), todo, guessed)
    return tf.while_loop(going, iterate, carry)[2]


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
    carry = (d, r, tf.zeros_like(d), r, r * r, d > 0)
    _, _, _, g, h, left = _loop(1, size, row, carry)
    return g, h, left


def _logaddexp(u, v):
    top = tf.maximum(u, v)
    spread = tf.math.log1p(tf.exp(-tf.abs(u - v)))
    # Both -inf (or both +inf): the sum, not NaN.
    return tf.where(tf.math.is_nan(u - v), u + v, top + spread)


def _nonzero(pivot):
    return tf.where(
        tf.abs(pivot) < eigen._PIVOT_MIN,
        tf.constant(eigen._PIVOT_MIN, pivot.dtype),
        pivot,
    )


def _pivot(shifted, j, b_j, neighbour):
    """`eigen_jax._pivot`: `(pivot, log-ratio sum, positive pivots)`."""
    previous, total, flips = neighbour
    safe = _nonzero(previous)
    return (
        shifted[j] - b_j**2 / safe,
        total + tf.math.log(b_j) - tf.math.log(tf.abs(safe)),
        flips + tf.cast(safe > 0, flips.dtype),
    )


def _store(arrays, j, rows):
    return tuple(
        tf.tensor_scatter_nd_update(array, [[j]], row[None])
        for array, row in zip(arrays, rows, strict=True)
    )


def _last_coordinate(a, b, theta, size):
    """`eigen_jax._last_coordinate`: squared last eigenvector coordinate."""
    shifted = a - theta

    def down(j, carry):
        stored, (pivot, top, spread) = carry
        zero = tf.zeros_like(pivot)
        made_pivot, made_top, _ = _pivot(
            shifted, j, b[j - 1], (pivot, top, zero)
        )
        made = (made_pivot, made_top, _logaddexp(spread, -2.0 * top))
        return _store(stored, j, made), made

    def up(i, carry):
        j = size - 1 - i
        (pivot, bottom, spread), best = carry
        zero = tf.zeros_like(pivot)
        made_pivot, made_bottom, _ = _pivot(
            shifted, j, b[j], (pivot, bottom, zero)
        )
        first = tf.equal(i, 0)
        made = (
            tf.where(first, shifted[j], made_pivot),
            tf.where(first, tf.zeros_like(made_bottom), made_bottom),
            tf.where(
                first, -_inf(), _logaddexp(spread, -2.0 * bottom)
            ),
        )
        gap = tf.abs(plus[j] + made[0] - shifted[j])
        # Ties go to the lower row, like `np.argmin`.
        better = gap <= best[0]
        row = (gap, top[j], top_spread[j], made[1], made[2])
        best = tuple(
            tf.where(better, new, old)
            for new, old in zip(row, best, strict=True)
        )
        return made, best

    zero = tf.zeros_like(theta)
    first = (shifted[0], zero, tf.fill(tf.shape(zero), -_inf()))
    arrays = tuple(
        tf.broadcast_to(value, tf.shape(a)) for value in first
    )
    (plus, top, top_spread), _ = _loop(1, size, down, (arrays, first))
    best = (tf.fill(tf.shape(zero), _inf()), zero, zero, zero, zero)
    _, (_, top_r, top_spread_r, bottom_r, bottom_spread_r) = _loop(
        0, size, up, (first, best)
    )
    log_norm = _logaddexp(
        _logaddexp(tf.zeros_like(top_r), 2.0 * top_r + top_spread_r),
        2.0 * bottom_r + bottom_spread_r,
    )
    last = tf.exp(2.0 * bottom_r - log_norm)
    return tf.where(tf.math.is_nan(last), tf.zeros_like(last), last)


def _ritz_vectors(a, b, theta, sizes):
    """Unit eigenvectors of the `(K, m)` tridiagonals for `theta`.

    As `eigen_jax._ritz_vectors`; each column has its own order `sizes`.
    """
    rows = tf.range(a.shape[0])[:, None]
    shifted = a - theta
    length = tf.reduce_max(sizes)
    zero = tf.zeros_like(theta)
    arrays = (shifted, tf.zeros_like(shifted), tf.zeros_like(shifted))

    def down(j, carry):
        made = _pivot(shifted, j, b[j - 1], carry[1])
        return _store(carry[0], j, made), made

    def up(i, carry):
        # Each column starts afresh at its own last row.
        j = length - 1 - i
        made = _pivot(shifted, j, b[j], carry[1])
        fresh = j >= sizes - 1
        made = tuple(
            tf.where(fresh, new, old)
            for new, old in zip((shifted[j], zero, zero), made, strict=True)
        )
        return _store(carry[0], j, made), made

    # log|y_i / y_r| is top[r] - top[i] above the twist row r and
    # bottom[r] - bottom[i] below it.
    (plus, top, top_flips), _ = _loop(
        1, length, down, (arrays, (shifted[0], zero, zero))
    )
    (minus, bottom, bottom_flips), _ = _loop(
        0, length, up, (arrays, (shifted[0], zero, zero))
    )
    inside = rows < sizes[None, :]
    gap = tf.where(inside, tf.abs(plus + minus - shifted), _inf())
    twist = tf.argmin(gap, axis=0, output_type=tf.int32)
    at_twist = tf.stack([twist, tf.range(tf.shape(twist)[0])], axis=1)

    def from_twist(values):
        return tf.gather_nd(values, at_twist)[None, :] - values

    above = rows < twist[None, :]
    log_y = tf.where(above, from_twist(top), from_twist(bottom))
    flips = tf.where(above, from_twist(top_flips), from_twist(bottom_flips))
    # An exact split (b = 0) on both sides of a row gives -inf - -inf.
    log_y = tf.where(tf.math.is_nan(log_y) | ~inside, -_inf(), log_y)
    log_y = tf.where(rows == twist[None, :], tf.zeros_like(log_y), log_y)
    peak = tf.reduce_max(log_y, axis=0)
    norm = (
        0.5 * tf.math.log(tf.reduce_sum(tf.exp(2.0 * (log_y - peak)), 0))
        + peak
    )
    sign = tf.where(tf.math.floormod(flips, 2.0) == 1.0, -1.0, 1.0)
    return tf.cast(sign, _F64) * tf.exp(log_y - norm)


def _solve(x, c, start, *, tol, max_steps, return_vectors):
    tokens, dim = x.shape
    units = c.shape[1]
    width = -(-units // CHUNK) * CHUNK
    # One more neuron position and one more step: the zero sinks.
    positions = width + 1
    rows = tf.pad(tf.transpose(c), [[0, positions - units], [0, 0]])
    active = tf.range(positions) < units
    basis = tf.pad(
        start[:, None, :], [[0, positions - units], [0, max_steps], [0, 0]]
    )
    state = {
        "k": tf.constant(0),
        "basis": basis,
        # Step-major: a check reads one step of every neuron at a time.
        "alphas": tf.zeros((max_steps, positions), _F64),
        "betas": tf.zeros((max_steps, positions), _F64),
        "anorm": tf.zeros(positions, _F64),
        "active": active,
        "slots": _slots(active),
        "count": tf.constant(units),
        "ritz": tf.fill([positions], tf.constant(float("nan"), _F64)),
        "drop": tf.zeros(positions, _F64),
        "pending": tf.constant(0.0, _F64),
        "since": tf.constant(0),
        "values": tf.zeros(positions, _F64),
        "steps": tf.zeros(positions, tf.int32),
        "converged": tf.zeros(positions, tf.bool),
    }
    step = functools.partial(
        _step, x=x, rows=rows, tol=tol, max_steps=max_steps
    )
    state = tf.while_loop(
        lambda s: (s["k"] < max_steps) & (s["count"] > 0),
        lambda s: (step(s),),
        (state,),
    )[0]
    vectors = None
    if return_vectors:
        coordinates = _ritz_vectors(
            state["alphas"],
            tf.abs(state["betas"]),
            state["values"],
            tf.maximum(state["steps"], 1),
        )
        vectors = tf.einsum(
            "kn,nkd->nd",
            tf.cast(coordinates[:, :units], _F64),
            tf.cast(state["basis"][:units, :max_steps], _F64),
        )
        vectors = vectors / tf.norm(vectors, axis=1, keepdims=True)
    return (
        state["values"][:units],
        vectors,
        state["steps"][:units],
        state["converged"][:units],
    )


def _slots(active):
    """Positions of the active neurons first, then the sink (the last)."""
    positions = active.shape[0]
    order = tf.argsort(tf.cast(~active, tf.int32), stable=True)
    count = tf.reduce_sum(tf.cast(active, tf.int32))
    return tf.where(tf.range(positions) < count, order, positions - 1)


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
    beta_prev = tf.where(k > 0, betas[tf.maximum(k - 1, 0)], 0.0)
    active = state["active"]
    anorm = tf.where(
        active,
        tf.maximum(state["anorm"], tf.abs(alphas[k]) + beta + beta_prev),
        state["anorm"],
    )
    exhausted = active & (beta <= 1e-6 * anorm)
    width = tf.cast(count, _F64)
    # The check spacing of `eigen.lanczos_min_eigen`, on the same counts.
    pending = (
        state["pending"] + 4.0 * tokens * dim * width + 20 * eigen.CALL_FLOPS
    )
    since = state["since"] + 1
    check_cost = (
        eigen.CALL_FLOPS
        * 50
        * tf.cast(k + 1, _F64)
        * (1 + width / 1000)
    )
    last = tf.equal(k + 1, max_steps)
    due = (
        (pending >= check_cost)
        | tf.equal(since, eigen.MAX_CHECK_INTERVAL)
        | last
        | tf.reduce_any(exhausted)
    )
    small = {
        name: value
        for name, value in state.items()
        if name not in ("alphas", "betas", "basis")
    }
    small = dict(small, anorm=anorm, pending=pending, since=since)
    small = tf.cond(
        due,
        lambda: _check(small, alphas, betas, exhausted, tol=tol, last=last),
        lambda: small,
    )
    return dict(small, k=k + 1, alphas=alphas, betas=betas, basis=basis)


def _products(alphas, betas, basis, slots, k, count, *, x, rows):
    """Lanczos step `k` of the active neurons, `CHUNK` at a time.

    As `eigen_jax._products`; the sinks take, as zeros, the writes of
    the inactive slots and of the step past the last.
    """
    sink = basis.shape[0] - 1
    beyond = basis.shape[1] - 1
    previous = tf.maximum(k - 1, 0)

    def at(index, step):
        return tf.stack([index, tf.fill(tf.shape(index), step)], axis=1)

    def one_chunk(j, carry):
        alphas, betas, basis = carry
        index = tf.slice(slots, [j * CHUNK], [CHUNK])
        step_k = tf.stack([tf.fill(tf.shape(index), k), index], axis=1)
        valid = index < sink
        q = tf.gather_nd(basis, at(index, k))
        w = tf.matmul(
            tf.matmul(q, x, transpose_b=True) * tf.gather(rows, index), x
        )
        alpha = tf.einsum(
            "md,md->m", tf.cast(w, _F64), tf.cast(q, _F64)
        )
        beta_prev = tf.where(k > 0, tf.gather(betas[previous], index), 0.0)
        w = w - tf.cast(alpha, _F32)[:, None] * q
        w = w - tf.cast(beta_prev, _F32)[:, None] * tf.gather_nd(
            basis, at(index, previous)
        )

        def orthogonalise(block, w):
            span = tf.minimum(
                block * REORTH_BLOCK + tf.range(REORTH_BLOCK), beyond
            )
            grid = tf.stack(
                tf.meshgrid(index, span, indexing="ij"), axis=-1
            )
            basis_block = tf.gather_nd(basis, grid)
            overlap = tf.einsum("msd,md->ms", basis_block, w)
            return w - tf.einsum("ms,msd->md", overlap, basis_block)

        w = _loop(0, k // REORTH_BLOCK + 1, orthogonalise, w)
        beta = tf.sqrt(
            tf.einsum("md,md->m", tf.cast(w, _F64), tf.cast(w, _F64))
        )
        inverse = tf.where(beta > 0, 1.0 / tf.maximum(beta, 1e-30), 0.0)
        following = w * tf.cast(inverse, _F32)[:, None]
        written = valid & (k + 1 < beyond)
        return (
            tf.tensor_scatter_nd_update(
                alphas, step_k, tf.where(valid, alpha, 0.0)
            ),
            tf.tensor_scatter_nd_update(
                betas, step_k, tf.where(valid, beta, 0.0)
            ),
            tf.tensor_scatter_nd_update(
                basis,
                at(index, k + 1),
                tf.where(written[:, None], following, 0.0),
            ),
        )

    chunks = (count + CHUNK - 1) // CHUNK
    return _loop(0, chunks, one_chunk, (alphas, betas, basis))


def _check(state, alphas, betas, exhausted, *, tol, last):
    """Convergence check of the active neurons, on every position."""
    k, active = state["k"], state["active"]
    size = k + 1
    anorm, ritz = state["anorm"], state["ritz"]
    # The smallest Ritz value only decreases: start just left of the
    # last one, by twice its last decrease.
    guess = ritz - 2 * state["drop"] - 1e-6 * anorm
    theta = _laguerre(alphas, betas, size, guess, 50, todo=active)
    error = betas[k] * tf.sqrt(_last_coordinate(alphas, betas, theta, size))
    scale = tf.maximum(tf.abs(theta), 1e-3 * anorm)
    ok = (error <= tol * scale) | exhausted
    done = active & (ok | last)
    still = active & ~done
    return dict(
        state,
        drop=tf.where(active, ritz - theta, state["drop"]),
        ritz=tf.where(active, theta, ritz),
        values=tf.where(done, theta, state["values"]),
        steps=tf.where(done, size, state["steps"]),
        converged=tf.where(done, ok, state["converged"]),
        active=still,
        slots=_slots(still),
        count=tf.reduce_sum(tf.cast(still, tf.int32)),
        pending=tf.zeros_like(state["pending"]),
        since=tf.zeros_like(state["since"]),
    )
