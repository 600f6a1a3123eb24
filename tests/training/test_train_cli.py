"""The training CLI: a short run's directory, and bad input."""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_depthhet.growth import backup
from tests.subprocess_utils import REPO_ROOT, run_python
from training import train

SHORT = [
    "--set",
    "train.epochs=2",
    "--set",
    "train.steps_per_epoch=3",
    "--set",
    "growth.enabled=False",
]


@pytest.mark.integration
@pytest.mark.slow
def test_short_run_writes_the_run_directory(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert train.main(["--workdir", str(workdir), *SHORT]) == 0
    out = capsys.readouterr().out
    assert "| digits_tiny |" in out and str(workdir / "params.png") in out
    assert "digits_tiny: 20,474 parameters, not growing; 2 epochs" in out
    config = json.loads((workdir / "config.json").read_text())
    assert config["train"]["epochs"] == 2
    with (workdir / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"num_params", "loss", "val_accuracy", "val_top5", "lr"} <= set(
        rows[0]
    )
    assert int(rows[0]["num_params"]) == 20_474
    assert json.loads((workdir / "growth_events.json").read_text()) == []
    for name in ("params.png", "curves.png"):
        assert (workdir / name).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["base_params"] == summary["final_params"] == 20_474
    assert summary["base_gflops"] == pytest.approx(343_456 / 1e9)
    assert 0 <= summary["top1"] <= summary["top5"] <= 100
    assert (
        "| Base params | Final params |" in (workdir / "summary.md").read_text()
    )
    model = keras.saving.load_model(workdir / "model.keras")
    assert model.count_params() == 20_474
    assert np.isfinite(model.predict(np.zeros((1, 8, 8, 1)), verbose=0)).all()


GROWING = [
    "--set",
    "train.epochs=3",
    "--set",
    "train.steps_per_epoch=2",
    "--set",
    "model.depth=1",
    "--set",
    "growth.warmup=2",
    "--set",
    "growth.interval=10",
    "--set",
    "growth.layer_threshold=0",
    "--set",
    "growth.analysis_batches=1",
]
"""Three short epochs of a one-block ViT (7,578 parameters), one growth
event at the end of epoch 2."""


def _check_grown_run(workdir) -> dict:
    events = json.loads((workdir / "growth_events.json").read_text())
    assert [e["epoch"] for e in events] == [2]
    (event,) = events
    assert event["params_before"] == 7_578
    assert event["params_after"] > 7_578 and sum(event["neurons"].values())
    with (workdir / "metrics.csv").open() as file:
        params = [int(r["num_params"]) for r in csv.DictReader(file)]
    # The event epoch's row shows the grown size, whichever path grew it.
    assert params == [7_578, event["params_after"], event["params_after"]]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["final_params"] == event["params_after"]
    assert "| Base params |" in (workdir / "summary.md").read_text()
    for name in ("params.png", "curves.png", "eigenvalues_last_event.png"):
        assert (workdir / name).read_bytes()[:4] == b"\x89PNG"
    model = keras.saving.load_model(workdir / "model.keras")
    assert model.count_params() == event["params_after"]
    return summary


@pytest.mark.integration
@pytest.mark.slow
def test_single_device_run_grows_in_place(tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = ["--workdir", str(workdir), "--set", "distribution=none"]
    assert train.main([*argv, *GROWING]) == 0
    summary = _check_grown_run(workdir)
    assert summary["distribution"] == "none" and summary["replicas"] == 1
    assert train.read_run_file(workdir)["status"] == "finished"
    # Output to a pipe: one line per epoch, the event set apart after its
    # epoch's line.
    lines = capsys.readouterr().out.splitlines()
    assert lines[lines.index("Epoch 1/3") - 1] == (
        "digits_tiny: 7,578 parameters, growth events after epoch 2; 3 "
        "epochs on 1,437 training images. Keras's val_* metrics are on the "
        "360 test images (the table's Top-1 and Top-5)."
    )
    epoch_2 = lines.index("Epoch 2/3")
    assert lines[epoch_2 + 1].startswith("2/2 - ")
    assert lines[epoch_2 + 2] == ""
    assert lines[epoch_2 + 3].startswith(">>> growth after epoch 2: ")
    assert lines[epoch_2 + 4 : epoch_2 + 6] == ["", "Epoch 3/3"]
    assert sum(line.startswith(">>> growth") for line in lines) == 1
    assert not any("━" in line for line in lines)


TWO_DEVICES = """
import contextlib, io, json
import keras
if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
from training import train
failures = []
for override in BAD:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = train.main(["--workdir", WORKDIR + "-bad", "--set", override])
    failures.append([status, err.getvalue()])
code = train.main(["--workdir", WORKDIR, *GROWING])
print(json.dumps(dict(failures=failures, code=code)))
"""

BAD_ON_TWO_DEVICES = {
    "train.batch_size=63": ["divisible", "63"],
    # 629 test images end with a batch of 53, which JAX cannot split.
    "data.test_fraction=0.35": ["batch of 53", "2 replicas"],
}

TWO_DEVICE_ENV = {
    "jax": {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    "tensorflow": {},
}


@pytest.mark.integration
@pytest.mark.slow
def test_two_devices_auto_trains_with_fit_with_growth(tmp_path):
    backend = keras.backend.backend()
    workdir = tmp_path / "run"
    bad = dict(BAD_ON_TWO_DEVICES)
    if backend == "tensorflow":  # Its strategies take uneven batches.
        del bad["data.test_fraction=0.35"]
    code = (
        TWO_DEVICES.replace("WORKDIR", repr(str(workdir)))
        .replace("GROWING", repr(GROWING))
        .replace("BAD", repr(list(bad)))
    )
    out = run_python(
        code, backend=backend, env=TWO_DEVICE_ENV[backend], timeout=300
    )
    for (status, err), fragments in zip(
        out["failures"], bad.values(), strict=True
    ):
        assert status == 2 and err.startswith("error: ")
        assert all(fragment in err for fragment in fragments), err
    assert not (tmp_path / "run-bad").exists()
    assert out["code"] == 0
    summary = _check_grown_run(workdir)
    expected = "mirrored" if backend == "tensorflow" else "data_parallel"
    assert summary["distribution"] == expected and summary["replicas"] == 2
    events = json.loads((workdir / "growth_events.json").read_text())
    assert set(events[0]["seconds"]) == {"analysis", "rebuild"}


def _fails(capsys, argv, *fragments):
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    for fragment in fragments:
        assert fragment in err
    return err


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    workdir = tmp_path / "run"
    args = ["--workdir", str(workdir)]
    _fails(capsys, [*args, "--set", "train.epoch=3"], "train.epoch")
    _fails(capsys, [*args, "--config", "nope"], "nope", "digits_tiny")
    _fails(capsys, [*args, "--set", "model.dim=33"], "dim")
    _fails(
        capsys,
        [
            *args,
            "--config",
            "cifar100_deit_s",
            "--set",
            f"data.data_dir={tmp_path}",
        ],
        "not prepared",
        "download_and_prepare",
    )
    assert not workdir.exists()
    workdir.mkdir()
    _fails(capsys, args, "--overwrite")
    assert list(workdir.iterdir()) == []


def test_bad_distribution_exits_2_before_training(tmp_path, capsys):
    workdir = tmp_path / "run"
    other = "mirrored" if keras.backend.backend() == "jax" else "data_parallel"
    cases = {other: repr(other), "bogus": "'bogus'", "None": "None"}
    for value, shown in cases.items():
        argv = ["--workdir", str(workdir), "--set", f"distribution={value}"]
        _fails(capsys, argv, f"distribution={shown}")
    assert not workdir.exists()


def test_missing_optional_dependency(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_cv", None)
    argv = [
        "--workdir",
        str(tmp_path / "run"),
        "--set",
        "augment.rand_augment=True",
    ]
    _fails(capsys, argv, "keras_cv", "pip install")
    assert not (tmp_path / "run").exists()


LIGHT_CHILD = """
import contextlib, io, json, runpy, sys
sys.argv = ARGV
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as exit:
        status = exit.code
heavy = sorted(
    {m.split(".")[0] for m in sys.modules} & {"keras", "tensorflow", "jax"}
)
print(json.dumps([status, out.getvalue(), err.getvalue(), heavy]))
"""


def _run_light(module, argv) -> tuple[int, str, str, list[str]]:
    """`python -m MODULE ARGV` in a fresh interpreter: the exit status,
    stdout, stderr, and which of Keras and the backends it imported."""
    code = LIGHT_CHILD.replace("ARGV", repr([module, *argv]))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def _unwritable(tmp_path):
    """A directory in which nothing can be created, even by root."""
    if os.geteuid() == 0:
        return "/proc/keras-depthhet-run"
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    return str(locked / "run")


ISSUE_VALUES = {
    "train.batch_size=0": "`train.batch_size` must be a positive integer. "
    "Received: train.batch_size=0",
    "train.epochs=1.5": "Received: train.epochs=1.5",
    "train.epochs=0": "Received: train.epochs=0",
    "train.epochs=-1": "Received: train.epochs=-1",
    "train.epochs=abc": "Received: train.epochs='abc'",
    "growth.enabled=no": "`growth.enabled` must be True or False. "
    "Received: growth.enabled='no'",
    "train.base_lr=fast": "`train.base_lr` must be a number > 0. "
    "Received: train.base_lr='fast'",
}
"""The bad values of issue 17 (and `train.epochs=abc`), with the message."""


@pytest.mark.integration
def test_help_and_bad_input_answer_before_any_backend_is_imported(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("a user's file\n")
    run = str(tmp_path / "run")
    cases = [
        ("training.train", ["--help"]),
        ("training.compare", ["--help"]),
        *(
            ("training.train", ["--workdir", run, "--set", value])
            for value in ISSUE_VALUES
        ),
        ("training.train", ["--workdir", run, "--config", "/etc/hostname"]),
        ("training.train", ["--workdir", _unwritable(tmp_path)]),
        ("training.train", ["--workdir", str(afile)]),
        ("training.train", ["--workdir", str(afile / "run")]),
        ("training.train", ["--workdir", run, "--bogus"]),
        ("training.compare", ["--workdir", run, "--set", "train.epochs=abc"]),
        ("training.compare", ["--set", "growth.enabled=False"]),
    ]
    outcomes = [_run_light(module, argv) for module, argv in cases]
    assert [heavy for *_, heavy in outcomes] == [[]] * len(cases)
    help_train, help_compare, *failures = outcomes
    assert help_train[0] == 0 and "--overwrite" in help_train[1]
    assert help_compare[0] == 0 and "--workdir" in help_compare[1]
    expected = [
        *ISSUE_VALUES.values(),
        "'/etc/hostname' is not a Python config module",
        "cannot be created",
        "exists and is not a directory",
        "is a file",
        "unrecognized arguments: --bogus",
        "Received: train.epochs='abc'",
        "needs a growing config",
    ]
    for (status, _, err, _), fragment in zip(failures, expected, strict=True):
        assert status == 2, err
        assert fragment in err, err
        if "unrecognized" not in fragment:  # argparse adds its usage.
            assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
    assert afile.read_text() == "a user's file\n"


def test_overwrite_refuses_a_directory_of_unrelated_files(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    (mine / "data").mkdir()
    (mine / "data" / "x.csv").write_text("1,2")
    argv = ["--workdir", str(mine), "--overwrite", *SHORT]
    _fails(capsys, argv, "not a run directory", "run.json")
    # A run.json of something else does not make it a run directory.
    (mine / "run.json").write_text('{"program": "other"}')
    _fails(capsys, argv, "not a run directory")
    assert sorted(p.name for p in mine.rglob("*")) == [
        "data",
        "run.json",
        "thesis.tex",
        "x.csv",
    ]
    assert (mine / "thesis.tex").read_text() == "years of work"


def _fake_run(workdir, *extra):
    workdir.mkdir(parents=True)
    train.write_run_file(workdir, "training.train", "finished")
    for name in ("config.json", "metrics.csv", *extra):
        (workdir / name).write_text("{}")
    (workdir / "backup").mkdir()
    return workdir


def test_overwrite_never_deletes_cwd_home_or_their_parents(
    tmp_path, capsys, monkeypatch
):
    run = _fake_run(tmp_path / "home" / "run")
    monkeypatch.chdir(run / "backup")
    for workdir in (".", "..", str(tmp_path)):
        argv = ["--workdir", workdir, "--overwrite", *SHORT]
        _fails(capsys, argv, "never deletes the current directory")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(run))
    argv = ["--workdir", str(run), "--overwrite", *SHORT]
    _fails(capsys, argv, "never deletes", "home directory")
    monkeypatch.setenv("HOME", str(run / "backup"))
    _fails(capsys, argv, "never deletes", "home directory")
    assert sorted(p.name for p in run.iterdir()) == [
        "backup",
        "config.json",
        "metrics.csv",
        "run.json",
    ]


def test_overwrite_refuses_a_run_directory_with_foreign_files(tmp_path, capsys):
    run = _fake_run(tmp_path / "run", "notes.txt")
    argv = ["--workdir", str(run), "--overwrite", *SHORT]
    _fails(capsys, argv, "did not write: ['notes.txt']")
    assert (run / "notes.txt").exists() and (run / "run.json").exists()
    (run / "notes.txt").unlink()
    # Inside `backup/` too: only the backup's own files are replaced.
    assert train.GROWTH_STATE_FILE == backup.GROWTH_STATE_FILE
    (run / "backup" / "latest.weights.h5").write_text("")
    (run / "backup" / "mine.txt").write_text("keep")
    _fails(capsys, argv, "did not write: ['backup']")
    assert (run / "backup" / "mine.txt").read_text() == "keep"
    (run / "backup" / "mine.txt").unlink()
    compare_run = tmp_path / "cmp"
    compare_run.mkdir()
    train.write_run_file(compare_run, "training.compare", "finished")
    _fails(capsys, ["--workdir", str(compare_run), "--overwrite"], "not a run")


def test_failed_start_leaves_nothing_later_failure_says_why(
    tmp_path, capsys, monkeypatch
):
    workdir = tmp_path / "new" / "nested" / "run"

    def fails_at_start(self, callbacks):
        raise KeyboardInterrupt

    monkeypatch.setattr(train.Experiment, "_fit_in_place", fails_at_start)
    assert train.main(["--workdir", str(workdir), *SHORT]) == 130
    assert list(tmp_path.iterdir()) == []

    def fails_after_an_epoch(self, callbacks):
        callbacks[0].rows.append({"epoch": 1})
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train.Experiment, "_fit_in_place", fails_after_an_epoch)
    with pytest.raises(OSError):
        train.main(["--workdir", str(workdir), *SHORT])
    info = train.read_run_file(workdir)
    assert info["status"] == "stopped"
    assert info["reason"] == "OSError: [Errno 28] No space left on device"
    assert (workdir / "config.json").exists()
    assert f"--workdir {workdir} --resume" in capsys.readouterr().err


def test_resume_refuses_what_it_cannot_continue(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    _fails(capsys, ["--workdir", str(mine), "--resume"], "is not one")
    _fails(capsys, ["--workdir", str(tmp_path / "none"), "--resume"], "not one")
    _fails(capsys, ["--resume"], "--resume takes", "no --workdir")
    run = _fake_run(tmp_path / "run")
    train.write_run_file(run, "training.train", "stopped")
    argv = ["--workdir", str(run), "--resume", "--set", "train.epochs=9"]
    _fails(capsys, argv, "nothing else", "--set")
    _fails(capsys, ["--workdir", str(run), "--resume"], "config.json")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
