"""Float64 eigen-work on Lanczos's tridiagonals, one per neuron (Laguerre,
twisted factorisation, batched `eigh`): `a` diagonals and `b` off-diagonals
(`b[j]` couples rows `j`, `j + 1`), `(K, m)`, read on their first `size` rows.
"""

import numpy as np
from keras import ops

_F64 = "float64"
_TINY = float(np.finfo("float64").tiny)
_PIVOT_MIN = 1e-290
_INF = float("inf")


def smallest_ritz(alphas, betas, guess=None, max_iter: int = 50):
    """`(theta, last)`, smallest eigenvalues and squared last eigenvector
    coordinates, of `(m, k)` diagonals and `(m, k - 1)` off-diagonals."""
    a = ops.transpose(ops.cast(alphas, _F64))  # `(K, m)` columns
    b = ops.abs(ops.transpose(ops.cast(betas, _F64)))
    size = a.shape[0]
    b = ops.pad(b, [[0, size - b.shape[0]], [0, 0]])
    if guess is None:
        guess = ops.full((a.shape[1],), float("nan"), _F64)
    theta = laguerre_min(a, b, size, ops.cast(guess, _F64), max_iter=max_iter)
    return theta, last_coordinate(a, b, theta, size)


def ritz_vectors(alphas, betas, sizes=None):
    """`(m, k)` unit eigenvectors of the smallest eigenvalues, matrix `i`
    read on its leading `sizes[i]` rows (the rest padded with zeros)."""
    a = ops.cast(alphas, _F64)
    length = a.shape[1]
    rows = ops.arange(length, dtype="int32")[None, :]
    sizes = length if sizes is None else ops.cast(sizes, "int32")[:, None]
    b = ops.abs(ops.pad(ops.cast(betas, _F64), [[0, 0], [0, 1]]))
    b = ops.where(rows < sizes - 1, b, 0.0)
    # Rows past `sizes` get a diagonal above the block's spectrum.
    radius = ops.abs(a) + b + ops.pad(b[:, :-1], [[0, 0], [1, 0]])
    bound = ops.max(ops.where(rows < sizes, radius, 0.0), axis=1)
    a = ops.where(rows < sizes, a, 2.0 * bound[:, None] + 1.0)
    matrices = (
        a[:, :, None] * ops.eye(length, dtype=_F64)
        + b[:, :, None] * ops.eye(length, k=1, dtype=_F64)
        + b[:, None, :] * ops.eye(length, k=-1, dtype=_F64)
    )
    return ops.eigh(matrices)[1][:, :, 0]


def int32(value):
    return ops.convert_to_tensor(value, "int32")


def laguerre_min(a, b, size, guess, todo=True, max_iter: int = 50):
    """Smallest eigenvalue of the `todo` columns (others: 0) by Laguerre's
    method, from `guess` where left of the spectrum, else from Gershgorin."""
    rows = ops.arange(a.shape[0], dtype="int32")[:, None]
    after = ops.where(rows < size - 1, b, 0.0)
    radius = after + ops.pad(after[:-1], [[1, 0], [0, 0]])  # Gershgorin
    inside = rows < size
    scale = ops.max(ops.where(inside, ops.abs(a) + radius, 0.0), axis=0)
    lower = ops.min(ops.where(inside, a - radius, _INF), axis=0)
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
    carry = (int32(0), x, ops.zeros_like(x), ~zero & todo, guessed)
    return ops.while_loop(going, iterate, carry)[2]


def _laguerre_terms(a, b, x, size):
    """`G = sum_j r_j`, `H = sum_j (r_j**2 - s_j)` and whether all pivots
    `d_j` of `T - x I` are positive; `r_j = d_j' / d_j`, `s_j = d_j'' / d_j`."""

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
    _, _, _, g, h, left = ops.fori_loop(int32(1), size, row, carry)
    return g, h, left


def _pivot(shifted, j, b_j, previous, total):
    """Pivot `j` of `T - theta I` and the running sum of `log|b / pivot|`,
    from the neighbouring row's (zero pivots moved off zero)."""
    safe = ops.where(ops.abs(previous) < _PIVOT_MIN, _PIVOT_MIN, previous)
    return (
        shifted[j] - b_j**2 / safe,
        total + ops.log(b_j) - ops.log(ops.abs(safe)),
    )


def _logaddexp(u, v):
    """`log(exp(u) + exp(v))` in float64 (`ops.logaddexp`: float32 on JAX)."""
    top = ops.maximum(u, v)
    spread = ops.log1p(ops.exp(-ops.abs(u - v)))
    # Both -inf (or both +inf): the sum, not NaN.
    return ops.where(ops.isnan(u - v), u + v, top + spread)


def last_coordinate(a, b, theta, size):
    """Squared last coordinate of the unit eigenvectors for `theta`, by the
    twisted factorisation of `T - theta I` in logs (Dhillon and Parlett):
    pivots `D+` (down) and `D-` (up); the vector is 1 at the row minimising
    `|D+_r + D-_r - (a_r - theta)|` and products of `-b / D` away from it."""
    shifted = a - theta
    zero = ops.zeros_like(theta)

    def down(j, carry):
        # The last row rides beside the arrays: reading it back makes XLA
        # copy them at every row.
        stored, (pivot, top, spread) = carry
        made_pivot, made_top = _pivot(shifted, j, b[j - 1], pivot, top)
        made = (made_pivot, made_top, _logaddexp(spread, -2.0 * top))
        stored = tuple(
            ops.scatter_update(array, ops.reshape(j, (1, 1)), row[None])
            for array, row in zip(stored, made, strict=True)
        )
        return stored, made

    def up(i, carry):
        j = size - 1 - i
        (pivot, bottom, spread), best = carry
        made_pivot, made_bottom = _pivot(shifted, j, b[j], pivot, bottom)
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
        int32(1), size, down, (arrays, first)
    )
    best = (ops.full_like(zero, _INF), zero, zero, zero, zero)
    _, (_, top_r, top_spread_r, bottom_r, bottom_spread_r) = ops.fori_loop(
        int32(0), size, up, (first, best)
    )
    log_norm = _logaddexp(
        _logaddexp(zero, 2.0 * top_r + top_spread_r),
        2.0 * bottom_r + bottom_spread_r,
    )
    return ops.nan_to_num(ops.exp(2.0 * bottom_r - log_norm))
