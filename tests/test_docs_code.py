"""Every code block of the documentation runs, or says why it does not.

The conventions are in `tests/docs_blocks.py`. The suite runs once per
backend, so each page's Python blocks run on JAX and on TensorFlow.
"""

import contextlib
import doctest
import importlib
import os
import re
import textwrap

import keras
import numpy as np
import pytest

from tests.docs_blocks import (
    markdown_blocks,
    marking_problems,
    run_blocks,
    shown_objects,
)
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
        "guides/grow-your-own-model.md",
        "guides/growable-models.md",
        "guides/growth-callback.md",
    } <= names


@pytest.mark.integration
@pytest.mark.parametrize(
    "path",
    PAGES_WITH_CODE,
    ids=[
        path.relative_to(REPO_ROOT / "docs").as_posix()
        for path in PAGES_WITH_CODE
    ],
)
@pytest.mark.slow
def test_page_code_runs(path, tmp_path):
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


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("module_name", DOCTESTED)
def test_docstring_examples_show_what_they_print(module_name):
    module = importlib.import_module(module_name)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    for test in doctest.DocTestFinder().find(module):
        test.globs = {**_example_names(), **test.globs}
        keras.utils.clear_session(free_memory=False)
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing examples"


# Examples on the API pages (fenced `python` blocks of docstrings) that
# work on a reader's own data or model, with the reason they do not run.
EXAMPLES_NOT_RUN = {
    "keras_depthhet.utils.multi_worker.enable_multi_worker_fit": (
        "patches Keras's TensorFlow trainer for the whole process and works "
        "on the reader's cluster; tests/distributed runs it in fresh ones"
    ),
    "keras_depthhet.growth.callback.GrowthCallback": (
        "fits the reader's `train_ds` for 300 epochs"
    ),
    "keras_depthhet.growth.callback.GrowthCallback.plan_growth": (
        "works on the reader's `grower` and `model`"
    ),
    "keras_depthhet.growth.rebuild.rebuild_grown_model": (
        "works on the reader's `model`"
    ),
    "keras_depthhet.distributed.fit.fit_with_growth": (
        "trains 40 epochs on the reader's data"
    ),
}
_FENCED_PYTHON = re.compile(r"```python\n(.*?)```", re.S)


def _docstring_examples() -> dict[str, str]:
    examples = {}
    for root in ("keras_depthhet", "training"):
        for obj in shown_objects(root):
            text = obj.docstring.value if obj.docstring else ""
            blocks = _FENCED_PYTHON.findall(text)
            if blocks:
                examples[obj.path] = "\n".join(map(textwrap.dedent, blocks))
    return examples


def test_examples_not_run_are_still_there():
    assert set(EXAMPLES_NOT_RUN) <= set(_docstring_examples())


@pytest.mark.integration
@pytest.mark.parametrize(
    "path",
    sorted(set(_docstring_examples()) - set(EXAMPLES_NOT_RUN)),
)
def test_docstring_example_runs(path, tmp_path):
    module_name = path
    while module_name:
        module_name = module_name.rpartition(".")[0]
        with contextlib.suppress(ModuleNotFoundError):
            module = importlib.import_module(module_name)
            break
    namespace = {**_example_names(), **vars(module)}
    code = _docstring_examples()[path]
    keras.utils.clear_session(free_memory=False)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, f"{path} (docstring example)", "exec"), namespace)
    finally:
        os.chdir(cwd)
