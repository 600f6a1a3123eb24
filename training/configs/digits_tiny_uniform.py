"""Uniform counterpart of `digits_tiny`: full widths, no growth."""

from training.configs import digits_tiny
from training.configs.common import uniform_counterpart


def get_config() -> dict:
    """The full-width tiny ViT on digits, trained as `digits_tiny` is.

    Command:
        python -m training.train \
            --config training/configs/digits_tiny_uniform.py \
            --workdir runs/digits_tiny_uniform

    Hardware: 2 CPU cores, either backend; about two minutes.

    Expected result: 35,530 parameters throughout and a top-1 on the 360
    held-out digits in the same range as `digits_tiny` (roughly 90-95 %).
    """
    return uniform_counterpart(digits_tiny.get_config())
