"""Paper Table 1: reduced DeiT-S grown on ImageNet-100."""

from training.configs.common import base_config


def get_config() -> dict:
    """Reduced DeiT-S (halved QKV and MLP widths) grown on ImageNet-100.

    Command:
        ```bash
        python -m training.train \\
            --config training/configs/imagenet100_deit_s.py \\
            --set data.manual_dir=/path/to/imagenet/tars \\
            --workdir runs/imagenet100_deit_s
        # or --set data.image_folder=ROOT, with ROOT/{train,val}/<wnid>/
        ```

    Hardware assumed: one host with 8 accelerators (batch 1024, 300
    epochs; days of training) and the ImageNet-1k tar files or an
    image-folder copy. Not run in this repository.

    Expected result (Guna et al. 2024, Table 1): the model starts at
    11,071,204 parameters (about 2.3 GFLOPs per image at 224 pixels),
    grows every 30 epochs after a 50-epoch warm-up with a budget of 580k
    parameters per event, and beats the top-1 of the uniform DeiT-S
    (`imagenet100_deit_s_uniform`, 21.7M) with fewer parameters: the
    paper reports 80.36 % at 19.4M against 77.80 %.

    A caveat on the budget: events fall at the ends of epochs 50, 80,
    ..., 290, nine in all, so a budget of 580k per event adds at most
    5.2M (to about 16.3M), short of the paper's 19.4M; the paper's
    accounting of its budget must differ from the plain parameter count
    used here. `target_params` is set to 19.4M, and `--set
    growth.param_budget=940000` reaches it by the last event.

    Settings: the DeiT recipe (`configs/common.py`): AdamW lr
    5e-4 * 1024 / 512, weight decay 0.05, cosine schedule with 5 warm-up
    epochs, label smoothing 0.1, random resized crop, flip, RandAugment
    m9 mstd0.5, MixUp 0.8 / CutMix 1.0, random erasing 0.25, stochastic
    depth 0.1; the CMC ImageNet-100 class list
    (`training/data/imagenet100_classes.txt`; `--set
    data.class_sampling_seed=N` draws 100 classes at random instead).
    """
    config = base_config()
    config["name"] = "imagenet100_deit_s"
    config["growth"]["target_params"] = 19_400_000
    return config
