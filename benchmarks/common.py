"""Helpers shared by the benchmark scripts: backend subprocesses, timing."""

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BACKENDS = ("jax", "tensorflow")


RETAINED_MEMORY_TUNABLES = (
    "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0"
    ":glibc.malloc.trim_threshold=68719476736"
)
"""The `GLIBC_TUNABLES` value that makes glibc keep freed memory.

One `malloc` arena for every thread, no block mapped on its own, and a
trim threshold of 64 GiB, so that the heap is never given back to the
kernel: a JAX step on the CPU then reuses the memory of the step before
instead of faulting in fresh pages. glibc reads it when a process
starts, so it is given in the environment of a new process (e.g.
`GLIBC_TUNABLES=... python train.py`); the library never sets it.
"""


def retained_memory_env() -> dict:
    """The environment that starts a worker with glibc keeping freed memory.

    Returns:
        `{"GLIBC_TUNABLES": RETAINED_MEMORY_TUNABLES}`, to add to a worker
        process's environment.
    """
    return {"GLIBC_TUNABLES": RETAINED_MEMORY_TUNABLES}


def add_timm_python_argument(parser) -> None:
    """`--timm-python PATH`: a Python with torch and timm, for timm's twin."""
    parser.add_argument(
        "--timm-python",
        default=os.environ.get("TIMM_PYTHON", sys.executable),
        help="a Python with torch and timm (default: $TIMM_PYTHON, or this "
        "one)",
    )


def run_json_worker(command: list[str], env: dict, what: str) -> dict:
    """Runs a worker process; returns the JSON object of its last line.

    The worker runs from the repository root with `env` as its whole
    environment; on failure its output is shown and `what` names it.
    """
    proc = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise RuntimeError(f"{what} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_per_backend(module: str, args: list[str]) -> dict[str, dict]:
    """Runs `python -m module --worker args` once per backend.

    Each worker prints one JSON object on its last stdout line; a fresh
    process per backend keeps the backends (and their thread pools) apart.
    """
    results = {}
    for backend in BACKENDS:
        env = {**os.environ, "KERAS_BACKEND": backend}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        results[backend] = run_json_worker(
            [sys.executable, "-m", module, "--worker", *args],
            env,
            f"{module} under {backend}",
        )
    return results


class Worker:
    """A benchmark worker process that answers timing requests one by one.

    The worker (`serve`) builds and compiles what it measures, then waits on
    its stdin; the parent sends one request at a time, so several workers
    (one per backend, or timm's) can be measured in alternation by one
    parent without ever running at the same time. Protocol lines on stdout
    start with `RESULT `; anything else a library prints is ignored.

    Args:
        command: The worker's command line (`python -m ... --serve`).
        env: Extra environment variables (e.g. `KERAS_BACKEND`).
        timeout: Seconds to wait for one answer (`None`: no limit).
    """

    def __init__(self, command, env=None, timeout=None):
        env = {**os.environ, **(env or {})}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.timeout = timeout
        self._proc = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self.ready = self._answer()

    def _answer(self):
        for line in self._proc.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT ") :])
        code = self._proc.wait()
        raise RuntimeError(f"benchmark worker exited with status {code}")

    def request(self, **request):
        """Sends one request; returns the worker's JSON answer."""
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        return self._answer()

    def close(self):
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait()


def serve(ready: dict, handle: Callable[[dict], dict]) -> None:
    """The worker side of `Worker`: announces `ready`, then answers requests.

    Each stdin line is a JSON request given to `handle`, whose dict is sent
    back; the loop ends when stdin closes.
    """
    print("RESULT " + json.dumps(ready), flush=True)
    for line in sys.stdin:
        print("RESULT " + json.dumps(handle(json.loads(line))), flush=True)


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


def machine_description() -> str:
    """Today's date, the CPU model, its core count and the load at the start.

    Goes in each table's first lines, so that a figure says when and where
    it was measured (the load average shows a shared machine).
    """
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{datetime.date.today().isoformat()}, {model}, "
        f"{os.cpu_count()} cores, load average {load:.1f} at the start"
    )
