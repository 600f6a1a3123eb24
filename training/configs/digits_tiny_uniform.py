"""Uniform counterpart of `digits_tiny`: full widths, no growth."""

from training.configs import digits_tiny
from training.configs.common import uniform_counterpart


def get_config() -> dict:
    """The full-width tiny ViT on digits, trained as `digits_tiny` is.

    Command:
        ```bash
        python -m training.train \\
            --config training/configs/digits_tiny_uniform.py \\
            --workdir runs/digits_tiny_uniform
        ```

    Hardware: 2 CPU cores, either backend; about 1.5 minutes.

    Expected result: 39,242 parameters throughout and about 95-96 % top-1
    on the 360 held-out digits (95.8 % measured with 50 epochs).
    """
    return uniform_counterpart(digits_tiny.get_config())
