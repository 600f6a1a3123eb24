"""The README's code runs and shows what it claims.

Every Python block of the README runs, in order, in one test (the blocks
build DeiT-S, so they run once per backend, not once per claim); shell
blocks say why they do not run (conventions in `tests/docs_blocks.py`).
"""

import re

import pytest

from tests.docs_blocks import markdown_blocks, marking_problems, run_blocks
from tests.subprocess_utils import REPO_ROOT

README = REPO_ROOT / "README.md"


def _under(blocks, printed, heading: str):
    """The first Python block after `heading`, and what it printed."""
    lines = README.read_text().splitlines()
    start = lines.index(heading) + 1
    for block, output in zip(blocks, printed, strict=True):
        runs = block.language == "python" and block.skip_reason is None
        if block.line > start and runs:
            return block, output.splitlines()
    raise AssertionError(f"no Python block under {heading!r}")


def test_readme_blocks_run_or_say_why():
    problems = marking_problems(markdown_blocks(README))
    assert not problems, "\n".join(problems)


@pytest.mark.integration
@pytest.mark.slow
def test_readme_blocks_run_and_show_what_they_claim(tmp_path):
    blocks = markdown_blocks(README)
    printed = run_blocks(blocks, tmp_path)

    _, lines = _under(blocks, printed, "## Growing inside `model.fit`")
    before, after = (int(n) for n in re.findall(r"\d+", lines[-1]))
    assert before < after

    example, lines = _under(
        blocks,
        printed,
        "## Example: grow the reduced DeiT-S by hand, function preserved",
    )
    assert len(example.code.strip().splitlines()) <= 14
    assert lines[0] == "11,071,204 parameters"
    grown = int(lines[1].split()[0].replace(",", ""))
    assert grown > 11_071_204
    assert float(lines[2].split(":")[1]) < 1e-4
    assert float(lines[3].split(":")[1]) > 1e-3


def test_readme_states_the_one_line_promise():
    readme = README.read_text()
    line = "model.fit(x, y, epochs=E, callbacks=[GrowthCallback(interval=30)])"
    assert line in readme


def test_readme_commands_name_real_entry_points():
    readme = README.read_text()
    assert "python -m training.compare" in readme
    assert (REPO_ROOT / "training" / "compare.py").exists()
    assert "KERAS_BACKEND=tensorflow python -m pytest" in readme
