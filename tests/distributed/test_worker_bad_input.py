"""Two workers started wrongly: every worker stops with a clear error.

Each case starts two real processes on 127.0.0.1 (`multi_process.launch`
kills them if they outlive its deadline, which fails the test): no worker
may hang, and each must say what is wrong.
"""

import pytest

from tests.distributed.multi_process import launch

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def errors(found) -> list[str]:
    """Every worker's error; fails if a worker did not stop with one."""
    for worker in found:
        assert worker.returncode != 0, worker.tail()
    return [(w.result or {}).get("error", "") + "\n" + w.output for w in found]


@pytest.mark.slow
def test_workers_started_with_different_settings(backend, tmp_path):
    found = launch(backend, {"param_budget": [300, 400]}, tmp_path)
    for rank, error in enumerate(errors(found)):
        assert "different settings: ['param_budget']" in error
        assert f"worker {rank} has {{'param_budget': {300 + 100 * rank}}}" in (
            error
        )


def test_coordinator_address_that_is_not_host_port(backend, tmp_path):
    found = launch(backend, {"coordinator": "127.0.0.1"}, tmp_path)
    for error in errors(found):
        assert "'host:port'" in error
        assert "127.0.0.1" in error


def test_worker_count_that_disagrees_with_the_cluster(backend, tmp_path):
    # Both workers are told of 3 workers; the cluster lists 2.
    config = {"num_workers": [3, 3], "all_addresses": True}
    for error in errors(launch(backend, config, tmp_path)):
        if backend == "tensorflow":
            assert "`num_workers` is 3 but TF_CONFIG's cluster lists 2" in error
        else:
            assert "one per process" in error and "num_processes=3" in error


@pytest.mark.slow
def test_worker_that_never_joins_stops_the_others(backend, tmp_path):
    # Worker 1 is told of 1 worker and stops at once; worker 0 gives up
    # waiting for it after `timeout` seconds, saying why.
    config = {"num_workers": [2, 1], "timeout": 20}
    chief, other = errors(launch(backend, config, tmp_path, timeout=400))
    if backend == "tensorflow":
        assert "`num_workers` is 1 but TF_CONFIG's cluster lists 2" in other
        assert "Not all 2 workers of TF_CONFIG joined" in chief
    else:
        assert "0 <= process_id < num_processes" in other
        assert "Process 0 of 2 has not joined the run" in chief
