"""Small-scale replication: heterogeneous growth against uniform scaling.

The paper's comparisons (Guna et al. 2024, arXiv 2402.12418) at the scale
of a 2-core CPU: the `digits_tiny` experiment (a tiny ViT on
scikit-learn's 8x8 digits, real data that ships with scikit-learn), each
arm trained with several seeds (the seed fixes the train/test split, the
data order, the initialisation and the random criterion's draws), reported
as mean +- standard deviation over seeds and as paired differences with
95 % confidence intervals.

1. Main comparison, six arms: (a) heterogeneous growth of the reduced
   model (splitting criterion), (b) the uniform full-width model, (c) the
   reduced model without growth, (d) growth with random neuron
   selection, (e) growth with the gradient-proxy criterion of the
   authors' code (`min(0, sum of the neuron's weight-gradient row)`),
   (f) the architecture that (a) grew with the same seed, freshly
   initialised and trained from scratch without growth (the paper's
   Table 2 protocol, on the same data). Two more arms, run only when
   named (`--arms`), use the authors' selection rule, the budget divided
   equally among the layer types (`budget_split="by_layer_type"`): (g)
   the splitting criterion and (h) the gradient proxy. The growing arms
   share the schedule and grow to the same `target_params`.
2. Scaling-interval ablation (the paper's Table 4 shape): growth every 3,
   6 or 9 epochs inside the same growth window, the per-event budget set
   so that every interval reaches the same target.
3. Base-reduction ablation (Table 3 shape): attention only, MLP only, or
   both halved in the base, each grown to the same target.

Usage:

    KERAS_BACKEND=tensorflow python -m benchmarks.replication \
        [--quick] [--seeds N] [--first-seed K] [--arms a,b,...] \
        [--out DIR] [--mnist DIR] \
        [--epochs N] [--test-fraction F] [--hours H] [--pilot]

The full mode (30 runs, about half an hour on a quiet 2-core CPU) writes
`benchmarks/results/replication.md`. `--quick` (a smoke run of a minute
or two) trains arms (a) and (b) of a one-block model for 2 short epochs
with one seed and writes only `benchmarks/results/quick/replication.md`.
The backend is the one Keras is configured with (`KERAS_BACKEND`).

`--mnist DIR` runs the main comparison (not the ablations) on the MNIST
test set instead (`mnist_tiny`: the 10,000 images of
`t10k-images-idx3-ubyte.gz` and `t10k-labels-idx1-ubyte.gz` in DIR,
split by the seed, 2,000 test images unless `--test-fraction` says
otherwise, the same tiny ViT on 7x7-pixel patches) and writes
`benchmarks/results/replication_mnist.md`. `--epochs N` scales the
34-epoch schedule (growth warm-up, interval and window, learning-rate
warm-up) to N epochs; a run with `--epochs` or `--test-fraction` writes
`replication_mnist_seeded.md` instead, and one of other arms than
(a) to (f) its own table beside it, named by its arms
(`replication_mnist_seeded_<arms>.md`: `--arms a,b` writes
`replication_mnist_seeded_ab.md`, `--arms a,e,g,h`
`replication_mnist_seeded_aegh.md`).

Each (arm, seed) is a unit of its own, trained seed by seed: with
`--out DIR` its run directory is `DIR/<arm>-seed<k>`, its log
`DIR/<arm>-seed<k>.log` and its result `DIR/<arm>-seed<k>.json`, beside
the run directory. Running the same command again reuses every finished
unit, continues an interrupted one from its last epoch (`--resume` of
the training CLI) and trains the rest, so a run cut off loses only the
epoch in progress; a unit directory made with other settings is refused.
Two processes may share one `--out` when their seeds differ
(`--first-seed K` trains seeds K to K+N-1); a last command over all the
seeds then reuses every unit and writes the report.
Without `--out`, run directories go to a temporary directory, deleted at
the end. `--hours H` starts no unit after H hours and reports the seeds
whose arms all finished.

`--pilot` measures, for the given settings, what the seeded comparison
needs: arms (a), (b) and (d) with `--seeds` seeds (default 3), the
standard deviation of the paired differences a - b and a - d, the time
per run, and from them the number of seeds for a 95 % confidence
interval of +-0.5 points on both differences and the time six arms
would take; it writes `benchmarks/results/replication_pilot.md`, one row
per settings (`--epochs`, `--test-fraction`), kept across pilot runs. A
pilot's units are the seeded comparison's units of the same settings and
`--out`, so they are reused.
"""

import argparse
import contextlib
import copy
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import RESULTS_DIR, write_result  # noqa: E402

TARGET_FRACTION = 0.89
"""Target size of the grown models as a fraction of the uniform model.

The paper's grown DeiT-S ends at 19.4M parameters, 89 % of the uniform
DeiT-S's 21.7M (Table 1); the growing arms here stop at the same
fraction of the uniform tiny ViT.
"""

LAYER_TYPES = ("qkv", "proj", "fc1", "fc2")
"""Growable layer types of a transformer block, as in the layer names."""

FULL_EPOCHS = 34
"""Epochs of the `digits_tiny` schedule that `--epochs` scales."""

GROWTH_WINDOW_END = 26
"""Last growth epoch of the full schedule (events after 8, 17 and 26)."""

INTERVALS = (3, 6, 9)
"""Scaling intervals of the ablation, in epochs."""

REDUCTIONS = (
    ("attention only", 0.5, 1.0),
    ("MLP only", 1.0, 0.5),
    ("both (default)", 0.5, 0.5),
)
"""Base reductions of the ablation: (label, attention_width, mlp_width)."""

MAIN_VARIANTS = (
    ("a", "grown, splitting criterion"),
    ("b", "uniform full width"),
    ("c", "reduced, no growth"),
    ("d", "grown, random neurons"),
    ("e", "grown, gradient proxy"),
    ("f", "architecture of (a), from scratch"),
    ("g", "grown, splitting criterion, budget by layer type"),
    ("h", "grown, gradient proxy, budget by layer type"),
)
"""The main comparison's arms: (key, label)."""

ARMS = tuple(key for key, _ in MAIN_VARIANTS)

DEFAULT_ARMS = ARMS[:6]
"""The arms a run trains unless `--arms` names others: (a) to (f)."""

PROXY_SCORE = "weight-gradient row sum"
"""The gradient proxy's score, as a unit's result records it: the sum of
the neuron's weight-gradient row without the bias gradient, the authors'
(a unit without it was scored with the former weight-and-bias sum)."""

PILOT_ARMS = ("a", "b", "d")
"""The arms whose paired differences the pilot measures."""

DIFFERENCES = (
    ("a", "b"),
    ("a", "d"),
    ("a", "c"),
    ("a", "e"),
    ("f", "b"),
    ("f", "a"),
    ("g", "h"),
    ("a", "g"),
    ("h", "e"),
)
"""Paired differences reported, `(x, y)` for x minus y; the first two are
the ones the seeded comparison is sized for; a - e and g - h compare the
splitting criterion with the authors' proxy under each budget split."""

CI_HALF_WIDTH = 0.5
"""Target half-width of the 95 % confidence intervals, in points."""

ARCHITECTURE_OF_A = "(architecture of arm a, same seed)"
"""Placeholder `model.architecture_from` of arm (f) until its seed runs."""


# ------------------------------------------------------------------ configs
def base_config(
    quick: bool,
    mnist: str | None = None,
    epochs: int | None = None,
    test_fraction: float | None = None,
) -> dict:
    """`digits_tiny`, or `mnist_tiny` reading MNIST from `mnist`.

    `epochs` scales the schedule (growth warm-up and interval, learning
    rate warm-up; the growth window scales in `growth_window`);
    `test_fraction` sets the held-out share. In quick mode one block, 2
    short epochs, one event.
    """
    from training.config import check_config, load_config

    config = load_config("mnist_tiny" if mnist else "digits_tiny")
    if mnist:
        config["data"]["data_dir"] = str(mnist)
    if test_fraction is not None:
        config["data"]["test_fraction"] = test_fraction
    if epochs is not None:
        scale = epochs / FULL_EPOCHS
        config["train"].update(
            epochs=epochs,
            warmup_epochs=max(
                1, round(config["train"]["warmup_epochs"] * scale)
            ),
        )
        for key in ("warmup", "interval"):
            config["growth"][key] = max(1, round(config["growth"][key] * scale))
    if quick:
        config["model"].update(depth=1)
        config["train"].update(epochs=2, warmup_epochs=1, steps_per_epoch=8)
        config["growth"].update(warmup=1, interval=9, analysis_batches=2)
    check_config(config)
    return config


def growth_window(config: dict) -> tuple[int, int]:
    """First and last epoch at whose end a growth event may run: epochs
    8 to 26 of 34, scaled to the config's epochs."""
    growth, epochs = config["growth"], config["train"]["epochs"]
    end = round(GROWTH_WINDOW_END * epochs / FULL_EPOCHS)
    last = min(end, epochs - 1)
    return growth["warmup"], max(growth["warmup"], last)


def event_epochs(config: dict) -> list[int]:
    """The event epochs inside the growth window."""
    first, last = growth_window(config)
    return list(range(first, last + 1, config["growth"]["interval"]))


_SIZES: dict = {}


def model_sizes(model_config: dict) -> tuple[int, int, int]:
    """Parameters, FLOPs per image and largest per-neuron growth cost."""
    import keras

    from keras_depthhet.models import vit
    from keras_depthhet.models.flops import count_flops
    from keras_depthhet.models.vit import growable_layers
    from training.config import vit_arguments

    key = json.dumps(model_config, sort_keys=True)
    if key not in _SIZES:
        model = vit(**vit_arguments(model_config))
        cost = max(layer.growth_cost(1) for layer in growable_layers(model))
        _SIZES[key] = (model.count_params(), count_flops(model), cost)
        del model
        keras.utils.clear_session()
    return _SIZES[key]


def uniform_params(config: dict) -> int:
    model = dict(config["model"], attention_width=1.0, mlp_width=1.0)
    return model_sizes(model)[0]


def target_params(config: dict) -> int:
    return int(round(TARGET_FRACTION * uniform_params(config), -2))


def grown(
    config: dict,
    *,
    criterion="splitting",
    budget_split="global",
    interval=None,
    attention_width=0.5,
    mlp_width=0.5,
) -> dict:
    """A growing config that reaches `target_params` in its window.

    The per-event budget is the parameters to add divided by the number of
    events in the growth window, plus the largest cost of one neuron (the
    selection stops before the neuron that would exceed the budget), so
    that the last event in the window reaches the target; the target caps
    every event. With `budget_split="by_layer_type"` the selection runs
    on each layer type's equal share and may stop short in each, so the
    largest cost is added once per layer type.
    """
    config = copy.deepcopy(config)
    config["model"].update(attention_width=attention_width, mlp_width=mlp_width)
    growth = config["growth"]
    growth.update(
        enabled=True, criterion=criterion, budget_split=budget_split
    )
    if interval is not None:
        growth["interval"] = interval
    target = target_params(config)
    base, _, cost = model_sizes(config["model"])
    events = len(event_epochs(config))
    growth["target_params"] = target
    shares = len(LAYER_TYPES) if budget_split == "by_layer_type" else 1
    growth["param_budget"] = (
        math.ceil((target - base) / events) + shares * cost
    )
    return config


def static(config: dict, *, attention_width, mlp_width) -> dict:
    """A config that trains the model as built, without growth."""
    config = copy.deepcopy(config)
    config["model"].update(attention_width=attention_width, mlp_width=mlp_width)
    config["growth"]["enabled"] = False
    return config


def from_scratch(config: dict) -> dict:
    """Arm (f): the reduced model's config, growth off, with the
    architecture of arm (a) (`ARCHITECTURE_OF_A` until the seed runs)."""
    config = static(config, attention_width=0.5, mlp_width=0.5)
    config["model"]["architecture_from"] = ARCHITECTURE_OF_A
    return config


def main_configs(
    config: dict, quick: bool, arms: tuple[str, ...] = DEFAULT_ARMS
) -> dict[str, dict]:
    """The configs of `arms` (quick mode: (a) and (b) unless chosen)."""
    makers = {
        "a": lambda: grown(config),
        "b": lambda: static(config, attention_width=1.0, mlp_width=1.0),
        "c": lambda: static(config, attention_width=0.5, mlp_width=0.5),
        "d": lambda: grown(config, criterion="random"),
        "e": lambda: grown(config, criterion="gradient_proxy"),
        "f": lambda: from_scratch(config),
        "g": lambda: grown(config, budget_split="by_layer_type"),
        "h": lambda: grown(
            config, criterion="gradient_proxy", budget_split="by_layer_type"
        ),
    }
    if quick and arms == DEFAULT_ARMS:
        arms = ("a", "b")
    return {arm: makers[arm]() for arm in ARMS if arm in arms}


def interval_configs(config: dict, quick: bool) -> dict[int, dict]:
    intervals = [config["growth"]["interval"]] if quick else INTERVALS
    return {
        interval: grown(config, interval=interval) for interval in intervals
    }


def reduction_configs(config: dict, quick: bool) -> dict[str, dict]:
    reductions = REDUCTIONS[-1:] if quick else REDUCTIONS
    return {
        label: grown(config, attention_width=attention, mlp_width=mlp)
        for label, attention, mlp in reductions
    }


def config_key(config: dict) -> str:
    """Identity of a run: the config without its name."""
    return json.dumps(
        {k: v for k, v in config.items() if k != "name"},
        sort_keys=True,
        default=str,
    )


def run_names(
    config: dict,
    quick: bool,
    ablations: bool = True,
    arms: tuple[str, ...] = DEFAULT_ARMS,
) -> dict[str, tuple[str, dict]]:
    """Every distinct run: `{config_key: (name, config)}`, first name wins.

    Arm (f) follows arm (a), whose run directory it reads.
    """
    named = [
        (f"main-{key}", c)
        for key, c in main_configs(config, quick, arms).items()
    ]
    if ablations:
        named += [
            (f"interval-{i}", c)
            for i, c in interval_configs(config, quick).items()
        ]
        named += [
            (f"base-{label.split()[0].lower()}", c)
            for label, c in reduction_configs(config, quick).items()
        ]
    runs = {}
    for name, c in named:
        runs.setdefault(config_key(c), (name, c))
    return runs


# --------------------------------------------------------------------- runs
class BudgetSpent(Exception):
    """`--hours` has passed; no further unit starts."""


def _unit_record(row: dict, seconds: float, cpu_seconds: float) -> dict:
    """What a unit's `.json` keeps: the summary without local paths."""
    record = {
        key: value
        for key, value in row.items()
        if key not in ("workdir", "plots", "root", "seconds")
    }
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    record.update(
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        load_average=list(load) if load else None,
    )
    return record


def uses_proxy(config: dict) -> bool:
    """Whether `config` grows with the gradient proxy."""
    growth = config["growth"]
    return growth["enabled"] and growth["criterion"] == "gradient_proxy"


def growth_events(workdir: str | Path) -> list[dict]:
    return json.loads((Path(workdir) / "growth_events.json").read_text())


def grown_neurons(events: list[dict]) -> dict[str, int]:
    """Neurons grown per layer type, all blocks summed."""
    grown = dict.fromkeys(LAYER_TYPES, 0)
    for layer, neurons in (events[-1]["total_grown"] if events else {}).items():
        grown[layer.rsplit("_", 1)[-1]] += neurons
    return grown


class Runner:
    """Trains each distinct (config, seed) once, as a resumable unit.

    A unit `NAME-seed<k>` has its run directory `root/NAME-seed<k>`, and
    beside it its log (`.log`) and its result (`.json`). A unit whose
    result exists is read back; one whose run directory holds a backup of
    an unfinished run is resumed from it; any other is trained afresh. A
    finished gradient-proxy unit whose result does not record
    `PROXY_SCORE` was scored with the former weight-and-bias sum, and is
    refused like a unit of other settings.

    Args:
        root: Folder of the units.
        total: Number of units, for the progress lines.
        deadline: `time.perf_counter()` value after which no unit starts
            (`BudgetSpent`), or None.
    """

    def __init__(self, root: Path, total: int, deadline: float | None = None):
        # Arm (f)'s config names arm (a)'s directory: spelled one way.
        self.root = root.resolve()
        self.total = total
        self.deadline = deadline
        self.done: dict[tuple[str, int], dict] = {}

    def unit_config(self, name: str, config: dict, seed: int) -> dict:
        """`config` as unit `name`/`seed` trains it (arm (f) pointed at
        arm (a)'s run directory of the same seed)."""
        config = copy.deepcopy(config)
        config["name"] = name
        config["seed"] = seed
        if config["model"]["architecture_from"] == ARCHITECTURE_OF_A:
            source = self.root / f"main-a-seed{seed}"
            config["model"]["architecture_from"] = str(source)
        return config

    def __call__(self, name: str, config: dict, seed: int) -> dict:
        config = self.unit_config(name, config, seed)
        key = (config_key(config), seed)
        if key not in self.done:
            unit = f"{name}-seed{seed}"
            record = self._read(unit, config)
            if record is None:
                record = self._train(unit, config)
                state = f"{record['seconds']:.0f} s"
            else:
                state = "finished before"
            self.done[key] = record
            self._show(name, seed, record, state)
        return self.done[key]

    def _read(self, unit: str, config: dict) -> dict | None:
        """The unit's finished result, or None; refuses a unit directory
        of other settings."""
        workdir, path = self.root / unit, self.root / f"{unit}.json"
        try:
            saved = json.loads((workdir / "config.json").read_text())
        except (OSError, ValueError):
            return None
        if saved != json.loads(json.dumps(config)):
            raise ValueError(
                f"Unit {str(workdir)!r} was trained with other settings "
                "than this command's; use another --out. Received: --out "
                f"{str(self.root)!r}"
            )
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        if uses_proxy(config) and record.get("proxy_score") != PROXY_SCORE:
            raise ValueError(
                f"Unit {str(workdir)!r} was grown with the former gradient "
                "proxy (the weight and bias gradients summed), not the "
                f"authors' {PROXY_SCORE}; use another --out. Received: "
                f"--out {str(self.root)!r}"
            )
        return record

    def _train(self, unit: str, config: dict) -> dict:
        import keras

        from training.train import Experiment, backed_up_epochs, read_run_file

        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise BudgetSpent(unit)
        workdir = self.root / unit
        info = read_run_file(workdir) if workdir.is_dir() else None
        resume = (
            info is not None
            and info["status"] != "finished"
            and backed_up_epochs(workdir) > 0
        )
        keras.utils.clear_session()
        start, cpu = time.perf_counter(), time.process_time()
        with (self.root / f"{unit}.log").open("a") as log:
            with contextlib.redirect_stdout(log):
                experiment = Experiment(
                    config, workdir, overwrite=not resume, resume=resume
                )
                row = experiment.run()
        record = _unit_record(
            row, time.perf_counter() - start, time.process_time() - cpu
        )
        events = growth_events(workdir)
        # Arm (f) does not grow; its neurons are those arm (a) grew.
        source = config["model"]["architecture_from"]
        record.update(
            events=[e["epoch"] for e in events if e.get("params_added")],
            grown=grown_neurons(growth_events(source) if source else events),
            resumed=resume,
        )
        if uses_proxy(config):
            record["proxy_score"] = PROXY_SCORE
        (self.root / f"{unit}.json").write_text(json.dumps(record, indent=1))
        return record

    def _show(self, name, seed, record, state) -> None:
        print(
            f"[{len(self.done):2d}/{self.total}] {name} seed {seed}: "
            f"top-1 {record['top1']:.2f} %, top-5 {record['top5']:.2f} %, "
            f"params {record['base_params']:,} -> "
            f"{record['final_params']:,}, growth after epochs "
            f"{record['events'] or '-'}, {state}",
            flush=True,
        )


# ----------------------------------------------------------- statistics
def t_quantile(df: int) -> float:
    """The 97.5 % quantile of Student's t with `df` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def half_width(sd: float, n: int) -> float:
    """Half-width of the 95 % confidence interval of a mean of `n`."""
    return t_quantile(n - 1) * sd / math.sqrt(n) if n > 1 else math.inf


def seeds_needed(sd: float, target: float = CI_HALF_WIDTH) -> int:
    """Fewest seeds whose 95 % interval of a paired mean with standard
    deviation `sd` is at most +-`target`."""
    n = 2
    while half_width(sd, n) > target:
        n += 1
    return n


def differences(rows_x: list[dict], rows_y: list[dict]) -> list[float]:
    """Top-1 of x minus top-1 of y, seed by seed."""
    return [x["top1"] - y["top1"] for x, y in zip(rows_x, rows_y, strict=True)]


# ------------------------------------------------------------------ tables
def mean_std(values: list[float], digits: int = 2) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def count(values: list[float]) -> str:
    """Parameter counts: the mean, and the range when seeds differ."""
    low, high = min(values), max(values)
    mean = f"{statistics.fmean(values):,.0f}"
    return mean if low == high else f"{mean} ({low:,}-{high:,})"


def mflops(rows: list[dict]) -> str:
    """Final MFLOPs per image; the spread only when it shows at 3 digits."""
    text = mean_std([1e3 * r["final_gflops"] for r in rows], 3)
    return text.removesuffix(" ± 0.000")


def events_cell(rows: list[dict]) -> str:
    """Event epochs of all seeds, and those of only some seeds."""
    sets = [set(r["events"]) for r in rows]
    common = sorted(set.intersection(*sets))
    text = ", ".join(map(str, common)) or "-"
    for epoch in sorted(set.union(*sets) - set(common)):
        seeds = sum(epoch in s for s in sets)
        text += f" (+{epoch} in {seeds} of {len(rows)} seeds)"
    return text


def grown_cell(rows: list[dict]) -> str:
    """Neurons grown per layer type, mean over seeds (all blocks summed)."""
    if not any(sum(r["grown"].values()) for r in rows):
        return "-"
    return " / ".join(
        f"{statistics.fmean(r['grown'][t] for r in rows):.0f}"
        for t in LAYER_TYPES
    )


def signed(value: float, digits: int = 2) -> str:
    return f"{value:+.{digits}f}"


def difference_table(results: dict[str, list[dict]]) -> str:
    """Paired differences of top-1 with their 95 % confidence intervals."""
    lines = [
        "| Difference of top-1 (points) | Seeds | Mean | 95 % CI "
        "| Half-width | SD | Per seed |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    labels = dict(MAIN_VARIANTS)
    for x, y in DIFFERENCES:
        if x not in results or y not in results:
            continue
        values = differences(results[x], results[y])
        n, mean = len(values), statistics.fmean(values)
        if n > 1:
            sd = statistics.stdev(values)
            half = half_width(sd, n)
            interval = f"{signed(mean - half)} to {signed(mean + half)}"
            spread = f"{half:.2f} | {sd:.2f}"
        else:
            interval, spread = "-", "- | -"
        lines.append(
            f"| ({x}) {labels[x]} - ({y}) {labels[y]} | {n} "
            f"| {signed(mean)} | {interval} | {spread} "
            f"| {', '.join(signed(v, 1) for v in values)} |"
        )
    return "\n".join(lines) + "\n"


def per_seed(rows: list[dict]) -> str:
    return ", ".join(f"{r['top1']:.1f}" for r in rows)


def main_table(results: dict[str, list[dict]]) -> str:
    uniform = results.get("b")
    lines = [
        "| Variant | Base params | Final params | MFLOPs / image "
        "| Growth after epochs | Neurons grown (qkv / proj / fc1 / fc2) "
        "| Top-1 (%) | Top-5 (%) | Top-1 minus (b), paired "
        "| Top-1 per seed |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---|",
    ]
    labels = dict(MAIN_VARIANTS)
    for key, rows in results.items():
        delta = "-"
        if uniform is not None and key != "b":
            delta = mean_std(
                [
                    r["top1"] - u["top1"]
                    for r, u in zip(rows, uniform, strict=True)
                ]
            )
        lines.append(
            f"| ({key}) {labels[key]} | {rows[0]['base_params']:,} "
            f"| {count([r['final_params'] for r in rows])} | {mflops(rows)} "
            f"| {events_cell(rows)} | {grown_cell(rows)} "
            f"| {mean_std([r['top1'] for r in rows])} "
            f"| {mean_std([r['top5'] for r in rows])} | {delta} "
            f"| {per_seed(rows)} |"
        )
    return "\n".join(lines) + "\n"


def interval_table(results: dict[int, list[dict]], budgets) -> str:
    lines = [
        "| Interval (epochs) | Growth after epochs | Budget per event "
        "| Final params | MFLOPs / image "
        "| Neurons grown (qkv / proj / fc1 / fc2) | Top-1 (%) | Top-5 (%) "
        "| Top-1 per seed |",
        "|---:|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for interval, rows in results.items():
        lines.append(
            f"| {interval} | {events_cell(rows)} | {budgets[interval]:,} "
            f"| {count([r['final_params'] for r in rows])} | {mflops(rows)} "
            f"| {grown_cell(rows)} "
            f"| {mean_std([r['top1'] for r in rows])} "
            f"| {mean_std([r['top5'] for r in rows])} | {per_seed(rows)} |"
        )
    return "\n".join(lines) + "\n"


def reduction_table(results: dict[str, list[dict]], widths) -> str:
    lines = [
        "| Halved in the base | Widths (attention, MLP) | Base params "
        "| Final params | MFLOPs / image | Growth after epochs "
        "| Neurons grown (qkv / proj / fc1 / fc2) "
        "| Top-1 (%) | Top-5 (%) | Top-1 per seed |",
        "|---|---|---:|---:|---:|---|---|---:|---:|---|",
    ]
    for label, rows in results.items():
        attention, mlp = widths[label]
        lines.append(
            f"| {label} | {attention}, {mlp} | {rows[0]['base_params']:,} "
            f"| {count([r['final_params'] for r in rows])} | {mflops(rows)} "
            f"| {events_cell(rows)} | {grown_cell(rows)} "
            f"| {mean_std([r['top1'] for r in rows])} "
            f"| {mean_std([r['top5'] for r in rows])} | {per_seed(rows)} |"
        )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- report
def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPU cores visible, {platform.system()}"


def versions() -> str:
    import keras

    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax"}.get(backend)
    text = f"Keras {keras.__version__}"
    if module:
        text += f", {module} {__import__(module).__version__}"
    return text + f", Python {platform.python_version()}"


def load_average() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def command_line(args) -> str:
    """The command, with `--mnist DIR` and `--out DIR` as written in the
    docs (a path of the machine that ran it says nothing to a reader)."""
    import keras

    parts = [f"KERAS_BACKEND={keras.backend.backend()}"]
    parts.append("python -m benchmarks.replication")
    if args.pilot:
        parts.append("--pilot")
    if args.quick:
        parts.append("--quick")
    if args.mnist:
        parts.append("--mnist DIR")
    if args.epochs is not None:
        parts.append(f"--epochs {args.epochs}")
    if args.test_fraction is not None:
        parts.append(f"--test-fraction {args.test_fraction:g}")
    if args.seeds_given:
        parts.append(f"--seeds {args.seeds}")
    if args.first_seed:
        parts.append(f"--first-seed {args.first_seed}")
    if args.arms != DEFAULT_ARMS and not args.pilot:
        parts.append(f"--arms {','.join(args.arms)}")
    if args.hours is not None:
        parts.append(f"--hours {args.hours:g}")
    if args.out:
        parts.append("--out DIR")
    return " ".join(parts)


def split_text(config: dict) -> tuple[str, str, str]:
    """(dataset, train/test split, held-out set) in words."""
    data = config["data"]
    if data["dataset"] == "mnist_t10k":
        test = round(10_000 * data["test_fraction"])
        return (
            "the MNIST test set (28x28, 7x7 patches)",
            f"{10_000 - test:,}/{test:,}",
            f"{test:,} held-out images",
        )
    test = math.ceil(1_797 * data["test_fraction"])
    return (
        "scikit-learn's digits",
        f"{1_797 - test:,}/{test:,}",
        f"{test} held-out digits",
    )


def arm_notes(arms: tuple[str, ...]) -> str:
    """The report's lines on the gradient proxy and the budget split, for
    the arms that use them."""
    text = ""
    if "e" in arms or "h" in arms:
        text += (
            "- The gradient proxy (arms (e), (h)) is the score of the "
            "authors' released code: `min(0, sum of the neuron's "
            "weight-gradient row)`, the smallest eigenvalue of the matrix "
            "whose every row is that row (no bias gradient), from the "
            "same analysed batches and inference mode as the splitting "
            "arms; not the authors' whole pipeline, whose gradient comes "
            "from the last training minibatch (training mode, augmented, "
            "mixup loss)\n"
        )
    if "g" in arms or "h" in arms:
        text += (
            "- Arms (g), (h) split each event's budget as the authors' "
            'code does (`budget_split="by_layer_type"`): an equal share '
            "for each of qkv, proj, fc1 and fc2, the selection rule "
            "running within each type on its share, with the largest cost "
            "of one neuron added once per type; the other growing arms "
            'rank all layers together (`"global"`)\n'
        )
    return text


def report(
    args,
    config: dict,
    sections: dict[str, str],
    seconds: float,
    started: datetime.datetime,
    load_start: str,
    seeds: list[int],
    records: list[dict],
) -> str:
    import keras

    growth = config["growth"]
    base, _, _ = model_sizes(dict(config["model"]))
    target = target_params(config)
    train = config["train"]
    mode = "quick (smoke run, not evidence)" if args.quick else "full"
    dataset, split, held_out = split_text(config)
    seed_text = (
        f"seeds {seeds[0]}-{seeds[-1]}"
        if len(seeds) > 1
        else f"seed {seeds[0]}"
    )
    loads = [r["load_average"][0] for r in records if r.get("load_average")]
    cpu = sum(r.get("cpu_seconds") or 0 for r in records)
    trained = sum(r.get("seconds") or 0 for r in records)
    load_during = (
        f"; the 1-minute load average at the end of each run: mean "
        f"{statistics.fmean(loads):.1f}, {min(loads):.1f} to {max(loads):.1f}"
        if loads
        else ""
    )
    text = (
        f"Replication on {dataset}, {mode} mode: "
        f"{len(seeds)} seed(s) per arm ({seed_text}; the seed fixes the "
        f"{split} train/test split, the data order, the initialisation "
        "and the random draws), mean ± sample standard deviation over "
        f"seeds, top-1 and top-5 on the {held_out} after the last "
        "epoch; paired differences with 95 % confidence intervals "
        "(Student's t over seeds).\n\n"
        f"- Command: `{command_line(args)}`\n"
        f"- Date: {started:%Y-%m-%d %H:%M} (local time); total wall time "
        f"{seconds / 60:.1f} min ({seconds:.0f} s); the runs' own wall "
        f"time {trained / 60:.1f} min and CPU time {cpu / 60:.1f} min "
        "(runs finished before and reused count their first time)\n"
        f"- Backend: {keras.backend.backend()} ({versions()})\n"
        f"- Machine: {machine()}, shared with other work; load average "
        f"(1, 5, 15 min) {load_start} at the start, {load_average()} at "
        f"the end{load_during}\n"
        f"- Schedule (`{config['name']}`): {train['epochs']} epochs, batch "
        f"{train['batch_size']}, AdamW at {train['base_lr']:g} (linear "
        f"warm-up over {train['warmup_epochs']} epoch(s), cosine decay); "
        f"growth warm-up {growth['warmup']}, interval "
        f"{growth['interval']}, layer threshold "
        f"{growth['layer_threshold']}, splitting analysis on "
        f"{growth['analysis_batches']} batches of un-augmented training "
        "images\n"
        f"- Growing arms start from the reduced base ({base:,} "
        "parameters: attention and MLP widths halved) and stop at "
        f"`target_params` = {target:,}, {TARGET_FRACTION:.0%} of the "
        f"uniform model's {uniform_params(config):,} (the paper's ratio, "
        "19.4M / 21.7M); each event's budget is the parameters to add "
        "divided by the number of events in the growth window, plus the "
        "largest cost of one neuron, capped by the target\n"
        + (
            "- Arm (f) builds, for each seed, the architecture arm (a) "
            "grew (`keras_depthhet.growth.fresh_model`: every weight drawn "
            "afresh, each +/- pair from the layer's initializer) and trains "
            "it without growth on the same data\n"
            if "f" in args.arms
            else ""
        )
        + arm_notes(args.arms)
        + "- MFLOPs / image: forward FLOPs of the final model for one image, "
        "one multiply-add counted as one FLOP (the DeiT convention of "
        "`keras_depthhet.models.flops.count_flops`); 1 MFLOP = 0.001 "
        "GFLOPs\n"
        "- Neurons grown: neurons chosen by the growth events, summed over "
        "the blocks, per layer type, mean over seeds (the base has 48 / 32 "
        "/ 64 / 32 neurons of each type per block at halved widths)\n"
    )
    for title, table in sections.items():
        text += f"\n#### {title}\n\n{table}"
    return text


# ------------------------------------------------------------------ pilot
PILOT_FILE = RESULTS_DIR / "replication_pilot.json"
"""The pilot's rows, one per settings, kept across pilot runs."""


def pilot_row(config: dict, results: dict[str, list[dict]]) -> dict:
    """What one pilot measured for one setting of epochs and test size."""
    _, split, _ = split_text(config)
    row = {
        "dataset": config["data"]["dataset"],
        "epochs": config["train"]["epochs"],
        "split": split,
        "seeds": len(results["a"]),
    }
    for x, y in (("a", "b"), ("a", "d")):
        values = differences(results[x], results[y])
        row[f"{x}-{y}"] = {
            "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None,
            "per_seed": values,
        }
    for arm in PILOT_ARMS:
        rows = results[arm]
        row[f"seconds_{arm}"] = statistics.fmean(r["seconds"] for r in rows)
        row[f"cpu_{arm}"] = statistics.fmean(r["cpu_seconds"] for r in rows)
    loads = [r["load_average"][0] for arm in PILOT_ARMS for r in results[arm]]
    row["load"] = statistics.fmean(loads)
    sds = [row[d]["sd"] for d in ("a-b", "a-d")]
    if None not in sds:
        needed = seeds_needed(max(sds))
        # Six arms: (a), (d), (e) grow; (b), (c), (f) do not, and (b),
        # the widest, stands for the other two.
        per_seed = 3 * row["seconds_a"] + 3 * row["seconds_b"]
        per_seed_cpu = 3 * row["cpu_a"] + 3 * row["cpu_b"]
        row.update(
            seeds_needed=needed,
            hours_six_arms=needed * per_seed / 3600,
            cpu_hours_six_arms=needed * per_seed_cpu / 3600,
        )
    return row


def pilot_table(rows: list[dict]) -> str:
    lines = [
        "| Data | Epochs | Train/test | Seeds | a - b: mean, SD "
        "| a - d: mean, SD | Wall s per run (a / b / d) "
        "| CPU s per run (a / b / d) | Load | Seeds for ±0.5 "
        "| Six arms: wall h (CPU h) |",
        "|---|---:|---|---:|---|---|---|---|---:|---:|---|",
    ]

    def diff(row, key):
        d = row[key]
        sd = "-" if d["sd"] is None else f"{d['sd']:.2f}"
        return f"{d['mean']:+.2f}, {sd}"

    for row in rows:
        times = " / ".join(f"{row[f'seconds_{a}']:.0f}" for a in PILOT_ARMS)
        cpus = " / ".join(f"{row[f'cpu_{a}']:.0f}" for a in PILOT_ARMS)
        needed = row.get("seeds_needed", "-")
        hours = (
            f"{row['hours_six_arms']:.1f} ({row['cpu_hours_six_arms']:.1f})"
            if "hours_six_arms" in row
            else "-"
        )
        lines.append(
            f"| {row['dataset']} | {row['epochs']} | {row['split']} "
            f"| {row['seeds']} | {diff(row, 'a-b')} | {diff(row, 'a-d')} "
            f"| {times} | {cpus} | {row['load']:.1f} | {needed} | {hours} |"
        )
    return "\n".join(lines) + "\n"


def pilot_report(args, rows: list[dict], started, seconds) -> str:
    return (
        "Pilot of the seeded comparison: arms (a) grown, (b) uniform and "
        "(d) random neurons, trained with the same seeds; per settings, "
        "the mean and standard deviation over seeds of the paired "
        "differences of top-1 (points), the mean time per run, the "
        "1-minute load average at the end of the runs, the seeds a 95 % "
        "confidence interval of ±0.5 points on both differences needs "
        "(Student's t, with the larger SD), and the time six arms would "
        "take with that many seeds ((b)'s time standing for (c) and (f), "
        "(a)'s for (e)).\n\n"
        f"- Last command: `{command_line(args)}`\n"
        f"- Date of the last pilot: {started:%Y-%m-%d %H:%M} (local time), "
        f"{seconds / 60:.0f} min\n"
        f"- Machine: {machine()}, shared with other work; backend "
        f"{__import__('keras').backend.backend()} ({versions()})\n\n"
        + pilot_table(rows)
    )


def pilot(args, config: dict, results: dict, started, seconds) -> Path:
    """Adds (or replaces) this setting's row and writes the pilot table."""
    row = pilot_row(config, results)
    rows = json.loads(PILOT_FILE.read_text()) if PILOT_FILE.exists() else []
    same = ("dataset", "epochs", "split")
    rows = [r for r in rows if any(r[k] != row[k] for k in same)] + [row]
    if not args.quick:
        PILOT_FILE.write_text(json.dumps(rows, indent=1) + "\n")
    markdown = pilot_report(args, rows, started, seconds)
    print(markdown)
    return write_result("replication_pilot", markdown, quick=args.quick)


# -------------------------------------------------------------------- main
def _arms(text: str) -> tuple[str, ...]:
    arms = tuple(dict.fromkeys(a.strip() for a in text.split(",") if a))
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise argparse.ArgumentTypeError(
            f"arms are letters of {','.join(ARMS)}; received {text!r}"
        )
    return tuple(a for a in ARMS if a in arms)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.replication",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: arms a and b, one block, 2 short epochs, one seed",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per arm, 0 to N-1 (default 3, quick 1)",
    )
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        metavar="K",
        help="start at seed K: seeds K to K+N-1 (another process can "
        "train other seeds into the same --out)",
    )
    parser.add_argument(
        "--arms",
        type=_arms,
        default=DEFAULT_ARMS,
        help="main-comparison arms, e.g. a,b,d (default: a-f; f needs a; "
        "g and h, the budget split by layer type, only when named)",
    )
    parser.add_argument(
        "--out",
        help="keep the units (run directories, logs, results) in DIR and "
        "reuse the finished ones (default: a temporary directory)",
    )
    parser.add_argument(
        "--mnist",
        metavar="DIR",
        help="run the main comparison on the MNIST test set in DIR instead "
        "(the two t10k-*-ubyte.gz files)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help=f"scale the {FULL_EPOCHS}-epoch schedule to N epochs",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        help="held-out share of the data (default 0.2)",
    )
    parser.add_argument(
        "--hours",
        type=float,
        help="start no unit after H hours; report the complete seeds",
    )
    parser.add_argument(
        "--pilot",
        action="store_true",
        help="measure the paired differences' spread and the time per "
        "run with arms a, b, d; write replication_pilot.md",
    )
    args = parser.parse_args(argv)
    args.seeds_given = args.seeds is not None
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.first_seed < 0:
        parser.error("--first-seed must be at least 0")
    if args.epochs is not None and args.epochs < 4:
        parser.error("--epochs must be at least 4 (a warm-up and 3 events)")
    if args.test_fraction is not None and not 0 < args.test_fraction < 1:
        parser.error("--test-fraction must lie strictly between 0 and 1")
    if args.pilot:
        args.arms = PILOT_ARMS
    if "f" in args.arms and "a" not in args.arms:
        parser.error("--arms: arm f trains the architecture arm a grew")
    return args


def seed_list(args) -> list[int]:
    """The seeds this command trains: `--first-seed` and the next
    `--seeds` - 1."""
    return list(range(args.first_seed, args.first_seed + args.seeds))


def report_name(args) -> str:
    name = "replication"
    if args.mnist:
        name += "_mnist"
    if args.epochs is not None or args.test_fraction is not None:
        name += "_seeded"
    if args.arms != DEFAULT_ARMS and not args.pilot:
        # A run of other arms (more seeds for one difference, or the arms
        # run only when named) gets a table of its own beside the one of
        # arms (a) to (f).
        name += "_" + "".join(args.arms)
    return name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now()
    load_start = load_average()
    start = time.perf_counter()
    config = base_config(
        args.quick, args.mnist, args.epochs, args.test_fraction
    )
    ablations = not args.mnist and not args.pilot
    runs = run_names(config, args.quick, ablations, args.arms)
    seeds = seed_list(args)
    total = len(runs) * len(seeds)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp())
    root.mkdir(parents=True, exist_ok=True)
    print(
        f"replication: {len(runs)} configurations x {len(seeds)} seed(s) = "
        f"{total} runs into {root}",
        flush=True,
    )
    deadline = None if args.hours is None else start + 3600 * args.hours
    runner = Runner(root, total, deadline)
    by_seed: dict[int, dict[str, dict]] = {}
    try:
        for seed in seeds:
            for key, (name, run_config) in runs.items():
                row = runner(name, run_config, seed)
                by_seed.setdefault(seed, {})[key] = row
    except BudgetSpent as spent:
        print(f"--hours {args.hours:g} spent before unit {spent}", flush=True)
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)
    seeds = [s for s in seeds if len(by_seed.get(s, {})) == len(runs)]
    if not seeds:
        print("No seed finished every arm; nothing to report.")
        return 1

    def rows(run_config):
        return [by_seed[s][config_key(run_config)] for s in seeds]

    main_results = {
        key: rows(c)
        for key, c in main_configs(config, args.quick, args.arms).items()
    }
    seconds = time.perf_counter() - start
    if args.pilot:
        path = pilot(args, config, main_results, started, seconds)
        print(f"Wrote {path} ({seconds:.0f} s)")
        return 0
    sections = {
        "Main comparison": main_table(main_results),
        "Paired differences": difference_table(main_results),
    }
    if ablations:
        intervals = interval_configs(config, args.quick)
        reductions = reduction_configs(config, args.quick)
        widths = {label: (a, m) for label, a, m in REDUCTIONS}
        sections["Scaling interval (same window, same target)"] = (
            interval_table(
                {i: rows(c) for i, c in intervals.items()},
                {i: c["growth"]["param_budget"] for i, c in intervals.items()},
            )
        )
        sections["Base reduction (each grown to the same target)"] = (
            reduction_table(
                {label: rows(c) for label, c in reductions.items()}, widths
            )
        )
    records = [row for s in seeds for row in by_seed[s].values()]
    markdown = report(
        args, config, sections, seconds, started, load_start, seeds, records
    )
    path = write_result(report_name(args), markdown, quick=args.quick)
    print(markdown)
    print(f"Wrote {path} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
