"""Every code block of the documentation runs, or says why it does not.

The conventions are in `tests/docs_blocks.py`. The suite runs once per
backend, so each page's Python blocks run on JAX and on TensorFlow.
"""

import doctest
import importlib

import keras
import numpy as np
import pytest

from tests.docs_blocks import markdown_blocks, marking_problems, run_blocks
from tests.subprocess_utils import REPO_ROOT

DOCS = sorted((REPO_ROOT / "docs").rglob("*.md"))
# The library modules whose docstrings hold `>>>` examples (the API pages
# show them).
DOCTESTED = sorted(
    ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
    for path in (REPO_ROOT / "keras_depthhet").rglob("*.py")
    if ">>> " in path.read_text()
)
PAGES_WITH_CODE = [
    path
    for path in DOCS
    if any(
        block.language == "python" and block.skip_reason is None
        for block in markdown_blocks(path)
    )
]


def test_every_block_runs_or_says_why():
    problems = [
        problem
        for path in DOCS
        for problem in marking_problems(markdown_blocks(path))
    ]
    assert not problems, "\n".join(problems)


def test_the_guides_have_code_that_runs():
    names = {
        path.relative_to(REPO_ROOT / "docs").as_posix()
        for path in PAGES_WITH_CODE
    }
    assert {
        "getting-started.md",
        "guides/growable-models.md",
        "guides/growth-callback.md",
    } <= names


@pytest.mark.parametrize(
    "path",
    PAGES_WITH_CODE,
    ids=[
        path.relative_to(REPO_ROOT / "docs").as_posix()
        for path in PAGES_WITH_CODE
    ],
)
def test_page_code_runs(path, tmp_path):
    keras.utils.clear_session()
    run_blocks(markdown_blocks(path), tmp_path)


def test_the_api_has_doctests():
    assert "keras_depthhet.growth.grow" in DOCTESTED


def _example_names() -> dict:
    """What a docstring example may use unimported: NumPy as `np`, `keras`
    and the public names of the library's packages."""
    names = {"np": np, "keras": keras}
    for package in ("layers", "models", "growth", "splitting"):
        module = importlib.import_module(f"keras_depthhet.{package}")
        names.update({name: getattr(module, name) for name in module.__all__})
    return names


@pytest.mark.parametrize("module_name", DOCTESTED)
def test_docstring_examples_show_what_they_print(module_name):
    module = importlib.import_module(module_name)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    for test in doctest.DocTestFinder().find(module):
        test.globs = {**_example_names(), **test.globs}
        keras.utils.clear_session()
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing examples"
