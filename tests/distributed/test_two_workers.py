"""Two worker processes on 127.0.0.1 train a tiny ViT through growth.

TensorFlow: `MultiWorkerMirroredStrategy` from `TF_CONFIG`; JAX:
`jax.distributed` (gloo) and `keras.distribution.DataParallel` over both
processes' devices. Each worker analyses its own data (another seed per
worker), so only the agreement makes the workers grow alike. Every run is
bounded in time and its processes are killed whatever happens
(`multi_process.launch`).
"""

import json

import numpy as np
import pytest

from tests.distributed.multi_process import launch, results

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def max_weight_difference(out_dir, ranks=(0, 1), other_dir=None) -> float:
    """The largest difference between the workers' saved final weights."""
    first = np.load(out_dir / f"weights_{ranks[0]}.npz")
    second = np.load((other_dir or out_dir) / f"weights_{ranks[1]}.npz")
    assert sorted(first) == sorted(second)
    return max(float(np.abs(first[k] - second[k]).max()) for k in first)


def event_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def in_place(tmp_path_factory):
    """Two workers, `model.fit` with `GrowthCallback`, 2 epochs, 2 events."""
    import keras

    out = tmp_path_factory.mktemp("in_place")
    config = {"epochs": 2, "local_choice": True}
    found = launch(keras.backend.backend(), config, out, timeout=900)
    return out, results(found)


@pytest.mark.slow
def test_in_place_growth_agrees_although_analysis_data_differ(in_place):
    out, (chief, other) = in_place
    # Alone, the workers would grow different neurons at the first event.
    assert chief["local_plan"] != other["local_plan"]
    # Together both grow the chief's choice, at every event.
    assert chief["events"][0]["plan"] == chief["local_plan"]
    assert len(chief["events"]) == 2
    assert all(event["plan"] for event in chief["events"])
    assert other["events"] == chief["events"]
    assert other["rounds"] == chief["rounds"]
    assert other["losses"] == chief["losses"]
    assert chief["num_params"] == chief["events"][-1]["params_after"]
    assert max_weight_difference(out) <= 1e-6
    # The chief alone wrote the log: one line per event.
    lines = event_lines(out / "events.jsonl")
    assert [e["plan"] for e in lines] == [e["plan"] for e in chief["events"]]


@pytest.mark.slow
def test_rebuild_loop_agrees(backend, tmp_path):
    config = {"epochs": 2, "mode": "rebuild"}
    chief, other = results(launch(backend, config, tmp_path, timeout=900))
    assert len(chief["events"]) == 2
    assert other["events"] == chief["events"]
    assert other["rounds"] == chief["rounds"]
    assert other["losses"] == chief["losses"]
    assert max_weight_difference(tmp_path) <= 1e-6
    assert len(event_lines(tmp_path / "events.jsonl")) == 2
    assert set(chief["seconds"][0]) == {"analysis", "rebuild"}


@pytest.mark.slow
def test_killed_run_resumes_on_two_workers(backend, tmp_path, in_place):
    config = {"epochs": 2, "backup": True}
    crashed = launch(
        backend, {**config, "crash_at_epoch": 1}, tmp_path, timeout=900
    )
    for worker in crashed:
        assert worker.returncode == 1
        assert "simulated crash at epoch 1" in worker.result["error"]
    state = json.loads((tmp_path / "backup" / "growth_state.json").read_text())
    assert len(state["history"]) == 1
    chief, other = results(launch(backend, config, tmp_path, timeout=900))
    # Both workers regrew the backed-up architecture, then grew alike.
    assert chief["events"][0]["plan"] == state["history"][0]["plan"]
    assert len(chief["events"]) == 2
    assert other["events"] == chief["events"]
    assert other["rounds"] == chief["rounds"]
    assert max_weight_difference(tmp_path) <= 1e-6
    # Only the chief wrote backups and the log.
    assert (chief["saves"], other["saves"]) == (1, 0)
    assert len(event_lines(tmp_path / "events.jsonl")) == 2
    # And the resumed run ends where the uninterrupted one does.
    uninterrupted, _ = in_place[1]
    assert chief["events"] == uninterrupted["events"]
    assert max_weight_difference(tmp_path, (0, 0), in_place[0]) <= 1e-5
