"""Which neurons to grow: a pure function from scores to a growth plan.

Per-neuron scores and per-neuron costs in, `{layer_name: sorted neuron
indices}` out (the plan `grow_model` applies); no model is touched.
"""

import numbers
from collections.abc import Mapping

import numpy as np

from keras_depthhet.utils.validation import (
    choice,
    int_at_least,
    positive_number,
)

CRITERIA = ("splitting", "gradient_proxy", "random")
"""Accepted values of `criterion`."""

BUDGET_SPLITS = ("global", "by_layer_type")
"""Accepted values of `budget_split`."""

LAYER_TYPES = ("qkv", "proj", "fc1", "fc2")
"""The layer types of a transformer, in the order `budget_split=
"by_layer_type"` takes them (other types follow in order of appearance)."""

TYPE_OF_ATTRIBUTE = {
    # keras_depthhet's `Attention` and `Mlp`.
    "qkv": "qkv",
    "proj": "proj",
    "fc1": "fc1",
    "fc2": "fc2",
    # `keras.layers.MultiHeadAttention`.
    "_query_dense": "qkv",
    "_key_dense": "qkv",
    "_value_dense": "qkv",
    "_output_dense": "proj",
    # KerasHub's `TransformerEncoder`, and the `MLP` of its ViT.
    "_feedforward_intermediate_dense": "fc1",
    "_feedforward_output_dense": "fc2",
    "MLP.dense_1": "fc1",
    "MLP.dense_2": "fc2",
}
"""The type of a growable layer that its parent layer holds under one of
these attributes (`"Class.attribute"` for a parent of that class name):
the default types of `budget_split="by_layer_type"`."""


def default_layer_types(parents, layers: Mapping) -> dict[str, str]:
    """`{key: type}` of the `layers` (`{key: layer}`) that one of `parents`
    holds under an attribute of `TYPE_OF_ATTRIBUTE`."""
    keys = {id(layer): key for key, layer in layers.items()}
    types = {}
    for parent in parents:
        for attribute, value in vars(parent).items():
            kind = TYPE_OF_ATTRIBUTE.get(
                f"{type(parent).__name__}.{attribute}",
                TYPE_OF_ATTRIBUTE.get(attribute),
            )
            if kind is not None and id(value) in keys:
                types[keys[id(value)]] = kind
    return types


def type_groups(scores: Mapping, layer_types: Mapping | None) -> list[dict]:
    """The scores grouped by layer type, `LAYER_TYPES` first."""
    layer_types = layer_types or {}
    missing = [name for name in scores if layer_types.get(name) is None]
    if missing:
        raise ValueError(
            'With `budget_split="by_layer_type"` every growable layer needs '
            f"a type; layers {missing} have none. Pass `layer_types`, a "
            'mapping such as {"dense": "fc1"} or a function of the layer. '
            f"Received: layer_types={dict(layer_types)!r}"
        )
    groups = {}
    for name, values in scores.items():
        groups.setdefault(layer_types[name], {})[name] = values
    order = [k for k in LAYER_TYPES if k in groups]
    order += [k for k in groups if k not in LAYER_TYPES]
    return [groups[kind] for kind in order]


def _check_inputs(scores, costs, param_budget, layer_threshold):
    """`scores` as float64 arrays, once every argument is checked."""
    if not isinstance(scores, Mapping):
        raise ValueError(
            "Argument `scores` must be a dict {layer_name: 1-D array}. "
            f"Received: scores of type {type(scores).__name__}"
        )
    checked = {}
    for name, values in scores.items():
        array = np.asarray(values, dtype="float64")
        if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
            raise ValueError(
                "Argument `scores` must map each layer name to a non-empty "
                "1-D array of finite numbers. "
                f"Received: scores[{name!r}] with shape {array.shape}"
            )
        cost = costs.get(name) if isinstance(costs, Mapping) else None
        if (
            isinstance(cost, bool)
            or not isinstance(cost, numbers.Integral)
            or cost < 1
        ):
            raise ValueError(
                "Argument `costs` must give a positive integer cost per "
                f"neuron for every layer in `scores`. Received: "
                f"costs[{name!r}]={cost!r}"
            )
        checked[name] = array
    positive_number("param_budget", param_budget)
    int_at_least("layer_threshold", layer_threshold, 0)
    return checked


def _take_within_budget(candidates, costs, budget):
    """Takes `(layer, index)` candidates in order until the budget is hit."""
    plan, spent = {}, 0
    for name, index in candidates:
        if spent + costs[name] > budget:
            break
        spent += costs[name]
        plan.setdefault(name, []).append(index)
    return plan


def _ranked_eligible(scores, layer_threshold):
    """Eligible neurons of taking-part layers, most negative first."""
    names, rows = list(scores), []
    for layer_id, name in enumerate(names):
        eligible = np.flatnonzero(scores[name] < 0)
        if eligible.size and eligible.size >= layer_threshold:
            layer_ids = np.full(eligible.size, layer_id)
            rows.append((scores[name][eligible], layer_ids, eligible))
    if not rows:
        return []
    values, layer_ids, indices = map(np.concatenate, zip(*rows, strict=True))
    # np.lexsort sorts by its last key first: score, then layer, then index.
    order = np.lexsort((indices, layer_ids, values))
    return [(names[layer_ids[i]], int(indices[i])) for i in order]


def _ranked_random(scores, rng):
    candidates = [
        (name, i) for name, values in scores.items() for i in range(len(values))
    ]
    return [candidates[i] for i in rng.permutation(len(candidates))]


def select_neurons(
    scores: Mapping[str, np.ndarray],
    costs: Mapping[str, int],
    *,
    param_budget: float,
    layer_threshold: int = 0,
    criterion: str = "splitting",
    budget_split: str = "global",
    layer_types: Mapping[str, str] | None = None,
    seed: int | None = None,
) -> dict[str, np.ndarray]:
    """Chooses the neurons to grow at one growth event.

    The paper's rule (`criterion="splitting"`, scores the minimum
    eigenvalues of the neurons' splitting matrices; `"gradient_proxy"`, the
    authors' code's scores): a neuron is eligible when its score is
    negative, a layer takes part with at least `layer_threshold` eligible
    neurons, and eligible neurons are taken most negative first (ties by
    layer order, then index) until the next would exceed `param_budget`.
    `"random"` (the ablation) takes neurons of all layers in a random order
    seeded by `seed`, within the budget. `budget_split="by_layer_type"`
    (the authors' code) splits the budget equally among the layer types
    present (`layer_types`: for a transformer `qkv`, `proj`, `fc1`, `fc2`)
    and runs the rule within each.

    Args:
        scores: `{layer_name: 1-D array}` of finite per-neuron scores, in
            layer order.
        costs: `{layer_name: int}`, parameters added by growing one neuron
            of that layer (`GrowableDense.growth_cost(1)`).
        param_budget: Positive number, the most parameters the plan may add.
        layer_threshold: Non-negative integer, the fewest eligible neurons a
            layer needs to take part.
        criterion: `"splitting"`, `"gradient_proxy"` or `"random"`.
        budget_split: `"global"` or `"by_layer_type"`.
        layer_types: `{layer_name: type}` of every layer in `scores`, for
            `budget_split="by_layer_type"` (e.g. `"qkv"`, `"fc1"`).
        seed: Seed of `criterion="random"`.

    Returns:
        The plan: `{layer_name: sorted int64 array of neuron indices}` for
        the layers with at least one chosen neuron, in layer order; `{}`
        when nothing is eligible or no neuron fits the budget.

    Raises:
        ValueError: on an invalid argument, or with `"by_layer_type"` a
            layer without a type in `layer_types`.

    Examples:
        >>> scores = {"fc1": np.array([-3.0, 0.5, -1.0]),
        ...           "fc2": np.array([-2.0, -0.1])}
        >>> plan = select_neurons(scores, {"fc1": 10, "fc2": 10},
        ...                       param_budget=30, layer_threshold=2)
        >>> {name: idx.tolist() for name, idx in plan.items()}
        {'fc1': [0, 2], 'fc2': [0]}
    """
    criterion = choice("criterion", criterion, CRITERIA)
    budget_split = choice("budget_split", budget_split, BUDGET_SPLITS)
    scores = _check_inputs(scores, costs, param_budget, layer_threshold)
    if budget_split == "global":
        groups = [scores]
    else:
        groups = type_groups(scores, layer_types)
    rng = np.random.default_rng(seed)
    budget = float(param_budget) / len(groups)
    chosen = {}
    for group in groups:
        if criterion == "random":
            candidates = _ranked_random(group, rng)
        else:
            candidates = _ranked_eligible(group, layer_threshold)
        chosen.update(_take_within_budget(candidates, costs, budget))
    return {
        name: np.sort(np.asarray(chosen[name], dtype="int64"))
        for name in scores
        if name in chosen
    }


def plan_cost(plan: Mapping[str, np.ndarray], costs: Mapping[str, int]) -> int:
    """Parameters a plan adds: the sum over layers of neurons times cost."""
    return int(sum(len(idx) * costs[name] for name, idx in plan.items()))
