"""Helpers shared by the benchmark scripts: backend subprocesses, timing."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BACKENDS = ("jax", "tensorflow")


def run_per_backend(module: str, args: list[str]) -> dict[str, dict]:
    """Runs `python -m module --worker args` once per backend.

    Each worker prints one JSON object on its last stdout line; a fresh
    process per backend keeps the backends (and their thread pools) apart.
    """
    results = {}
    for backend in BACKENDS:
        env = {**os.environ, "KERAS_BACKEND": backend}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        proc = subprocess.run(
            [sys.executable, "-m", module, "--worker", *args],
            env=env,
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise RuntimeError(f"{module} failed under {backend}")
        results[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def best_time(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Best wall time of `fn()` over `repeats` calls, after `warmup` calls.

    The minimum is the least noisy estimate on a shared machine; `fn` must
    block until its result is ready.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def write_result(name: str, markdown: str) -> Path:
    """Writes `results/NAME.md` (included by docs/benchmarks.md)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(markdown)
    return path


def grad_step_fn(layer, x) -> Callable[[], object]:
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
