"""Paper Table 2: the architecture grown on ImageNet-100, on CIFAR-100."""

from training.configs import cifar100_deit_s


def get_config() -> dict:
    """The DeiT-S grown on ImageNet-100, trained from scratch on CIFAR-100.

    The paper's Table 2 protocol: growth discovers an architecture on
    ImageNet-100 (`imagenet100_deit_s`), and that architecture, freshly
    initialised (`keras_depthhet.growth.fresh_model`) and without
    growth, is trained on CIFAR-100 beside the uniform DeiT-S on the same
    data (`cifar100_deit_s_uniform`). Both datasets are read at 224
    pixels with 100 classes, so the whole model, stem and head included,
    has the grown run's shape.

    Command:
        ```bash
        python -m training.train --config imagenet100_deit_s \\
            --set data.manual_dir=/path/to/imagenet/tars \\
            --workdir runs/imagenet100_deit_s                 # discover
        python -m training.train \\
            --config cifar100_deit_s_from_imagenet100 \\
            --workdir runs/cifar100_deit_s_from_imagenet100   # from scratch
        python -m training.train --config cifar100_deit_s_uniform \\
            --workdir runs/cifar100_deit_s_uniform            # baseline
        # `--set model.architecture_from=RUN_DIR` takes another grown run
        ```

    Hardware assumed: one host with 8 accelerators for each run (batch
    1024, 300 epochs at 224 pixels). Not run in this repository; the
    configs are checked and the model is built in its tests.

    Expected result (Guna et al. 2024, Table 2): the architecture scaled
    on ImageNet-100 trains from scratch on CIFAR-100 to a clearly higher
    top-1 than the uniform DeiT-S (the paper reports 78.1 % against
    58.9 %), with the grown run's parameter count (about 16.3M with the
    default budget, 19.4M with `growth.param_budget=940000`, against
    21,704,164 uniform).

    Settings: `cifar100_deit_s`'s data and DeiT recipe, growth disabled;
    `model.architecture_from` defaults to `runs/imagenet100_deit_s`, the
    work directory of the first command; a missing or unfinished run is
    refused before anything is written.
    """
    config = cifar100_deit_s.get_config()
    config["name"] = "cifar100_deit_s_from_imagenet100"
    config["model"]["architecture_from"] = "runs/imagenet100_deit_s"
    config["growth"]["enabled"] = False
    return config
