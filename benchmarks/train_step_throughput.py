"""Training throughput of the reduced, grown and uniform DeiT-S, and timm.

One jitted training step (AdamW, sparse cross-entropy, fwd+bwd+update) of:
the paper's reduced base (`deit_small(num_classes=100, attention_width=0.5,
mlp_width=0.5)`, 11.07M parameters), that base grown at random neurons of all
48 layers in rounds of the paper's 580k-parameter budget until it reaches the
paper's final size (about 19.4M), and the uniform DeiT-S (21.7M); per
backend, in images per second, with ratios to the reduced base measured in
the same process. With PyTorch and timm installed (`pip install
torch==2.14.1 torchvision==0.29.1 timm`), the same uniform DeiT-S step in
timm is measured too and the Keras/timm ratio reported.

    python -m benchmarks.train_step_throughput [--quick]
"""

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.common import best_time, run_per_backend, write_result

TARGET_PARAMS = 19_400_000
ROUND_BUDGET = 580_000
BASE_PARAMS = 11_071_204


def _build(quick, image_size, patch_size, **widths):
    """DeiT-S, or in quick mode a two-block ViT of the same shape."""
    from keras_depthhet.models import deit_small, vit

    common = dict(num_classes=100, image_size=image_size, patch_size=patch_size)
    if quick:
        return vit(dim=64, depth=2, num_heads=2, **common, **widths)
    return deit_small(**common, **widths)


def _grow_to(model, target, round_budget, rng):
    from keras_depthhet.models import growable_layers

    layers = growable_layers(model)
    while model.count_params() < target:
        budget = min(round_budget, target - model.count_params())
        # Spread one round's budget over random layers, neuron by neuron.
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


def _keras_step(model, batch, image_size, num_classes, rng):
    import keras

    model.compile(
        optimizer=keras.optimizers.AdamW(5e-4, weight_decay=0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    x = rng.normal(size=(batch, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, num_classes, size=(batch,))
    return lambda: model.train_on_batch(x, y)


def worker(quick, image_size, patch_size, batch, repeats):
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (quick, image_size, patch_size)
    reduced = _build(*shape, attention_width=0.5, mlp_width=0.5)
    grown = _build(*shape, attention_width=0.5, mlp_width=0.5)
    scale = reduced.count_params() / BASE_PARAMS
    target = round(TARGET_PARAMS * scale)
    # Quick mode grows in three rounds, enough to exercise the code paths.
    rounds = 3 if quick else round((TARGET_PARAMS - BASE_PARAMS) / ROUND_BUDGET)
    round_budget = -(-(target - reduced.count_params()) // rounds)
    _grow_to(grown, target, round_budget, rng)
    uniform = _build(*shape)
    models = {"reduced": reduced, "grown": grown, "uniform": uniform}
    steps = {
        name: _keras_step(model, batch, image_size, 100, rng)
        for name, model in models.items()
    }
    best = {name: float("inf") for name in steps}
    for _ in range(2):  # alternate so drifting load hits all alike
        for name, step in steps.items():
            best[name] = min(best[name], best_time(step, repeats, warmup=1))
    return {
        "params": {name: m.count_params() for name, m in models.items()},
        "images_per_second": {n: batch / t for n, t in best.items()},
    }


def timm_worker(image_size, patch_size, batch, repeats):
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

    seconds = min(best_time(step, repeats, warmup=1) for _ in range(2))
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "images_per_second": batch / seconds,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _timm_available():
    probe = "import timm, torch"
    return subprocess.run([sys.executable, "-c", probe]).returncode == 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--timm", action="store_true")
    args = parser.parse_args(argv)
    image_size, patch_size = (32, 8) if args.quick else (224, 16)
    batch, repeats = (4, 2) if args.quick else (16, 3)
    if args.worker:
        if args.timm:
            out = timm_worker(image_size, patch_size, batch, repeats)
        else:
            out = worker(args.quick, image_size, patch_size, batch, repeats)
        print(json.dumps(out))
        return
    start = time.time()
    flags = ["--quick"] if args.quick else []
    results = run_per_backend("benchmarks.train_step_throughput", flags)
    timm = None
    # Quick mode times a small ViT, so no DeiT-S in timm to set beside it.
    if not args.quick and _timm_available():
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.train_step_throughput",
                "--worker",
                "--timm",
                *flags,
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ},
        )
        timm = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = [
        "| backend | reduced (img/s) | grown (img/s) | uniform (img/s) | "
        "grown / reduced | uniform / reduced |",
        "|---|---|---|---|---|---|",
    ]
    for backend, r in results.items():
        ips = r["images_per_second"]
        lines.append(
            f"| {backend} | {ips['reduced']:.2f} | {ips['grown']:.2f} | "
            f"{ips['uniform']:.2f} | {ips['grown'] / ips['reduced']:.2f} | "
            f"{ips['uniform'] / ips['reduced']:.2f} |"
        )
    params = results["jax"]["params"]
    model = "two-block ViT, dim 64" if args.quick else "DeiT-S"
    text = (
        f"{model}, image size {image_size}, batch {batch}, AdamW step, "
        "jit-compiled. "
        f"Parameters: reduced {params['reduced']:,}, grown "
        f"{params['grown']:,}, uniform {params['uniform']:,}.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    if timm is not None:
        timm_ips = timm["images_per_second"]
        text += (
            f"\nSame uniform DeiT-S step in timm (PyTorch {timm['torch']}, "
            f"{timm['threads']} threads, eager): "
            f"{timm['images_per_second']:.2f} img/s "
            f"({timm['params']:,} parameters). Keras / timm: "
            + ", ".join(
                f"{b} {r['images_per_second']['uniform'] / timm_ips:.2f}"
                for b, r in results.items()
            )
            + ".\n"
        )
    elif not args.quick:
        text += "\n(timm comparison skipped: PyTorch/timm not installed.)\n"
    cmd = "python -m benchmarks.train_step_throughput" + (
        " --quick" if args.quick else ""
    )
    text += f"\nCommand: `{cmd}` ({time.time() - start:.0f} s).\n"
    print(text)
    path = write_result("train_step_throughput", text, quick=args.quick)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
