"""Cost of the growth branch of `GrowableDense` against a plain Dense.

A DeiT-S-sized FC1 (d=384, units=768, GELU) is grown by 768 neurons over
four rounds of 192 random neurons (a neuron may be picked in several rounds,
as in real runs). Its jitted fwd+bwd time is divided by that of a
`keras.layers.Dense` with the same parameter count (384 -> 2304 units).
Both are measured in the same process, alternately, on the same input.

    python -m benchmarks.growable_dense_overhead [--quick]
"""

import argparse
import json
import time

from benchmarks.common import best_time, run_per_backend, write_result

D, UNITS, GROWN, ROUNDS = 384, 768, 768, 4


def grad_step_fn(layer, x):
    """A jitted fwd+bwd of `layer` at `x`: gradients for weights and input.

    The upstream gradient is a fixed random tensor, so the step costs what a
    layer costs inside training (forward, weight and input gradients).
    """
    import keras
    import numpy as np

    y = layer(x)
    cotangent = np.random.default_rng(0).normal(size=y.shape).astype(x.dtype)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(weights, inputs):
            out, _ = layer.stateless_call(weights, non_trainable, inputs)
            return (out * cotangent).sum()

        step = jax.jit(jax.grad(loss, argnums=(0, 1)))
        x_dev = jax.numpy.asarray(x)
        return lambda: jax.block_until_ready(step(trainable, x_dev))
    if backend == "tensorflow":
        import tensorflow as tf

        x_tf = tf.constant(x)
        c_tf = tf.constant(cotangent)

        @tf.function(jit_compile=True)
        def step(inputs):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                out = layer(inputs)
                loss = tf.reduce_sum(out * c_tf)
            return tape.gradient(loss, [inputs, *layer.trainable_variables])

        return lambda: [t.numpy() for t in step(x_tf)]
    raise ValueError(f"Unsupported backend: {backend}")


def worker(tokens: int, repeats: int) -> dict:
    import keras
    import numpy as np

    from keras_depthhet.layers import GrowableDense

    rng = np.random.default_rng(0)
    x = rng.normal(size=(tokens, D)).astype("float32")
    grown = GrowableDense(UNITS, activation="gelu")
    grown.build((None, D))
    for _ in range(ROUNDS):
        grown.grow(rng.choice(UNITS, GROWN // ROUNDS, replace=False))
    params = grown.count_params()
    dense_units = params // (D + 1)
    dense = keras.layers.Dense(dense_units, activation="gelu")
    dense.build((None, D))
    plain = GrowableDense(UNITS, activation="gelu")
    plain.build((None, D))
    fns = {
        "grown": grad_step_fn(grown, x),
        "dense_same_params": grad_step_fn(dense, x),
        "ungrown": grad_step_fn(plain, x),
    }
    best = {name: float("inf") for name in fns}
    for _ in range(3):  # alternate so drifting load hits all alike
        for name, fn in fns.items():
            best[name] = min(best[name], best_time(fn, repeats, warmup=1))
    return {
        "tokens": tokens,
        "params_grown": params,
        "params_dense": dense.count_params(),
        "seconds": best,
        "ratio_vs_dense": best["grown"] / best["dense_same_params"],
        "ratio_vs_ungrown": best["grown"] / best["ungrown"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--tokens", type=int, default=None)
    args = parser.parse_args(argv)
    tokens = args.tokens or (256 if args.quick else 8 * 197)
    repeats = 3 if args.quick else 10
    if args.worker:
        print(json.dumps(worker(tokens, repeats)))
        return
    start = time.time()
    extra = ["--tokens", str(tokens)] + (["--quick"] if args.quick else [])
    results = run_per_backend("benchmarks.growable_dense_overhead", extra)
    lines = [
        "| backend | tokens | grown FC1 (ms) | Dense, same params (ms) | "
        "ungrown FC1 (ms) | grown / Dense | grown / ungrown |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend, r in results.items():
        s = r["seconds"]
        lines.append(
            f"| {backend} | {r['tokens']} | {1e3 * s['grown']:.2f} | "
            f"{1e3 * s['dense_same_params']:.2f} | {1e3 * s['ungrown']:.2f} | "
            f"{r['ratio_vs_dense']:.2f} | {r['ratio_vs_ungrown']:.2f} |"
        )
    table = "\n".join(lines)
    note = (
        f"FC1 d={D}, units={UNITS}, grown by {GROWN} neurons in {ROUNDS} "
        f"rounds ({results['jax']['params_grown']:,} parameters); Dense "
        f"384->{results['jax']['params_dense'] // (D + 1)} "
        f"({results['jax']['params_dense']:,} parameters). Jitted fwd+bwd, "
        "best of repeated runs. Command: `python -m "
        f"benchmarks.growable_dense_overhead{' --quick' if args.quick else ''}`"
        f" ({time.time() - start:.0f} s).\n"
    )
    print(table)
    path = write_result(
        "growable_dense_overhead", note + "\n" + table + "\n", args.quick
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
