"""What a growth event records and prints: its summary, log line and size."""

import json

import keras
import numpy as np


def score_summary(values) -> dict:
    """Min, median, number negative and number of a layer's scores."""
    values = np.asarray(values)
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "num_negative": int(np.sum(values < 0)),
        "num_neurons": int(values.size),
    }


def log_num_params(model: keras.Model, logs: dict | None) -> None:
    """Sets `logs["num_params"]`, the model's size, for the epoch's logs."""
    if logs is not None:
        logs["num_params"] = int(model.count_params())


def append_event(path, event: dict) -> None:
    """Appends `event` to the file at `path` as one JSON line."""
    with open(path, "a") as f:
        f.write(json.dumps(event) + "\n")


def event_line(event: dict) -> str:
    """The line `GrowthCallback(verbose=1)` prints for `event`."""
    epoch = event["epoch"]
    if not event["neurons"]:
        return (
            f"GrowthCallback: epoch {epoch}: no neuron eligible within "
            f"budget {event['budget']:,.0f}; no growth."
        )
    line = (
        f"GrowthCallback: epoch {epoch}: grew "
        f"{sum(event['neurons'].values())} neurons in "
        f"{len(event['neurons'])} layers, parameters "
        f"{event['params_before']:,} -> {event['params_after']:,}"
    )
    if "scores" in event:
        lowest = min(s["min"] for s in event["scores"].values())
        line += f", lowest score {lowest:.3g}"
    return line + "."
