"""Loading configs (Python files with `get_config()`) and `--set` overrides.

Every value is checked when the config is loaded (`check_config`): its
type and range, and the few relations between values that would
otherwise fail deep inside training. This module and the config files
import nothing heavy, so the command-line entry points answer a bad
value before Keras or a backend is imported.
"""

import ast
import copy
import functools
import importlib.util
import math
import numbers
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from training.configs.common import base_config

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A config file, key or value is invalid."""


def config_names() -> list[str]:
    """The names of the experiment configs in `training/configs/`."""
    return sorted(
        p.stem
        for p in CONFIG_DIR.glob("*.py")
        if p.stem not in ("__init__", "common")
    )


def config_help() -> str:
    """The configs and the `--set` keys (`RULES`), for a command's `--help`."""
    wrap = functools.partial(
        textwrap.fill, width=79, initial_indent="  ", subsequent_indent="  "
    )
    return (
        f"configs (--config NAME):\n{wrap(', '.join(config_names()))}\n\n"
        "keys of --set KEY=VALUE (every config has them):\n"
        f"{wrap(', '.join(RULES))}"
    )


def resolve_config_path(config: str) -> Path:
    """`config` as given, or `training/configs/<config>.py` for a bare name."""
    path = Path(config)
    if path.suffix != ".py" and not path.exists():
        path = CONFIG_DIR / f"{config}.py"
    if not path.is_file():
        raise ConfigError(
            f"Config file {config!r} does not exist; give a path or one of: "
            f"{', '.join(config_names())}"
        )
    if path.suffix != ".py":
        raise ConfigError(
            f"Config file {config!r} is not a Python config module: expected "
            "a .py file that defines get_config()."
        )
    return path


def load_config(config: str) -> dict:
    """Runs the config file's `get_config()` and checks the result.

    Args:
        config: Path of a config file, or the name of one in
            `training/configs/`.

    Returns:
        The config dict.

    Raises:
        ConfigError: if the file is missing, is not a Python module, fails
            to import, has no `get_config()`, or the config has keys the
            trainer does not know or values it cannot use
            (`check_config`).
    """
    path = resolve_config_path(config)
    spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise ConfigError(
            f"Config file {str(path)!r} failed to import: "
            f"{type(error).__name__}: {error}"
        ) from error
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"Config file {str(path)!r} has no get_config().")
    result = module.get_config()
    if not isinstance(result, dict):
        raise ConfigError(
            f"get_config() of {str(path)!r} must return a dict. "
            f"Received: {type(result).__name__}"
        )
    check_config(result)
    return result


def check_keys(config: dict, reference: dict | None = None, prefix=""):
    """Raises `ConfigError` for a key missing from, or unknown to, the
    reference schema (`base_config()`)."""
    reference = base_config() if reference is None else reference
    unknown = sorted(set(config) - set(reference))
    missing = sorted(set(reference) - set(config))
    if unknown or missing:
        raise ConfigError(
            f"Config keys differ from the schema at {prefix or 'top level'}: "
            f"unknown {[prefix + k for k in unknown]}, "
            f"missing {[prefix + k for k in missing]}"
        )
    for key, value in reference.items():
        if isinstance(value, dict):
            if not isinstance(config[key], dict):
                raise ConfigError(
                    f"Config key {prefix + key!r} must be a dict."
                )
            check_keys(config[key], value, f"{prefix}{key}.")


class Rule(NamedTuple):
    """What a config value must be: a description and a test."""

    expected: str
    accepts: Callable[[object], bool]


def _is_number(value) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(low: int) -> Rule:
    """An integer (not a bool) of at least `low`."""
    kind = {0: "a non-negative integer", 1: "a positive integer"}
    return Rule(
        kind.get(low, f"an integer >= {low}"),
        lambda v: _is_int(v) and v >= low,
    )


def number(
    low: float, high: float = math.inf, *, low_open=False, high_open=False
) -> Rule:
    """A finite number (not a bool) in the interval from `low` to `high`."""
    if high == math.inf:
        expected = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        expected = (
            f"a number in {'(' if low_open else '['}{low:g}, {high:g}"
            f"{')' if high_open else ']'}"
        )

    def accepts(value):
        if not _is_number(value):
            return False
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return above and below

    return Rule(expected, accepts)


def optional(rule: Rule) -> Rule:
    """`rule`, or None."""
    return Rule(
        f"None or {rule.expected}", lambda v: v is None or rule.accepts(v)
    )


def one_of(*choices) -> Rule:
    """One of `choices` (compared with `==`, bools never equal to ints)."""
    return Rule(
        f"one of {list(choices)}",
        lambda v: any(type(v) is type(c) and v == c for c in choices),
    )


def sequence_of(rule: Rule, length: int | None = None) -> Rule:
    """A list or tuple of values that each satisfy `rule`."""
    size = "" if length is None else f"{length} "
    return Rule(
        f"a list or tuple of {size}values, each {rule.expected}",
        lambda v: (
            isinstance(v, (list, tuple))
            and (length is None or len(v) == length)
            and all(rule.accepts(item) for item in v)
        ),
    )


BOOLEAN = Rule("True or False", lambda v: isinstance(v, bool))
TEXT = Rule(
    "a non-empty string", lambda v: isinstance(v, str) and bool(v.strip())
)
PATH = optional(TEXT)
RUN_NAME = Rule(
    "a non-empty name of letters, digits, '.', '_' or '-' (it names the "
    "run directory)",
    lambda v: (
        isinstance(v, str)
        and re.fullmatch(r"[A-Za-z0-9_.-]+", v) is not None
        and v not in (".", "..")
    ),
)
FRACTION = number(0, 1, low_open=True, high_open=True)
PROBABILITY = number(0, 1)
WIDTH = number(0, 16, low_open=True)

DISTRIBUTION_NAMES = (
    "auto",
    "none",
    "mirrored",
    "multi_worker_mirrored",
    "data_parallel",
    "model_parallel",
)
"""`training.distributed_runtime.DISTRIBUTIONS`, spelled out so that the
config check imports no backend (a test keeps the two equal)."""

GROWTH_CRITERIA = ("splitting", "gradient_proxy", "random")
"""`keras_depthhet.growth.selection.CRITERIA`, spelled out likewise."""

RULES = {
    "name": RUN_NAME,
    "seed": integer(0),
    "distribution": one_of(*DISTRIBUTION_NAMES),
    "data.dataset": one_of("digits", "mnist_t10k", "cifar100", "imagenet100"),
    "data.data_dir": PATH,
    "data.manual_dir": PATH,
    "data.image_folder": PATH,
    "data.classes_file": PATH,
    "data.class_sampling_seed": optional(integer(0)),
    "data.test_fraction": FRACTION,
    "data.image_size": integer(1),
    "data.eval_crop_fraction": number(0, 1, low_open=True),
    "data.mean": sequence_of(number(-math.inf)),
    "data.std": sequence_of(number(0, low_open=True)),
    "data.shuffle_buffer": integer(1),
    "model.image_size": integer(1),
    "model.patch_size": integer(1),
    "model.num_channels": integer(1),
    "model.num_classes": integer(1),
    "model.dim": integer(1),
    "model.depth": integer(1),
    "model.num_heads": integer(1),
    "model.mlp_ratio": number(0, low_open=True),
    "model.attention_width": WIDTH,
    "model.mlp_width": WIDTH,
    "model.qkv_bias": BOOLEAN,
    "model.drop_path_rate": number(0, 1, high_open=True),
    "model.architecture_from": PATH,
    "train.epochs": integer(1),
    "train.batch_size": integer(1),
    "train.base_lr": number(0, low_open=True),
    "train.lr_reference_batch": number(0, low_open=True),
    "train.warmup_epochs": integer(0),
    "train.warmup_lr": number(0),
    "train.min_lr": number(0),
    "train.weight_decay": number(0),
    "train.no_weight_decay": sequence_of(TEXT),
    "train.label_smoothing": number(0, 1, high_open=True),
    "train.steps_per_epoch": optional(integer(1)),
    "augment.random_resized_crop": BOOLEAN,
    "augment.crop_area": sequence_of(number(0, 1, low_open=True), 2),
    "augment.flip": BOOLEAN,
    "augment.rand_augment": BOOLEAN,
    "augment.rand_augment_magnitude": number(0, 10),
    "augment.rand_augment_magnitude_std": number(0),
    "augment.rand_augment_num_ops": integer(1),
    "augment.mixup_alpha": number(0),
    "augment.cutmix_alpha": number(0),
    "augment.mix_switch_prob": PROBABILITY,
    "augment.random_erasing": PROBABILITY,
    "growth.enabled": BOOLEAN,
    "growth.interval": integer(1),
    "growth.warmup": integer(0),
    "growth.param_budget": number(0, low_open=True),
    "growth.layer_threshold": integer(0),
    "growth.scale": number(0, low_open=True),
    "growth.target_params": optional(integer(1)),
    "growth.criterion": one_of(*GROWTH_CRITERIA),
    "growth.budget_schedule": one_of("constant", "lr"),
    "growth.budget_split": one_of("global", "by_layer_type"),
    "growth.analysis_batches": optional(integer(1)),
}
"""The rule of every config value, by dotted key."""


def _value(config: dict, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def _fail(key: str, value, expected: str) -> ConfigError:
    return ConfigError(
        f"Config value `{key}` must be {expected}. Received: {key}={value!r}"
    )


def _check_relations(config: dict) -> None:
    data, model = config["data"], config["model"]
    if model["image_size"] % model["patch_size"]:
        raise _fail(
            "model.patch_size",
            model["patch_size"],
            f"a divisor of model.image_size={model['image_size']}",
        )
    if model["dim"] % model["num_heads"]:
        raise _fail(
            "model.dim",
            model["dim"],
            f"a multiple of model.num_heads={model['num_heads']}",
        )
    if data["image_size"] != model["image_size"]:
        raise _fail(
            "data.image_size",
            data["image_size"],
            f"equal to model.image_size={model['image_size']} (the size "
            "the images are resized to is the model's input size)",
        )
    channels = model["num_channels"]
    for key in ("mean", "std"):
        if len(data[key]) != channels:
            raise _fail(
                f"data.{key}",
                data[key],
                f"one value per channel (model.num_channels={channels})",
            )
    if model["architecture_from"] is not None and config["growth"]["enabled"]:
        raise _fail(
            "growth.enabled",
            True,
            "False when model.architecture_from is set (a discovered "
            "architecture is trained from scratch as it is)",
        )
    low, high = config["augment"]["crop_area"]
    if low > high:
        raise _fail(
            "augment.crop_area",
            config["augment"]["crop_area"],
            "a (smallest, largest) pair with smallest <= largest",
        )


def check_config(config: dict) -> None:
    """Checks a config's keys, each value's type and range, and the
    relations between values.

    Args:
        config: A config dict (see `training/configs/common.py`).

    Raises:
        ConfigError: naming the first bad key, its value and what is
            expected, e.g. ``Config value `train.epochs` must be a positive
            integer. Received: train.epochs=1.5``.
    """
    check_keys(config)
    for key, rule in RULES.items():
        value = _value(config, key)
        if not rule.accepts(value):
            raise _fail(key, value, rule.expected)
    _check_relations(config)


ARCHITECTURE_KEYS = (
    "dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "attention_width",
    "mlp_width",
    "qkv_bias",
)
"""The `model` values that shape the transformer blocks, where growth adds
neurons. A run trained with `model.architecture_from` must share them with
the run it takes its architecture from; the input stem (`image_size`,
`patch_size`, `num_channels`), the head (`num_classes`) and
`drop_path_rate` may differ."""


def vit_arguments(model: dict) -> dict:
    """The config's `model` section as `keras_depthhet.models.vit`'s
    keyword arguments (without `architecture_from`)."""
    return {k: v for k, v in model.items() if k != "architecture_from"}


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Applies `key.sub=value` overrides and checks the result.

    Values are Python literals or, failing that, strings
    (`--set data.data_dir=/data`).

    Returns:
        A new config dict.

    Raises:
        ConfigError: for a malformed override, an unknown key, or a value
            that `check_config` refuses.
    """
    config = copy.deepcopy(config)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"An override must look like key.sub=value. Received: "
                f"{override!r}"
            )
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            within = isinstance(node, dict) and bool(parents)
            where = ".".join(parents)
            known = [
                k for k in RULES if not within or k.startswith(f"{where}.")
            ]
            raise ConfigError(
                f"Unknown config key {key!r} in --set {override}. The "
                f"{f'keys of {where!r}' if within else 'config keys'} are: "
                f"{', '.join(known)}"
            )
        if isinstance(node[leaf], dict):
            raise ConfigError(f"Config key {key!r} is a section, not a value.")
        node[leaf] = _parse_value(text)
    check_config(config)
    return config
