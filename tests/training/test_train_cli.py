"""The training CLI: a short run's directory, and bad input."""

import csv
import json
import sys

import keras
import numpy as np
import pytest

from tests.subprocess_utils import run_python
from training import train

SHORT = [
    "--set",
    "train.epochs=2",
    "--set",
    "train.steps_per_epoch=3",
    "--set",
    "growth.enabled=False",
]


def test_short_run_writes_the_run_directory(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert train.main(["--workdir", str(workdir), *SHORT]) == 0
    out = capsys.readouterr().out
    assert "| digits_tiny |" in out and str(workdir / "params.png") in out
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


def test_single_device_run_grows_in_place(tmp_path):
    workdir = tmp_path / "run"
    argv = ["--workdir", str(workdir), "--set", "distribution=none"]
    assert train.main([*argv, *GROWING]) == 0
    summary = _check_grown_run(workdir)
    assert summary["distribution"] == "none" and summary["replicas"] == 1


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
