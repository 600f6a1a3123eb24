"""`python -m benchmarks.gpu_check`: its tables' rows and columns.

The quick check runs for real, under the suite's backend, in a subprocess;
times are not checked, only that every row is there and filled in.
"""

import os
import subprocess
import sys

import pytest

from benchmarks import gpu_check
from tests.subprocess_utils import REPO_ROOT

SPEED_COLUMNS = [
    "backend",
    "device",
    "model",
    "parameters",
    "images/s",
    "first step s",
    "peak memory GiB",
    "error",
]
EVENT_COLUMNS = [
    "backend",
    "parameters added",
    "analysis s",
    "recompile s",
    "peak memory GiB",
    "error",
]


def _tables(text: str) -> list[list[dict]]:
    """Each Markdown table of `text` as a list of `{column: cell}` rows."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = line.strip("|").split("|")
            current.append([cell.strip() for cell in cells])
        elif current:
            header, _, *rows = current
            tables.append([dict(zip(header, row, strict=True)) for row in rows])
            tables[-1].insert(0, header)
            current = []
    return tables


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


@pytest.mark.integration
@pytest.mark.slow
def test_quick_check_fills_a_row_per_model_and_the_event_row(backend, tmp_path):
    out = tmp_path / "check.md"
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--quick"]
    command += ["--backends", backend, "--out", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    speed, event = _tables(out.read_text())
    assert speed.pop(0) == SPEED_COLUMNS
    assert [row["model"] for row in speed] == ["reduced", "grown", "uniform"]
    for row in speed:
        assert row["backend"] == backend and row["error"] == ""
        assert _number(row["parameters"]) > 0
        assert _number(row["images/s"]) > 0
        assert row["peak memory GiB"] == "n/a"  # no accelerator here
    params = {row["model"]: _number(row["parameters"]) for row in speed}
    assert params["reduced"] < params["grown"]
    assert event.pop(0) == EVENT_COLUMNS
    [row] = event
    assert row["backend"] == backend and row["error"] == ""
    assert _number(row["parameters added"]) > 0
    assert _number(row["analysis s"]) > 0


def test_a_failure_is_reported_in_its_row_and_the_rest_still_shows():
    class Args:
        quick, batch, policy, repeats = True, 4, "mixed_bfloat16", 2

    ok = {
        "device": "cpu",
        "params": 10,
        "images_per_second": 5.0,
        "first_step_s": 1.0,
        "peak_bytes": None,
    }
    results = {
        "jax": {
            "reduced": {**ok, "event": {"error": "ValueError: bad | dtype"}},
            "grown": {"error": "timed out after 300 s"},
            "uniform": ok,
        }
    }
    text = gpu_check.report(results, Args, 1.0, "today")
    speed, event = _tables(text)
    assert speed[2]["error"] == "timed out after 300 s"
    assert speed[2]["images/s"] == ""
    assert speed[3]["images/s"] == "5.00"
    assert event[1]["error"] == "ValueError: bad / dtype"


def test_full_check_without_an_accelerator_stops(monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "has_accelerator", lambda backend: False)
    monkeypatch.setattr(gpu_check, "run_worker", None)  # must not be called
    assert gpu_check.main([]) == 0
    assert "No accelerator found" in capsys.readouterr().out
