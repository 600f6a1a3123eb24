"""Loading configs (Python files with `get_config()`) and `--set` overrides."""

import ast
import copy
import importlib.util
from pathlib import Path

from training.configs.common import base_config

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A config file, key or value is invalid."""


def resolve_config_path(config: str) -> Path:
    """`config` as given, or `training/configs/<config>.py` for a bare name."""
    path = Path(config)
    if path.suffix != ".py" and not path.exists():
        path = CONFIG_DIR / f"{config}.py"
    if not path.is_file():
        names = sorted(
            p.stem
            for p in CONFIG_DIR.glob("*.py")
            if p.stem not in ("__init__", "common")
        )
        raise ConfigError(
            f"Config file {config!r} does not exist; give a path or one of: "
            f"{', '.join(names)}"
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
        ConfigError: if the file is missing, has no `get_config()`, or the
            config has keys the trainer does not know.
    """
    path = resolve_config_path(config)
    spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"Config file {str(path)!r} has no get_config().")
    result = module.get_config()
    check_keys(result)
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


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Applies `key.sub=value` overrides; values are Python literals or,
    failing that, strings (`--set data.data_dir=/data`).

    Returns:
        A new config dict.

    Raises:
        ConfigError: for a malformed override or an unknown key.
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
            raise ConfigError(f"Unknown config key {key!r} in --set {override}")
        if isinstance(node[leaf], dict):
            raise ConfigError(f"Config key {key!r} is a section, not a value.")
        node[leaf] = _parse_value(text)
    return config
