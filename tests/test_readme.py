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
    """The first Python block after `heading`, what it printed, and the
    lines of the first `text` block after it (what the README says it
    prints)."""
    lines = README.read_text().splitlines()
    start = lines.index(heading) + 1
    found = None
    for block, output in zip(blocks, printed, strict=True):
        if block.line <= start:
            continue
        runs = block.language == "python" and block.skip_reason is None
        if found is None and runs:
            found = block, output.splitlines()
        elif found is not None and block.language == "text":
            return *found, block.code.strip().splitlines()
    raise AssertionError(f"no Python block and stated output under {heading!r}")


_SCORE = re.compile(r"lowest score -?[0-9.e-]+\.$")


def _event(line: str) -> tuple[int, int, int, int]:
    """Epoch, neurons, parameters before and after of a callback line."""
    match = re.fullmatch(
        r"GrowthCallback: epoch (\d+): grew (\d+) neurons in \d+ layers, "
        r"parameters ([\d,]+) -> ([\d,]+), lowest score -?[0-9.e-]+\.",
        line,
    )
    assert match, line
    return tuple(int(g.replace(",", "")) for g in match.groups())


def test_readme_blocks_run_or_say_why():
    problems = marking_problems(markdown_blocks(README))
    assert not problems, "\n".join(problems)


@pytest.mark.integration
@pytest.mark.slow
def test_readme_blocks_run_and_print_what_they_state(tmp_path):
    blocks = markdown_blocks(README)
    printed = run_blocks(blocks, tmp_path)

    # Your own model: the events, sizes and neuron counts as stated (the
    # budget fixes them); the scores depend on the backend.
    _, lines, stated = _under(blocks, printed, "## Grow your own model")
    assert [_SCORE.sub("", line) for line in lines] == [
        _SCORE.sub("", line) for line in stated
    ]
    assert len(lines) == 3

    # The paper's defaults: one event after epoch 50, from the stated size
    # to more than twice it (which neurons, and so the size, follow the
    # backend's random draws).
    _, lines, stated = _under(
        blocks, printed, "## The paper's schedule, on a ViT"
    )
    assert len(lines) == len(stated) == 1
    epoch, neurons, before, after = _event(lines[0])
    assert (epoch, before) == _event(stated[0])[::2] == (50, 451_594)
    assert after > 2 * before and neurons > 0

    example, lines, stated = _under(
        blocks, printed, "## Grow the reduced DeiT-S by hand"
    )
    assert len(example.code.strip().splitlines()) <= 14
    assert lines[:2] == stated[:2] == [
        "11,071,204 parameters",
        "13,731,748 parameters after growth",
    ]
    assert float(lines[2].split(":")[1]) < 1e-4
    assert float(stated[2].split(":")[1]) == 0.0
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
