"""The README's example runs and shows what it claims."""

import contextlib
import io
import re

from tests.subprocess_utils import REPO_ROOT


def _example_code(heading="## Example") -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _run(code: str) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    return out.getvalue().splitlines()


def test_readme_example_preserves_the_function():
    code = _example_code()
    assert len(code.strip().splitlines()) <= 12
    lines = _run(code)
    assert lines[0] == "11,071,204 parameters"
    grown = int(lines[1].split()[0].replace(",", ""))
    assert grown > 11_071_204
    assert float(lines[2].split(":")[1]) < 1e-4


def test_readme_fit_example_grows_twice_within_budget():
    lines = _run(_example_code("## Growing inside `model.fit`"))
    sizes = [int(n) for n in re.findall(r"\d+", lines[-1])]
    assert len(sizes) == 2
    assert sizes[0] < sizes[1]


def test_readme_commands_name_real_entry_points():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "python -m training.compare" in readme
    assert (REPO_ROOT / "training" / "compare.py").exists()
    assert "KERAS_BACKEND=tensorflow python -m pytest" in readme
