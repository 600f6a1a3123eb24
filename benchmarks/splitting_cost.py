"""Cost of `splitting_eigenvalues` in training steps, per backend and solver.

For a tiny ViT and the paper's reduced DeiT-S, the time of analysing N
batches is divided by the time of N training steps (forward, backward,
Adam update, jitted) on the same batches, measured in the same process.
Beside it: the Lanczos steps used, the achieved flop rate of the solver,
the arithmetic floor of exact lambda_min (one fwd+bwd to capture plus
`4 * tokens * units * (d+1)` flops per neuron-step), the dense per-neuron
method of the splitting papers' code (form `S_i`, call `eigh`, neuron by
neuron; timed on a sample of neurons per layer and scaled to all) and the
rank-1 gradient proxy of the paper authors' code.

    python -m benchmarks.splitting_cost [--quick]

The full mode runs the tiny ViT and the reduced DeiT-S at 224x224 (minutes
on a 2-core CPU) and writes `benchmarks/results/splitting_cost.md`;
`--quick` (a smoke run, about half a minute) only a one-block 16px ViT and
writes `benchmarks/results/quick/splitting_cost.md`.
"""

import argparse
import functools
import json
import time

from benchmarks.common import (
    machine_description,
    run_per_backend,
    write_result,
)

SAMPLED_NEURONS = 4
"""Neurons per layer timed for the dense per-neuron baseline."""

IMAGENET100_TRAIN = 126_689
"""Training images of ImageNet-100 (the paper's 100-class subset)."""


def _models(quick: bool) -> list[dict]:
    tiny = {
        "name": "tiny ViT (32px, dim 64, depth 2)",
        "kwargs": {
            "image_size": 32,
            "patch_size": 8,
            "num_classes": 10,
            "dim": 64,
            "depth": 2,
            "num_heads": 2,
            "attention_width": 0.5,
            "mlp_width": 0.5,
        },
        "batch": 32,
        "batches": 4,
        "methods": ["dense", "matrix_free"],
    }
    if quick:
        # A smoke run: every method and column, on a model that compiles
        # in seconds.
        smallest = {
            "name": "smallest ViT (16px, dim 32, depth 1)",
            "kwargs": dict(tiny["kwargs"], image_size=16, dim=32, depth=1),
            "batch": 8,
            "batches": 2,
        }
        return [dict(tiny, **smallest)]
    deit = {
        "name": "reduced DeiT-S (224px)",
        "kwargs": {
            "image_size": 224,
            "patch_size": 16,
            "num_classes": 100,
            "dim": 384,
            "depth": 12,
            "num_heads": 6,
            "attention_width": 0.5,
            "mlp_width": 0.5,
        },
        "batch": 8,
        "batches": 2,
        "methods": ["matrix_free"],
    }
    # Twice the images: the solver's costs per Lanczos step that do not
    # grow with the tokens weigh half as much (GrowthCallback analyses 10
    # training batches by default, far more tokens than either row).
    return [tiny, deit, dict(deit, batches=4)]


def _captures(model, data, loss, layers) -> dict:
    """Each layer's `(X~, C)` over `data`, as the backend's tensors.

    The library's capture step, as `splitting_eigenvalues` runs it (not
    timed).
    """
    import keras

    from keras_depthhet.splitting import capture
    from keras_depthhet.splitting.capture import splitting_terms

    step = capture.make_step(
        model,
        {layer.name: layer for layer in layers},
        loss,
        splitting_terms,
        ("bench",),
    )
    total = sum(len(y) for _, y in data)
    pieces = {layer.name: [] for layer in layers}
    for x, y in data:
        terms, _ = step(x, y, None, len(y) / total)
        for name, arrays in terms.items():
            pieces[name].append(arrays)
    return {
        name: tuple(
            keras.ops.concatenate(list(part))
            for part in zip(*parts, strict=True)
        )
        for name, parts in pieces.items()
    }


def _dense_per_neuron(captures: dict, layers) -> float:
    """Seconds of forming `S_i` and `eigh` for every neuron, one at a time.

    Timed on `SAMPLED_NEURONS` neurons per layer and scaled by the width.
    """
    import keras
    import numpy as np

    seconds = 0.0
    for layer in layers:
        x_tilde, c = (
            keras.ops.convert_to_numpy(a) for a in captures[layer.name]
        )
        start = time.perf_counter()
        for i in range(SAMPLED_NEURONS):
            matrix = x_tilde.T @ (c[:, i : i + 1] * x_tilde)
            np.linalg.eigh(matrix.astype("float64"))
        elapsed = time.perf_counter() - start
        seconds += elapsed * layer.units / SAMPLED_NEURONS
    return seconds


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def worker(quick: bool) -> dict:
    import keras
    import numpy as np

    from keras_depthhet.models.flops import count_flops
    from keras_depthhet.models.vit import growable_layers, vit
    from keras_depthhet.splitting import gradient_proxy, splitting_eigenvalues

    results = []
    for spec in _models(quick):
        keras.utils.clear_session()
        keras.utils.set_random_seed(0)
        model = vit(**spec["kwargs"])
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(keras.optimizers.Adam(1e-4), loss, jit_compile=True)
        rng = np.random.default_rng(0)
        size = spec["kwargs"]["image_size"]
        data = [
            (
                rng.normal(size=(spec["batch"], size, size, 3)).astype(
                    "float32"
                ),
                rng.integers(0, spec["kwargs"]["num_classes"], spec["batch"]),
            )
            for _ in range(spec["batches"])
        ]
        # The analysis runs before the training steps so that it sees the
        # same weights in every method; the steps only provide timings.
        row = {"model": spec["name"], "batch": spec["batch"]}
        row["batches"] = spec["batches"]
        layers = growable_layers(model)
        tokens = (
            spec["batches"]
            * spec["batch"]
            * ((size // spec["kwargs"]["patch_size"]) ** 2 + 1)
        )
        row["tokens"] = tokens
        methods = {}
        for method in spec["methods"]:
            call = functools.partial(
                splitting_eigenvalues,
                model,
                data,
                method=method,
                return_info=True,
            )
            _, first = _timed(call)
            # A later growth event: a new model of the same shapes needs a
            # new capture step, while the solver's compiled programs (one
            # per layer shape on JAX) are reused.
            keras.utils.set_random_seed(0)
            twin = vit(**spec["kwargs"])
            _, event = _timed(
                functools.partial(
                    splitting_eigenvalues, twin, data, loss=loss, method=method
                )
            )
            del twin
            # The best of two warm calls (the machine is shared).
            (_, info), warm = min(
                (_timed(call) for _ in range(2)), key=lambda r: r[1]
            )
            names = [layer.name for layer in layers]
            steps = np.concatenate([info[n]["steps"] for n in names])
            solve = sum(info[n]["seconds"] for n in names)
            neuron_steps = {
                layer.name: int(info[layer.name]["steps"].sum())
                for layer in layers
            }
            solver_flops = sum(
                4.0 * tokens * (layer.input_dim + 1) * neuron_steps[layer.name]
                for layer in layers
            )
            methods[method] = {
                "first_call_s": first,
                "event_s": event,
                "seconds": warm,
                "capture_s": info["capture"]["seconds"],
                "solve_s": solve,
                "steps_mean": float(steps.mean()),
                "steps_max": int(steps.max()),
                "solver_gflops": solver_flops / 1e9,
                "solver_gflop_per_s": solver_flops / 1e9 / solve,
            }
        gradient_proxy(model, data)
        _, proxy = _timed(functools.partial(gradient_proxy, model, data))
        captures = _captures(model, data, loss, layers)
        baseline = _dense_per_neuron(captures, layers)
        del captures
        for x, y in data[:1] * 2:
            model.train_on_batch(x, y)
        train = float("inf")
        for _ in range(4):
            start = time.perf_counter()
            for x, y in data:
                model.train_on_batch(x, y)
            train = min(train, time.perf_counter() - start)
        train_flops = 6.0 * count_flops(model) * spec["batch"] * spec["batches"]
        row.update(
            train_s=train,
            train_gflops=train_flops / 1e9,
            methods=methods,
            proxy_s=proxy,
            dense_per_neuron_s=baseline,
        )
        results.append(row)
    return {"backend": keras.backend.backend(), "results": results}


def floor_of(row: dict, method: dict) -> float:
    """The arithmetic floor in units of the N training steps' time."""
    return 1.0 + method["solver_gflops"] / row["train_gflops"]


def _markdown(per_backend: dict, quick: bool, machine: str) -> str:
    lines = [
        f"Measured {machine}.",
        "",
        "Time of `splitting_eigenvalues` over N batches divided by the time "
        "of N jitted training steps (fwd + bwd + Adam) on the same batches, "
        "same process, shared 2-core CPU (timings are noisy: the best of "
        "two warm calls and of four passes of training steps). `first` is "
        "the first analysis in the process: it traces and compiles the "
        "capture step and the solver (one program per layer shape); "
        "`event` analyses a second model of the same shapes, as "
        "at a later growth event (a new capture step, the solver's "
        "programs reused); `warm` reuses everything. Floor: one fwd+bwd "
        "(taken as one training step) plus the solver's flops at the "
        "training step's flop rate, for the Lanczos steps actually used. "
        "Dense per neuron: the "
        "splitting papers' method (form `S_i`, float64 `eigh`, neuron by "
        f"neuron), timed on {SAMPLED_NEURONS} neurons per layer and scaled "
        "to all.",
        "",
        "| backend | model | N x batch | method | warm / train | first / "
        "train | event / train | floor / train | steps mean (max) | "
        "solver GFLOP/s | train GFLOP/s | dense per neuron / train | "
        "proxy / train |",
        "|" + "---|" * 13,
    ]
    notes = []
    for backend, result in per_backend.items():
        for row in result["results"]:
            train = row["train_s"]
            train_rate = row["train_gflops"] / train
            for method, m in row["methods"].items():
                floor = floor_of(row, m)
                lines.append(
                    f"| {backend} | {row['model']} | {row['batches']} x "
                    f"{row['batch']} | {method} | {m['seconds'] / train:.2f} "
                    f"| {m['first_call_s'] / train:.2f} | "
                    f"{m['event_s'] / train:.2f} | "
                    + (f"{floor:.2f}" if m["steps_max"] else "-")
                    + f" | {m['steps_mean']:.1f} ({m['steps_max']}) | "
                    f"{m['solver_gflop_per_s']:.1f} | {train_rate:.1f} | "
                    f"{row['dense_per_neuron_s'] / train:.1f} | "
                    f"{row['proxy_s'] / train:.2f} |"
                )
            if "DeiT" in row["model"] and "matrix_free" in row["methods"]:
                m = row["methods"]["matrix_free"]
                steps_per_epoch = IMAGENET100_TRAIN / 256
                # Both times grow in proportion to the images, so the
                # ratio also prices analysing 256 images in steps of 256.
                event_steps = m["event_s"] / train
                fraction = event_steps / (30 * steps_per_epoch)
                notes.append(
                    f"- {backend}, {row['batches']} x {row['batch']} "
                    "images: analysing 256 images (one batch of the "
                    f"paper's size) costs about {event_steps:.2f} training "
                    "steps of batch 256 (a growth event's call), "
                    f"{100 * fraction:.4f}% of the 30 epochs "
                    f"({30 * steps_per_epoch:.0f} steps) between growth "
                    f"events; the dense per-neuron method is "
                    f"{row['dense_per_neuron_s'] / m['seconds']:.1f}x slower "
                    "than the warm matrix-free analysis, which takes "
                    f"{m['seconds'] / train / floor_of(row, m):.2f}x its "
                    "floor."
                )
    if notes:
        lines += [
            "",
            "One growth event at the paper's settings (DeiT-S, ImageNet-100, "
            "batch 256), scaled from the measured ratio. 256 images need "
            "about 18 GiB of captures (35 MiB per image, twice while the "
            "batches are joined), so with the default 4 GiB `memory_budget` "
            "the 48 layers go in about 5 groups: about 4 more forward and "
            "backward passes, under 4 more training steps.",
            "",
            *notes,
        ]
    mode = "quick" if quick else "full"
    lines += [
        "",
        f"Mode: {mode}. Command: `python -m benchmarks.splitting_cost"
        + (" --quick" if quick else "")
        + "`.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.quick)))
        return
    machine = machine_description()
    per_backend = run_per_backend(
        "benchmarks.splitting_cost", ["--quick"] if args.quick else []
    )
    markdown = _markdown(per_backend, args.quick, machine)
    print(markdown)
    path = write_result("splitting_cost", markdown, quick=args.quick)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
