"""The agreement between workers, on workers simulated by threads.

Each thread stands for one worker; their all-sum meets at a barrier, so
that `Workers.broadcast`, `all_gather`, `check_same_settings` and
`chief_decides` run as they do across processes (the real two-process
runs are in test_two_workers.py).
"""

import threading

import numpy as np
import pytest

from keras_depthhet.distributed.workers import (
    Workers,
    check_same_settings,
    chief_decides,
)


class ThreadWorkers(Workers):
    def __init__(self, rank, group):
        super().__init__(rank, group["size"])
        self.group = group

    def _all_sum(self, array):
        group = self.group
        group["parts"][self.rank] = np.array(array)
        group["barrier"].wait()
        total = np.sum(list(group["parts"].values()), axis=0)
        group["barrier"].wait()
        return total


def on_workers(size, work):
    """`[work(workers) for each worker]`, the workers run concurrently."""
    barrier = threading.Barrier(size, timeout=60)
    group = {"size": size, "parts": {}, "barrier": barrier}
    results, errors = [None] * size, [None] * size

    def run(rank):
        try:
            results[rank] = work(ThreadWorkers(rank, group))
        except Exception as error:
            errors[rank] = error

    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, errors


def test_broadcast_gives_every_worker_the_chiefs_bits():
    special = np.array(
        [-0.0, np.nan, np.inf, -np.inf, 5e-324, 1 / 3, -1e300, 2.0**-1074]
    )

    def work(workers):
        mine = special if workers.is_chief else np.full(special.shape, 7.0)
        return workers.broadcast(mine)

    results, errors = on_workers(3, work)
    assert errors == [None] * 3
    for received in results:
        assert received.tobytes() == special.tobytes()


def test_all_gather_stacks_every_workers_array_in_rank_order():
    results, _ = on_workers(
        3, lambda workers: workers.all_gather([workers.rank, -0.5])
    )
    for gathered in results:
        np.testing.assert_array_equal(
            gathered, [[0, -0.5], [1, -0.5], [2, -0.5]]
        )


def test_chief_decides_from_its_own_numbers():
    def work(workers):
        rng = np.random.default_rng(workers.rank)  # Each its own scores.
        scores = {"a": rng.normal(size=5), "b": rng.normal(size=3)}
        return chief_decides(workers, 100.0 + workers.rank, scores)

    results, _ = on_workers(2, work)
    chief = np.random.default_rng(0)
    expected = {"a": chief.normal(size=5), "b": chief.normal(size=3)}
    for budget, scores in results:
        assert budget == 100.0
        assert list(scores) == ["a", "b"]
        for name in expected:
            assert scores[name].tobytes() == expected[name].tobytes()


def test_different_settings_fail_on_every_worker_naming_them():
    def work(workers):
        settings = {"interval": 2, "param_budget": 300 + 100 * workers.rank}
        check_same_settings(workers, settings)

    _, errors = on_workers(2, work)
    for rank, error in enumerate(errors):
        assert isinstance(error, ValueError)
        assert "['param_budget'] differ" in str(error)
        assert f"worker {rank} has {{'param_budget': {300 + 100 * rank}}}" in (
            str(error)
        )


def test_a_worker_whose_checks_failed_stops_the_others():
    def work(workers):
        failure = ValueError("bad analysis data") if workers.rank == 1 else None
        check_same_settings(workers, {"interval": 2}, failure)

    _, errors = on_workers(3, work)
    assert str(errors[1]) == "bad analysis data"
    for rank in (0, 2):
        assert "Worker(s) [1] of the 3 workers" in str(errors[rank])


def test_same_settings_pass():
    results, errors = on_workers(
        2, lambda w: check_same_settings(w, {"layers": None, "seed": 0})
    )
    assert errors == [None, None]


@pytest.mark.parametrize("size", [1, 4])
def test_rank_and_chief(size):
    results, _ = on_workers(size, lambda w: (w.rank, w.size, w.is_chief))
    assert results == [(r, size, r == 0) for r in range(size)]
