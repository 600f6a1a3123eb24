"""`select_neurons`: the paper's selection rule on hand-made input."""

import numpy as np
import pytest

from keras_depthhet.growth.selection import (
    plan_cost,
    select_neurons,
)


def _as_lists(plan):
    return {name: indices.tolist() for name, indices in plan.items()}


def _reference(scores, costs, budget, threshold):
    """Plain-Python statement of the rule: sort tuples, take greedily."""
    names = list(scores)
    rows = []
    for layer_id, name in enumerate(names):
        eligible = [i for i, s in enumerate(scores[name]) if s < 0]
        if eligible and len(eligible) >= threshold:
            rows += [(scores[name][i], layer_id, i) for i in eligible]
    plan, spent = {}, 0
    for _, layer_id, i in sorted(rows):
        name = names[layer_id]
        if spent + costs[name] > budget:
            break
        spent += costs[name]
        plan.setdefault(name, []).append(i)
    return {n: sorted(plan[n]) for n in names if n in plan}


def test_no_eligible_neuron_gives_empty_plan():
    scores = {"a": np.array([0.0, 1.0, 2.0]), "b": np.array([0.5])}
    plan = select_neurons(
        scores, {"a": 4, "b": 4}, param_budget=100, layer_threshold=0
    )
    assert plan == {}


def test_budget_below_one_neuron_cost_gives_empty_plan():
    scores = {"a": np.array([-5.0, -1.0])}
    plan = select_neurons(scores, {"a": 10}, param_budget=9)
    assert plan == {}
    plan = select_neurons(scores, {"a": 10}, param_budget=10)
    assert _as_lists(plan) == {"a": [0]}


def test_layer_threshold_just_under_and_just_over():
    scores = {
        "under": np.array([-9.0, -8.0, 1.0, 1.0]),  # 2 eligible
        "exact": np.array([-1.0, -2.0, -3.0, 0.0]),  # 3 eligible
    }
    costs = {"under": 1, "exact": 1}
    plan = select_neurons(scores, costs, param_budget=100, layer_threshold=3)
    assert _as_lists(plan) == {"exact": [0, 1, 2]}
    plan = select_neurons(scores, costs, param_budget=100, layer_threshold=2)
    assert _as_lists(plan) == {"under": [0, 1], "exact": [0, 1, 2]}


def test_most_negative_first_across_layers_with_different_costs():
    scores = {
        "a": np.array([-1.0, -4.0, -2.0]),
        "b": np.array([-3.0, -0.5]),
    }
    costs = {"a": 10, "b": 7}
    # Order: a1 (-4, 10), b0 (-3, 7), a2 (-2, 10), a0 (-1, 10), b1 (7).
    plan = select_neurons(scores, costs, param_budget=27)
    assert _as_lists(plan) == {"a": [1, 2], "b": [0]}
    assert plan_cost(plan, costs) == 27
    # One short of a2: selection stops there (no skipping ahead to b1).
    plan = select_neurons(scores, costs, param_budget=26)
    assert _as_lists(plan) == {"a": [1], "b": [0]}


def test_ties_broken_by_layer_order_then_index():
    scores = {
        "second": np.array([-1.0, -1.0, -1.0]),
        "first": np.array([-1.0, -1.0]),
    }
    costs = {"second": 1, "first": 1}
    plan = select_neurons(scores, costs, param_budget=4)
    # Layer order is the dict's order: "second" comes first.
    assert _as_lists(plan) == {"second": [0, 1, 2], "first": [0]}
    assert list(plan) == ["second", "first"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_plain_python_reference(seed):
    rng = np.random.default_rng(seed)
    scores = {
        f"layer_{i}": np.round(rng.normal(size=rng.integers(5, 30)), 1)
        for i in range(4)
    }
    costs = {name: int(rng.integers(1, 20)) for name in scores}
    for budget in (5, 40, 150, 10_000):
        for threshold in (0, 3, 8):
            plan = select_neurons(
                scores, costs, param_budget=budget, layer_threshold=threshold
            )
            assert _as_lists(plan) == _reference(
                scores, costs, budget, threshold
            )
            assert plan_cost(plan, costs) <= budget


def test_gradient_proxy_uses_the_same_ranking():
    scores = {"a": np.array([0.0, -2.0, -0.5]), "b": np.array([-1.0, 0.0])}
    costs = {"a": 3, "b": 3}
    plan = select_neurons(
        scores, costs, param_budget=6, criterion="gradient_proxy"
    )
    assert _as_lists(plan) == {"a": [1], "b": [0]}


def test_random_is_seeded_and_fills_the_budget():
    scores = {"a": np.ones(50), "b": np.ones(30)}
    costs = {"a": 2, "b": 3}
    first = select_neurons(
        scores, costs, param_budget=40, criterion="random", seed=7
    )
    again = select_neurons(
        scores, costs, param_budget=40, criterion="random", seed=7
    )
    other = select_neurons(
        scores, costs, param_budget=40, criterion="random", seed=8
    )
    assert _as_lists(first) == _as_lists(again)
    assert _as_lists(first) != _as_lists(other)
    # Positive scores: random ignores eligibility, and stops within budget.
    assert 40 - 3 < plan_cost(first, costs) <= 40


def test_by_layer_type_gives_each_type_an_equal_share():
    scores = {
        "block_0_attn_qkv": -np.arange(1.0, 11.0),
        "block_0_attn_proj": -np.arange(1.0, 11.0),
        "block_0_mlp_fc1": -np.arange(1.0, 11.0),
        "block_0_mlp_fc2": -np.arange(1.0, 11.0) * 100,
    }
    costs = dict.fromkeys(scores, 5)
    types = {name: name.rsplit("_", 1)[-1] for name in scores}
    plan = select_neurons(
        scores,
        costs,
        param_budget=80,
        budget_split="by_layer_type",
        layer_types=types,
    )
    # 20 per type = 4 neurons each, the 4 most negative (indices 6..9),
    # although fc2's scores would take the whole budget globally.
    assert _as_lists(plan) == {name: [6, 7, 8, 9] for name in scores}
    global_plan = select_neurons(scores, costs, param_budget=80)
    assert len(global_plan["block_0_mlp_fc2"]) == 10


def test_by_layer_type_needs_a_type_for_every_layer():
    with pytest.raises(ValueError, match=r"layers \['b'\] have none"):
        select_neurons(
            {"a": np.array([-1.0]), "b": np.array([-1.0])},
            {"a": 1, "b": 1},
            param_budget=10,
            budget_split="by_layer_type",
            layer_types={"a": "fc1"},
        )


def test_by_layer_type_takes_any_type_names():
    scores = {"x": -np.arange(1.0, 5.0), "y": -np.arange(1.0, 5.0) * 10}
    plan = select_neurons(
        scores,
        dict.fromkeys(scores, 1),
        param_budget=4,
        budget_split="by_layer_type",
        layer_types={"x": "encoder", "y": "decoder"},
    )
    assert _as_lists(plan) == {"x": [2, 3], "y": [2, 3]}


def test_does_not_modify_inputs():
    scores = {"a": np.array([-1.0, -2.0])}
    copy = scores["a"].copy()
    select_neurons(scores, {"a": 1}, param_budget=5)
    np.testing.assert_array_equal(scores["a"], copy)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"param_budget": 0}, "param_budget"),
        ({"param_budget": -3}, "param_budget"),
        ({"param_budget": float("nan")}, "param_budget"),
        ({"layer_threshold": -1}, "layer_threshold"),
        ({"layer_threshold": 1.5}, "layer_threshold"),
        ({"criterion": "hessian"}, "criterion"),
        ({"budget_split": "half"}, "budget_split"),
        ({"costs": {"a": 0}}, "costs"),
        ({"costs": {}}, "costs"),
        ({"scores": {"a": np.array([np.nan])}}, "scores"),
        ({"scores": {"a": np.zeros((2, 2))}}, "scores"),
        ({"scores": [np.zeros(2)]}, "scores"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = {
        "scores": {"a": np.array([-1.0])},
        "costs": {"a": 1},
        "param_budget": 10,
        **kwargs,
    }
    scores, costs = args.pop("scores"), args.pop("costs")
    with pytest.raises(ValueError, match=match):
        select_neurons(scores, costs, **args)
