"""Argument checks returning the checked value, or raising a `ValueError`
in Keras's style: "Argument `units` must be ... Received: units=0"."""

import numbers

import numpy as np


def _is_number(value, kind=numbers.Real) -> bool:
    return not isinstance(value, bool) and isinstance(value, kind)


def _fail(name: str, value, kind: str):
    raise ValueError(
        f"Argument `{name}` must be {kind}. Received: {name}={value!r}"
    )


def int_at_least(name: str, value, low: int, optional: bool = False):
    """`value` as an int `>= low` (not a bool), or `None` if `optional`."""
    if value is None and optional:
        return None
    if not _is_number(value, numbers.Integral) or value < low:
        kind = {1: "a positive integer", 0: "a non-negative integer"}.get(
            low, f"an integer of at least {low}"
        )
        _fail(name, value, kind + (" or None" if optional else ""))
    return int(value)


def positive_int(name: str, value, optional: bool = False):
    """`value` as a positive int, or `None` if `optional`."""
    return int_at_least(name, value, 1, optional)


def positive_number(name: str, value, optional: bool = False):
    """`value` if it is a finite number > 0, or `None` if `optional`."""
    if value is None and optional:
        return None
    if not _is_number(value) or not np.isfinite(value) or value <= 0:
        kind = "a positive number" + (" or None" if optional else "")
        _fail(name, value, kind)
    return value


def _real_in(name: str, value, ok, kind: str) -> float:
    """`value` as a float if it is a real number (not a bool) passing `ok`."""
    if not _is_number(value) or not ok(value):
        _fail(name, value, kind)
    return float(value)


def rate(name: str, value) -> float:
    """`value` as a float in [0, 1) (a dropout or drop-path rate)."""
    return _real_in(name, value, lambda v: 0 <= v < 1, "a number in [0, 1)")


def fraction(name: str, value) -> float:
    """`value` as a float in (0, 1) (a relative tolerance)."""
    return _real_in(name, value, lambda v: 0 < v < 1, "a number in (0, 1)")


def width_ratio(name: str, value) -> float:
    """`value` as a float in (0, 16], a width relative to the standard one."""
    kind = (
        "a width ratio in (0, 16] (1.0 = standard, 0.5 = the paper's "
        "reduced base)"
    )
    return _real_in(name, value, lambda v: 0 < v <= 16, kind)


def choice(name: str, value, choices):
    """`value` if it is one of `choices`."""
    if value not in choices:
        _fail(name, value, f"one of {list(choices)}")
    return value


def distinct_indices(name: str, value, size: int) -> np.ndarray:
    """`value` as a non-empty 1-D int64 array of distinct indices in
    `[0, size)`, in the order given (booleans are not integers)."""

    def fail(must: str, received: str):
        raise ValueError(f"Argument `{name}` must {must}. Received: {received}")

    array = np.asarray(value)
    if array.ndim != 1:
        fail("be one-dimensional", f"{name} with shape {array.shape}")
    if array.size == 0:
        fail("name at least one index", f"{name}={value!r}")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        fail("contain integers", f"{name}={value!r} (dtype {array.dtype})")
    array = array.astype(np.int64)
    bad = array[(array < 0) | (array >= size)]
    if bad.size:
        fail(f"lie in [0, {size})", f"out-of-range values: {bad.tolist()}")
    values, counts = np.unique(array, return_counts=True)
    repeated = values[counts > 1].tolist()
    if repeated:
        fail("not repeat an index", f"duplicates: {repeated}")
    return array
