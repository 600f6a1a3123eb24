"""Tiny growing ViT on scikit-learn's digits: the offline default."""

from training.configs.common import base_config


def get_config() -> dict:
    """A reduced tiny ViT grown on the 8x8 digits; CPU minutes, no network.

    Command:
        python -m training.train --config training/configs/digits_tiny.py \
            --workdir runs/digits_tiny
        (or `python -m training.train` with no arguments)

    Hardware: 2 CPU cores, either backend; about two minutes.

    Expected result: the reduced model (patch 2, dim 32, 3 blocks, halved
    attention and MLP widths, 22,986 parameters) grows at epochs 12, 20,
    28 and 36 towards the 35,530 of its uniform counterpart and reaches
    roughly 90-95 % top-1 on the 360 held-out digits; see
    `python -m training.compare` for the side-by-side table.

    The DeiT recipe is scaled down for 8x8 grey digits: no crop, flip,
    RandAugment or random erasing (they destroy 8x8 digits), no MixUp or
    CutMix, and a higher learning rate for 50 short epochs.
    """
    config = base_config()
    config["name"] = "digits_tiny"
    config["data"].update(
        dataset="digits",
        image_size=8,
        eval_crop_fraction=1.0,
        mean=(0.3,),
        std=(0.4,),
    )
    config["model"].update(
        image_size=8,
        patch_size=2,
        num_channels=1,
        num_classes=10,
        dim=32,
        depth=3,
        num_heads=2,
        drop_path_rate=0.0,
    )
    config["train"].update(
        epochs=50,
        batch_size=64,
        base_lr=2e-3,
        lr_reference_batch=64,
        warmup_epochs=3,
        min_lr=1e-5,
    )
    config["augment"].update(
        random_resized_crop=False,
        flip=False,
        rand_augment=False,
        mixup_alpha=0.0,
        cutmix_alpha=0.0,
        random_erasing=0.0,
    )
    config["growth"].update(
        interval=8,
        warmup=12,
        param_budget=3_000,
        layer_threshold=4,
        target_params=None,
        analysis_batches=4,
    )
    return config
