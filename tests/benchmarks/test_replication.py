"""`benchmarks.replication`: the runs it plans and the tables it writes.

Nothing is trained here; `python -m benchmarks.run_all --quick` runs the
script itself.
"""

import pytest

from benchmarks import replication


@pytest.fixture(scope="module")
def full():
    return replication.base_config(quick=False)


def test_full_mode_plans_nine_distinct_configurations(full):
    runs = replication.run_names(full, quick=False)
    names = [name for name, _ in runs.values()]
    assert names == [
        "main-a",
        "main-b",
        "main-c",
        "main-d",
        "main-e",
        "interval-3",
        "interval-6",
        "base-attention",
        "base-mlp",
    ]
    # Interval 9 and "both halved" are the main comparison's variant (a).
    main_a = replication.main_configs(full, False)["a"]
    assert replication.interval_configs(full, False)[9] == main_a
    reductions = replication.reduction_configs(full, False)
    assert reductions["both (default)"] == main_a


def test_growing_variants_share_schedule_and_target(full):
    configs = replication.main_configs(full, quick=False)
    target = replication.target_params(full)
    assert target == 34_900  # 89 % of the uniform 39,242, to the hundred
    growing = [configs[key] for key in ("a", "d", "e")]
    assert [c["growth"]["criterion"] for c in growing] == [
        "splitting",
        "random",
        "gradient_proxy",
    ]
    for config in growing:
        growth = {k: v for k, v in config["growth"].items() if k != "criterion"}
        assert growth == {
            k: v for k, v in configs["a"]["growth"].items() if k != "criterion"
        }
        assert growth["target_params"] == target
    assert not configs["b"]["growth"]["enabled"]
    assert configs["b"]["model"]["attention_width"] == 1.0
    assert not configs["c"]["growth"]["enabled"]
    assert configs["c"]["model"]["mlp_width"] == 0.5


@pytest.mark.parametrize("interval, events", [(3, 7), (6, 4), (9, 3)])
def test_each_interval_can_reach_the_target_in_its_window(
    full, interval, events
):
    config = replication.interval_configs(full, quick=False)[interval]
    epochs = replication.event_epochs(config)
    assert len(epochs) == events and epochs[0] == 8 and epochs[-1] == 26
    base, _, cost = replication.model_sizes(config["model"])
    budget = config["growth"]["param_budget"]
    missing = config["growth"]["target_params"] - base
    # Each event leaves less than one neuron's cost of its budget unused.
    assert events * (budget - cost) >= missing
    assert (events - 1) * budget < missing


def test_base_reductions_start_smaller_than_the_target(full):
    reductions = replication.reduction_configs(full, quick=False)
    widths = {
        label: (c["model"]["attention_width"], c["model"]["mlp_width"])
        for label, c in reductions.items()
    }
    assert widths == {
        "attention only": (0.5, 1.0),
        "MLP only": (1.0, 0.5),
        "both (default)": (0.5, 0.5),
    }
    for config in reductions.values():
        base = replication.model_sizes(config["model"])[0]
        assert base < config["growth"]["target_params"]


def test_quick_mode_is_two_runs_with_one_event():
    config = replication.base_config(quick=True)
    runs = replication.run_names(config, quick=True)
    assert [name for name, _ in runs.values()] == ["main-a", "main-b"]
    grown = replication.main_configs(config, quick=True)["a"]
    assert replication.event_epochs(grown) == [1]
    assert grown["train"]["epochs"] == 2


def _row(top1, final_params=34_800, events=(8, 17, 26)):
    return {
        "base_params": 20_474,
        "final_params": final_params,
        "final_gflops": 0.000462,
        "top1": top1,
        "top5": 99.5,
        "events": list(events),
        "grown": {"qkv": 90, "proj": 30, "fc1": 80, "fc2": 15},
    }


def test_tables_show_mean_std_paired_difference_and_seeds():
    results = {
        "a": [_row(95.0), _row(96.0), _row(94.0, final_params=34_850)],
        "b": [_row(94.0), _row(95.0), _row(95.0)],
    }
    table = replication.main_table(results)
    lines = table.splitlines()
    assert len(lines) == 4
    grown, uniform = lines[2], lines[3]
    assert "(a) grown, splitting criterion" in grown
    assert "| 95.00 ± 1.00 |" in grown
    assert "34,817 (34,800-34,850)" in grown
    assert "| 0.33 ± 1.15 |" in grown  # per-seed 1, 1, -1
    assert "95.0, 96.0, 94.0" in grown
    assert "| 8, 17, 26 | 90 / 30 / 80 / 15 |" in grown
    assert "| 0.462 |" in grown
    assert "| 94.67 ± 0.58 |" in uniform
    assert replication.mean_std([93.0]) == "93.00"


def test_event_epochs_of_only_some_seeds_are_marked():
    rows = [_row(95.0, events=(8, 14)), _row(95.0, events=(8, 14, 20))]
    assert replication.events_cell(rows) == "8, 14 (+20 in 1 of 2 seeds)"
    assert replication.events_cell([_row(95.0, events=())]) == "-"
