"""What a run leaves in its work directory: metrics, events, plots, summary.

Layout of a run directory:

- `config.json`: the resolved config.
- `metrics.csv`: one row per epoch (`epoch`, `num_params`, `lr` and the
  Keras logs: loss, accuracy, top5 and their `val_` forms).
- `growth_events.json`: the growth callback's events.
- `model.keras`: the final model.
- `params.png`, `curves.png`: parameters per epoch with growth events
  marked; accuracy and loss.
- `eigenvalues_first_event.png`, `eigenvalues_last_event.png`: Figure-2
  style negative splitting eigenvalues at the first and last event, the
  chosen neurons marked (written when the event happens).
- `summary.json`, `summary.md`: the Table-1-shaped result.

`training.compare` adds `comparison.png`: the grown and the uniform run on
the same axes.
"""

import csv
import json
import os
from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

SUMMARY_COLUMNS = (
    ("name", "Run"),
    ("base_params", "Base params"),
    ("final_params", "Final params"),
    ("base_gflops", "Base GFLOPs"),
    ("final_gflops", "Final GFLOPs"),
    ("top1", "Top-1 (%)"),
    ("top5", "Top-5 (%)"),
)


def to_json(value):
    """`value` with NumPy scalars and arrays turned into plain Python."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(path: Path, value) -> None:
    Path(path).write_text(json.dumps(to_json(value), indent=2) + "\n")


def write_metrics(path: str | Path, rows: list[dict]) -> None:
    """Writes `rows` as a CSV file, all at once: a run stopped while
    writing leaves the previous file whole."""
    path = Path(path)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


class MetricsRecorder(keras.callbacks.Callback):
    """Writes `metrics.csv` after every epoch, with the parameter count.

    The count is read after the epoch's other callbacks ran, so an epoch
    that ends with a growth event shows the grown size. Place it after the
    growth callback.

    Args:
        path: The CSV file to (re)write.
        rows: Rows of epochs already trained (a resumed run's), kept
            before the new ones.
    """

    def __init__(self, path: str | Path, rows: list[dict] | None = None):
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict] = list(rows or [])

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "num_params": self.model.count_params()}
        optimizer = self.model.optimizer
        lr = optimizer.learning_rate
        row["lr"] = float(keras.ops.convert_to_numpy(lr))
        for key, value in (logs or {}).items():
            if key != "num_params":
                row[key] = float(value)
        self.rows.append(row)
        write_metrics(self.path, self.rows)


class GrowthLog(keras.callbacks.Callback):
    """Prints each growth event of `policy` where a reader finds it.

    The event is printed once the epoch's own line is out (at the next
    epoch's start, or at the end of training), after a blank line and
    starting with `>>> growth`, so that it stands out in a log of one line
    per epoch and can be found with `grep '>>> growth'`. Give the growth
    callback `verbose=0`.

    Args:
        policy: The `GrowthCallback` whose `history` is printed.
    """

    PREFIX = ">>> growth"

    def __init__(self, policy):
        super().__init__()
        self.policy = policy
        self.printed = None

    def on_train_begin(self, logs=None):
        if self.printed is None:
            self.printed = len(self.policy.history)

    def _print_new(self):
        for event in self.policy.history[self.printed :]:
            print(f"\n{self.PREFIX} {describe_event(event)}\n", flush=True)
        self.printed = len(self.policy.history)

    def on_epoch_begin(self, epoch, logs=None):
        self._print_new()

    def on_train_end(self, logs=None):
        self._print_new()


def describe_event(event: dict) -> str:
    """One line on a growth event (a `GrowthCallback.history` entry)."""
    epoch = event["epoch"]
    if not event["neurons"]:
        return (
            f"after epoch {epoch}: no neuron eligible within the budget of "
            f"{event['budget']:,.0f} parameters; the model is unchanged."
        )
    line = (
        f"after epoch {epoch}: {sum(event['neurons'].values())} neurons "
        f"in {len(event['neurons'])} layers grew, parameters "
        f"{event['params_before']:,} -> {event['params_after']:,}"
    )
    if "scores" in event:
        lowest = min(s["min"] for s in event["scores"].values())
        line += f" (most negative score {lowest:.3g})"
    return line + "."


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a `metrics.csv`: `epoch` and `num_params` as integers,
    the other columns as floats."""
    with Path(path).open(newline="") as file:
        rows = list(csv.DictReader(file))
    whole = ("epoch", "num_params")
    return [
        {k: int(v) if k in whole else float(v) for k, v in row.items() if v}
        for row in rows
    ]


def event_epochs(events: list[dict]) -> list[int]:
    """Epochs (counted from 1) at whose end growth events happened."""
    return [int(event["epoch"]) for event in events]


def _whole_epochs(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_label(name: str, events: list[dict]) -> str:
    """`name` and whether it grew: "tiny (grown, 3 events)", or uniform."""
    if not events:
        return f"{name} (uniform, no growth)"
    count = len(events)
    return f"{name} (grown, {count} event{'s' if count > 1 else ''})"


def params_figure(rows: list[dict], events: list[dict], name: str = "run"):
    """Parameters per epoch, growth events marked by dashed lines."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["num_params"] for r in rows], marker=".", label=name)
    for i, epoch in enumerate(event_epochs(events)):
        label = "growth event (end of epoch)" if i == 0 else None
        ax.axvline(epoch, color="tab:red", linestyle="--", label=label)
    _whole_epochs(ax)
    ax.set_ylabel("parameters")
    ax.set_title(f"Parameters during training: {run_label(name, events)}")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_params(
    rows: list[dict], events: list[dict], path: Path, name: str = "run"
) -> None:
    """Saves `params_figure` as a PNG."""
    _save(params_figure(rows, events, name), path)


def curves_figure(rows: list[dict], events: list[dict], name: str = "run"):
    """Accuracy and loss per epoch (train and test), events marked."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    epochs = [r["epoch"] for r in rows]
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for key, label in (
            (metric, "training batches"),
            (f"val_{metric}", "held-out test set"),
        ):
            if key in rows[0]:
                ax.plot(epochs, [r.get(key) for r in rows], label=label)
        for i, epoch in enumerate(event_epochs(events)):
            label = "growth event" if i == 0 else None
            ax.axvline(
                epoch, color="tab:red", linestyle="--", alpha=0.5, label=label
            )
        _whole_epochs(ax)
        ax.set_ylabel(metric)
        ax.set_title(metric.capitalize())
        ax.legend()
    fig.suptitle(run_label(name, events))
    fig.tight_layout()
    return fig


def plot_curves(
    rows: list[dict], events: list[dict], path: Path, name: str = "run"
) -> None:
    """Saves `curves_figure` as a PNG."""
    _save(curves_figure(rows, events, name), path)


def comparison_figure(runs: list[tuple[str, list[dict], list[dict]]]):
    """Test accuracy and parameters against epochs, runs on the same axes.

    Each run's line is labelled with its name and whether it grew
    (`run_label`); dashed lines of the run's colour mark its growth events.

    Args:
        runs: `(name, metrics rows, growth events)` per run.

    Returns:
        The matplotlib figure (two panels: accuracy, parameters).
    """
    fig, (accuracy, params) = plt.subplots(1, 2, figsize=(10, 3.8))
    for index, (name, rows, events) in enumerate(runs):
        color = f"C{index}"
        epochs = [r["epoch"] for r in rows]
        label = run_label(name, events)
        accuracy.plot(
            epochs,
            [100 * r["val_accuracy"] for r in rows],
            color=color,
            label=label,
        )
        params.plot(
            epochs,
            [r["num_params"] for r in rows],
            color=color,
            marker=".",
            label=label,
        )
        for ax in (accuracy, params):
            for i, epoch in enumerate(event_epochs(events)):
                label = f"growth events of {name}" if i == 0 else None
                ax.axvline(
                    epoch, color=color, linestyle="--", alpha=0.4, label=label
                )
    accuracy.set_ylabel("test top-1 accuracy (%)")
    accuracy.set_title("Top-1 on the held-out test set")
    params.set_ylabel("parameters")
    params.set_title("Model size")
    for ax in (accuracy, params):
        _whole_epochs(ax)
        ax.legend(fontsize=8)
    fig.suptitle("The grown run against the uniform one, epoch by epoch")
    fig.tight_layout()
    return fig


def plot_comparison(runs, path: Path) -> None:
    """Saves `comparison_figure(runs)` as a PNG."""
    _save(comparison_figure(runs), path)


def summary_row(
    name: str,
    base_params: int,
    final_params: int,
    base_flops: int,
    final_flops: int,
    scores: dict,
) -> dict:
    """One row of the Table-1-shaped summary (accuracies in percent)."""
    return {
        "name": name,
        "base_params": int(base_params),
        "final_params": int(final_params),
        "base_gflops": base_flops / 1e9,
        "final_gflops": final_flops / 1e9,
        "top1": 100 * float(scores["accuracy"]),
        "top5": 100 * float(scores["top5"]),
    }


def _cell(key: str, value) -> str:
    if key.endswith("params"):
        return f"{value:,}"
    if key.endswith("gflops"):
        return f"{value:.4g}"
    if key in ("top1", "top5"):
        return f"{value:.2f}"
    return str(value)


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table shaped like the paper's Table 1."""
    header = "| " + " | ".join(title for _, title in SUMMARY_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in SUMMARY_COLUMNS) + "|"
    lines = [header, rule]
    for row in rows:
        cells = [_cell(key, row[key]) for key, _ in SUMMARY_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(workdir: Path, row: dict, plots: list[Path]) -> Path:
    """Writes `summary.json` and `summary.md` (table and plot links)."""
    write_json(workdir / "summary.json", row)
    text = f"# {row['name']}\n\n" + markdown_table([row]) + "\n"
    text += "".join(f"![{p.stem}]({p.name})\n" for p in plots)
    path = workdir / "summary.md"
    path.write_text(text)
    return path


def plot_event_eigenvalues(
    scores: dict, chosen: dict, path: Path, *, run: str, epoch: int
) -> Path:
    """Figure-2 plot of one growth event's splitting eigenvalues.

    Args:
        scores: `{layer_name: lambda_min per neuron}` measured at the event
            (before it grew).
        chosen: `{layer_name: neuron indices}` the event chose.
        path: The PNG to write.
        run: The run's name, for the title.
        epoch: The epoch (from 1) at whose end the event ran.

    Returns:
        `path`.
    """
    from training.eigenvalue_plot import plot_negative_eigenvalues

    return plot_negative_eigenvalues(
        {name: np.asarray(v) for name, v in scores.items()},
        path,
        chosen=chosen,
        title=(
            f"{run}: splitting eigenvalues at the growth event after epoch "
            f"{epoch} ({sum(len(i) for i in chosen.values())} neurons "
            "chosen, in red)"
        ),
    )
