"""Every code block of the documentation runs, or says why it does not.

The conventions are in `tests/docs_blocks.py`. The suite runs once per
backend, so each page's Python blocks run on JAX and on TensorFlow.
"""

import keras
import pytest

from tests.docs_blocks import markdown_blocks, marking_problems, run_blocks
from tests.subprocess_utils import REPO_ROOT

DOCS = sorted((REPO_ROOT / "docs").rglob("*.md"))
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
