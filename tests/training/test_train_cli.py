"""The training CLI: a short run's directory, and bad input."""

import csv
import json
import sys

import keras
import numpy as np
import pytest

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
