"""Page faults and system time of one training step, per backend and timm.

Each worker (Keras on JAX, Keras on TensorFlow, and timm where PyTorch and
timm are found, see `--timm-python`) builds the uniform DeiT-S training step
of `benchmarks.train_step_throughput` (224x224, batch 16, AdamW), warms it
up, then runs it a few times and reads its own `getrusage`: the minor page
faults per step (each a fresh 4 KiB page the kernel maps and zeroes), the
system CPU seconds per step, and the peak resident memory. Every worker
runs twice, in fresh processes of one run: with glibc's default allocator
settings, and with `GLIBC_TUNABLES` set to
`benchmarks.common.RETAINED_MEMORY_TUNABLES`, which keeps freed memory in
the process.

The fault counts do not depend on the machine's load, unlike the timings
of the other benchmarks (`train_step_throughput --retained-memory` times
the same two settings).

    python -m benchmarks.step_page_faults [--quick] [--timm-python PATH]
"""

import argparse
import json
import os
import resource
import sys
import time

from benchmarks.common import (
    BACKENDS,
    RETAINED_MEMORY_TUNABLES,
    add_timm_python_argument,
    machine_description,
    retained_memory_env,
    run_json_worker,
    write_result,
)
from benchmarks.train_step_throughput import timm_available

STEPS = 3
"""Steps counted, after the warm-up."""

WARMUP = 3
"""Steps run first, so that compilation and the heap's growth are over."""


def _usage():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_stime


def count(step) -> dict:
    """Faults and system seconds per call of `step`, and the peak memory."""
    for _ in range(WARMUP):
        step()
    faults, system = _usage()
    for _ in range(STEPS):
        step()
    faults_after, system_after = _usage()
    return {
        "faults": (faults_after - faults) / STEPS,
        "system_s": (system_after - system) / STEPS,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def keras_worker(quick: bool) -> dict:
    import numpy as np

    from benchmarks.train_step_throughput import build_model, keras_step

    image_size, patch_size = (32, 8) if quick else (224, 16)
    rng = np.random.default_rng(0)
    model = build_model("uniform", quick, image_size, patch_size, rng)
    return count(keras_step(model, 16, image_size, 100, rng))


def timm_worker() -> dict:
    from benchmarks.train_step_throughput import timm_step

    _, step = timm_step(224, 16, 16)
    return count(step)


def run_worker(name: str, python: str, retained: bool, quick: bool) -> dict:
    """One worker in a fresh process; its counts."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("GLIBC_TUNABLES", None)
    if retained:
        env.update(retained_memory_env())
    command = [python, "-m", "benchmarks.step_page_faults", "--worker", name]
    if name != "timm":
        env["KERAS_BACKEND"] = name
        command += ["--quick"] if quick else []
    return run_json_worker(command, env, f"page-fault worker {name}")


def report(rows: list, quick: bool, seconds: float, machine: str) -> str:
    lines = [
        "| step | allocator | page faults / step | MiB faulted in / step "
        "| system s / step | peak resident MiB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, retained, r in rows:
        label = {
            "jax": "Keras-JAX",
            "tensorflow": "Keras-TensorFlow",
            "timm": "timm",
        }[name]
        allocator = "freed memory retained" if retained else "glibc default"
        lines.append(
            f"| {label} | {allocator} | {r['faults']:,.0f} "
            f"| {r['faults'] * 4 / 1024:,.0f} | {r['system_s']:.2f} "
            f"| {r['peak_mib']:,.0f} |"
        )
    model = "two-block ViT, dim 64, 32x32" if quick else "DeiT-S, 224x224"
    command = "python -m benchmarks.step_page_faults" + (
        " --quick" if quick else ""
    )
    if not quick and not any(name == "timm" for name, _, _ in rows):
        command += " (timm not measured: PyTorch/timm not found)"
    return (
        f"Minor page faults of one uniform {model} training step (batch 16, "
        f"AdamW), mean over {STEPS} steps after {WARMUP}; 4 KiB pages. "
        "'freed memory retained': the worker started with "
        f"`GLIBC_TUNABLES={RETAINED_MEMORY_TUNABLES}`. "
        f"Measured {machine}.\n\n"
        + "\n".join(lines)
        + f"\n\nCommand: `{command}` ({seconds:.0f} s).\n"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    add_timm_python_argument(parser)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.worker == "timm":
            result = timm_worker()
        else:
            result = keras_worker(args.quick)
        print(json.dumps(result))
        return
    machine = machine_description()
    start = time.time()
    workers = [(name, sys.executable) for name in BACKENDS]
    # Quick mode builds a small ViT, so no DeiT-S in timm to set beside it.
    if not args.quick and timm_available(args.timm_python):
        workers.append(("timm", args.timm_python))
    rows = []
    for name, python in workers:
        for retained in (False, True):
            result = run_worker(name, python, retained, args.quick)
            rows.append((name, retained, result))
            print(name, "retained" if retained else "default", result)
    text = report(rows, args.quick, time.time() - start, machine)
    print(text)
    path = write_result("step_page_faults", text, args.quick)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
