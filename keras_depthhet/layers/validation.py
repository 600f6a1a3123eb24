"""Argument checks with Keras-style messages, shared by the layers."""

import numbers


def positive_int(name: str, value) -> int:
    """Returns `value` as an int, or raises naming `name` and the value."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < 1
    ):
        raise ValueError(
            f"Argument `{name}` must be a positive integer. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def rate(name: str, value) -> float:
    """Returns `value` as a float in [0, 1), or raises."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 <= value < 1
    ):
        raise ValueError(
            f"Argument `{name}` must be a number in [0, 1). "
            f"Received: {name}={value!r}"
        )
    return float(value)
