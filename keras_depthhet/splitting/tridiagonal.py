"""Eigen-work on the small symmetric tridiagonal matrices of Lanczos.

In `keras.ops`, float64, vectorised over one matrix per neuron, for the
compiled solve of `lanczos`: the smallest eigenvalue by Laguerre's method
(`O(k)` per matrix and iteration, inside the solve's convergence checks),
the squared last coordinate of its eigenvector by the twisted
factorisation (the Ritz residual), and the eigenvectors at the end of a
solve by a batched `eigh`. Matrices are held as columns: `a` `(K, m)`
diagonals and `b` `(K, m)` off-diagonals (`b[j]` couples rows `j` and
`j + 1`), read on their first `size` rows.
"""

import numpy as np
from keras import ops

_F64 = "float64"
_TINY = float(np.finfo("float64").tiny)
_PIVOT_MIN = 1e-290
_INF = float("inf")


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
    theta = laguerre_min(a, b, size, ops.cast(guess, _F64), max_iter=max_iter)
    return theta, last_coordinate(a, b, theta, size)


def ritz_vectors(alphas, betas, sizes=None):
    """Unit eigenvector of the smallest eigenvalue of each tridiagonal.

    A batched float64 `eigh`, run once at the end of a solve. Matrix `i`
    is read on its leading `sizes[i]` rows; the other rows are cut off
    and get a diagonal above the leading block's spectrum (Gershgorin),
    so the smallest eigenpair is the block's, padded with zeros.

    Args:
        alphas: `(m, k)` diagonals.
        betas: `(m, k - 1)` off-diagonals.
        sizes: Optional `(m,)` orders of the leading blocks (default `k`).

    Returns:
        `(m, k)`, the unit eigenvectors (signs arbitrary).
    """
    a = ops.cast(alphas, _F64)
    length = a.shape[1]
    rows = ops.arange(length, dtype="int32")[None, :]
    sizes = length if sizes is None else ops.cast(sizes, "int32")[:, None]
    b = ops.abs(ops.pad(ops.cast(betas, _F64), [[0, 0], [0, 1]]))
    b = ops.where(rows < sizes - 1, b, 0.0)
    radius = ops.abs(a) + b + ops.pad(b[:, :-1], [[0, 0], [1, 0]])
    bound = ops.max(ops.where(rows < sizes, radius, 0.0), axis=1)
    a = ops.where(rows < sizes, a, 2.0 * bound[:, None] + 1.0)
    matrices = (
        a[:, :, None] * ops.eye(length, dtype=_F64)
        + b[:, :, None] * ops.eye(length, k=1, dtype=_F64)
        + b[:, None, :] * ops.eye(length, k=-1, dtype=_F64)
    )
    return ops.eigh(matrices)[1][:, :, 0]


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


def laguerre_min(a, b, size, guess, todo=True, max_iter: int = 50):
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


def last_coordinate(a, b, theta, size):
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
