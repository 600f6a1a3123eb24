"""Small-scale replication: heterogeneous growth against uniform scaling.

The paper's comparisons (Guna et al. 2024, arXiv 2402.12418) at the scale
of a 2-core CPU: the `digits_tiny` experiment (a tiny ViT on
scikit-learn's 8x8 digits, real data that ships with scikit-learn), each
variant trained with several seeds (the seed fixes the train/test split,
the initialisation and the random criterion's draws), reported as
mean +- standard deviation over seeds.

1. Main comparison: (a) heterogeneous growth of the reduced model
   (splitting criterion), (b) the uniform full-width model, (c) the
   reduced model without growth, (d) growth with random neuron selection,
   (e) growth with the gradient-proxy criterion of the authors' code. The
   growing variants share the schedule and grow to the same
   `target_params`.
2. Scaling-interval ablation (the paper's Table 4 shape): growth every 3,
   6 or 9 epochs inside the same growth window, the per-event budget set
   so that every interval reaches the same target.
3. Base-reduction ablation (Table 3 shape): attention only, MLP only, or
   both halved in the base, each grown to the same target.

Usage:

    KERAS_BACKEND=tensorflow python -m benchmarks.replication \
        [--quick] [--seeds N] [--out DIR]

The full mode (27 runs, 22-26 minutes on a shared 2-core CPU) writes
`benchmarks/results/replication.md`. `--quick` (a smoke run of under a
minute) trains two variants of a one-block model for 2 short epochs with
one seed and writes only
`benchmarks/results/quick/replication.md`. Run directories go to a
temporary directory (deleted at the end) unless `--out DIR` is given.
The backend is the one Keras is configured with (`KERAS_BACKEND`).

`--mnist DIR` runs the main comparison (not the ablations) on the MNIST
test set instead: the 10,000 images of `t10k-images-idx3-ubyte.gz` and
`t10k-labels-idx1-ubyte.gz` in DIR, split 8,000 / 2,000 (stratified, by
seed), with the same tiny ViT on 7x7-pixel patches (16 tokens, as on
the digits) and the same schedule; it writes
`benchmarks/results/replication_mnist.md` (about 28 minutes).
"""

import argparse
import contextlib
import copy
import datetime
import gzip
import io
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

from benchmarks.common import write_result  # noqa: E402

TARGET_FRACTION = 0.89
"""Target size of the grown models as a fraction of the uniform model.

The paper's grown DeiT-S ends at 19.4M parameters, 89 % of the uniform
DeiT-S's 21.7M (Table 1); the growing variants here stop at the same
fraction of the uniform tiny ViT.
"""

LAYER_TYPES = ("qkv", "proj", "fc1", "fc2")
"""Growable layer types of a transformer block, as in the layer names."""

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
)
"""The main comparison's variants: (key, label)."""


# ------------------------------------------------------------------ configs
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_TEST = 2_000
"""Held-out images of the MNIST split (the other 8,000 train)."""


def read_idx(path: Path):
    """A gzip-compressed IDX file (MNIST's format) as a NumPy array."""
    import numpy as np

    with gzip.open(path, "rb") as file:
        data = file.read()
    if data[:2] != b"\0\0" or data[2] != 8:
        raise ValueError(f"{str(path)!r} is not an unsigned-byte IDX file.")
    rank = data[3]
    shape = np.frombuffer(data, ">u4", count=rank, offset=4).astype(int)
    return np.frombuffer(data, "u1", offset=4 + 4 * rank).reshape(shape)


def load_mnist(directory: str | Path, seed: int):
    """The MNIST test set split 8,000 / 2,000 (stratified by `seed`).

    Returns a `training.data.Splits` (images float32 in [0, 255], shape
    28x28x1; int32 labels), as `training.data.load_splits` does.
    """
    from training.data import array_splits

    directory = Path(directory)
    missing = [f for f in MNIST_FILES if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"--mnist {str(directory)!r} lacks {', '.join(missing)}."
        )
    images = read_idx(directory / MNIST_FILES[0]).astype("float32")[..., None]
    labels = read_idx(directory / MNIST_FILES[1]).astype("int32")
    return array_splits(images, labels, 10, MNIST_TEST, seed)


@contextlib.contextmanager
def mnist_data(directory: str | Path | None):
    """Lets `training.train.Experiment` load `dataset="mnist"` from DIR.

    The trainer knows only the datasets of `training.data`; inside this
    context its loader hands `"mnist"` configs to `load_mnist` and every
    other config to the original loader.
    """
    if directory is None:
        yield
        return
    import training.train as train_module

    original = train_module.load_splits

    def load_splits(data, num_classes, seed):
        if data["dataset"] == "mnist":
            return load_mnist(directory, seed)
        return original(data, num_classes, seed)

    train_module.load_splits = load_splits
    try:
        yield
    finally:
        train_module.load_splits = original


def base_config(quick: bool, mnist: bool = False) -> dict:
    """`digits_tiny`; in quick mode one block, 2 short epochs, one event.

    With `mnist`, the same model on 28x28 MNIST images cut into 7x7
    patches (16 tokens, as for the digits), normalised with MNIST's mean
    and standard deviation.
    """
    from training.config import load_config

    config = load_config("digits_tiny")
    if mnist:
        config["name"] = "mnist_tiny"
        config["data"].update(
            dataset="mnist", image_size=28, mean=(0.1307,), std=(0.3081,)
        )
        config["model"].update(image_size=28, patch_size=7)
    if quick:
        config["model"].update(depth=1)
        config["train"].update(epochs=2, warmup_epochs=1, steps_per_epoch=8)
        config["growth"].update(warmup=1, interval=9, analysis_batches=2)
    return config


def growth_window(config: dict) -> tuple[int, int]:
    """First and last epoch at whose end a growth event may run."""
    growth = config["growth"]
    last = min(GROWTH_WINDOW_END, config["train"]["epochs"] - 1)
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

    key = json.dumps(model_config, sort_keys=True)
    if key not in _SIZES:
        model = vit(**model_config)
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
    interval=None,
    attention_width=0.5,
    mlp_width=0.5,
) -> dict:
    """A growing config that reaches `target_params` in its window.

    The per-event budget is the parameters to add divided by the number of
    events in the growth window, plus the largest cost of one neuron (the
    selection stops before the neuron that would exceed the budget), so
    that the last event in the window reaches the target; the target caps
    every event.
    """
    config = copy.deepcopy(config)
    config["model"].update(attention_width=attention_width, mlp_width=mlp_width)
    growth = config["growth"]
    growth.update(enabled=True, criterion=criterion)
    if interval is not None:
        growth["interval"] = interval
    target = target_params(config)
    base, _, cost = model_sizes(config["model"])
    events = len(event_epochs(config))
    growth["target_params"] = target
    growth["param_budget"] = math.ceil((target - base) / events) + cost
    return config


def static(config: dict, *, attention_width, mlp_width) -> dict:
    """A config that trains the model as built, without growth."""
    config = copy.deepcopy(config)
    config["model"].update(attention_width=attention_width, mlp_width=mlp_width)
    config["growth"]["enabled"] = False
    return config


def main_configs(config: dict, quick: bool) -> dict[str, dict]:
    configs = {
        "a": grown(config),
        "b": static(config, attention_width=1.0, mlp_width=1.0),
        "c": static(config, attention_width=0.5, mlp_width=0.5),
        "d": grown(config, criterion="random"),
        "e": grown(config, criterion="gradient_proxy"),
    }
    if quick:
        configs = {key: configs[key] for key in ("a", "b")}
    return configs


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


# --------------------------------------------------------------------- runs
class Runner:
    """Trains each distinct (config, seed) once and keeps its result."""

    def __init__(self, root: Path, total: int):
        self.root = root
        self.total = total
        self.done: dict[tuple[str, int], dict] = {}

    def __call__(self, name: str, config: dict, seed: int) -> dict:
        import keras

        from training.train import Experiment

        key = (config_key(config), seed)
        if key in self.done:
            return self.done[key]
        config = copy.deepcopy(config)
        config["name"] = name
        config["seed"] = seed
        workdir = self.root / f"{name}-seed{seed}"
        keras.utils.clear_session()
        log = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(log):
            row = Experiment(config, workdir, overwrite=True).run()
        seconds = time.perf_counter() - start
        (workdir / "fit.log").write_text(log.getvalue())
        events = json.loads((workdir / "growth_events.json").read_text())
        grown = dict.fromkeys(LAYER_TYPES, 0)
        for layer, neurons in (
            events[-1]["total_grown"] if events else {}
        ).items():
            grown[layer.rsplit("_", 1)[-1]] += neurons
        row.update(
            seconds=seconds,
            events=[e["epoch"] for e in events if e.get("params_added")],
            grown=grown,
        )
        self.done[key] = row
        print(
            f"[{len(self.done):2d}/{self.total}] {name} seed {seed}: "
            f"top-1 {row['top1']:.2f} %, top-5 {row['top5']:.2f} %, "
            f"params {row['base_params']:,} -> {row['final_params']:,}, "
            f"growth after epochs {row['events'] or '-'}, {seconds:.0f} s",
            flush=True,
        )
        return row


def run_names(
    config: dict, quick: bool, ablations: bool = True
) -> dict[str, tuple[str, dict]]:
    """Every distinct run: `{config_key: (name, config)}`, first name wins."""
    runs = {}
    named = [
        (f"main-{key}", c) for key, c in main_configs(config, quick).items()
    ]
    if not ablations:
        return {config_key(c): (name, c) for name, c in named}
    named += [
        (f"interval-{i}", c) for i, c in interval_configs(config, quick).items()
    ]
    named += [
        (f"base-{label.split()[0].lower()}", c)
        for label, c in reduction_configs(config, quick).items()
    ]
    for name, c in named:
        runs.setdefault(config_key(c), (name, c))
    return runs


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


def report(
    args,
    config: dict,
    sections: dict[str, str],
    seconds: float,
    started: datetime.datetime,
    load_start: str,
) -> str:
    import keras

    growth = config["growth"]
    base, _, _ = model_sizes(dict(config["model"]))
    target = target_params(config)
    command = (
        f"KERAS_BACKEND={keras.backend.backend()} "
        "python -m benchmarks.replication"
        + (" --quick" if args.quick else "")
        + (f" --seeds {args.seeds}" if args.seeds_given else "")
        + (f" --mnist {args.mnist}" if args.mnist else "")
        + (f" --out {args.out}" if args.out else "")
    )
    train = config["train"]
    mode = "quick (smoke run, not evidence)" if args.quick else "full"
    if args.mnist:
        dataset = "the MNIST test set (28x28, 7x7 patches)"
        split = f"8,000/{MNIST_TEST:,}"
        held_out = f"{MNIST_TEST:,} held-out images"
    else:
        dataset = "scikit-learn's digits"
        split, held_out = "1,437/360", "360 held-out digits"
    text = (
        f"Replication on {dataset}, {mode} mode: "
        f"{args.seeds} seed(s) per variant (seeds 0-{args.seeds - 1}; the "
        f"seed fixes the {split} train/test split, the initialisation "
        "and the random draws), mean ± sample standard deviation over "
        f"seeds, top-1 and top-5 on the {held_out} after the last "
        "epoch.\n\n"
        f"- Command: `{command}`\n"
        f"- Date: {started:%Y-%m-%d %H:%M} (local time); total wall time "
        f"{seconds / 60:.1f} min ({seconds:.0f} s)\n"
        f"- Backend: {keras.backend.backend()} ({versions()})\n"
        f"- Machine: {machine()}, shared with other work; load average "
        f"(1, 5, 15 min) {load_start} at the start, {load_average()} at "
        "the end\n"
        f"- Schedule (`digits_tiny`): {train['epochs']} epochs, batch "
        f"{train['batch_size']}, AdamW at {train['base_lr']:g} (linear "
        f"warm-up over {train['warmup_epochs']} epoch(s), cosine decay); "
        f"growth warm-up {growth['warmup']}, layer threshold "
        f"{growth['layer_threshold']}, splitting analysis on "
        f"{growth['analysis_batches']} batches of un-augmented training "
        "images\n"
        f"- Growing variants start from the reduced base ({base:,} "
        "parameters: attention and MLP widths halved) and stop at "
        f"`target_params` = {target:,}, {TARGET_FRACTION:.0%} of the "
        f"uniform model's {uniform_params(config):,} (the paper's ratio, "
        "19.4M / 21.7M); each event's budget is the parameters to add "
        "divided by the number of events in the growth window, plus the "
        "largest cost of one neuron, capped by the target\n"
        "- MFLOPs / image: forward FLOPs of the final model for one image, "
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


# -------------------------------------------------------------------- main
def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.replication",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: two variants, one block, 2 short epochs, one seed",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per variant (default 3, quick 1)",
    )
    parser.add_argument(
        "--out", help="keep the run directories in DIR (default: deleted)"
    )
    parser.add_argument(
        "--mnist",
        metavar="DIR",
        help="run the main comparison on the MNIST test set in DIR instead "
        "(the two t10k-*-ubyte.gz files)",
    )
    args = parser.parse_args(argv)
    args.seeds_given = args.seeds is not None
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now()
    load_start = load_average()
    start = time.perf_counter()
    config = base_config(args.quick, mnist=bool(args.mnist))
    ablations = not args.mnist
    runs = run_names(config, args.quick, ablations)
    seeds = list(range(args.seeds))
    total = len(runs) * len(seeds)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp())
    root.mkdir(parents=True, exist_ok=True)
    print(
        f"replication: {len(runs)} configurations x {len(seeds)} seed(s) = "
        f"{total} runs into {root}",
        flush=True,
    )
    runner = Runner(root, total)
    by_key = {}
    try:
        with mnist_data(args.mnist):
            for seed in seeds:
                for key, (name, run_config) in runs.items():
                    by_key.setdefault(key, []).append(
                        runner(name, run_config, seed)
                    )
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)

    def rows(run_config):
        return by_key[config_key(run_config)]

    main_results = {
        key: rows(c) for key, c in main_configs(config, args.quick).items()
    }
    intervals = interval_configs(config, args.quick)
    reductions = reduction_configs(config, args.quick)
    widths = {label: (a, m) for label, a, m in REDUCTIONS}
    sections = {"Main comparison": main_table(main_results)}
    if ablations:
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
    seconds = time.perf_counter() - start
    markdown = report(args, config, sections, seconds, started, load_start)
    name = "replication_mnist" if args.mnist else "replication"
    path = write_result(name, markdown, quick=args.quick)
    print(markdown)
    print(f"Wrote {path} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
