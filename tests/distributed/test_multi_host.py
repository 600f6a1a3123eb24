"""Multi-host configuration: TF_CONFIG and JAX `keras.distribution`."""

import json
import socket

import pytest

from keras_depthhet.distributed import (
    initialize_multi_host,
    validate_tf_config,
)
from tests.subprocess_utils import run_python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_validate_tf_config():
    cluster = {"worker": ["host0:2222", "host1:2222"], "chief": ["c:1"]}
    text = json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": 1}}
    )
    assert validate_tf_config(text) == 3
    assert validate_tf_config(text, num_workers=3) == 3
    assert validate_tf_config("") == 1
    with pytest.raises(ValueError, match="`num_workers` is 2 but TF_CONFIG's"):
        validate_tf_config(text, num_workers=2)
    with pytest.raises(ValueError, match="TF_CONFIG is not set"):
        validate_tf_config("", num_workers=2)
    with pytest.raises(ValueError, match="positive integer or None"):
        validate_tf_config(text, num_workers=0)
    for bad, match in (
        ("{not json", "must be JSON"),
        (json.dumps({"cluster": {}}), "worker"),
        (json.dumps({"cluster": {"worker": ["nohost"]}}), "host:port"),
        (
            json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": 2}}
            ),
            "task",
        ),
    ):
        with pytest.raises(ValueError, match=match):
            validate_tf_config(bad)


def test_initialize_multi_host_checks_arguments(backend):
    if backend != "jax":
        with pytest.raises(ValueError, match="TF_CONFIG"):
            initialize_multi_host("localhost:1234", 1, 0)
        return
    for args, match in (
        (("localhost:1234", 2, 2), "process_id"),
        (("localhost", 1, 0), "host:port"),
        (("a:1,b:2,c:3", 2, 0), "one per process"),
        ((None, "x", 0), "integers"),
        (("localhost:1234,b:2", 3, 0), "one per process"),
    ):
        with pytest.raises(ValueError, match=match):
            initialize_multi_host(*args)


@pytest.mark.integration
def test_tf_multi_worker_strategy_from_tf_config():
    tf_config = {
        "cluster": {"worker": [f"localhost:{_free_port()}"]},
        "task": {"type": "worker", "index": 0},
    }
    out = run_python(
        """
        import json
        from keras_depthhet.distributed import resolve_distribution
        runtime = resolve_distribution("multi_worker_mirrored")
        print(json.dumps({"name": runtime.name,
                          "replicas": runtime.num_replicas,
                          "kind": type(runtime.strategy).__name__}))
        """,
        backend="tensorflow",
        env={"TF_CONFIG": json.dumps(tf_config)},
    )
    assert out == {
        "name": "multi_worker_mirrored",
        "replicas": 1,
        "kind": "CollectiveAllReduceStrategy",  # MultiWorkerMirrored's class
    }


@pytest.mark.integration
def test_jax_multi_process_initialize():
    out = run_python(
        f"""
        import json, jax
        from keras_depthhet.distributed import (
            initialize_multi_host, resolve_distribution)
        initialize_multi_host("localhost:{_free_port()}", 1, 0)
        runtime = resolve_distribution("data_parallel")
        print(json.dumps({{"processes": jax.process_count(),
                           "replicas": runtime.num_replicas}}))
        """,
        backend="jax",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert out == {"processes": 1, "replicas": 2}
