"""One-GPU check: training speed, one growth event and peak memory.

For each backend, in its own processes: the training-step throughput of
the paper's reduced DeiT-S (11.07M parameters), of that model grown at
random neurons to the paper's final size (about 19.4M) and of the uniform
DeiT-S (21.7M), at 224x224 in the `mixed_bfloat16` policy; then one growth
event on the reduced model (splitting analysis of one batch, selection of
the paper's 580k-parameter budget, in-place growth) with its analysis and
recompile seconds; and the peak accelerator memory of each process ("n/a"
on a CPU). A step or an event that fails is reported in its row, and the
check goes on.

Each model runs in a fresh process, so that every peak-memory figure is
that model's own (in `--quick` mode one process per backend runs all
three, to save start-up time). The full check is meant for a machine with
one GPU (`pip install "keras-depthhet[jax-cuda,tensorflow-gpu]"`), where it
takes a few minutes; without an accelerator it says so and stops, unless
`--cpu` is given. `--quick` runs a two-block ViT at 32x32 on a CPU in a
minute or two, which the test suite does.

    python -m benchmarks.gpu_check [--quick] [--cpu] [--out PATH]
        [--backends jax tensorflow] [--batch N] [--policy NAME]
"""

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import (
    BACKENDS,
    best_time,
    machine_description,
    write_result,
)
from benchmarks.train_step_throughput import MODELS, build_model, keras_step

WORKER_TIMEOUT = 600
"""Seconds one worker process may run before its rows report a timeout."""

EVENT_BUDGET = 580_000
"""Parameters added by the growth event: the paper's budget for DeiT-S."""


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def _cell(text: str) -> str:
    """`text` made safe for a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "/")


def _device() -> tuple[str, bool]:
    """The first device's name and whether it is an accelerator."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return device.device_kind, device.platform != "cpu"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "cpu", False
    details = tf.config.experimental.get_device_details(gpus[0])
    return details.get("device_name", "GPU:0"), True


def _peak_bytes() -> int | None:
    """Peak accelerator memory of this process so far; None on a CPU."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "cpu":
            return None
        return (device.memory_stats() or {}).get("peak_bytes_in_use")
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"]


def _growth_event(model, x, y, quick: bool, repeats: int) -> dict:
    """Analysis, selection, in-place growth and recompile of `model`."""
    from keras_depthhet.growth import grow_model, select_neurons
    from keras_depthhet.models import growable_layers
    from keras_depthhet.splitting import splitting_eigenvalues

    event = {}
    start = time.perf_counter()
    scores = splitting_eigenvalues(model, [(x, y)])
    event["analysis_s"] = time.perf_counter() - start
    layers = growable_layers(model)
    costs = {layer.name: layer.growth_cost(1) for layer in layers}
    # Quick mode's tiny model gets the same share of its size as DeiT-S.
    budget = 0.05 * model.count_params() if quick else EVENT_BUDGET
    plan = select_neurons(scores, costs, param_budget=budget)
    event["added"] = grow_model(model, plan)
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    step = best_time(lambda: model.train_on_batch(x, y), repeats, warmup=1)
    event["recompile_s"] = first - step
    return event


def worker(name, quick, batch, policy, repeats) -> dict:
    """Measures one model; on the reduced one, one growth event too."""
    import keras
    import numpy as np

    keras.config.set_dtype_policy(policy)
    image_size, patch_size = (32, 8) if quick else (224, 16)
    rng = np.random.default_rng(0)
    row = {"device": _device()[0]}
    try:
        model = build_model(name, quick, image_size, patch_size, rng)
        row["params"] = model.count_params()
        step = keras_step(model, batch, image_size, 100, rng)
        start = time.perf_counter()
        step()
        first = time.perf_counter() - start
        seconds = best_time(step, repeats, warmup=1)
        row.update(images_per_second=batch / seconds, first_step_s=first)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        traceback.print_exc()
        row["error"] = _error(exc)
        return row
    row["peak_bytes"] = _peak_bytes()
    if name == "reduced":
        x = rng.normal(size=(batch, image_size, image_size, 3))
        y = rng.integers(0, 100, size=(batch,))
        try:
            row["event"] = _growth_event(
                model, x.astype("float32"), y, quick, repeats
            )
        except Exception as exc:  # noqa: BLE001 - reported in the table
            traceback.print_exc()
            row["event"] = {"error": _error(exc)}
        row["event"]["peak_bytes"] = _peak_bytes()
    return row


def _run(backend: str, arguments: list[str]):
    """`python -m benchmarks.gpu_check ARGUMENTS` under `backend`."""
    command = [sys.executable, "-m", "benchmarks.gpu_check", *arguments]
    env = {**os.environ, "KERAS_BACKEND": backend}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )


def has_accelerator(backend: str) -> bool:
    """Whether `backend` sees an accelerator (asked in a fresh process)."""
    proc = _run(backend, ["--probe"])
    return proc.returncode == 0 and proc.stdout.strip().endswith("True")


def run_worker(backend: str, names: list[str], args) -> dict:
    """Runs `worker` for one backend and `names` in one fresh process.

    Returns `{name: row}`; a process that fails or times out gives each
    model it did not report an error row.
    """
    arguments = ["--worker", *names, "--batch", str(args.batch)]
    arguments += ["--policy", args.policy]
    arguments += ["--quick"] if args.quick else []
    rows, error = {}, None
    try:
        proc = _run(backend, arguments)
    except subprocess.TimeoutExpired as exc:
        proc, error = None, f"timed out after {WORKER_TIMEOUT} s"
        stdout = exc.stdout or ""
        if isinstance(stdout, bytes):
            stdout = stdout.decode(errors="replace")
    else:
        stdout = proc.stdout
    for line in stdout.splitlines():
        if line.startswith("ROW "):
            rows.update(json.loads(line[len("ROW ") :]))
    if proc is not None and proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        error = f"worker failed ({proc.returncode}): {tail[:200]}"
    return {name: rows.get(name, {"error": error}) for name in names}


def _gib(value) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f}"


def _number(row: dict, key: str, digits: int) -> str:
    value = row.get(key)
    return "" if value is None else f"{value:.{digits}f}"


def report(results: dict, args, seconds: float, machine: str) -> str:
    """The Markdown tables: one row per backend and model, one per event."""
    speed = [
        "| backend | device | model | parameters | images/s | first step s "
        "| peak memory GiB | error |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    events = [
        "| backend | parameters added | analysis s | recompile s "
        "| peak memory GiB | error |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for backend, rows in results.items():
        for name, row in rows.items():
            params = row.get("params")
            speed.append(
                f"| {backend} | {row.get('device', '')} | {name} | "
                f"{'' if params is None else f'{params:,}'} | "
                f"{_number(row, 'images_per_second', 2)} | "
                f"{_number(row, 'first_step_s', 1)} | "
                f"{_gib(row.get('peak_bytes'))} | "
                f"{_cell(row.get('error', ''))} |"
            )
            if name != "reduced":
                continue
            event = row.get("event", {"error": row.get("error", "not run")})
            added = event.get("added")
            events.append(
                f"| {backend} | {'' if added is None else f'{added:,}'} | "
                f"{_number(event, 'analysis_s', 1)} | "
                f"{_number(event, 'recompile_s', 1)} | "
                f"{_gib(event.get('peak_bytes'))} | "
                f"{_cell(event.get('error', ''))} |"
            )
    model = "two-block ViT, dim 64, 32x32" if args.quick else "DeiT-S, 224x224"
    command = "python -m benchmarks.gpu_check" + (
        " --quick" if args.quick else ""
    )
    return (
        f"Training step of {model}, batch {args.batch}, policy "
        f"`{args.policy}`, AdamW, jit-compiled; best of {args.repeats} "
        f"steps; each backend in fresh processes. Measured "
        f"{machine}.\n\n"
        + "\n".join(speed)
        + "\n\nOne growth event on the reduced model (splitting analysis of "
        "one batch, the paper's budget, in-place growth); recompile = "
        "first step after the event minus a steady step; peak memory of "
        "the whole process.\n\n"
        + "\n".join(events)
        + f"\n\nCommand: `{command}` ({seconds:.0f} s).\n"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, help="where to write the table")
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS)
    )
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--policy", default="mixed_bfloat16")
    parser.add_argument(
        "--cpu", action="store_true", help="run the full check on a CPU"
    )
    parser.add_argument(
        "--worker", nargs="+", choices=MODELS, help=argparse.SUPPRESS
    )
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch = args.batch or (4 if args.quick else 64)
    args.repeats = 2 if args.quick else 5
    if args.probe:
        print(_device()[1])
        return 0
    if not (args.quick or args.cpu) and not any(
        has_accelerator(backend) for backend in args.backends
    ):
        print(
            "No accelerator found: the full check is for a GPU machine "
            "(see the `jax-cuda` and `tensorflow-gpu` extras). Use `--quick` "
            "for a smoke run on this CPU, or `--cpu` to run it anyway."
        )
        return 0
    if args.worker:
        for name in args.worker:
            row = worker(
                name, args.quick, args.batch, args.policy, args.repeats
            )
            print("ROW " + json.dumps({name: row}), flush=True)
        return 0
    machine = machine_description()
    start = time.time()
    # On an accelerator each model gets a process of its own, so that each
    # peak is that model's; quick mode spares the start-up time instead.
    groups = [list(MODELS)] if args.quick else [[name] for name in MODELS]
    results = {
        backend: {
            name: row
            for group in groups
            for name, row in run_worker(backend, group, args).items()
        }
        for backend in args.backends
    }
    text = report(results, args, time.time() - start, machine)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        path = args.out
    else:
        path = write_result("gpu_check", text, quick=args.quick)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
