"""The package's argument checks: accepted values and Keras-style errors."""

import numpy as np
import pytest

from keras_depthhet.utils.validation import (
    choice,
    fraction,
    int_at_least,
    positive_int,
    positive_number,
    rate,
    width_ratio,
)


def test_int_at_least_returns_python_ints_and_none_when_optional():
    assert int_at_least("warmup", np.int64(0), 0) == 0
    assert type(int_at_least("warmup", np.int64(3), 0)) is int
    assert positive_int("units", 4) == 4
    assert positive_int("num_batches", None, optional=True) is None


@pytest.mark.parametrize(
    "check, value, message",
    [
        (lambda v: positive_int("units", v), 0, "positive integer"),
        (lambda v: positive_int("units", v), True, "positive integer"),
        (lambda v: positive_int("units", v), 2.0, "positive integer"),
        (lambda v: positive_int("units", v), None, "positive integer"),
        (lambda v: int_at_least("warmup", v, 0), -1, "non-negative"),
        (lambda v: int_at_least("k", v, 2), 1, "at least 2"),
        (lambda v: positive_int("n", v, optional=True), 0, "or None"),
    ],
)
def test_integer_checks_name_the_argument_and_value(check, value, message):
    with pytest.raises(ValueError, match=message) as error:
        check(value)
    assert f"={value!r}" in str(error.value)
    assert "Received:" in str(error.value)


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), True])
def test_positive_number_refuses(value):
    with pytest.raises(ValueError, match="`scale` must be a positive number"):
        positive_number("scale", value)


def test_positive_number_rate_width_and_choice_accept():
    assert positive_number("scale", 0.2) == 0.2
    assert positive_number("scale", None, optional=True) is None
    assert rate("dropout", 0) == 0.0
    assert width_ratio("mlp_width", 16) == 16.0
    assert fraction("tol", np.float32(0.5)) == 0.5
    assert type(fraction("tol", np.float32(0.5))) is float
    assert choice("criterion", "random", ("splitting", "random")) == "random"


@pytest.mark.parametrize(
    "check, value",
    [
        (rate, 1.0),
        (rate, -0.1),
        (width_ratio, 0),
        (width_ratio, 16.5),
        (fraction, 0),
        (fraction, 1),
        (fraction, float("nan")),
        (fraction, True),
    ],
)
def test_rate_and_width_ratio_bounds(check, value):
    with pytest.raises(ValueError, match=f"Received: x={value!r}"):
        check("x", value)


def test_choice_lists_the_choices():
    with pytest.raises(ValueError, match=r"one of \['a', 'b'\]"):
        choice("mode", "c", ("a", "b"))
