"""Training throughput of the reduced, grown and uniform DeiT-S, and timm.

One jitted training step (AdamW, sparse cross-entropy, fwd+bwd+update) of:
the paper's reduced base (`deit_small(num_classes=100, attention_width=0.5,
mlp_width=0.5)`, 11.07M parameters), that base grown at random neurons of all
48 layers in rounds of the paper's 580k-parameter budget until it reaches the
paper's final size (about 19.4M), and the uniform DeiT-S (21.7M); per
backend, in images per second, with ratios to the reduced base. With PyTorch
and timm installed (`pip install torch==2.14.1 timm`, in this environment or
in another one named by `--timm-python`), the same uniform DeiT-S step in
timm is measured too.

Each backend (and timm) runs in its own worker process, which builds and
compiles its models and then times one model at a time on request; the
parent goes round the workers and models several times, so that a shared
machine's drifting load hits them all alike, and keeps each one's best
time. The cross-backend ratios are therefore measured side by side in one
run.

    python -m benchmarks.train_step_throughput [--quick] [--rounds N]
        [--models reduced grown uniform] [--timm-python PATH]
        [--jax-xla-flags=FLAGS ...] [--retained-memory]

`--models` limits the run to some of the models, with a table of its own
(`results/train_step_throughput_uniform.md` for the uniform model alone).
`--jax-xla-flags=FLAGS` (repeatable; the `=` lets FLAGS start with `--`)
adds one more JAX worker whose `XLA_FLAGS` is FLAGS, timed in the same
turns as the others: XLA compiler options tried on the benchmark's side
only, never set by the library. `--retained-memory` adds a twin of every
worker (JAX, TensorFlow, timm) started with `GLIBC_TUNABLES` set to
`benchmarks.common.RETAINED_MEMORY_TUNABLES`, so that glibc keeps freed
memory for reuse; both settings are timed in the same turns.
"""

import argparse
import subprocess
import sys
import time

from benchmarks.common import (
    BACKENDS,
    RETAINED_MEMORY_TUNABLES,
    Worker,
    add_timm_python_argument,
    best_time,
    machine_description,
    retained_memory_env,
    serve,
    write_result,
)

TARGET_PARAMS = 19_400_000
ROUND_BUDGET = 580_000
BASE_PARAMS = 11_071_204
MODELS = ("reduced", "grown", "uniform")


def _build(quick, image_size, patch_size, **widths):
    """DeiT-S, or in quick mode a two-block ViT of the same shape."""
    from keras_depthhet.models import deit_small, vit

    common = dict(num_classes=100, image_size=image_size, patch_size=patch_size)
    if quick:
        return vit(dim=64, depth=2, num_heads=2, **common, **widths)
    return deit_small(**common, **widths)


def grow_to(model, target, round_budget, rng):
    """Grows `model` at random neurons of all its layers up to `target`.

    Each round spreads `round_budget` parameters over random layers, neuron
    by neuron, as the paper's budgeted events do.
    """
    from keras_depthhet.models import growable_layers

    layers = growable_layers(model)
    while model.count_params() < target:
        budget = min(round_budget, target - model.count_params())
        plan = {}
        while budget > 0:
            layer = layers[rng.integers(len(layers))]
            cost = layer.growth_cost(1)
            if cost > budget:
                break
            free = set(range(layer.units)) - set(plan.get(layer.name, []))
            plan.setdefault(layer.name, []).append(rng.choice(sorted(free)))
            budget -= cost
        if not plan:
            break
        for layer in layers:
            if layer.name in plan:
                layer.grow(sorted(plan[layer.name]))


def build_model(name, quick, image_size, patch_size, rng):
    """The `"reduced"`, `"grown"` (to the paper's 19.4M, scaled) or
    `"uniform"` model; quick mode builds a two-block ViT of the same shape.
    """
    shape = (quick, image_size, patch_size)
    if name == "uniform":
        return _build(*shape)
    model = _build(*shape, attention_width=0.5, mlp_width=0.5)
    if name == "grown":
        scale = model.count_params() / BASE_PARAMS
        target = round(TARGET_PARAMS * scale)
        # Quick mode grows in three rounds, enough to exercise the code.
        rounds = (
            3 if quick else round((TARGET_PARAMS - BASE_PARAMS) / ROUND_BUDGET)
        )
        round_budget = -(-(target - model.count_params()) // rounds)
        grow_to(model, target, round_budget, rng)
    return model


def keras_step(model, batch, image_size, num_classes, rng):
    """A function running one compiled training step of `model`."""
    import keras

    model.compile(
        optimizer=keras.optimizers.AdamW(5e-4, weight_decay=0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    x = rng.normal(size=(batch, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, num_classes, size=(batch,))
    return lambda: model.train_on_batch(x, y)


def keras_worker(quick, image_size, patch_size, batch, names):
    import numpy as np

    rng = np.random.default_rng(0)
    # Built in the fixed order, so each model gets the same weights and
    # growth whichever subset is timed.
    models = {
        name: build_model(name, quick, image_size, patch_size, rng)
        for name in MODELS
    }
    models = {name: models[name] for name in names}
    steps = {
        name: keras_step(model, batch, image_size, 100, rng)
        for name, model in models.items()
    }
    for step in steps.values():  # compile before the first timing
        step()
    serve(
        {"params": {name: m.count_params() for name, m in models.items()}},
        lambda r: {"seconds": best_time(steps[r["model"]], r["repeats"], 1)},
    )


def timm_step(image_size, patch_size, batch):
    """timm's DeiT-S and one eager AdamW training step on a random batch.

    Returns `(model, step)`; `step()` runs forward, backward and update.
    """
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(
        "deit_small_patch16_224",
        pretrained=False,
        num_classes=100,
        img_size=image_size,
        patch_size=patch_size,
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=5e-4, weight_decay=0.05
    )
    x = torch.randn(batch, 3, image_size, image_size)
    y = torch.randint(0, 100, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    return model, step


def timm_worker(image_size, patch_size, batch):
    import torch

    model, step = timm_step(image_size, patch_size, batch)
    step()
    serve(
        {
            "params": sum(p.numel() for p in model.parameters()),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        lambda r: {"seconds": best_time(step, r["repeats"], 1)},
    )


def timm_available(python: str) -> bool:
    probe = [python, "-c", "import timm, torch"]
    return subprocess.run(probe, capture_output=True).returncode == 0


RETAINED = ", freed memory retained"
"""The suffix of a worker started with glibc keeping freed memory."""


def measure(
    quick, rounds, repeats, timm_python, names, xla_flags=(), retained=False
):
    """Starts the workers one after another, then times them in turns.

    Returns `({worker: ready_info}, {worker: {model: best seconds}})`.
    """
    flags = ["--quick"] if quick else []
    module = [
        "-m",
        "benchmarks.train_step_throughput",
        "--serve",
        "--models",
        *names,
        *flags,
    ]
    specs = {
        backend: ([sys.executable, *module], {"KERAS_BACKEND": backend})
        for backend in BACKENDS
    }
    for flags in xla_flags:
        env = {"KERAS_BACKEND": "jax", "XLA_FLAGS": flags}
        specs[_flagged(flags)] = ([sys.executable, *module], env)
    # Quick mode times a small ViT, so no DeiT-S in timm to set beside it.
    if (
        not quick
        and "uniform" in names
        and timm_python
        and timm_available(timm_python)
    ):
        specs["timm"] = ([timm_python, *module, "--timm"], {})
    if retained:
        for name in [*BACKENDS, "timm"]:
            if name in specs:
                command, env = specs[name]
                specs[name + RETAINED] = (
                    command,
                    {**env, **retained_memory_env()},
                )
    workers, best = {}, {}
    try:
        for name, (command, env) in specs.items():
            workers[name] = Worker(command, env)
        for _ in range(rounds):
            for name, worker in workers.items():
                timm = name.startswith("timm")
                models = ("uniform",) if timm else names
                for model in models:
                    seconds = worker.request(model=model, repeats=repeats)
                    key = best.setdefault(name, {})
                    key[model] = min(
                        key.get(model, float("inf")), seconds["seconds"]
                    )
    finally:
        for worker in workers.values():
            worker.close()
    return {name: w.ready for name, w in workers.items()}, best


def _flagged(flags: str) -> str:
    """The name of the JAX worker run with `XLA_FLAGS=flags`."""
    return f"jax, XLA_FLAGS=`{flags}`"


def report(
    quick,
    image_size,
    batch,
    ready,
    best,
    rounds,
    seconds,
    machine,
    xla_flags=(),
    retained=False,
):
    """The Markdown table and the side-by-side ratios."""
    ips = {
        name: {model: batch / t for model, t in times.items()}
        for name, times in best.items()
    }
    names = [model for model in MODELS if model in ips["jax"]]
    ratios = [m for m in names if m != "reduced"] if "reduced" in names else []
    header = ["backend", *(f"{m} (img/s)" for m in names)]
    header += [f"{m} / reduced" for m in ratios]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    rows = [*BACKENDS, *map(_flagged, xla_flags)]
    if retained:
        rows += [backend + RETAINED for backend in BACKENDS]
    for backend in rows:
        r = ips[backend]
        cells = [backend, *(f"{r[m]:.2f}" for m in names)]
        cells += [f"{r[m] / r['reduced']:.2f}" for m in ratios]
        lines.append("| " + " | ".join(cells) + " |")
    params = ready["jax"]["params"]
    model = "two-block ViT, dim 64" if quick else "DeiT-S"
    text = (
        f"{model}, image size {image_size}, batch {batch}, AdamW step, "
        f"jit-compiled, float32; best of {rounds} rounds. Parameters: "
        + ", ".join(f"{m} {params[m]:,}" for m in names)
        + f". Measured {machine}.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    if "uniform" in names:
        uniform = {name: r["uniform"] for name, r in ips.items()}
        text += (
            "\nUniform step side by side: Keras-JAX / Keras-TensorFlow "
            f"{uniform['jax'] / uniform['tensorflow']:.2f}"
        )
        for flags in xla_flags:
            text += (
                f", with XLA_FLAGS=`{flags}` "
                f"{uniform[_flagged(flags)] / uniform['tensorflow']:.2f}"
            )
        if "timm" in ready:
            timm = ready["timm"]
            text += (
                f"; timm (PyTorch {timm['torch']}, {timm['threads']} "
                f"threads, eager, {timm['params']:,} parameters) "
                f"{uniform['timm']:.2f} img/s, Keras-JAX / timm "
                f"{uniform['jax'] / uniform['timm']:.2f}, Keras-TensorFlow / "
                f"timm {uniform['tensorflow'] / uniform['timm']:.2f}"
            )
        elif not quick:
            text += " (timm not measured: PyTorch/timm not found)"
        text += ".\n"
        if retained:
            kept = {
                name: uniform[name + RETAINED]
                for name in (*BACKENDS, "timm")
                if name + RETAINED in uniform
            }
            text += (
                "\nWith freed memory retained in every worker (started "
                f"with `GLIBC_TUNABLES={RETAINED_MEMORY_TUNABLES}`): "
                "Keras-JAX / Keras-TensorFlow "
                f"{kept['jax'] / kept['tensorflow']:.2f}, Keras-JAX / "
                f"Keras-TensorFlow at its default "
                f"{kept['jax'] / uniform['tensorflow']:.2f}"
            )
            if "timm" in kept:
                text += (
                    f"; timm {kept['timm']:.2f} img/s, Keras-JAX / timm "
                    f"{kept['jax'] / kept['timm']:.2f}, Keras-JAX / timm at "
                    f"its default {kept['jax'] / uniform['timm']:.2f}"
                )
            text += ".\n"
    cmd = "python -m benchmarks.train_step_throughput" + (
        " --quick" if quick else ""
    )
    if rounds != (1 if quick else 3):
        cmd += f" --rounds {rounds}"
    if names != list(MODELS):
        cmd += " --models " + " ".join(names)
    if xla_flags:
        cmd += "".join(f" --jax-xla-flags='{f}'" for f in xla_flags)
    if retained:
        cmd += " --retained-memory"
    return text + f"\nCommand: `{cmd}` ({seconds:.0f} s).\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=list(MODELS)
    )
    add_timm_python_argument(parser)
    parser.add_argument(
        "--jax-xla-flags",
        action="append",
        default=[],
        metavar="FLAGS",
        help="one more JAX worker, run with XLA_FLAGS=FLAGS (repeatable; "
        "write --jax-xla-flags=FLAGS)",
    )
    parser.add_argument(
        "--retained-memory",
        action="store_true",
        help="a twin of every worker with glibc keeping freed memory "
        "(GLIBC_TUNABLES=benchmarks.common.RETAINED_MEMORY_TUNABLES)",
    )
    args = parser.parse_args(argv)
    names = [model for model in MODELS if model in args.models]
    image_size, patch_size = (32, 8) if args.quick else (224, 16)
    batch = 4 if args.quick else 16
    if args.serve:
        if args.timm:
            timm_worker(image_size, patch_size, batch)
        else:
            keras_worker(args.quick, image_size, patch_size, batch, names)
        return
    rounds = args.rounds or (1 if args.quick else 3)
    repeats = 2
    machine = machine_description()
    start = time.time()
    ready, best = measure(
        args.quick,
        rounds,
        repeats,
        args.timm_python,
        names,
        args.jax_xla_flags,
        args.retained_memory,
    )
    text = report(
        args.quick,
        image_size,
        batch,
        ready,
        best,
        rounds,
        time.time() - start,
        machine,
        args.jax_xla_flags,
        args.retained_memory,
    )
    print(text)
    # A subset of the models gets a table of its own.
    suffix = "" if names == list(MODELS) else "_" + "_".join(names)
    path = write_result(
        "train_step_throughput" + suffix, text, quick=args.quick
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
