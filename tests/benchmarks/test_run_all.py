"""`python -m benchmarks.run_all`: the script list, the runs, failures;
`multi_process_event_cost`'s table and worker clean-up."""

import signal
import subprocess
import sys

import pytest

from benchmarks import common, multi_process_event_cost, run_all


def test_every_benchmark_script_is_listed_and_exists():
    # Not measurements: shared code, the runner, and the Results page's
    # figure drawn from committed tables.
    helpers = {"__init__", "common", "run_all", "results_figure"}
    scripts = {
        path.stem
        for path in (run_all.REPO_ROOT / "benchmarks").glob("*.py")
        if path.stem not in helpers
    }
    assert scripts == set(run_all.BENCHMARKS)
    assert run_all.missing_scripts(run_all.BENCHMARKS) == []


def _fake_runs(monkeypatch, failing=()):
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        name = command[2].removeprefix("benchmarks.")
        return subprocess.CompletedProcess(command, 1 if name in failing else 0)

    monkeypatch.setattr(run_all.subprocess, "run", fake_run)
    monkeypatch.setattr(run_all, "missing_scripts", lambda names: [])
    return commands


def test_runs_each_selected_script_in_order_and_summarises(monkeypatch, capsys):
    commands = _fake_runs(monkeypatch)
    argv = ["--quick", "--only", "growth_event_cost", "splitting_cost"]
    assert run_all.main(argv) == 0
    assert commands == [
        [sys.executable, "-m", "benchmarks.splitting_cost", "--quick"],
        [sys.executable, "-m", "benchmarks.growth_event_cost", "--quick"],
    ]
    out = capsys.readouterr().out
    assert "summary (quick" in out and "| growth_event_cost | ok |" in out


def test_full_mode_runs_all_without_quick(monkeypatch):
    commands = _fake_runs(monkeypatch)
    assert run_all.main([]) == 0
    assert [c[2:] for c in commands] == [
        [f"benchmarks.{name}"] for name in run_all.BENCHMARKS
    ]


def test_a_failure_runs_the_rest_and_exits_1(monkeypatch, capsys):
    commands = _fake_runs(monkeypatch, failing={"splitting_cost"})
    assert run_all.main(["--quick"]) == 1
    assert len(commands) == len(run_all.BENCHMARKS)
    captured = capsys.readouterr()
    assert "| splitting_cost | failed (exit 1) |" in captured.out
    assert "failed: splitting_cost" in captured.err


def test_missing_script_fails_before_running_anything(
    monkeypatch, tmp_path, capsys
):
    commands = []
    monkeypatch.setattr(run_all.subprocess, "run", commands.append)
    monkeypatch.setattr(run_all, "REPO_ROOT", tmp_path)
    assert run_all.main(["--quick", "--only", "splitting_cost"]) == 2
    assert commands == []
    assert "benchmarks/splitting_cost.py" in capsys.readouterr().err


def test_quick_results_never_replace_published_tables(monkeypatch, tmp_path):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    path = common.write_result("table", "quick\n", quick=True)
    assert path == tmp_path / "quick" / "table.md"
    assert not (tmp_path / "table.md").exists()
    assert common.write_result("table", "full\n") == tmp_path / "table.md"


def _worker_result(analysis, agreement, params=1000):
    events = [
        {"analysis": 9.0, "agreement": 0.0, "grow": 9.0, "recompile": 9.0},
        {
            "analysis": analysis,
            "agreement": agreement,
            "grow": 0.5,
            "recompile": 1.5,
        },
    ]
    return {"events": events, "steady_step": 0.01, "params": params}


def test_multi_process_table_times_events_after_the_first():
    chief, other = _worker_result(2.0, 0.0), _worker_result(0.0, 2.5)
    assert multi_process_event_cost.median_parts(chief) == {
        "analysis": 2.0,
        "agreement": 0.0,
        "grow": 0.5,
        "recompile": 1.5,
        "total": 4.0,
    }
    results = {"jax": {1: [_worker_result(1.0, 0.0)], 2: [chief, other]}}
    rows = multi_process_event_cost.table(results).splitlines()[2:]
    assert rows == [
        "| jax | 1 | 1.00 | 0.00 | 0.50 | 1.50 | 3.00 | 1.00 | 10 | 1,000 |",
        "| jax | 2 | 2.00 | 0.00 (other waits 2.50) | 0.50 | 1.50 | 4.00 "
        "| 1.33 | 10 | 1,000 |",
    ]
    lines = multi_process_event_cost.event_lines(results).splitlines()
    assert lines[0] == (
        "- jax, 1 process(es), worker 0: 9.00 + 0.00 + 9.00 + 9.00; "
        "1.00 + 0.00 + 0.50 + 1.50"
    )
    assert [line[:30] for line in lines[1:]] == [
        "- jax, 2 process(es), worker 0",
        "- jax, 2 process(es), worker 1",
    ]


def test_multi_process_run_kills_its_workers_at_the_timeout(monkeypatch):
    started = []
    popen = subprocess.Popen

    def sleeping_worker(command, **kwargs):
        command = [sys.executable, "-c", "import time; time.sleep(60)"]
        started.append(popen(command, **kwargs))
        return started[-1]

    monkeypatch.setattr(
        multi_process_event_cost.subprocess, "Popen", sleeping_worker
    )
    monkeypatch.setattr(multi_process_event_cost, "TIMEOUT", 1)
    with pytest.raises(RuntimeError, match="2 processes failed .killed after"):
        multi_process_event_cost._run("jax", 2, ["2", "64"])
    assert len(started) == 2
    assert all(proc.returncode == -signal.SIGKILL for proc in started)


def test_multi_process_run_reports_a_failed_worker():
    with pytest.raises(RuntimeError, match="1 processes failed .exit 2"):
        multi_process_event_cost._run("jax", 1, ["not", "numbers"])
