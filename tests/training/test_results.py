"""Run-directory results: metrics CSV, plots, tables; compare's checks."""

import csv

import keras
import matplotlib.pyplot as plt
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


def _rows(epochs, params=lambda e: 100 + 10 * (e > 2), accuracy=0.1):
    return [
        {
            "epoch": e,
            "num_params": params(e),
            "accuracy": accuracy * e,
            "val_accuracy": accuracy * e,
            "loss": 1.0 / e,
            "val_loss": 1.0 / e,
        }
        for e in range(1, epochs + 1)
    ]


def _whole_epoch_ticks(ax):
    ax.figure.canvas.draw()
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_plots_are_pngs_with_whole_epoch_ticks(tmp_path):
    rows = _rows(4)
    events = [{"epoch": 1}]
    assert results.event_epochs(events) == [1]
    results.plot_params(rows, events, tmp_path / "p.png")
    results.plot_curves(rows, events, tmp_path / "c.png")
    for name in ("p.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    # Four epochs: matplotlib's default ticks would be 1.0, 1.5, ..., 4.0.
    figures = [results.params_figure(rows, events, "tiny")]
    figures.append(results.curves_figure(rows, events, "tiny"))
    assert figures[0].axes[0].get_title() == (
        "Parameters during training: tiny (grown, 1 event)"
    )
    assert figures[1]._suptitle.get_text() == "tiny (grown, 1 event)"
    for ax in figures[1].axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels == [
            "training batches",
            "held-out test set",
            "growth event",
        ]
    uniform = results.params_figure(rows, [], "tiny_uniform")
    assert uniform.axes[0].get_title().endswith("(uniform, no growth)")
    plt.close(uniform)
    for figure in figures:
        for ax in figure.axes:
            assert ax.get_xlabel() == "epoch"
            _whole_epoch_ticks(ax)
        plt.close(figure)


def test_comparison_figure_puts_both_runs_on_the_same_axes(tmp_path):
    grown = _rows(5, params=lambda e: 100 + 30 * (e >= 2), accuracy=0.15)
    uniform = _rows(5, params=lambda e: 190)
    events = [{"epoch": 2}]
    figure = results.comparison_figure(
        [("tiny", grown, events), ("tiny_uniform", uniform, [])]
    )
    accuracy, params = figure.axes
    assert accuracy.get_ylabel() == "test top-1 accuracy (%)"
    assert params.get_ylabel() == "parameters"
    for ax, key, scale in ((accuracy, "val_accuracy", 100), (params, "", 1)):
        lines = {line.get_label(): line for line in ax.get_lines()}
        names = {
            "tiny (grown, 1 event)": grown,
            "tiny_uniform (uniform, no growth)": uniform,
        }
        assert set(lines) >= set(names)
        for name, rows in names.items():
            x, y = lines[name].get_data()
            assert list(x) == [r["epoch"] for r in rows]
            column = key or "num_params"
            np.testing.assert_allclose(y, [scale * r[column] for r in rows])
        assert list(lines["growth events of tiny"].get_xdata()) == [2, 2]
        _whole_epoch_ticks(ax)
    plt.close(figure)
    results.plot_comparison([("tiny", grown, events)], tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_event_eigenvalue_plot_names_the_run_and_epoch(tmp_path, rng):
    scores = {"block_0_attn_qkv": rng.normal(size=6)}
    path = results.plot_event_eigenvalues(
        scores,
        {"block_0_attn_qkv": [1, 4]},
        tmp_path / "e.png",
        run="digits_tiny",
        epoch=8,
    )
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_metrics_round_trip_through_read_metrics(tmp_path):
    rows = _rows(3)
    with (tmp_path / "m.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert results.read_metrics(tmp_path / "m.csv") == rows


class _Policy:
    history = []


def test_growth_log_sets_events_apart_after_the_epoch_line(capsys):
    policy = _Policy()
    policy.history = [{"epoch": 1, "neurons": {}, "budget": 4000.0}]
    log = results.GrowthLog(policy)
    log.on_train_begin()  # Events before training (a resumed run) are old.
    print("epoch 2 line")
    policy.history.append(
        {
            "epoch": 2,
            "neurons": {"a": 3, "b": 2},
            "budget": 4000.0,
            "params_before": 1000,
            "params_after": 1500,
            "scores": {"a": {"min": -0.25}, "b": {"min": -0.5}},
        }
    )
    log.on_epoch_begin(2)
    print("epoch 3 line")
    policy.history.append({"epoch": 3, "neurons": {}, "budget": 10.0})
    log.on_train_end()
    log.on_train_end()
    assert capsys.readouterr().out.split("\n") == [
        "epoch 2 line",
        "",
        ">>> growth after epoch 2: 5 neurons in 2 layers grew, parameters "
        "1,000 -> 1,500 (most negative score -0.5).",
        "",
        "epoch 3 line",
        "",
        ">>> growth after epoch 3: no neuron eligible within the budget of "
        "10 parameters; the model is unchanged.",
        "",
        "",
    ]


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
