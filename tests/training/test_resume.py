"""A killed run of the training CLI resumes to the uninterrupted result."""

import json
import os
import subprocess
import sys

import pytest

from tests.subprocess_utils import REPO_ROOT
from training import results, train

pytestmark = pytest.mark.integration

RESUMABLE = [
    "--set",
    "distribution='none'",
    "--set",
    "train.epochs=3",
    "--set",
    "train.steps_per_epoch=2",
    "--set",
    "model.depth=1",
    "--set",
    "growth.warmup=1",
    "--set",
    "growth.interval=2",
    "--set",
    "growth.layer_threshold=0",
    "--set",
    "growth.analysis_batches=1",
]
"""Three short epochs of a one-block ViT, events after epochs 1 and 3."""


def _kill_after_first_event(workdir):
    """Starts the run in a child and kills it (SIGKILL) as soon as it
    reports the first growth event, during epoch 2."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    argv = ["--workdir", str(workdir), *RESUMABLE]
    child = subprocess.Popen(
        [sys.executable, "-m", "training.train", *argv],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    seen = []
    try:
        for line in child.stdout:
            seen.append(line)
            if line.startswith(">>> growth after epoch 1:"):
                child.kill()
                break
    finally:
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -9, "".join(seen)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, capsys):
    reference = tmp_path / "reference"
    assert train.main(["--workdir", str(reference), *RESUMABLE]) == 0
    workdir = tmp_path / "killed"
    _kill_after_first_event(workdir)
    assert train.read_run_file(workdir)["status"] == "running"
    assert train.backed_up_epochs(workdir) == 1
    capsys.readouterr()

    assert train.main(["--workdir", str(workdir), "--resume"]) == 0
    out = capsys.readouterr().out
    assert (
        f"Resuming {workdir} after epoch 1 of 3 from its backup, replaying "
        "its 1 growth event(s) after epoch(s) 1 first." in out
    )
    assert "Epoch 2/3" in out and "Epoch 1/3" not in out
    assert ">>> growth after epoch 3" in out
    assert ">>> growth after epoch 1" not in out
    info = train.read_run_file(workdir)
    assert info["status"] == "finished"
    assert info["resumed_after_epoch"] == 1
    assert not (workdir / "backup").exists()
    # Same data, same analysis batches, same neurons: the same file.
    metrics = results.read_metrics(workdir / "metrics.csv")
    assert [row["epoch"] for row in metrics] == [1, 2, 3]
    assert (workdir / "metrics.csv").read_bytes() == (
        reference / "metrics.csv"
    ).read_bytes()
    events = json.loads((workdir / "growth_events.json").read_text())
    want_events = json.loads((reference / "growth_events.json").read_text())
    assert [e["epoch"] for e in events] == [1, 3]
    for got, want in zip(events, want_events, strict=True):
        assert got["plan"] == want["plan"]
        assert got["params_after"] == want["params_after"]
    logged = (workdir / "growth_events.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in logged] == [1, 3]

    # A finished run is reported as finished, and left as it is.
    before = (workdir / "metrics.csv").read_bytes()
    assert train.main(["--workdir", str(workdir), "--resume"]) == 0
    assert "finished run; nothing to resume" in capsys.readouterr().out
    assert (workdir / "metrics.csv").read_bytes() == before


def test_resume_message_says_what_the_backup_holds(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    assert train.resume_message(tmp_path, 9) == (
        f"Resuming {tmp_path} after epoch 0 of 9 from its backup, no growth "
        "event to replay."
    )
    (backup / "training_metadata.json").write_text('{"epoch": 5}')
    state = {"history": [{"epoch": 2}, {"epoch": 4}], "initial_lr": None}
    (backup / "growth_state.json").write_text(json.dumps(state))
    assert train.resume_message(tmp_path, 9) == (
        f"Resuming {tmp_path} after epoch 5 of 9 from its backup, replaying "
        "its 2 growth event(s) after epoch(s) 2, 4 first."
    )
