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
  style negative splitting eigenvalues at the first and last event.
- `summary.json`, `summary.md`: the Table-1-shaped result.
"""

import csv
import json
from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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


class MetricsRecorder(keras.callbacks.Callback):
    """Writes `metrics.csv` after every epoch, with the parameter count.

    The count is read after the epoch's other callbacks ran, so an epoch
    that ends with a growth event shows the grown size. Place it after the
    growth callback.

    Args:
        path: The CSV file to (re)write.
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "num_params": self.model.count_params()}
        optimizer = self.model.optimizer
        lr = optimizer.learning_rate
        row["lr"] = float(keras.ops.convert_to_numpy(lr))
        for key, value in (logs or {}).items():
            if key != "num_params":
                row[key] = float(value)
        self.rows.append(row)
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        with self.path.open("w", newline="") as file:
            writer = csv.DictWriter(file, columns)
            writer.writeheader()
            writer.writerows(self.rows)


def event_epochs(events: list[dict]) -> list[int]:
    """Epochs (counted from 1) at whose end growth events happened."""
    return [int(event["epoch"]) for event in events]


def plot_params(rows: list[dict], events: list[dict], path: Path) -> None:
    """Parameters per epoch, growth events marked by dashed lines."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["num_params"] for r in rows], marker=".")
    for i, epoch in enumerate(event_epochs(events)):
        label = "growth event" if i == 0 else None
        ax.axvline(epoch, color="tab:red", linestyle="--", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("parameters")
    ax.set_title("Parameters during training")
    if events:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(rows: list[dict], events: list[dict], path: Path) -> None:
    """Accuracy and loss per epoch (train and validation), events marked."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    epochs = [r["epoch"] for r in rows]
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for key, label in ((metric, "train"), (f"val_{metric}", "test")):
            if key in rows[0]:
                ax.plot(epochs, [r.get(key) for r in rows], label=label)
        for epoch in event_epochs(events):
            ax.axvline(epoch, color="tab:red", linestyle="--", alpha=0.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    first: dict | None, last: dict | None, workdir: Path
) -> list[Path]:
    """Figure-2 plots of the splitting eigenvalues at the first and last event.

    Args:
        first: `{layer_name: lambda_min per neuron}` measured at the first
            growth event (before it grew), or None without events.
        last: The same at the last event.
        workdir: Where `eigenvalues_{first,last}_event.png` go.

    Returns:
        The written PNG paths (none without events).
    """
    if first is None:
        return []
    from keras_depthhet.splitting import plot_negative_eigenvalues

    paths = []
    for label, scores in (("first", first), ("last", last)):
        path = workdir / f"eigenvalues_{label}_event.png"
        eigenvalues = {name: np.asarray(v) for name, v in scores.items()}
        plot_negative_eigenvalues(eigenvalues, path)
        paths.append(path)
    return paths
