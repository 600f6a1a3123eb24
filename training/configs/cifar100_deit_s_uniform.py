"""Uniform counterpart of `cifar100_deit_s`: DeiT-S, no growth."""

from training.configs import cifar100_deit_s
from training.configs.common import uniform_counterpart


def get_config() -> dict:
    """DeiT-S at full width on CIFAR-100 with the same recipe.

    Command:
        ```bash
        python -m training.train \\
            --config training/configs/cifar100_deit_s_uniform.py \\
            --workdir runs/cifar100_deit_s_uniform
        ```

    Hardware assumed: as `cifar100_deit_s`. Not run in this repository.

    Expected result: 21,704,164 parameters, about 4.6 GFLOPs per image;
    the baseline row of the paper's Table 2.
    """
    return uniform_counterpart(cifar100_deit_s.get_config())
