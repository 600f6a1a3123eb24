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
(`keras.ops`) and summed on the host in float64; the dense eigen-solves run
in NumPy (float64). The matrix-free solve runs where the captures are:
`capture.lanczos_products` gives the backend's twin of the Lanczos loop
below (`eigen_jax`, `eigen_tensorflow`: one compiled loop with fixed
shapes, nothing fetched but the results), which `lanczos_min_eigen` hands
the whole solve. The loop below is the reference they follow, on the
host: float32 products from NumPy's BLAS (`NumpyProducts`) and float64
tridiagonal checks in NumPy.
"""

import numpy as np
from keras import ops

FLOAT_BYTES = 4
DENSE_CHUNK_BYTES = 2**28
"""Most bytes of one temporary `(N, m * D)` block while forming `S_i`."""

EXPECTED_ITERATIONS = 30
"""Lanczos steps assumed when choosing a solver by cost (typical at 1e-3)."""

CALL_FLOPS = 1e5
"""Flops of matmul that cost about as much time as one NumPy call.

The convergence check after a Lanczos step makes about `50 * k` NumPy
calls on short vectors (`k` the step; each a little dearer for wide
layers: `1 + m / 1000` calls' worth for `m` active neurons), whatever the
problem size, while the step costs `4 * N * D * m` flops of products plus
about 20 calls. Checks are spaced so that
their cost stays near that of the steps between them: every step for the
layers of a DeiT, every few steps for a tiny model, where the products
take microseconds.
"""

MAX_CHECK_INTERVAL = 4
"""Most Lanczos steps between two convergence checks."""

_DENSE_EIGH_CHUNK_BYTES = 2**28

_TINY = np.finfo("float64").tiny
_PIVOT_MIN = 1e-290


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


class NumpyProducts:
    """The products `S_i v_i` of the active neurons, with NumPy's BLAS.

    Holds `X~` `(N, D)` and `C` transposed, `(m, N)`; a product for the
    active neurons' vectors `v` `(m, D)` is two matmuls,
    `((v X~^T) * C^T) X~` (`4 * N * D * m` flops). `keep` drops the
    neurons that are done, moving the rows of the others up in place.
    """

    def __init__(self, x, c):
        self.x = np.asarray(x, dtype="float32")
        self.rows = np.array(np.asarray(c).T, dtype="float32", order="C")

    def __call__(self, v):
        projected = v @ self.x.T
        projected *= self.rows
        return projected @ self.x

    def keep(self, index):
        """Keeps the active neurons at positions `index` (ascending)."""
        self.rows[: index.size] = self.rows[index]
        self.rows = self.rows[: index.size]

    @staticmethod
    def eigh(matrices):
        """Batched symmetric eigen-solve for the convergence checks."""
        return np.linalg.eigh(matrices)


def _ritz(alphas, betas, steps, eigh=np.linalg.eigh):
    """All Ritz values and vectors' coordinates, per neuron (dense eigh)."""
    count = alphas.shape[0]
    tri = np.zeros((count, steps, steps))
    diag = np.arange(steps)
    tri[:, diag, diag] = alphas[:, :steps]
    off = np.arange(steps - 1)
    tri[:, off, off + 1] = betas[:, : steps - 1]
    tri[:, off + 1, off] = betas[:, : steps - 1]
    return eigh(tri)


def _laguerre_terms(a, b2, x):
    """The log-derivatives of `det(T - x I)` for Laguerre's method.

    `a` `(k, m)` holds the diagonals and `b2` `(k - 1, m)` the squared
    off-diagonals of `m` tridiagonal matrices `T`, one per column. The
    pivots of the `LDL^T` factorisation of `T - x I` follow
    `d_j = a_j - x - b_{j-1}**2 / d_{j-1}`; with `r_j = d_j' / d_j` and
    `s_j = d_j'' / d_j` (derivatives in `x`), `det = prod_j d_j` gives
    `G = sum_i 1 / (x - theta_i) = sum_j r_j` and
    `H = sum_i 1 / (x - theta_i)**2 = sum_j (r_j**2 - s_j)`. Also returns
    whether every pivot is positive (`x` left of every eigenvalue).
    """
    shifted = a - x
    size = a.shape[0]
    pivots = np.empty_like(shifted)
    ratios = np.empty_like(shifted)
    curvatures = np.empty_like(shifted)
    d = pivots[0] = shifted[0]
    r = ratios[0] = -1.0 / d
    s = curvatures[0] = 0.0
    for j in range(1, size):
        u = b2[j - 1] / d
        d = pivots[j] = shifted[j] - u
        u /= d
        s = curvatures[j] = u * (s - 2.0 * r * r)
        r = ratios[j] = u * r - 1.0 / d
    g = ratios.sum(axis=0)
    ratios *= ratios
    ratios -= curvatures
    return g, ratios.sum(axis=0), (pivots > 0).all(axis=0)


def _last_coordinate(a, b, theta):
    """Squared last coordinate of the unit eigenvectors for `theta`.

    The twisted factorisation of `T - theta I` (Dhillon and Parlett): the
    top-down pivots `D+` and bottom-up pivots `D-` meet at the row `r`
    where `|D+_r + D-_r - (a_r - theta)|` is smallest, the eigenvector is
    `1` there, and moving away from `r` it is the product of the ratios
    `-b / D`, which are taken in logs (so tiny coordinates are resolved
    and nothing overflows). `a` `(k, m)`, `b` `(k - 1, m)` as in
    `_laguerre_terms`.
    """
    size = a.shape[0]
    shifted = a - theta
    b2 = b * b
    plus = np.empty_like(shifted)
    minus = np.empty_like(shifted)
    plus[0] = shifted[0]
    for j in range(1, size):
        plus[j] = shifted[j] - b2[j - 1] / _nonzero(plus[j - 1])
    minus[-1] = shifted[-1]
    for j in range(size - 2, -1, -1):
        minus[j] = shifted[j] - b2[j] / _nonzero(minus[j + 1])
    twist = np.argmin(np.abs(plus + minus - shifted), axis=0)
    log_b = np.log(b)
    # up[j]: log|y_j / y_r| summed from the top, for j < r.
    up = np.zeros_like(shifted)
    up[1:] = np.cumsum(log_b - np.log(np.abs(_nonzero(plus[:-1]))), axis=0)
    down = np.zeros_like(shifted)
    down[1:] = np.cumsum(log_b - np.log(np.abs(_nonzero(minus[1:]))), axis=0)
    rows = np.arange(size)[:, None]
    columns = np.arange(shifted.shape[1])
    log_y = np.where(
        rows < twist,
        up[twist, columns] - up,
        np.where(rows > twist, down - down[twist, columns], 0.0),
    )
    log_y2 = 2.0 * log_y
    peak = log_y2.max(axis=0)
    total = np.log(np.exp(log_y2 - peak).sum(axis=0)) + peak
    return np.nan_to_num(np.exp(log_y2[-1] - total))


def _nonzero(pivot):
    """`pivot` with exact or underflowing zeros moved off zero."""
    return np.where(np.abs(pivot) < _PIVOT_MIN, _PIVOT_MIN, pivot)


def _dense_is_cheaper(count: int, size: int) -> bool:
    """Whether a batched dense `eigh` beats the Laguerre iteration.

    Measured costs on a CPU, in microseconds: dense about
    `count * (1 + 0.04 * size**2)`, Laguerre about
    `size * (30 + 0.12 * count)` (a NumPy call per row and iteration), so
    dense wins for a few matrices (a solve's last neurons) or short ones.
    """
    return count * (1 + 0.04 * size**2) < size * (30 + 0.12 * count)


def smallest_ritz(
    alphas, betas, guess=None, max_iter: int = 50, eigh=np.linalg.eigh
):
    """Smallest eigenvalue of each symmetric tridiagonal matrix.

    For a few matrices or short ones, a batched dense `eigh`; otherwise
    Laguerre's method on `det(T - x I)` from a point left of every
    eigenvalue: for a polynomial with real roots it moves monotonically
    right and converges cubically to the smallest root without passing
    it, so every evaluation sees positive pivots. `O(k)` work per matrix
    and iteration, vectorised over the matrices (a dense `eigh` is
    `O(k**3)`).

    Args:
        alphas: `(m, k)` diagonals.
        betas: `(m, k - 1)` off-diagonals.
        guess: Optional `(m,)` starting points, used where they are left
            of every eigenvalue (NaN or a point that is not: Gershgorin's
            lower bound is used instead).
        max_iter: Most Laguerre iterations.
        eigh: The batched symmetric eigen-solver of the dense path.

    Returns:
        `theta (m,)`, the smallest eigenvalues, and `last (m,)`, the
        squared last component of their unit eigenvectors (for
        unreduced matrices, with every off-diagonal non-zero, as Lanczos
        makes them).
    """
    count, size = np.shape(alphas)
    if _dense_is_cheaper(count, size):
        values, vectors = _ritz(alphas, betas, size, eigh)
        return values[:, 0], vectors[:, -1, 0] ** 2
    a = np.ascontiguousarray(np.asarray(alphas, dtype="float64").T)
    b = np.abs(np.asarray(betas, dtype="float64").T)
    radius = np.zeros_like(a)
    radius[:-1] += b
    radius[1:] += b
    scale = (np.abs(a) + radius).max(axis=0)
    zero = scale == 0  # a zero matrix: theta = 0
    scale = np.maximum(scale, _TINY)
    lower = (a - radius).min(axis=0) - 1e-3 * scale
    if guess is None:
        guessed, x = np.zeros(count, dtype=bool), lower
    else:
        guess = np.asarray(guess, dtype="float64")
        guessed = np.isfinite(guess) & (guess > lower)
        x = np.where(guessed, guess, lower)
    b2 = b * b
    # Stop at a step below 1e-9 of the scale: near a simple root the
    # convergence is cubic, so the error left is far smaller.
    close = 1e-9 * scale
    theta = np.zeros(count)
    last = np.full(count, 1.0 if size == 1 else 0.0)
    todo = np.flatnonzero(~zero)
    x = x[todo]
    guessed = guessed[todo]
    for _ in range(max_iter if todo.size else 0):
        with np.errstate(all="ignore"):
            g, h, left = _laguerre_terms(a[:, todo], b2[:, todo], x)
            root = np.sqrt(np.maximum((size - 1) * (size * h - g * g), 0.0))
            moved = x - size / (g - root)
        # A guess right of an eigenvalue restarts from Gershgorin's bound.
        # An exact split (beta = 0) can later put x on an eigenvalue of a
        # leading block (a zero pivot): x is then that eigenvalue.
        restart = ~left & guessed
        stuck = ~restart & (~left | ~np.isfinite(moved))
        moved = np.where(stuck, x, np.where(restart, lower[todo], moved))
        theta[todo] = moved
        done = stuck | (~restart & (np.abs(moved - x) <= close[todo]))
        if done.all():
            break
        todo, x = todo[~done], moved[~done]
        guessed = np.zeros(todo.size, dtype=bool)
    solved = np.flatnonzero(~zero)
    if size > 1 and solved.size:
        with np.errstate(all="ignore"):
            last[solved] = _last_coordinate(
                a[:, solved], b[:, solved], theta[solved]
            )
    return theta, last


def start_vectors(units: int, dim: int, seed: int) -> np.ndarray:
    """The seeded random unit start vectors `(units, dim)` of Lanczos."""
    start = np.random.default_rng(seed).standard_normal(
        (units, dim), dtype="float32"
    )
    start /= np.linalg.norm(start, axis=1, keepdims=True)
    return start


def lanczos_min_eigen(
    x: np.ndarray,
    c: np.ndarray,
    *,
    tol: float,
    max_iter: int,
    return_vectors: bool = False,
    seed: int = 0,
    products=None,
):
    """`lambda_min(S_i)` for every neuron by batched Lanczos.

    Each neuron runs its own Lanczos recurrence (with full
    re-orthogonalisation, needed in float32) from a seeded random start,
    all in lockstep, so that every step is two large matmuls. After step
    `k` the smallest Ritz value `theta` of a neuron (`smallest_ritz`,
    `O(k)` per neuron) has the error bound `r`, the residual norm of its
    Ritz vector (`beta_k` times the vector's last coordinate); the neuron
    is done when `r <= tol * max(|theta|, 1e-3 * ||T||)`, `||T||` a bound
    on the norm of its tridiagonal matrix (the largest
    `|alpha_j| + beta_{j-1} + beta_j`), so a neuron whose curvature is
    negligible next to its own scale stops early; or when its Krylov
    space is exhausted, or after `min(max_iter, D)` steps. Done neurons
    leave the matmuls.

    Args:
        x: `(N, D)` float32 `X~`, a NumPy array or backend tensor.
        c: `(N, n)` float32 `C`, likewise.
        tol: Relative accuracy of each `lambda_min`.
        max_iter: Most Lanczos steps per neuron.
        return_vectors: Whether to also return the Ritz vectors.
        seed: Seed of the start vectors.
        products: How the products `S_i v_i` run: a `NumpyProducts`
            (the default) or an object with the same `__call__`, `keep`
            and `eigh`, which this loop calls step by step; or an object
            whose `solve(tol, max_iter, return_vectors, seed)` runs the
            whole solve on the backend's device instead
            (`eigen_jax.DeviceLanczos`, `eigen_tensorflow.DeviceLanczos`,
            from `capture.lanczos_products`).

    Returns:
        `(values (n,), vectors (n, D) or None, steps (n,) int,
        converged (n,) bool)`: NumPy arrays, or the device's arrays from
        a `solve` (the caller fetches them).
    """
    if products is None:
        products = NumpyProducts(x, c)
    if hasattr(products, "solve"):
        return products.solve(
            tol=tol,
            max_iter=max_iter,
            return_vectors=return_vectors,
            seed=seed,
        )
    dim = x.shape[1]
    units = c.shape[1]
    max_steps = min(max_iter, dim)
    start = start_vectors(units, dim, seed)
    # The basis grows by doubling: most neurons stop after a few dozen steps.
    basis = np.zeros((units, min(max_steps, 32), dim), dtype="float32")
    basis[:, 0] = start
    alphas = np.zeros((units, max_steps))
    betas = np.zeros((units, max_steps))
    beta_prev = np.zeros(units)
    anorm = np.zeros(units)
    active = np.arange(units)
    values = np.zeros(units)
    vectors = np.zeros((units, dim)) if return_vectors else None
    steps = np.zeros(units, dtype="int64")
    converged = np.zeros(units, dtype=bool)
    ritz = np.full(units, np.nan)
    drop = np.zeros(units)
    tokens = x.shape[0]
    pending, since = 0.0, 0
    for k in range(max_steps):
        q = basis[:, k]
        w = products(q)
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
        width = active.size
        pending += 4.0 * tokens * dim * width + 20 * CALL_FLOPS
        since += 1
        check_cost = CALL_FLOPS * 50 * (k + 1) * (1 + width / 1000)
        if (
            pending >= check_cost
            or since == MAX_CHECK_INTERVAL
            or last
            or exhausted.any()
        ):
            pending, since = 0.0, 0
            # The smallest Ritz value only decreases: start just left of
            # the last one, by twice its last decrease.
            guess = ritz[active] - 2 * drop[active] - 1e-6 * anorm
            theta, last_sq = smallest_ritz(
                alphas[active, : k + 1],
                betas[active, :k],
                guess,
                eigh=products.eigh,
            )
            drop[active] = ritz[active] - theta
            ritz[active] = theta
            error = beta * np.sqrt(last_sq)
            scale = np.maximum(np.abs(theta), 1e-3 * anorm)
            ok = (error <= tol * scale) | exhausted
            done = ok | last
            if done.any():
                chosen = active[done]
                values[chosen] = theta[done]
                steps[chosen] = k + 1
                converged[chosen] = ok[done]
                if return_vectors:
                    _, y = _ritz(
                        alphas[chosen], betas[chosen], k + 1, products.eigh
                    )
                    vectors[chosen] = np.matmul(
                        y[:, :, :1].transpose(0, 2, 1),
                        basis[done, : k + 1],
                    )[:, 0]
                keep = np.flatnonzero(~done)
                if keep.size == 0:
                    break
                active = active[keep]
                # Compacted in place: only the steps in use are moved.
                basis[: keep.size, : k + 1] = basis[keep, : k + 1]
                basis = basis[: keep.size]
                products.keep(keep)
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
