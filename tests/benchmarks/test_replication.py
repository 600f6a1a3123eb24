"""`benchmarks.replication`: the runs it plans and the tables it writes.

Nothing is trained here; `python -m benchmarks.run_all --quick` runs the
script itself.
"""

import copy
import json
import statistics

import numpy as np
import pytest

from benchmarks import replication


@pytest.fixture(scope="module")
def full():
    return replication.base_config(quick=False)


def test_full_mode_plans_ten_distinct_configurations(full):
    runs = replication.run_names(full, quick=False)
    names = [name for name, _ in runs.values()]
    assert names == [
        "main-a",
        "main-b",
        "main-c",
        "main-d",
        "main-e",
        "main-f",
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


def test_arms_g_and_h_split_the_budget_by_layer_type(full):
    configs = replication.main_configs(
        full, quick=False, arms=("a", "e", "g", "h")
    )
    assert list(configs) == ["a", "e", "g", "h"]
    growth = {key: c["growth"] for key, c in configs.items()}
    assert [(g["criterion"], g["budget_split"]) for g in growth.values()] == [
        ("splitting", "global"),
        ("gradient_proxy", "global"),
        ("splitting", "by_layer_type"),
        ("gradient_proxy", "by_layer_type"),
    ]
    # (e) is (a) but for the criterion, (h) is (g) but for the criterion.
    assert configs["e"] == replication.grown(full, criterion="gradient_proxy")
    for x, y in (("a", "e"), ("g", "h")):
        assert {**growth[x], "criterion": None} == {
            **growth[y],
            "criterion": None,
        }
        assert configs[x]["model"] == configs[y]["model"]
    # Each of the four shares may leave up to one neuron's cost unused.
    _, _, cost = replication.model_sizes(configs["g"]["model"])
    assert growth["g"]["param_budget"] == growth["a"]["param_budget"] + 3 * cost
    assert growth["g"]["target_params"] == growth["a"]["target_params"]
    runs = replication.run_names(full, False, False, ("g", "h"))
    assert [name for name, _ in runs.values()] == ["main-g", "main-h"]


def test_by_layer_type_reads_every_growable_layer_of_the_tiny_vits(tmp_path):
    from keras_depthhet.growth.selection import (
        default_layer_types,
        select_neurons,
    )
    from keras_depthhet.models import vit
    from keras_depthhet.models.vit import growable_layers
    from keras_depthhet.utils.keras_internals import iter_layers
    from training.config import vit_arguments

    for mnist in (None, str(tmp_path)):
        config = replication.base_config(False, mnist=mnist)
        config = replication.main_configs(config, False, ("h",))["h"]
        model = vit(**vit_arguments(config["model"]))
        layers = growable_layers(model)
        kinds = [layer.name.rsplit("_", 1)[-1] for layer in layers]
        assert sorted(set(kinds)) == sorted(replication.LAYER_TYPES)
        # The default types come from the blocks' attributes, not names.
        types = default_layer_types(
            [model, *iter_layers(model)], {x.name: x for x in layers}
        )
        assert types == {x.name: x.name.rsplit("_", 1)[-1] for x in layers}
        scores = {layer.name: -np.ones(layer.units) for layer in layers}
        costs = {layer.name: layer.growth_cost(1) for layer in layers}
        growth = config["growth"]
        plan = select_neurons(
            scores,
            costs,
            param_budget=growth["param_budget"],
            layer_threshold=growth["layer_threshold"],
            criterion=growth["criterion"],
            budget_split=growth["budget_split"],
            layer_types=types,
        )
        spent = dict.fromkeys(replication.LAYER_TYPES, 0)
        for name, indices in plan.items():
            spent[name.rsplit("_", 1)[-1]] += len(indices) * costs[name]
        share = growth["param_budget"] / len(replication.LAYER_TYPES)
        # Every type fills its own share, within one neuron's cost.
        for kind, used in spent.items():
            largest = max(
                c for n, c in costs.items() if n.endswith(f"_{kind}")
            )
            assert share - largest < used <= share


def test_quick_mode_is_two_runs_with_one_event():
    config = replication.base_config(quick=True)
    runs = replication.run_names(config, quick=True)
    assert [name for name, _ in runs.values()] == ["main-a", "main-b"]
    grown = replication.main_configs(config, quick=True)["a"]
    assert replication.event_epochs(grown) == [1]
    assert grown["train"]["epochs"] == 2
    # Arms named run in quick mode too (a smoke run of g and h).
    chosen = replication.main_configs(config, quick=True, arms=("g", "h"))
    assert list(chosen) == ["g", "h"]
    assert replication.event_epochs(chosen["h"]) == [1]


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


def test_arm_f_is_the_reduced_model_from_arm_a_architecture(full, tmp_path):
    configs = replication.main_configs(full, quick=False)
    scratch = configs["f"]
    assert not scratch["growth"]["enabled"]
    assert scratch["model"] == {
        **configs["c"]["model"],
        "architecture_from": replication.ARCHITECTURE_OF_A,
    }
    runner = replication.Runner(tmp_path, total=1)
    unit = runner.unit_config("main-f", scratch, seed=4)
    assert unit["seed"] == 4 and unit["name"] == "main-f"
    assert unit["model"]["architecture_from"] == str(
        tmp_path.resolve() / "main-a-seed4"
    )
    # Arms chosen: the order of the comparison, (f) after (a).
    assert list(replication.main_configs(full, False, ("f", "a", "b"))) == [
        "a",
        "b",
        "f",
    ]


@pytest.mark.parametrize(
    "epochs, events, warmup_epochs", [(34, [8, 17, 26], 3), (16, [4, 8, 12], 1)]
)
def test_epochs_scale_the_schedule(epochs, events, warmup_epochs):
    config = replication.base_config(False, epochs=epochs, test_fraction=0.5)
    grown = replication.main_configs(config, quick=False)["a"]
    assert replication.event_epochs(grown) == events
    assert grown["train"]["epochs"] == epochs
    assert grown["train"]["warmup_epochs"] == warmup_epochs
    assert grown["data"]["test_fraction"] == 0.5


def test_mnist_comparison_reads_the_directory_given(tmp_path):
    config = replication.base_config(False, mnist=str(tmp_path))
    assert config["data"]["dataset"] == "mnist_t10k"
    assert config["data"]["data_dir"] == str(tmp_path)
    assert config["model"]["patch_size"] == 7
    assert replication.split_text(config)[1] == "8,000/2,000"
    args = replication.parse_args(
        ["--mnist", str(tmp_path), "--out", str(tmp_path), "--seeds", "12"]
    )
    command = replication.command_line(args)
    assert str(tmp_path) not in command
    assert "--mnist DIR" in command and "--out DIR" in command


def test_confidence_intervals_against_student_t_tables():
    # t(0.975) for 2 and 9 degrees of freedom: 4.303 and 2.262.
    assert replication.half_width(1.0, 3) == pytest.approx(
        4.303 / 3**0.5, abs=1e-3
    )
    assert replication.half_width(0.76, 10) == pytest.approx(
        2.262 * 0.76 / 10**0.5, abs=1e-3
    )
    # 0.76: 11 seeds give 2.228 * 0.76 / sqrt(11) = 0.51, 12 give 0.48.
    assert replication.seeds_needed(0.76) == 12
    assert replication.seeds_needed(0.2) == 3


def test_difference_table_gives_mean_interval_and_seeds():
    results = {
        "a": [_row(95.0), _row(96.0), _row(94.0)],
        "b": [_row(94.0), _row(95.0), _row(95.0)],
        "d": [_row(95.5), _row(95.5), _row(94.5)],
    }
    table = replication.difference_table(results)
    lines = table.splitlines()
    assert len(lines) == 4  # a - b, a - d; c, e, f absent
    half = 4.303 * statistics.stdev([1, 1, -1]) / 3**0.5
    assert lines[2].startswith(
        "| (a) grown, splitting criterion - (b) uniform full width | 3 "
        "| +0.33 |"
    )
    assert f"| {half:.2f} | 1.15 |" in lines[2]
    assert f"{1 / 3 - half:+.2f} to {1 / 3 + half:+.2f}" in lines[2]
    assert lines[2].endswith("| +1.0, +1.0, -1.0 |")
    assert "(d) grown, random neurons | 3 | -0.17 |" in lines[3]


def test_arms_are_checked():
    assert replication.parse_args(["--arms", "b,a"]).arms == ("a", "b")
    assert replication.parse_args([]).arms == tuple("abcdef")
    assert replication.parse_args(["--arms", "h,g,e,a"]).arms == tuple(
        "aegh"
    )
    assert replication.parse_args(["--pilot"]).arms == ("a", "b", "d")
    for bad in (["--arms", "a,z"], ["--arms", "b,f"], ["--epochs", "2"]):
        with pytest.raises(SystemExit):
            replication.parse_args(bad)


def test_first_seed_lets_two_processes_split_the_seeds(tmp_path):
    common = ["--mnist", str(tmp_path), "--out", str(tmp_path)]
    first = replication.parse_args(common + ["--seeds", "4"])
    second = replication.parse_args(
        common + ["--seeds", "3", "--first-seed", "4"]
    )
    assert replication.seed_list(first) == [0, 1, 2, 3]
    assert replication.seed_list(second) == [4, 5, 6]
    assert "--first-seed 4" in replication.command_line(second)
    assert "--first-seed" not in replication.command_line(first)
    with pytest.raises(SystemExit):
        replication.parse_args(["--first-seed", "-1"])


def test_a_unit_of_other_settings_is_refused(full, tmp_path):
    runner = replication.Runner(tmp_path, total=1)
    config = replication.main_configs(full, quick=False)["b"]
    unit = tmp_path / "main-b-seed0"
    unit.mkdir()
    saved = runner.unit_config("main-b", config, 0)
    (unit / "config.json").write_text(json.dumps(saved))
    assert runner._read("main-b-seed0", saved) is None  # not finished
    record = {"top1": 95.0}
    (tmp_path / "main-b-seed0.json").write_text(json.dumps(record))
    assert runner._read("main-b-seed0", saved) == record
    other = copy.deepcopy(saved)
    other["train"]["epochs"] = 16
    with pytest.raises(ValueError, match="other settings"):
        runner._read("main-b-seed0", other)


def test_differences_of_the_proxy_arms_under_both_splits():
    results = {
        "a": [_row(95.0), _row(96.0), _row(94.0)],
        "e": [_row(94.0), _row(95.5), _row(94.0)],
        "g": [_row(95.0), _row(95.0), _row(95.0)],
        "h": [_row(94.5), _row(94.0), _row(95.5)],
    }
    lines = replication.difference_table(results).splitlines()
    assert len(lines) == 6  # a - e, g - h, a - g, h - e
    assert lines[2].startswith(
        "| (a) grown, splitting criterion - (e) grown, gradient proxy | 3 "
        "| +0.50 |"
    )
    assert lines[3].startswith(
        "| (g) grown, splitting criterion, budget by layer type - (h) "
        "grown, gradient proxy, budget by layer type | 3 | +0.33 |"
    )
    assert lines[3].endswith("| +0.5, +1.0, -0.5 |")
    assert "| (a) grown, splitting criterion - (g)" in lines[4]
    assert "| (h) grown, gradient proxy, budget by layer type - (e)" in (
        lines[5]
    )
    table = replication.main_table(results)
    assert "| (h) grown, gradient proxy, budget by layer type |" in table


def test_report_says_what_the_proxy_arms_are():
    notes = replication.arm_notes(("a", "e"))
    assert "weight-gradient row" in notes and "no bias gradient" in notes
    assert "last training minibatch" in notes
    assert "by_layer_type" not in notes
    assert "by_layer_type" in replication.arm_notes(("g", "h"))
    assert replication.arm_notes(("a", "b")) == ""


def test_a_unit_of_the_former_proxy_score_is_refused(full, tmp_path):
    runner = replication.Runner(tmp_path, total=1)
    config = replication.main_configs(full, quick=False, arms=("e",))["e"]
    unit = tmp_path / "main-e-seed0"
    unit.mkdir()
    saved = runner.unit_config("main-e", config, 0)
    (unit / "config.json").write_text(json.dumps(saved))
    result = tmp_path / "main-e-seed0.json"
    result.write_text(json.dumps({"top1": 95.0}))
    with pytest.raises(ValueError, match="former gradient proxy"):
        runner._read("main-e-seed0", saved)
    record = {"top1": 95.0, "proxy_score": replication.PROXY_SCORE}
    result.write_text(json.dumps(record))
    assert runner._read("main-e-seed0", saved) == record
    # Units of the other criteria need no such record.
    assert not replication.uses_proxy(
        replication.main_configs(full, False, ("a",))["a"]
    )


def test_pilot_row_projects_seeds_and_time():
    def rows(top1s, seconds, cpu):
        return [
            dict(
                _row(t),
                seconds=seconds,
                cpu_seconds=cpu,
                load_average=[10.0, 9.0, 8.0],
            )
            for t in top1s
        ]

    results = {
        "a": rows([95.0, 96.0, 94.0], 300, 100),
        "b": rows([94.0, 95.0, 95.0], 200, 80),
        "d": rows([95.0, 96.0, 94.0], 300, 100),
    }
    config = replication.base_config(False, epochs=16)
    row = replication.pilot_row(config, results)
    assert row["a-b"]["sd"] == pytest.approx(statistics.stdev([1, 1, -1]))
    assert row["a-d"]["sd"] == 0.0
    needed = replication.seeds_needed(row["a-b"]["sd"])
    assert row["seeds_needed"] == needed
    assert row["hours_six_arms"] == pytest.approx(needed * 1500 / 3600)
    assert row["cpu_hours_six_arms"] == pytest.approx(needed * 540 / 3600)
    table = replication.pilot_table([row])
    assert f"| {needed} |" in table and "| 300 / 200 / 300 |" in table


def test_each_run_kind_writes_its_own_table():
    def name(*argv):
        return replication.report_name(replication.parse_args(list(argv)))

    seeded = ["--mnist", "DIR", "--epochs", "20"]
    assert name() == "replication"
    assert name("--mnist", "DIR") == "replication_mnist"
    assert name(*seeded) == "replication_mnist_seeded"
    # More seeds of two arms do not replace the table of every arm.
    assert name(*seeded, "--arms", "a,b") == "replication_mnist_seeded_ab"
    assert name(*seeded, "--arms", "a,b,c,d,e,f") == name(*seeded)
    # The arms run only when named write their own table too.
    assert (
        name(*seeded, "--arms", "a,e,g,h") == "replication_mnist_seeded_aegh"
    )
    assert name(*seeded, "--arms", "a,b,c,d,e,f,g,h") == (
        "replication_mnist_seeded_abcdefgh"
    )
    assert name(*seeded, "--pilot") == "replication_mnist_seeded"
