"""Defaults shared by the experiment configs; each config edits a copy.

A config is a nested dict of plain values (numbers, strings, booleans,
None, tuples, lists), so it prints, diffs and saves as JSON. The sections:

- `data`: which dataset and where it lives (`training.data`).
- `model`: keyword arguments of `keras_depthhet.models.vit`, and
  `architecture_from`: None, or the directory of a finished run of
  `python -m training.train` whose grown architecture (its blocks' growth
  rounds) this run trains from scratch, freshly initialised
  (`keras_depthhet.growth.fresh_model`), with growth disabled: the
  paper's Table 2 protocol.
- `train`: optimisation (AdamW, cosine schedule, label smoothing).
- `augment`: the DeiT augmentations, each switchable (`training.recipe`).
- `growth`: `GrowthCallback` arguments; `enabled=False` trains the model
  as built (the uniform counterparts).

One top-level value is not a section: `distribution`, the runtime
(`training.distributed_runtime.DISTRIBUTIONS`). `"auto"` (the default)
trains on one device as usual, and with several visible devices uses
TensorFlow's MirroredStrategy or JAX's `keras.distribution.DataParallel`
through `training.distributed.fit_with_growth`; `"none"` forces one
device; `"mirrored"` and `"multi_worker_mirrored"` (TensorFlow),
`"data_parallel"` and `"model_parallel"` (JAX) ask for one runtime. The
global batch `train.batch_size` must divide by the number of replicas.
"""

import copy

NO_WEIGHT_DECAY = ("bias", "gamma", "beta", "token", "embedding")
"""Variable-name patterns kept out of weight decay.

`bias` also matches growth biases (`growth_bias_plus`); `gamma` and
`beta` are the LayerNorm scales and offsets; `token` the class token and
`embedding` the position embedding (the patch projection's weights are
named `kernel` and `bias`).
"""


def base_config() -> dict:
    """The DeiT recipe (Touvron et al. 2021) around a reduced DeiT-S."""
    return {
        "name": "base",
        "seed": 0,
        "distribution": "auto",
        "data": {
            "dataset": "imagenet100",
            "data_dir": None,
            "manual_dir": None,
            "image_folder": None,
            "classes_file": None,
            "class_sampling_seed": None,
            "test_fraction": 0.2,
            "image_size": 224,
            "eval_crop_fraction": 0.875,
            "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225),
            "shuffle_buffer": 10_000,
        },
        "model": {
            "image_size": 224,
            "patch_size": 16,
            "num_channels": 3,
            "num_classes": 100,
            "dim": 384,
            "depth": 12,
            "num_heads": 6,
            "mlp_ratio": 4.0,
            "attention_width": 0.5,
            "mlp_width": 0.5,
            "qkv_bias": True,
            "drop_path_rate": 0.1,
            "architecture_from": None,
        },
        "train": {
            "epochs": 300,
            "batch_size": 1024,
            "base_lr": 5e-4,
            "lr_reference_batch": 512,
            "warmup_epochs": 5,
            "warmup_lr": 1e-6,
            "min_lr": 1e-5,
            "weight_decay": 0.05,
            "no_weight_decay": NO_WEIGHT_DECAY,
            "label_smoothing": 0.1,
            "steps_per_epoch": None,
        },
        "augment": {
            "random_resized_crop": True,
            "crop_area": (0.08, 1.0),
            "flip": True,
            "rand_augment": True,
            "rand_augment_magnitude": 9,
            "rand_augment_magnitude_std": 0.5,
            "rand_augment_num_ops": 2,
            "mixup_alpha": 0.8,
            "cutmix_alpha": 1.0,
            "mix_switch_prob": 0.5,
            "random_erasing": 0.25,
        },
        "growth": {
            "enabled": True,
            "interval": 30,
            "warmup": 50,
            "param_budget": 580_000,
            "layer_threshold": 60,
            "scale": 0.2,
            "target_params": None,
            "criterion": "splitting",
            "budget_schedule": "constant",
            "budget_split": "global",
            "analysis_batches": 8,
        },
    }


def uniform_counterpart(config: dict) -> dict:
    """The full-width model without growth, otherwise the same experiment."""
    config = copy.deepcopy(config)
    config["name"] = f"{config['name']}_uniform"
    config["model"]["attention_width"] = 1.0
    config["model"]["mlp_width"] = 1.0
    config["model"]["architecture_from"] = None
    config["growth"]["enabled"] = False
    return config
