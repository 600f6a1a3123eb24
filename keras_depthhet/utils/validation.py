"""Argument checks with Keras-style messages, shared by the whole package.

Each check returns the value in its checked type, or raises a
`ValueError` that names the argument and the value received, as Keras's
own layers do: `"Argument `units` must be a positive integer. Received:
units=0"`.
"""

import numbers

import numpy as np


def _is_integer(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral)


def _is_real(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def int_at_least(name: str, value, low: int, optional: bool = False):
    """`value` as an int `>= low`, or `None` when allowed.

    Args:
        name: The argument's name, for the message.
        value: The value received.
        low: The smallest value accepted.
        optional: Whether `None` is accepted (and returned).

    Returns:
        `int(value)`, or `None`.

    Raises:
        ValueError: if `value` is not an integer (booleans are not) of at
            least `low`.

    Example:

    >>> int_at_least("warmup", 0, 0)
    0
    """
    if value is None and optional:
        return None
    if not _is_integer(value) or value < low:
        if low == 1:
            kind = "a positive integer"
        elif low == 0:
            kind = "a non-negative integer"
        else:
            kind = f"an integer of at least {low}"
        kind += " or None" if optional else ""
        raise ValueError(
            f"Argument `{name}` must be {kind}. Received: {name}={value!r}"
        )
    return int(value)


def positive_int(name: str, value, optional: bool = False):
    """`value` as a positive int (`int_at_least(name, value, 1, optional)`).

    Example:

    >>> positive_int("units", 8)
    8
    """
    return int_at_least(name, value, 1, optional)


def positive_number(name: str, value, optional: bool = False):
    """`value` if it is a finite number greater than 0, or `None` if allowed.

    Raises:
        ValueError: otherwise, naming `name` and the value.

    Example:

    >>> positive_number("scale", 0.2)
    0.2
    """
    if value is None and optional:
        return None
    if not _is_real(value) or not np.isfinite(value) or value <= 0:
        kind = "a positive number" + (" or None" if optional else "")
        raise ValueError(
            f"Argument `{name}` must be {kind}. Received: {name}={value!r}"
        )
    return value


def rate(name: str, value) -> float:
    """`value` as a float in [0, 1) (a dropout or drop-path rate).

    Raises:
        ValueError: otherwise, naming `name` and the value.

    Example:

    >>> rate("dropout", 0.1)
    0.1
    """
    if not _is_real(value) or not 0 <= value < 1:
        raise ValueError(
            f"Argument `{name}` must be a number in [0, 1). "
            f"Received: {name}={value!r}"
        )
    return float(value)


def fraction(name: str, value) -> float:
    """`value` as a float in (0, 1) (a relative tolerance).

    Raises:
        ValueError: otherwise, naming `name` and the value.

    Example:

    >>> fraction("tol", 1e-3)
    0.001
    """
    if not _is_real(value) or not 0 < value < 1:
        raise ValueError(
            f"Argument `{name}` must be a number in (0, 1). "
            f"Received: {name}={value!r}"
        )
    return float(value)


def width_ratio(name: str, value) -> float:
    """`value` as a float in (0, 16], a width relative to the standard one.

    Raises:
        ValueError: otherwise, naming `name` and the value.

    Example:

    >>> width_ratio("mlp_width", 0.5)
    0.5
    """
    if not _is_real(value) or not 0 < value <= 16:
        raise ValueError(
            f"Argument `{name}` must be a width ratio in (0, 16] "
            f"(1.0 = standard, 0.5 = the paper's reduced base). "
            f"Received: {name}={value!r}"
        )
    return float(value)


def choice(name: str, value, choices):
    """`value` if it is one of `choices`.

    Raises:
        ValueError: otherwise, listing the choices.

    Example:

    >>> choice("criterion", "random", ("splitting", "random"))
    'random'
    """
    if value not in choices:
        raise ValueError(
            f"Argument `{name}` must be one of {list(choices)}. "
            f"Received: {name}={value!r}"
        )
    return value


def distinct_indices(name: str, value, size: int) -> np.ndarray:
    """`value` as a non-empty int64 array of distinct indices in `[0, size)`.

    Args:
        name: The argument's name, for the message.
        value: The value received (a sequence or array of integers).
        size: The number of positions the indices point into.

    Returns:
        The indices as a one-dimensional int64 array, in the order given.

    Raises:
        ValueError: if `value` is not one-dimensional, is empty, holds
            non-integers (booleans are not integers), an index outside
            `[0, size)` or an index twice.

    Example:

    >>> distinct_indices("indices", [3, 0], 4).tolist()
    [3, 0]
    """
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(
            f"Argument `{name}` must be one-dimensional. "
            f"Received: {name} with shape {array.shape}"
        )
    if array.size == 0:
        raise ValueError(
            f"Argument `{name}` must name at least one index. "
            f"Received: {name}={value!r}"
        )
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"Argument `{name}` must contain integers. "
            f"Received: {name}={value!r} (dtype {array.dtype})"
        )
    array = array.astype(np.int64)
    bad = array[(array < 0) | (array >= size)]
    if bad.size:
        raise ValueError(
            f"Argument `{name}` must lie in [0, {size}). "
            f"Received out-of-range values: {bad.tolist()}"
        )
    values, counts = np.unique(array, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(
            f"Argument `{name}` must not repeat an index. "
            f"Received duplicates: {values[counts > 1].tolist()}"
        )
    return array
