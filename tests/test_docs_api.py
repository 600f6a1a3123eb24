"""The API pages show every public name with its signature and docstring.

The pages are read as mkdocstrings reads them: their `::: path` directives
name the objects, and griffe (mkdocstrings' parser, with the site's
docstring options from `mkdocs.yml`) gives what a reader sees of each.
"""

import importlib
import inspect
import re

import pytest
from mkdocs.utils import yaml_load

from tests.docs_blocks import (
    DIRECTIVE,
    api_directives,
    api_objects,
    shown_objects,
)
from tests.subprocess_utils import REPO_ROOT

PACKAGES = (
    "keras_depthhet",
    "keras_depthhet.layers",
    "keras_depthhet.models",
    "keras_depthhet.growth",
    "keras_depthhet.splitting",
)
ENTRY_POINTS = (
    "training.train",
    "training.compare",
)
_CONSTANT_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _library_directives() -> list[str]:
    return [t for t in api_directives() if t.split(".")[0] == "keras_depthhet"]


def _resolve(path: str):
    """The Python object a directive's path names."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for name in parts[split:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def _docstring_options() -> dict:
    # mkdocs's loader: it knows the `!ENV` tag of `repo_url`.
    config = yaml_load((REPO_ROOT / "mkdocs.yml").read_text())
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            options = plugin["mkdocstrings"]["handlers"]["python"]["options"]
            return dict(options.get("docstring_options", {}))
    raise AssertionError("mkdocs.yml configures no mkdocstrings handler")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_on_an_api_page(package):
    module = importlib.import_module(package)
    shown = [_resolve(target) for target in _library_directives()]
    missing = [
        name
        for name in module.__all__
        if not any(obj is getattr(module, name) for obj in shown)
    ]
    assert not missing, f"{package}: not on any API page: {missing}"


def test_training_entry_points_are_on_the_training_page():
    page = (REPO_ROOT / "docs" / "api" / "training.md").read_text()
    targets = set(DIRECTIVE.findall(page))
    assert set(ENTRY_POINTS) <= targets


def test_documented_objects_have_docstrings():
    undocumented = [
        obj.path
        for obj in api_objects("keras_depthhet")
        if not (obj.docstring and obj.docstring.value.strip())
    ]
    assert not undocumented


def test_returns_sections_render_as_one_entry():
    options = _docstring_options()
    split = []
    for obj in shown_objects("keras_depthhet"):
        if not obj.docstring:
            continue
        sections = obj.docstring.parse("google", **options)
        for section in sections:
            if section.kind.value == "returns" and len(section.value) > 1:
                split.append(f"{obj.path}: {len(section.value)} entries")
    assert not split


def test_signatures_show_default_values_not_constant_names():
    """`scale: float = 0.2` on the page, not `scale = GROWTH_SCALE`."""
    named = [
        f"{obj.path}({parameter.name}={parameter.default})"
        for obj in shown_objects("keras_depthhet")
        if obj.is_function
        for parameter in obj.parameters
        if parameter.default is not None
        and _CONSTANT_NAME.match(str(parameter.default))
    ]
    assert not named


def test_written_defaults_agree_with_the_documented_constants():
    from keras_depthhet import GrowableDense, GrowthCallback, growth, splitting
    from keras_depthhet.layers import GROWTH_SCALE

    for function in (
        GrowableDense.grow,
        GrowthCallback.__init__,
        growth.grow_model,
        growth.rebuild_grown_model,
    ):
        default = inspect.signature(function).parameters["scale"].default
        assert default == GROWTH_SCALE, function.__qualname__
    budget = inspect.signature(splitting.splitting_eigenvalues).parameters[
        "memory_budget"
    ]
    assert budget.default == splitting.DEFAULT_MEMORY_BUDGET


def test_docs_refer_to_nothing_outside_the_repository():
    sources = [
        *(REPO_ROOT / "docs").rglob("*.md"),
        *(REPO_ROOT / "keras_depthhet").rglob("*.py"),
        *(REPO_ROOT / "training").rglob("*.py"),
        REPO_ROOT / "README.md",
    ]
    outside = re.compile(r"ARCHITECTURE\.md|/work/|/home/|/Users/")
    found = [
        f"{path.relative_to(REPO_ROOT)}: {match.group(0)}"
        for path in sources
        for match in outside.finditer(path.read_text())
    ]
    assert not found
