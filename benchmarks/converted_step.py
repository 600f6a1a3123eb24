"""Train step of a KerasHub ViT made growable, after one growth event.

A KerasHub `ViTBackbone` classifier (random weights, built from its
arguments) is converted by `make_growable` and grown once: a quarter of
the units of every converted layer, chosen at random, get a pair. Its
`train_on_batch` time is divided by that of the same model unconverted.
The same ratio is measured for `keras_depthhet.models.vit` at the same
sizes (grown once against not grown). Each backend runs in its own process;
within it the four steps are timed alternately on the same batch.

    python -m benchmarks.converted_step [--quick]
"""

import argparse
import json

from benchmarks.common import (
    best_time,
    machine_description,
    run_per_backend,
    write_result,
)

SIZES = dict(image=32, patch=4, depth=4, dim=64, heads=4, mlp=128)
QUICK = dict(image=16, patch=4, depth=2, dim=32, heads=2, mlp=64)


def _models(sizes: dict):
    """`{name: compiled model}`: KerasHub ViT unconverted and converted +
    grown, our ViT not grown and grown."""
    import keras
    import keras_hub
    import numpy as np

    from keras_depthhet import make_growable
    from keras_depthhet.growth import grow_model
    from keras_depthhet.models import growable_layer_map, vit

    rng = np.random.default_rng(0)

    def hub():
        backbone = keras_hub.models.ViTBackbone(
            image_shape=(sizes["image"], sizes["image"], 3),
            patch_size=sizes["patch"],
            num_layers=sizes["depth"],
            num_heads=sizes["heads"],
            hidden_dim=sizes["dim"],
            mlp_dim=sizes["mlp"],
            name="backbone",
        )
        inputs = keras.Input((sizes["image"], sizes["image"], 3))
        tokens = backbone(inputs)
        return keras.Model(inputs, keras.layers.Dense(10)(tokens[:, 0]))

    def ours():
        return vit(
            image_size=sizes["image"],
            patch_size=sizes["patch"],
            num_channels=3,
            num_classes=10,
            dim=sizes["dim"],
            depth=sizes["depth"],
            num_heads=sizes["heads"],
            mlp_ratio=sizes["mlp"] / sizes["dim"],
        )

    def compiled(model):
        model.compile(
            "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        return model

    def grown(model):
        plan = {
            key: rng.choice(layer.units, layer.units // 4, replace=False)
            for key, layer in growable_layer_map(model).items()
        }
        grow_model(model, plan)
        return model

    base = hub()
    return {
        "keras_hub": compiled(base),
        "keras_hub_grown": grown(compiled(make_growable(base))),
        "vit": compiled(ours()),
        "vit_grown": grown(compiled(ours())),
    }


def worker(quick: bool) -> dict:
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    sizes = QUICK if quick else SIZES
    models = _models(sizes)
    rng = np.random.default_rng(1)
    size = sizes["image"]
    x = rng.normal(size=(64, size, size, 3)).astype("float32")
    y = rng.integers(0, 10, 64)
    steps = {
        name: (lambda m=model: m.train_on_batch(x, y))
        for name, model in models.items()
    }
    repeats = 3 if quick else 20
    best = {name: float("inf") for name in steps}
    for _ in range(3):  # Alternated, so drifting load hits all alike.
        for name, step in steps.items():
            best[name] = min(best[name], best_time(step, repeats))
    return {
        "params": {n: int(m.count_params()) for n, m in models.items()},
        "seconds": best,
    }


def report(results: dict, sizes: dict, machine: str) -> str:
    """The Markdown table of the workers' `results` by backend."""
    lines = [
        f"Measured {machine}; images {sizes['image']}x{sizes['image']}, "
        f"patch {sizes['patch']}, {sizes['depth']} blocks of width "
        f"{sizes['dim']}, batch 64; one growth event (a quarter of every "
        "growable layer's units).",
        "",
        "| backend | model | params before | params after | step before "
        "(ms) | step after (ms) | after / before |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend, r in results.items():
        for model, label in (
            ("keras_hub", "KerasHub ViT, `make_growable`"),
            ("vit", "`keras_depthhet.models.vit`"),
        ):
            before = r["seconds"][model]
            after = r["seconds"][f"{model}_grown"]
            lines.append(
                f"| {backend} | {label} | {r['params'][model]:,} | "
                f"{r['params'][model + '_grown']:,} | {before * 1e3:.1f} | "
                f"{after * 1e3:.1f} | {after / before:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.quick)))
        return
    machine = machine_description()
    extra = ["--quick"] if args.quick else []
    results = run_per_backend("benchmarks.converted_step", extra)
    table = report(results, QUICK if args.quick else SIZES, machine)
    path = write_result("converted_step", table, quick=args.quick)
    print(table)
    print(f"Written to {path}")


if __name__ == "__main__":
    main()
