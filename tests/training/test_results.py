"""Run-directory results: metrics CSV, plots, tables; compare's checks."""

import csv

import keras
import numpy as np
import pytest

from training import compare, results


def test_metrics_recorder_writes_params_and_logs(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.25), loss="mse")
    recorder = results.MetricsRecorder(tmp_path / "metrics.csv")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    model.fit(x, y, epochs=2, callbacks=[recorder], verbose=0)
    with (tmp_path / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(int(r["num_params"]) == 8 for r in rows)
    assert float(rows[0]["lr"]) == pytest.approx(0.25)
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])


def test_plots_are_pngs(tmp_path):
    rows = [
        {
            "epoch": e,
            "num_params": 100 + 10 * (e > 2),
            "accuracy": 0.1 * e,
            "val_accuracy": 0.1 * e,
            "loss": 1.0 / e,
            "val_loss": 1.0 / e,
        }
        for e in range(1, 5)
    ]
    events = [{"epoch": 1}]
    assert results.event_epochs(events) == [1]
    results.plot_params(rows, events, tmp_path / "p.png")
    results.plot_curves(rows, events, tmp_path / "c.png")
    for name in ("p.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert results.plot_event_eigenvalues(None, None, tmp_path) == []


def test_table_one_shaped_summary(tmp_path):
    row = results.summary_row(
        "grown",
        11_071_204,
        19_400_000,
        2_300_000_000,
        4_000_000_000,
        {"accuracy": 0.8123, "top5": 0.95},
    )
    table = results.markdown_table([row])
    assert table.splitlines()[0] == (
        "| Run | Base params | Final params | Base GFLOPs | Final GFLOPs "
        "| Top-1 (%) | Top-5 (%) |"
    )
    assert table.splitlines()[2] == (
        "| grown | 11,071,204 | 19,400,000 | 2.3 | 4 | 81.23 | 95.00 |"
    )
    path = results.write_summary(tmp_path, row, [tmp_path / "params.png"])
    assert "![params](params.png)" in path.read_text()
    assert (tmp_path / "summary.json").exists()


def test_to_json_converts_numpy():
    value = {"a": np.float32(1.5), "b": np.arange(2), 3: (np.int64(4),)}
    assert results.to_json(value) == {"a": 1.5, "b": [0, 1], "3": [4]}


def test_compare_rejects_bad_input(tmp_path, capsys):
    workdir = tmp_path / "cmp"
    args = ["--workdir", str(workdir)]
    assert compare.main([*args, "--set", "growth.enabled=False"]) == 2
    assert "growing config" in capsys.readouterr().err
    assert compare.main([*args, "--set", "nope=1"]) == 2
    assert "Unknown config key" in capsys.readouterr().err
    assert not workdir.exists()
    workdir.mkdir()
    assert compare.main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
