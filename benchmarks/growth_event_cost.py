"""Cost of one growth event in `fit_with_growth`, per backend.

An event has three parts: analysis (scoring every neuron), the functional
rebuild (`rebuild_grown_model`: new model from the grown config, weights
and optimizer slots copied) and the recompile (tracing and compiling the
new train step, measured as the first step's time minus a steady step's).

A second part follows the recompile through many events: the reduced
DeiT-S at 32x32 (patch 8) is grown in place (`grow_model`, as
`GrowthCallback` does) by 9 events of the paper's 580k-parameter budget at
random neurons never grown before, and after each event the recompile and
a steady step are timed. A third part sets the steady step of a model whose
growth came in many rounds beside that of the same growth in one round
(same neurons, same parameter count), timed in alternation: the reduced
DeiT-S after the 9 events, and a tiny ViT grown by one neuron per layer in
9 rounds.

Usage:

    python -m benchmarks.growth_event_cost [--quick | --series]

The full run writes `benchmarks/results/growth_event_cost.md`. `--series`
runs only the 9-event series of the reduced DeiT-S (the part that shows
whether events stay cheap as they accumulate) and writes
`benchmarks/results/growth_event_series.md`. `--quick` (a smoke run)
measures the tiny ViT only, with 3 events, and writes
`benchmarks/results/quick/`.
"""

import argparse
import importlib.util
import json
import re
import time

import numpy as np

from benchmarks.common import (
    best_time,
    machine_description,
    run_per_backend,
    write_result,
)

EVENT_BUDGET = 580_000
"""Parameters added per event in the event series: the paper's DeiT-S budget."""


def _models(quick: bool):
    from keras_depthhet.models.vit import deit_small

    models = {
        "tiny ViT (8x8, dim 16, 2 blocks)": (_tiny_vit, (8, 8, 1), 8),
        "reduced DeiT-S (224x224, 100 classes)": (
            lambda: deit_small(
                image_size=224,
                num_classes=100,
                attention_width=0.5,
                mlp_width=0.5,
            ),
            (224, 224, 3),
            8,
        ),
    }
    if quick:
        return dict(list(models.items())[:1])
    return models


def _event_cost(build, shape, batch: int, repeats: int) -> dict:
    import keras
    import numpy as np

    from keras_depthhet.growth.rebuild import rebuild_grown_model
    from keras_depthhet.growth.selection import select_neurons
    from keras_depthhet.models.vit import growable_layers

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *shape)).astype("float32")
    y = rng.integers(0, 10, batch)
    model = build()
    model.compile(
        keras.optimizers.AdamW(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.train_on_batch(x, y)
    layers = growable_layers(model)
    costs = {layer.name: layer.growth_cost(1) for layer in layers}
    start = time.perf_counter()
    if importlib.util.find_spec("keras_depthhet.splitting") is not None:
        from keras_depthhet.splitting import splitting_eigenvalues

        scores = splitting_eigenvalues(model, [(x, y)], verbose=0)
        analysis = time.perf_counter() - start
    else:
        scores = {layer.name: rng.normal(size=layer.units) for layer in layers}
        analysis = None
    plan = select_neurons(
        scores,
        costs,
        param_budget=0.05 * model.count_params(),
        criterion="splitting" if analysis is not None else "random",
        layer_threshold=0,
        seed=0,
    )
    start = time.perf_counter()
    grown = rebuild_grown_model(model, plan)
    rebuild = time.perf_counter() - start
    start = time.perf_counter()
    grown.train_on_batch(x, y)
    first_step = time.perf_counter() - start
    step = best_time(
        lambda: grown.train_on_batch(x, y), repeats=repeats, warmup=1
    )
    return {
        "params": model.count_params(),
        "added": grown.count_params() - model.count_params(),
        "analysis": analysis,
        "rebuild": rebuild,
        "recompile": first_step - step,
        "step": step,
    }


def _tiny_vit():
    from keras_depthhet.models.vit import vit

    return vit(
        image_size=8,
        patch_size=4,
        num_channels=1,
        num_classes=10,
        dim=16,
        depth=2,
        num_heads=2,
        attention_width=0.5,
        mlp_width=0.5,
    )


def _small_deit():
    from keras_depthhet.models.vit import deit_small

    return deit_small(
        image_size=32,
        patch_size=8,
        num_classes=10,
        attention_width=0.5,
        mlp_width=0.5,
    )


def _compiled(model):
    import keras

    model.compile(
        keras.optimizers.AdamW(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _random_plan(layers, grown, budget, rng) -> dict:
    """Random neurons not grown before, as many as `budget` pays for."""
    plan = {}
    while True:
        layer = layers[rng.integers(len(layers))]
        if layer.growth_cost(1) > budget:
            return plan
        free = sorted(
            set(range(layer.units))
            - grown[layer.name]
            - set(plan.get(layer.name, []))
        )
        if not free:
            return plan
        plan.setdefault(layer.name, []).append(int(rng.choice(free)))
        budget -= layer.growth_cost(1)


def _same_growth_in_one_round(build, grown):
    """A model grown by the neurons of `grown`'s rounds in one round."""
    from keras_depthhet.models.vit import growable_layers

    model = build()
    for layer, source in zip(
        growable_layers(model), growable_layers(grown), strict=True
    ):
        if source.num_grown:
            layer.grow(sorted(np.concatenate(source.growth_rounds).tolist()))
    return model


def _step_ratio(many, one, x, y, repeats) -> dict:
    """Steady steps of `many` and `one` rounds, timed in alternation."""
    steps = {
        "many": lambda: many.train_on_batch(x, y),
        "one": lambda: one.train_on_batch(x, y),
    }
    best = {name: float("inf") for name in steps}
    for _ in range(3):
        for name, step in steps.items():
            best[name] = min(best[name], best_time(step, repeats, warmup=1))
    return {
        "rounds": max(len(x.growth_rounds) for x in _growable(many)),
        "params": many.count_params(),
        "one_params": one.count_params(),
        "step_many": best["many"],
        "step_one": best["one"],
    }


def _growable(model):
    from keras_depthhet.models.vit import growable_layers

    return growable_layers(model)


class _CompileClock:
    """Seconds JAX spends tracing and XLA spends compiling, since `reset`.

    Read from JAX's monitoring events; on TensorFlow both stay `None`.
    """

    def __init__(self):
        import keras

        self.trace = self.compile = None
        if keras.backend.backend() != "jax":
            return
        import jax

        self.trace = self.compile = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._record)

    def _record(self, event, duration, **kwargs):
        if event.endswith("/jaxpr_trace_duration"):
            self.trace += duration
        elif event.endswith("/backend_compile_duration"):
            self.compile += duration

    def reset(self):
        if self.trace is not None:
            self.trace = self.compile = 0.0


def _lowered_ops(model, x, y) -> dict:
    """Operations of the JAX train step as lowered for XLA, and how many of
    them the optimizer's update makes (by their name stacks); empty on
    TensorFlow. What XLA compiles grows with these counts."""
    import keras

    if keras.backend.backend() != "jax":
        return {"ops": None, "optimizer_ops": None}
    import jax

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    lowered = jax.jit(model.train_step).lower(state, (x, y))
    text = lowered.as_text(debug_info=True)
    names = dict(re.findall(r'^(#loc\d+) = loc\("([^"]*)"', text, re.M))
    ops = optimizer = 0
    for line in text.splitlines():
        if not re.match(r'\s*(%\S+ = )?"?(stablehlo|chlo)\.', line):
            continue
        ops += 1
        loc = re.search(r"loc\((#loc\d+)\)\s*$", line)
        name = names.get(loc.group(1), "") if loc else ""
        optimizer += bool(re.search(r"adam|optimizer", name, re.I))
    return {"ops": ops, "optimizer_ops": optimizer}


def _first_and_steady(model, x, y, clock, repeats) -> dict:
    """The first step's recompile (its time minus a steady step's), split
    into JAX tracing and XLA compiling where known, and the steady step."""
    clock.reset()
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    trace, compile_ = clock.trace, clock.compile
    step = best_time(lambda: model.train_on_batch(x, y), repeats, warmup=1)
    return {
        "params": model.count_params(),
        "variables": len(model.trainable_variables),
        "recompile": first - step,
        "trace": trace,
        "xla_compile": compile_,
        "step": step,
        **_lowered_ops(model, x, y),
    }


def _event_series(build, shape, batch, events, budget, repeats) -> dict:
    """Recompile and steady step after each of `events` in-place events.

    Ends with the same growth made in one round (as many parameters, a
    fraction of the variables), compiled once: the recompile's control.
    """
    from keras_depthhet.growth import grow_model

    clock = _CompileClock()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *shape)).astype("float32")
    y = rng.integers(0, 10, batch)
    model = _compiled(build())
    rows = [{"event": 0, **_first_and_steady(model, x, y, clock, repeats)}]
    layers = _growable(model)
    grown = {layer.name: set() for layer in layers}
    for event in range(1, events + 1):
        plan = _random_plan(layers, grown, budget, rng)
        for name, indices in plan.items():
            grown[name].update(indices)
        grow_model(model, plan)
        rows.append(
            {"event": event, **_first_and_steady(model, x, y, clock, repeats)}
        )
    one = _compiled(_same_growth_in_one_round(build, model))
    one_round = _first_and_steady(one, x, y, clock, repeats)
    return {
        "events": rows,
        "one_round": one_round,
        "rounds": _step_ratio(model, one, x, y, repeats),
    }


def _tiny_rounds(rounds: int, repeats: int) -> dict:
    """A tiny ViT grown by one neuron per layer in each of `rounds` rounds."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, 8)
    many = _tiny_vit()
    many(x)
    for layer in _growable(many):
        for neuron in rng.choice(layer.units, rounds, replace=False):
            layer.grow([int(neuron)])
    many = _compiled(many)
    one = _compiled(_same_growth_in_one_round(_tiny_vit, many))
    many.train_on_batch(x, y)
    one.train_on_batch(x, y)
    return _step_ratio(many, one, x, y, repeats)


def _worker(quick: bool, series_only: bool = False) -> None:
    repeats = 2 if quick else 3
    results = {
        name: _event_cost(build, shape, batch, repeats)
        for name, (build, shape, batch) in _models(quick).items()
        if not series_only
    }
    if quick:
        series = _event_series(_tiny_vit, (8, 8, 1), 8, 3, 200, repeats)
        series["model"] = "tiny ViT (8x8, dim 16, 2 blocks)"
    else:
        series = _event_series(
            _small_deit, (32, 32, 3), 8, 9, EVENT_BUDGET, repeats
        )
        series["model"] = "reduced DeiT-S (32x32, patch 8)"
    print(
        json.dumps(
            {
                "events": results,
                "series": series,
                "tiny_rounds": None
                if series_only
                else _tiny_rounds(3 if quick else 9, repeats),
            }
        )
    )


def _seconds(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _count(value) -> str:
    return "n/a" if value is None else f"{value:,}"


def _series_table(results: dict) -> str:
    lines = [
        "| backend | event | parameters | trainable variables "
        "| recompile s | JAX tracing s | XLA compile s | lowered ops "
        "| of which optimizer | step s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for backend, result in results.items():
        series = result["series"]
        rows = [(str(r["event"]), r) for r in series["events"]]
        rows.append(("same growth, one round", series["one_round"]))
        for event, row in rows:
            lines.append(
                f"| {backend} | {event} | {row['params']:,} "
                f"| {row['variables']:,} | {row['recompile']:.2f} "
                f"| {_seconds(row['trace'])} | {_seconds(row['xla_compile'])} "
                f"| {_count(row['ops'])} | {_count(row['optimizer_ops'])} "
                f"| {row['step']:.3f} |"
            )
    return "\n".join(lines)


def _rounds_table(results: dict) -> str:
    lines = [
        "| backend | model | rounds | parameters | step, many rounds s "
        "| step, one round s | many / one |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for backend, result in results.items():
        for model, r in (
            (result["series"]["model"], result["series"]["rounds"]),
            ("tiny ViT (8x8, dim 16, 2 blocks)", result["tiny_rounds"]),
        ):
            if r is None:
                continue
            lines.append(
                f"| {backend} | {model} | {r['rounds']} | {r['params']:,} "
                f"| {r['step_many']:.4f} | {r['step_one']:.4f} "
                f"| {r['step_many'] / r['step_one']:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--series",
        action="store_true",
        help="only the 9-event series of the reduced DeiT-S",
    )
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args()
    if args.quick and args.series:
        parser.error("--quick and --series are separate runs; choose one")
    if args.worker:
        _worker(args.quick, args.series)
        return
    machine = machine_description()
    start = time.time()
    extra = ["--quick"] if args.quick else []
    extra += ["--series"] if args.series else []
    results = run_per_backend("benchmarks.growth_event_cost", extra)
    lines = [
        "| backend | model | params | added | analysis s | rebuild s "
        "| recompile s | step s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for backend, result in results.items():
        for name, r in result["events"].items():
            lines.append(
                f"| {backend} | {name} | {r['params']:,} | {r['added']:,} "
                f"| {_seconds(r['analysis'])} | {r['rebuild']:.2f} "
                f"| {r['recompile']:.2f} | {r['step']:.3f} |"
            )
    mode = "quick (tiny ViT only)" if args.quick else "full"
    series_model = (
        "the tiny ViT, 3 events of 200 parameters"
        if args.quick
        else "the reduced DeiT-S at 32x32 (patch 8), 9 events of "
        f"{EVENT_BUDGET:,} parameters"
    )
    command = "python -m benchmarks.growth_event_cost" + "".join(
        f" {flag}" for flag in extra
    )
    head = (
        f"Growth event cost, {mode}, batch 8, AdamW, 5 % of the parameters "
        "added per event, Keras' default `jit_compile`. Analysis: "
        f"`splitting_eigenvalues` on the one batch. Measured {machine}.\n\n"
        + "\n".join(lines)
        + "\n\n"
        if not args.series
        else f"Growth events as they accumulate. Measured {machine}.\n\n"
    )
    markdown = (
        head
        + "Recompile after each in-place event (`grow_model`), "
        f"{series_model} at random neurons; event 0 is the first "
        "compile.\n\n"
        + _series_table(results)
        + "\n\nThe last row of each backend compiles a model grown by the "
        "same neurons in one round (as many parameters; the same variables, "
        "since a layer's rounds share one packed set). "
        "JAX tracing and XLA compile: JAX's compile events during the first "
        "step (not separated on TensorFlow). Lowered ops: the StableHLO "
        "operations of the JAX train step handed to XLA, and those of the "
        "optimizer's update among them (by name stack).\n\n"
        "Steady step of a model grown in many rounds beside the "
        "same growth in one round (best of 3 alternations).\n\n"
        + _rounds_table(results)
        + f"\n\nCommand: `{command}` ({time.time() - start:.0f} s).\n"
    )
    name = "growth_event_series" if args.series else "growth_event_cost"
    path = write_result(name, markdown, quick=args.quick)
    print(markdown)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
