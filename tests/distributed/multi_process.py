"""Start a test's workers as separate processes on 127.0.0.1 and clean up.

`launch` runs `tests/distributed/worker.py` once per worker, each in its
own process group, with a hard deadline; whatever happens (failure,
timeout, an exception in the test), every process group it started is
killed before it returns. Each worker prints one `RESULT {json}` line.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.subprocess_utils import REPO_ROOT, xla_flags

WORKER = Path(__file__).with_name("worker.py")


@dataclass
class Worker:
    rank: int
    returncode: int | None
    output: str
    result: dict | None

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def worker_env(backend: str, rank: int, ports: list[int]) -> dict:
    """The environment of worker `rank` of `len(ports)`."""
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(REPO_ROOT),
        "XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=1"),
        "WORKER_RANK": str(rank),
        "NUM_WORKERS": str(len(ports)),
        "JOB_ADDRESSES": ",".join(f"127.0.0.1:{p}" for p in ports),
    }
    return env


def launch(
    backend: str,
    config: dict,
    out_dir: Path,
    *,
    workers: int = 2,
    timeout: float = 300,
    env: dict | None = None,
) -> list[Worker]:
    """Runs `worker.py` with `config` on `workers` processes.

    Args:
        backend: `"jax"` or `"tensorflow"`.
        config: The scenario, passed to every worker as JSON.
        out_dir: Where the workers write their files.
        workers: The number of processes.
        timeout: Seconds after which every worker still running is killed
            and the test fails.
        env: Optional `{rank: {name: value}}` added to a worker's
            environment.

    Returns:
        The workers, in rank order, once all have exited.
    """
    ports = free_ports(workers)
    logs, procs = [], []
    try:
        for rank in range(workers):
            child_env = worker_env(backend, rank, ports)
            child_env.update((env or {}).get(rank, {}))
            log = open(out_dir / f"worker_{rank}.log", "w+")
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), json.dumps(config)],
                    cwd=out_dir,
                    env=child_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    found = []
    for rank, (proc, log) in enumerate(zip(procs, logs, strict=True)):
        log.seek(0)
        output = log.read()
        log.close()
        results = [
            json.loads(line[len("RESULT ") :])
            for line in output.splitlines()
            if line.startswith("RESULT ")
        ]
        found.append(
            Worker(rank, proc.returncode, output, (results or [None])[-1])
        )
    late = [w.rank for w in found if w.returncode == -signal.SIGKILL]
    assert not late, (
        f"workers {late} still ran after {timeout} s:\n"
        + "\n".join(f"--- worker {w.rank}\n{w.tail()}" for w in found)
    )
    return found


def results(found: list[Worker]) -> list[dict]:
    """Every worker's result; fails with the workers' output otherwise."""
    failed = [w for w in found if w.returncode != 0 or w.result is None]
    assert not failed, "\n".join(
        f"--- worker {w.rank} (exit {w.returncode})\n{w.tail()}" for w in found
    )
    return [w.result for w in found]
