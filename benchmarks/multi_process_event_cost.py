"""Cost of a growth event with two worker processes, beside one process.

A small ViT (16x16 inputs, patch 4, width 32, 2 blocks) trains with
`model.fit` and an in-place `GrowthCallback` (splitting criterion, one
analysis batch of 16, an event after every epoch but the last) on one
process, and on two worker processes on 127.0.0.1 (TensorFlow
`MultiWorkerMirroredStrategy`; JAX `jax.distributed` with
`keras.distribution.DataParallel`), per backend. An event is timed in its
parts, on the chief: the analysis (scoring every neuron, which only the
chief does), the agreement (the broadcast of the chief's scores and the
selection; on the other worker this is its wait for the chief), the
in-place growth (`grow_model`) and the recompile (the first training step
after the event minus the median steady step). Figures are medians over
the events after the first (the first also compiles the analysis once).

Usage:

    python -m benchmarks.multi_process_event_cost [--quick]

The full run (4 epochs, 3 events: events 2 and 3 timed) writes
`benchmarks/results/multi_process_event_cost.md`; `--quick` (2 epochs of
4 steps, 1 event) writes `benchmarks/results/quick/`. Every run is
bounded in time (`TIMEOUT`) and kills its worker processes on the way out.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import BACKENDS, machine_description, write_result

REPO_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 900
"""Seconds after which a run's workers are killed and the script fails."""
BUDGET = 600
"""Parameters one event adds at most."""
JOIN_TIMEOUT = 120
"""Seconds a worker waits for the other to join, or to answer."""


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run(backend: str, processes: int, args: list[str]) -> list[dict]:
    """Every worker's timings of one run, in rank order.

    Each worker writes to a file of its own (a pipe left unread could
    block one worker while the other waits for it in a collective); at
    `TIMEOUT`, or on any error here, every worker still running is killed
    with its process group.
    """
    ports = _free_ports(processes)
    procs = []
    with tempfile.TemporaryDirectory() as logs:
        try:
            for rank in range(processes):
                env = {
                    **os.environ,
                    "KERAS_BACKEND": backend,
                    "TF_CPP_MIN_LOG_LEVEL": "2",
                    "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
                    "WORKER_RANK": str(rank),
                    "JOB_ADDRESSES": ",".join(f"127.0.0.1:{p}" for p in ports),
                }
                with open(Path(logs) / f"{rank}.log", "w") as log:
                    procs.append(
                        subprocess.Popen(
                            [
                                sys.executable,
                                "-m",
                                "benchmarks.multi_process_event_cost",
                                "--worker",
                                *args,
                            ],
                            cwd=REPO_ROOT,
                            env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline and any(
                p.poll() is None for p in procs
            ):
                time.sleep(0.5)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        outputs = [
            (Path(logs) / f"{rank}.log").read_text()
            for rank in range(processes)
        ]
    results = []
    for proc, output in zip(procs, outputs, strict=True):
        lines = [ln for ln in output.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.stderr.write(output[-4000:])
            reason = (
                f"killed after {TIMEOUT} s"
                if proc.returncode == -signal.SIGKILL
                else f"exit {proc.returncode}"
            )
            raise RuntimeError(
                f"{backend} with {processes} processes failed ({reason})"
            )
        results.append(json.loads(lines[-1][len("RESULT ") :]))
    if len({json.dumps(r["history"]) for r in results}) != 1:
        raise RuntimeError(
            f"{backend}: the {processes} workers grew differently: "
            + "; ".join(json.dumps(r["history"]) for r in results)
        )
    return results


def _worker(epochs: int, samples: int) -> None:
    import keras
    import tensorflow as tf

    from keras_depthhet import distributed
    from keras_depthhet.growth import GrowthCallback
    from keras_depthhet.models import vit

    rank = int(os.environ["WORKER_RANK"])
    addresses = os.environ["JOB_ADDRESSES"].split(",")
    runtime = distributed.Runtime("none")
    if len(addresses) > 1 and keras.backend.backend() == "jax":
        distributed.initialize_multi_host(
            addresses[0], len(addresses), rank, timeout=JOIN_TIMEOUT
        )
        runtime = distributed.resolve_distribution("data_parallel")
    elif len(addresses) > 1:
        os.environ["TF_CONFIG"] = json.dumps(
            {
                "cluster": {"worker": addresses},
                "task": {"type": "worker", "index": rank},
            }
        )
        distributed.enable_multi_worker_fit()
        runtime = distributed.resolve_distribution(
            "multi_worker_mirrored",
            num_workers=len(addresses),
            timeout=JOIN_TIMEOUT,
        )

    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 10, samples)
    # Each worker analyses data of its own: the chief's scores decide.
    local = np.random.default_rng(100 + rank)
    analysis = (
        local.normal(size=(16, 16, 16, 1)).astype("float32"),
        local.integers(0, 10, 16),
    )
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with runtime.scope():
        keras.utils.set_random_seed(1)
        model = vit(
            image_size=16,
            patch_size=4,
            num_channels=1,
            num_classes=10,
            dim=32,
            depth=2,
            num_heads=2,
            attention_width=0.5,
            mlp_width=0.5,
        )
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

    class TimedGrowth(GrowthCallback):
        """`GrowthCallback` that times its parts, with no event after the
        last epoch (nothing would train after it)."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.timings = []

        def is_event_epoch(self, epoch):
            return epoch < epochs and super().is_event_epoch(epoch)

        def compute_scores(self):
            start = time.perf_counter()
            scores = super().compute_scores()
            self._analysis = time.perf_counter() - start
            return scores

        def plan_growth(self, epoch):
            self._analysis = 0.0  # The other workers do not analyse.
            start = time.perf_counter()
            decision = super().plan_growth(epoch)
            self._decision = time.perf_counter() - start
            return decision

        def _grow(self, epoch):
            start = time.perf_counter()
            event = super()._grow(epoch)
            total = time.perf_counter() - start
            self.timings.append(
                {
                    "analysis": self._analysis,
                    "agreement": self._decision - self._analysis,
                    "grow": total - self._decision,
                }
            )
            return event

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.steps = []

        def on_train_batch_begin(self, batch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.steps.append((batch, time.perf_counter() - self._start))

    growth = TimedGrowth(
        interval=1,
        warmup=1,
        param_budget=BUDGET,
        layer_threshold=0,
        analysis_data=analysis,
        analysis_batches=1,
        seed=0,
        verbose=0,
    )
    steps = StepTimes()
    model.fit(train, epochs=epochs, callbacks=[growth, steps], verbose=0)
    first = [s for b, s in steps.steps if b == 0]
    steady = float(np.median([s for b, s in steps.steps if b > 0]))
    for event, first_step in zip(growth.timings, first[1:], strict=True):
        event["recompile"] = first_step - steady
    print(
        "RESULT "
        + json.dumps(
            {
                "events": growth.timings,
                "history": [e["plan"] for e in growth.history],
                "steady_step": steady,
                "steps_per_epoch": len(steps.steps) // epochs,
                "params": int(model.count_params()),
            }
        ),
        flush=True,
    )


PARTS = ("analysis", "agreement", "grow", "recompile")


def median_parts(worker: dict) -> dict:
    """A worker's median time per part, over the events after the first
    (the only event when there is one), and their sum, `"total"`."""
    timed = worker["events"][1:] or worker["events"]
    parts = {p: float(np.median([e[p] for e in timed])) for p in PARTS}
    parts["total"] = sum(parts.values())
    return parts


def table(results: dict) -> str:
    """`{backend: {processes: [worker results]}}` as a Markdown table."""
    lines = [
        "| backend | processes | analysis s | agreement s | grow s "
        "| recompile s | event s | event / one process | steady step ms "
        "| parameters after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for backend, runs in results.items():
        alone = median_parts(runs[1][0])["total"]
        for processes, workers in runs.items():
            chief = median_parts(workers[0])
            cells = [f"{chief[p]:.2f}" for p in PARTS]
            if processes > 1:
                waits = [median_parts(w)["agreement"] for w in workers[1:]]
                cells[1] += f" (other waits {max(waits):.2f})"
            lines.append(
                f"| {backend} | {processes} | "
                + " | ".join(cells)
                + f" | {chief['total']:.2f} | {chief['total'] / alone:.2f}"
                f" | {workers[0]['steady_step'] * 1000:.0f}"
                f" | {workers[0]['params']:,} |"
            )
    return "\n".join(lines)


def event_lines(results: dict) -> str:
    """Every worker's events, part by part, as a Markdown list."""
    lines = []
    for backend, runs in results.items():
        for processes, workers in runs.items():
            for rank, worker in enumerate(workers):
                events = "; ".join(
                    " + ".join(f"{event[p]:.2f}" for p in PARTS)
                    for event in worker["events"]
                )
                lines.append(
                    f"- {backend}, {processes} process(es), worker {rank}: "
                    f"{events}"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.multi_process_event_cost",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 event, 4 steps per epoch"
    )
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        _worker(*args.worker)
        return
    epochs, samples = (2, 64) if args.quick else (4, 256)
    header = machine_description()
    start = time.time()
    results = {
        backend: {
            n: _run(backend, n, [str(epochs), str(samples)]) for n in (1, 2)
        }
        for backend in BACKENDS
    }
    timed = "the one event" if args.quick else "the events after the first"
    command = "python -m benchmarks.multi_process_event_cost" + (
        " --quick" if args.quick else ""
    )
    markdown = (
        f"Measured {header}.\n\nMedian over {timed}, timed on the chief; "
        f"events of {BUDGET} parameters at most, {epochs} epochs of "
        f"{samples // 16} steps of 16 images (per worker), each worker "
        "analysing 16 images of its own. Two processes on two shared cores "
        "share the cores: the steady step is the cores' limit, not the "
        "network's.\n\n"
        + table(results)
        + "\n\nEach event, in order, as analysis + agreement + grow + "
        "recompile seconds:\n\n"
        + event_lines(results)
        + f"\n\nCommand: `{command}` ({time.time() - start:.0f} s).\n"
    )
    path = write_result("multi_process_event_cost", markdown, args.quick)
    print(markdown)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
