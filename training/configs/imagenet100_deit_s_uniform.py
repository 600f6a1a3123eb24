"""Uniform counterpart of `imagenet100_deit_s`: DeiT-S, no growth."""

from training.configs import imagenet100_deit_s
from training.configs.common import uniform_counterpart


def get_config() -> dict:
    """DeiT-S at full width on ImageNet-100 with the same recipe.

    Command:
        ```bash
        python -m training.train \\
            --config training/configs/imagenet100_deit_s_uniform.py \\
            --set data.manual_dir=/path/to/imagenet/tars \\
            --workdir runs/imagenet100_deit_s_uniform
        ```

    Hardware assumed: as `imagenet100_deit_s` (8 accelerators, days).
    Not run in this repository.

    Expected result: 21,704,164 parameters, about 4.6 GFLOPs per image;
    the baseline row of the paper's Table 1.
    """
    return uniform_counterpart(imagenet100_deit_s.get_config())
