"""The paper's Figure 2: negative splitting eigenvalues, neuron by neuron."""

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _as_layers(name: str, eigenvalues) -> dict[str, np.ndarray]:
    """`{layer: values}` from a dict (of values or pairs) or one array."""
    if isinstance(eigenvalues, Mapping):
        items = eigenvalues.items()
    else:
        items = [("eigenvalues", eigenvalues)]
    layers = {}
    for layer, values in items:
        if isinstance(values, tuple):
            values = values[0]
        array = np.asarray(values, dtype="float64")
        if array.ndim != 1 or array.size == 0:
            raise ValueError(
                f"Argument `{name}` must hold non-empty 1-D arrays of "
                f"eigenvalues. Received: {name}[{layer!r}] with shape "
                f"{array.shape}"
            )
        layers[layer] = array
    if not layers:
        raise ValueError(f"Argument `{name}` must not be empty. Received: {{}}")
    return layers


def _import_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "`plot_negative_eigenvalues` needs matplotlib, an optional "
            "dependency: `pip install matplotlib` (or keras-depthhet[plot])."
        ) from error
    return Figure, FigureCanvasAgg


def plot_negative_eigenvalues(
    eigenvalues,
    path,
    *,
    layer: str | None = None,
    other=None,
    labels: Sequence[str] = ("first event", "last event"),
    title: str | None = None,
) -> Path:
    """Saves a PNG of each neuron's negative splitting eigenvalue.

    As in Figure 2 of Guna et al. (2024): one bar per neuron of a layer,
    its height `min(lambda_min, 0)`, so the neurons that growth may choose
    stand out. With `other` (the same layers at another moment, e.g. the
    last growth event) the two moments are drawn side by side with the
    same vertical scale.

    Args:
        eigenvalues: `{layer_name: (units,) array}` as returned by
            `splitting_eigenvalues` (tuples `(values, vectors)` are
            accepted), or one 1-D array.
        path: Where to write the PNG.
        layer: The layer to draw; None draws every layer, in a grid.
        other: Optional second moment, same form as `eigenvalues`.
        labels: Titles of the two moments (the first used alone when
            `other` is None).
        title: Figure title.

    Returns:
        The path of the written PNG.

    Raises:
        ValueError: on empty or non-1-D values, or an unknown `layer`.
        ImportError: when matplotlib is not installed.
    """
    moments = [_as_layers("eigenvalues", eigenvalues)]
    if other is not None:
        moments.append(_as_layers("other", other))
    if isinstance(labels, str) or len(labels) < len(moments):
        raise ValueError(
            f"Argument `labels` must give {len(moments)} titles. "
            f"Received: labels={labels!r}"
        )
    names = list(moments[0]) if layer is None else [layer]
    for moment in moments:
        missing = [name for name in names if name not in moment]
        if missing:
            raise ValueError(
                f"Argument `layer` must name a layer present in every moment. "
                f"Missing: {missing}. Available: {list(moments[0])}. "
                f"Received: layer={layer!r}"
            )
    Figure, FigureCanvasAgg = _import_matplotlib()

    per_row = 4 if len(names) > 1 else 1
    rows = math.ceil(len(names) / per_row)
    columns = per_row * len(moments)
    figure = Figure(figsize=(3.2 * columns, 2.4 * rows + 0.6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, name in enumerate(names):
        row, col = divmod(index, per_row)
        lowest = min(float(np.min(m[name])) for m in moments)
        for which, moment in enumerate(moments):
            ax = axes[row][col * len(moments) + which]
            negative = np.minimum(moment[name], 0.0)
            ax.bar(np.arange(negative.size), negative, width=1.0)
            ax.set_ylim(min(lowest, -1e-12) * 1.05, 0.0)
            count = int(np.sum(negative < 0))
            heading = name if len(moments) == 1 else f"{name}: {labels[which]}"
            ax.set_title(f"{heading} ({count} < 0)", fontsize=8)
            ax.tick_params(labelsize=6)
            ax.set_xlabel("neuron", fontsize=7)
        axes[row][col * len(moments)].set_ylabel(
            "min(lambda_min, 0)", fontsize=7
        )
    for index in range(len(names), rows * per_row):
        row, col = divmod(index, per_row)
        for which in range(len(moments)):
            axes[row][col * len(moments) + which].set_visible(False)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png", dpi=100)
    return path
