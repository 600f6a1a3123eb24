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


def write_result(name: str, markdown: str, quick: bool = False) -> Path:
    """Writes `results/NAME.md` (included by docs/benchmarks.md).

    Quick (smoke-test) results go to `results/quick/NAME.md` instead, which
    git ignores, so that `--quick` runs never replace the published tables.
    """
    directory = RESULTS_DIR / "quick" if quick else RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.md"
    path.write_text(markdown)
    return path
