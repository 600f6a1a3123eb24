"""Uniform counterpart of `mnist_tiny`: full widths, no growth."""

from training.configs import mnist_tiny
from training.configs.common import uniform_counterpart


def get_config() -> dict:
    """The full-width tiny ViT on the MNIST test set, trained as
    `mnist_tiny` is: the uniform baseline of the Table 2 analogue
    (`mnist_tiny_from_digits`).

    Command:
        ```bash
        python -m training.train --config mnist_tiny_uniform \\
            --set data.data_dir=DIR --workdir runs/mnist_tiny_uniform
        ```

    Hardware: 2 CPU cores, either backend; about 4 minutes of CPU time.

    Expected result: 40,682 parameters and about 95 % top-1 on the 2,000
    held-out images.
    """
    return uniform_counterpart(mnist_tiny.get_config())
