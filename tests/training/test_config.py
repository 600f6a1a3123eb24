"""Config files, schema check and --set overrides."""

import pytest

from training.config import (
    ConfigError,
    apply_overrides,
    load_config,
    resolve_config_path,
)
from training.configs.common import base_config, uniform_counterpart

CONFIGS = (
    "digits_tiny",
    "digits_tiny_uniform",
    "cifar100_deit_s",
    "cifar100_deit_s_uniform",
    "imagenet100_deit_s",
    "imagenet100_deit_s_uniform",
)


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_load_and_document_command_hardware_result(name):
    config = load_config(name)
    assert config["name"] == name
    module_doc = resolve_config_path(name).read_text()
    for word in (
        "Command:",
        "python -m training.train",
        "Hardware",
        "Expected",
    ):
        assert word in module_doc


def test_config_by_path_equals_by_name():
    assert load_config("training/configs/digits_tiny.py") == load_config(
        "digits_tiny"
    )


def test_uniform_counterparts_are_full_width_without_growth():
    for name in ("digits_tiny", "cifar100_deit_s", "imagenet100_deit_s"):
        grown, uniform = load_config(name), load_config(f"{name}_uniform")
        assert uniform == uniform_counterpart(grown)
        assert grown["growth"]["enabled"] and not uniform["growth"]["enabled"]
        assert grown["model"]["attention_width"] == 0.5
        assert uniform["model"]["mlp_width"] == 1.0
        assert uniform["data"] == grown["data"]


def test_imagenet100_matches_paper_table_1_settings():
    config = load_config("imagenet100_deit_s")
    assert config["train"]["epochs"] == 300
    assert config["train"]["batch_size"] == 1024
    growth = config["growth"]
    assert (growth["warmup"], growth["interval"]) == (50, 30)
    assert growth["param_budget"] == 580_000
    assert growth["layer_threshold"] == 60
    assert growth["target_params"] == 19_400_000


def test_overrides_parse_literals_and_strings():
    config = apply_overrides(
        base_config(),
        [
            "train.epochs=7",
            "augment.crop_area=(0.2, 1.0)",
            "data.data_dir=/data/tfds",
            "growth.target_params=None",
            "augment.flip=False",
        ],
    )
    assert config["train"]["epochs"] == 7
    assert config["augment"]["crop_area"] == (0.2, 1.0)
    assert config["data"]["data_dir"] == "/data/tfds"
    assert config["growth"]["target_params"] is None
    assert config["augment"]["flip"] is False
    assert base_config()["train"]["epochs"] == 300


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "Unknown config key 'train.epoch'"),
        ("nope.x=1", "Unknown config key"),
        ("train=3", "section"),
        ("train.epochs", "key.sub=value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(base_config(), [override])


def test_missing_config_file_lists_known_names():
    with pytest.raises(ConfigError, match="digits_tiny"):
        load_config("no_such_config")


def test_config_with_unknown_key_is_rejected(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(
        "from training.configs.common import base_config\n"
        "def get_config():\n"
        "    c = base_config()\n"
        "    c['train']['epochz'] = 1\n"
        "    return c\n"
    )
    with pytest.raises(ConfigError, match="train.epochz"):
        load_config(str(path))
    path.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="get_config"):
        load_config(str(path))
