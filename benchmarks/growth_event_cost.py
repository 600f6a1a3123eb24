"""Cost of one growth event in `fit_with_growth`, per backend.

An event has three parts: analysis (scoring every neuron), the functional
rebuild (`rebuild_grown_model`: new model from the grown config, weights
and optimizer slots copied) and the recompile (tracing and compiling the
new train step, measured as the first step's time minus a steady step's).

Usage:

    python -m benchmarks.growth_event_cost [--quick]

The full run measures the tiny ViT and the reduced DeiT-S at 224x224 and
writes `benchmarks/results/growth_event_cost.md`. `--quick` (a smoke run,
about 15 seconds per backend on 2 CPU cores) measures only the tiny ViT,
with fewer repeats, and writes `benchmarks/results/quick/`.
"""

import argparse
import importlib.util
import json
import time

from benchmarks.common import best_time, run_per_backend, write_result


def _models(quick: bool):
    from keras_depthhet.models.vit import deit_small, vit

    models = {
        "tiny ViT (8x8, dim 16, 2 blocks)": (
            lambda: vit(
                image_size=8,
                patch_size=4,
                num_channels=1,
                num_classes=10,
                dim=16,
                depth=2,
                num_heads=2,
                attention_width=0.5,
                mlp_width=0.5,
            ),
            (8, 8, 1),
            8,
        ),
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


def _worker(quick: bool) -> None:
    repeats = 2 if quick else 3
    results = {
        name: _event_cost(build, shape, batch, repeats)
        for name, (build, shape, batch) in _models(quick).items()
    }
    print(json.dumps(results))


def _seconds(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args()
    if args.worker:
        _worker(args.quick)
        return
    extra = ["--quick"] if args.quick else []
    results = run_per_backend("benchmarks.growth_event_cost", extra)
    lines = [
        "| backend | model | params | added | analysis s | rebuild s "
        "| recompile s | step s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for backend, models in results.items():
        for name, r in models.items():
            lines.append(
                f"| {backend} | {name} | {r['params']:,} | {r['added']:,} "
                f"| {_seconds(r['analysis'])} | {r['rebuild']:.2f} "
                f"| {r['recompile']:.2f} | {r['step']:.3f} |"
            )
    mode = "quick (tiny ViT only)" if args.quick else "full"
    markdown = (
        f"Growth event cost, {mode}, batch 8, AdamW, 5 % of the parameters "
        "added per event, 2 shared CPU cores. Analysis: "
        "`splitting_eigenvalues` on the one batch.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    path = write_result("growth_event_cost", markdown, quick=args.quick)
    print(markdown)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
