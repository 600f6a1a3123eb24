"""The paper's Figure 2: negative splitting eigenvalues, neuron by neuron."""

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

Y_LABEL = "smallest eigenvalue\n(negative ones only)"


def _as_layers(name: str, eigenvalues) -> dict[str, np.ndarray]:
    """`{layer: values}` from a dict (of values or pairs) or one array."""
    if not isinstance(eigenvalues, Mapping):
        eigenvalues = {"eigenvalues": eigenvalues}
    layers = {}
    for layer, values in eigenvalues.items():
        values = values[0] if isinstance(values, tuple) else values
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


def _as_chosen(name: str, chosen, layers: dict) -> dict[str, np.ndarray]:
    """`{layer: neuron indices}`, every index a neuron of its layer."""
    if chosen is None:
        return {}
    if not isinstance(chosen, Mapping):
        raise ValueError(
            f"Argument `{name}` must be a dict of neuron indices per layer. "
            f"Received: {name} of type {type(chosen).__name__}"
        )
    result = {}
    for layer, indices in chosen.items():
        indices = np.asarray(indices, dtype="int64").reshape(-1)
        size = layers[layer].size if layer in layers else 0
        if indices.size and (indices.min() < 0 or indices.max() >= size):
            raise ValueError(
                f"Argument `{name}` must give indices of neurons of the "
                f"plotted layers. Received: {name}[{layer!r}]="
                f"{indices.tolist()} for a layer of {size} neurons"
            )
        result[layer] = indices
    return result


def layer_type(name: str) -> str:
    """The word after the last underscore of a layer name (`qkv`, `fc1`)."""
    return name.rsplit("_", 1)[-1]


def negative_eigenvalues_figure(
    eigenvalues,
    *,
    layer: str | None = None,
    other=None,
    labels: Sequence[str] = ("first event", "last event"),
    title: str | None = None,
    chosen=None,
    other_chosen=None,
):
    """The `Figure` that `plot_negative_eigenvalues` saves (same arguments)."""
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
    marks = [_as_chosen("chosen", chosen, moments[0])]
    if other is not None:
        marks.append(_as_chosen("other_chosen", other_chosen, moments[1]))
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "`plot_negative_eigenvalues` needs matplotlib, an optional "
            "dependency: `pip install matplotlib` (or the `train` extra)."
        ) from error
    columns_of = {}
    for name in names:
        columns_of.setdefault(layer_type(name), []).append(name)
    rows = max(len(group) for group in columns_of.values())
    columns = len(columns_of) * len(moments)
    figure = Figure(figsize=(3.2 * columns, 2.4 * rows + 0.8))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for column, group in enumerate(columns_of.values()):
        # One vertical scale per layer type, across moments.
        lowest = min(float(np.min(m[name])) for name in group for m in moments)
        bottom = min(lowest, -1e-12) * 1.08
        for row in range(rows):
            for which in range(len(moments)):
                ax = axes[row][column * len(moments) + which]
                if row >= len(group):
                    ax.set_visible(False)
                    continue
                name = group[row]
                label = None if len(moments) == 1 else labels[which]
                mark = marks[which].get(name, np.zeros(0, "int64"))
                _draw_layer(ax, name, moments[which][name], mark, label)
                ax.set_ylim(bottom, 0.0)
                if column == 0 and which == 0:
                    ax.set_ylabel(Y_LABEL, fontsize=7)
    marked = any(mark.size for m in marks for mark in m.values())
    if marked:
        entries = [ax.get_legend_handles_labels() for ax in axes.flat]
        first = next(((h[:1], t[:1]) for h, t in entries if h), ([], []))
        figure.legend(*first, loc="lower center", fontsize=8, frameon=False)
    if title:
        figure.suptitle(title)
    # Room at the bottom for the legend, below the axis labels.
    figure.tight_layout(rect=(0, 0.05 if marked else 0, 1, 1))
    return figure


def _draw_layer(ax, name, values, chosen, moment_label) -> None:
    negative = np.minimum(values, 0.0)
    colors = np.full(negative.size, "tab:blue", dtype=object)
    colors[chosen] = "tab:red"
    ax.bar(np.arange(negative.size), negative, width=1.0, color=colors)
    if chosen.size:
        style = dict(marker="v", s=14, color="tab:red", zorder=3)
        ax.scatter(chosen, negative[chosen], label="chosen for growth", **style)
    count = int(np.sum(negative < 0))
    heading = name if moment_label is None else f"{name}: {moment_label}"
    ax.set_title(
        f"{heading}\n{count} of {negative.size} negative, {chosen.size} chosen",
        fontsize=8,
    )
    ax.tick_params(labelsize=6)
    ax.set_xlabel("neuron index", fontsize=7)


def plot_negative_eigenvalues(
    eigenvalues,
    path,
    *,
    layer: str | None = None,
    other=None,
    labels: Sequence[str] = ("first event", "last event"),
    title: str | None = None,
    chosen=None,
    other_chosen=None,
) -> Path:
    """Saves a PNG of each neuron's negative splitting eigenvalue.

    As in Figure 2 of Guna et al. (2024): one bar per neuron down to its
    smallest splitting eigenvalue where negative; `chosen` neurons in red
    with a marker. One column per layer type (the name's last word: `qkv`,
    `proj`, `fc1`, `fc2`), sharing a vertical scale; with `other` (the
    same layers at another moment) the two moments side by side.

    Args:
        eigenvalues: `{layer_name: (units,) array}` as returned by
            `splitting_eigenvalues` (or `(values, vectors)` pairs), or one
            1-D array.
        path: Where to write the PNG.
        layer: The layer to draw; None draws every layer.
        other: Optional second moment, same form as `eigenvalues`.
        labels: Titles of the two moments (used only with `other`).
        title: Figure title, e.g. the run and the event's epoch.
        chosen: Optional `{layer_name: neuron indices}` to mark, e.g. the
            plan `select_neurons` returned for these eigenvalues.
        other_chosen: The same for `other`.

    Returns:
        The path of the written PNG.

    Raises:
        ValueError: on empty or non-1-D values, an unknown `layer`, or
            indices in `chosen` that are not neurons of their layer.
        ImportError: when matplotlib is not installed.

    Examples:
        ```python
        import numpy as np

        scores = {"block_0_attn_qkv": np.array([-0.3, 0.1, -0.05, 0.2])}
        plot_negative_eigenvalues(
            scores,
            "event.png",
            chosen={"block_0_attn_qkv": [0]},
            title="my_run: growth event after epoch 8",
        )
        ```
    """
    options = dict(locals())  # the arguments, passed on to the figure
    path = Path(options.pop("path"))
    negative_eigenvalues_figure(**options).savefig(path, format="png", dpi=100)
    return path
