"""Joining a multi-worker cluster, with each worker's settings checked
before it waits for the others (`TF_CONFIG`, `jax.distributed`)."""

import json
import os
import re
import threading

import keras

from keras_depthhet.utils.keras_internals import initialize_jax_rng
from keras_depthhet.utils.validation import positive_int

_ADDRESS = re.compile(r"[^:\s,]+:\d{1,5}")


def validate_tf_config(
    text: str | None = None, num_workers: int | None = None
) -> int:
    """Checks a `TF_CONFIG` value; returns the number of workers.

    Args:
        text: The JSON text; `None` reads the `TF_CONFIG` environment
            variable (unset means one local worker).
        num_workers: Optional positive integer, the number of workers the
            cluster must list.

    Returns:
        The number of tasks of type `chief` and `worker` in the cluster.

    Raises:
        ValueError: if the JSON is malformed, has no `worker` list of
            `"host:port"` addresses, `task` does not name one of them, or
            the cluster does not hold `num_workers` workers.
    """
    num_workers = positive_int("num_workers", num_workers, optional=True)
    text = os.environ.get("TF_CONFIG") if text is None else text
    if not text:
        if num_workers not in (None, 1):
            raise ValueError(
                f"Argument `num_workers` is {num_workers} but TF_CONFIG is "
                "not set (one local worker). Set TF_CONFIG on every worker. "
                f"Received: num_workers={num_workers}"
            )
        return 1
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"TF_CONFIG must be JSON. Received: TF_CONFIG={text!r} ({error})"
        ) from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster.get("worker"):
        raise ValueError(
            'TF_CONFIG must hold {"cluster": {"worker": ["host:port", ...]}, '
            f'"task": {{"type": "worker", "index": i}}}}. Received: {text!r}'
        )
    for kind, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(
            isinstance(a, str) and _ADDRESS.fullmatch(a) for a in addresses
        ):
            raise ValueError(
                f"TF_CONFIG cluster[{kind!r}] must be a list of 'host:port' "
                f"addresses. Received: {addresses!r}"
            )
    task = config.get("task")
    if (
        not isinstance(task, dict)
        or task.get("type") not in cluster
        or not isinstance(task.get("index"), int)
        or not 0 <= task["index"] < len(cluster[task["type"]])
    ):
        raise ValueError(
            "TF_CONFIG `task` must name a task of the cluster, e.g. "
            '{"type": "worker", "index": 0}. '
            f"Received: task={task!r}, cluster={cluster!r}"
        )
    count = len(cluster["worker"]) + len(cluster.get("chief", []))
    if num_workers is not None and num_workers != count:
        raise ValueError(
            f"Argument `num_workers` is {num_workers} but TF_CONFIG's "
            f"cluster lists {count} workers. Received: "
            f"num_workers={num_workers}, cluster={cluster!r}"
        )
    return count


def initialize_multi_host(
    job_addresses: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout: int = 300,
) -> None:
    """Checks and starts a JAX multi-process run (`keras.distribution`).

    Call it once in every process, before anything else uses JAX; then
    `"data_parallel"` and `"model_parallel"` span all processes' devices,
    and all get the same Keras seed unless one was set. Arguments left
    `None` are read from `KERAS_DISTRIBUTION_JOB_ADDRESSES`,
    `KERAS_DISTRIBUTION_NUM_PROCESSES` and `KERAS_DISTRIBUTION_PROCESS_ID`.

    Args:
        job_addresses: Comma-separated `"host:port"` of the coordinator
            (process 0), or of every process.
        num_processes: Positive integer, the number of processes.
        process_id: This process's index in `[0, num_processes)`.
        timeout: Positive integer, the seconds to wait for all processes
            to join (and, in training, for a silent one) before failing.

    Raises:
        ValueError: on the TensorFlow backend (use `TF_CONFIG` and
            `"multi_worker_mirrored"`) or for inconsistent arguments.
        RuntimeError: if the processes have not all joined within
            `timeout` seconds.
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            "`initialize_multi_host` is for the JAX backend; on TensorFlow "
            'set TF_CONFIG and use distribution="multi_worker_mirrored". '
            f"Received: backend={keras.backend.backend()!r}"
        )
    env = os.environ
    job_addresses = job_addresses or env.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
    if num_processes is None:
        num_processes = env.get("KERAS_DISTRIBUTION_NUM_PROCESSES")
    if process_id is None:
        process_id = env.get("KERAS_DISTRIBUTION_PROCESS_ID")
    try:
        num_processes, process_id = int(num_processes), int(process_id)
    except (TypeError, ValueError):
        raise ValueError(
            "`num_processes` and `process_id` must be integers (arguments "
            "or KERAS_DISTRIBUTION_* variables). Received: "
            f"num_processes={num_processes!r}, process_id={process_id!r}"
        ) from None
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(
            "Arguments must satisfy 0 <= process_id < num_processes. "
            f"Received: num_processes={num_processes}, "
            f"process_id={process_id}"
        )
    timeout = positive_int("timeout", timeout)
    addresses = (job_addresses or "").split(",")
    if not all(_ADDRESS.fullmatch(a) for a in addresses) or len(
        addresses
    ) not in (1, num_processes):
        raise ValueError(
            "Argument `job_addresses` must be 'host:port' of the coordinator "
            "or a comma-separated list with one per process. Received: "
            f"job_addresses={job_addresses!r}, num_processes={num_processes}"
        )
    import jax

    message = (
        f"Process {process_id} of {num_processes} has not joined the run "
        f"coordinated by {addresses[0]} within {timeout} s: check that every "
        "process was started with the same coordinator and `num_processes`, "
        "and a distinct `process_id`."
    )
    # JAX ends the process itself when joining times out; say why first.
    warning = threading.Timer(
        max(timeout - 2, timeout * 0.9),
        lambda: print(f"initialize_multi_host: {message}", flush=True),
    )
    warning.daemon = True
    warning.start()
    try:
        jax.distributed.initialize(
            coordinator_address=addresses[0],
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=timeout,
            heartbeat_timeout_seconds=timeout,
        )
    except Exception as error:
        raise RuntimeError(f"{message} ({error})") from None
    finally:
        warning.cancel()
    initialize_jax_rng()  # The same Keras seed in every process.
