"""Config files, schema and value checks, --set overrides."""

import ast
import re

import pytest

from training.config import (
    ARCHITECTURE_KEYS,
    DISTRIBUTION_NAMES,
    GROWTH_CRITERIA,
    RULES,
    ConfigError,
    apply_overrides,
    check_config,
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
    "mnist_tiny",
    "mnist_tiny_uniform",
    "mnist_tiny_from_digits",
    "cifar100_deit_s_from_imagenet100",
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
    for name in (
        "digits_tiny",
        "mnist_tiny",
        "cifar100_deit_s",
        "imagenet100_deit_s",
    ):
        grown, uniform = load_config(name), load_config(f"{name}_uniform")
        assert uniform == uniform_counterpart(grown)
        assert grown["growth"]["enabled"] and not uniform["growth"]["enabled"]
        assert grown["model"]["attention_width"] == 0.5
        assert uniform["model"]["mlp_width"] == 1.0
        assert uniform["data"] == grown["data"]


@pytest.mark.parametrize(
    "name, source, uniform",
    [
        ("mnist_tiny_from_digits", "digits_tiny", "mnist_tiny_uniform"),
        (
            "cifar100_deit_s_from_imagenet100",
            "imagenet100_deit_s",
            "cifar100_deit_s_uniform",
        ),
    ],
)
def test_table_2_configs_train_a_grown_architecture_beside_uniform(
    name, source, uniform
):
    """Growth on one dataset, the architecture from scratch on another,
    the uniform model on the same data as the second."""
    config, grown, baseline = (
        load_config(name),
        load_config(source),
        load_config(uniform),
    )
    assert config["model"]["architecture_from"] == f"runs/{source}"
    assert not config["growth"]["enabled"] and grown["growth"]["enabled"]
    assert config["data"]["dataset"] != grown["data"]["dataset"]
    assert config["data"] == baseline["data"]
    assert config["train"] == baseline["train"]
    for key in ARCHITECTURE_KEYS:
        assert config["model"][key] == grown["model"][key], key
    assert baseline["model"]["attention_width"] == 1.0
    tokens = {
        c["model"]["image_size"] // c["model"]["patch_size"]
        for c in (config, grown)
    }
    assert len(tokens) == 1


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


def test_unknown_keys_list_the_valid_ones():
    with pytest.raises(ConfigError) as caught:
        apply_overrides(base_config(), ["train.epoch=3"])
    message = str(caught.value)
    assert "The keys of 'train' are: train.epochs, train.batch_size" in message
    assert "growth." not in message
    with pytest.raises(ConfigError) as caught:
        apply_overrides(base_config(), ["nope.x=1"])
    assert "The config keys are: name, seed" in str(caught.value)
    assert "growth.interval" in str(caught.value)


def test_help_lists_the_configs_and_every_set_key(capsys):
    from training import train

    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for name in CONFIGS:
        assert name in shown
    for key in _leaves(base_config()):
        assert key in shown


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


def _leaves(config, prefix=""):
    for key, value in config.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def test_every_config_value_has_a_rule():
    assert sorted(_leaves(base_config())) == sorted(RULES)


def test_spelled_out_choices_match_the_modules_that_use_them():
    from keras_depthhet.growth.callback import BUDGET_SCHEDULES
    from keras_depthhet.growth.selection import BUDGET_SPLITS, CRITERIA
    from training.distributed_runtime import DISTRIBUTIONS

    assert DISTRIBUTION_NAMES == DISTRIBUTIONS
    assert GROWTH_CRITERIA == CRITERIA
    growth = {"growth.budget_split": BUDGET_SPLITS}
    growth["growth.budget_schedule"] = BUDGET_SCHEDULES
    for key, choices in growth.items():
        assert RULES[key].expected == f"one of {list(choices)}"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.batch_size=0", "a positive integer"),
        ("train.epochs=1.5", "a positive integer"),
        ("train.epochs=0", "a positive integer"),
        ("train.epochs=-1", "a positive integer"),
        ("train.epochs=abc", "a positive integer"),
        ("growth.enabled=no", "True or False"),
        ("growth.enabled=1", "True or False"),
        ("model.qkv_bias='True'", "True or False"),
        ("train.base_lr=fast", "a number > 0"),
        ("train.base_lr=1e999", "a number > 0"),
        ("data.test_fraction=1.0", "a number in (0, 1)"),
        ("growth.criterion='eigen'", "one of ['splitting'"),
        ("growth.target_params=1.5e7", "None or a positive integer"),
        ("augment.crop_area=(0.5,)", "a list or tuple of 2 values"),
        ("name='../x'", "a non-empty name"),
        ("distribution=None", "one of ['auto'"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_expected(
    override, expected
):
    key, _, text = override.partition("=")
    with pytest.raises(ConfigError) as info:
        apply_overrides(load_config("digits_tiny"), [override])
    message = str(info.value)
    assert f"`{key}` must be {expected}" in message
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    assert message.endswith(f"Received: {key}={value!r}")


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.dim=33", "`model.dim` must be a multiple of model.num_heads"),
        ("model.patch_size=3", "a divisor of model.image_size=8"),
        ("data.image_size=16", "equal to model.image_size=8"),
        ("data.mean=(0.1, 0.2)", "one value per channel"),
        ("augment.crop_area=(0.9, 0.2)", "smallest <= largest"),
        (
            "model.architecture_from='runs/x'",
            "`growth.enabled` must be False when model.architecture_from "
            "is set",
        ),
    ],
)
def test_relations_between_values(override, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        apply_overrides(load_config("digits_tiny"), [override])


def test_good_values_of_other_types_pass():
    config = apply_overrides(
        load_config("digits_tiny"),
        [
            "train.base_lr=1",
            "growth.param_budget=4e3",
            "augment.crop_area=[0.2, 1]",
            "growth.analysis_batches=None",
        ],
    )
    check_config(config)


def test_a_file_that_is_not_a_python_config_module(tmp_path):
    with pytest.raises(ConfigError, match="not a Python config module"):
        load_config("/etc/hostname")
    text = tmp_path / "notes.txt"
    text.write_text("epochs = 3\n")
    with pytest.raises(ConfigError, match="not a Python config module"):
        load_config(str(text))
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    with pytest.raises(ConfigError, match="failed to import: SyntaxError"):
        load_config(str(broken))
    not_dict = tmp_path / "not_dict.py"
    not_dict.write_text("def get_config():\n    return 3\n")
    with pytest.raises(ConfigError, match="must return a dict"):
        load_config(str(not_dict))


def test_a_config_file_with_a_bad_value_is_refused(tmp_path):
    path = tmp_path / "bad_value.py"
    path.write_text(
        "from training.configs.common import base_config\n"
        "def get_config():\n"
        "    c = base_config()\n"
        "    c['growth']['enabled'] = 'yes'\n"
        "    return c\n"
    )
    with pytest.raises(ConfigError, match="growth.enabled='yes'"):
        load_config(str(path))
