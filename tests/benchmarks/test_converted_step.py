"""`benchmarks.converted_step`: its models and its table.

`python -m benchmarks.run_all --quick` runs the benchmark itself.
"""

import pytest

from benchmarks.converted_step import QUICK, _models, report


@pytest.mark.integration  # Imports KerasHub and builds four ViTs.
def test_the_converted_keras_hub_vit_grows_as_our_vit_of_its_sizes():
    models = _models(QUICK)
    params = {name: model.count_params() for name, model in models.items()}
    # Same sizes, same layers made growable, a quarter of each grown.
    assert params["keras_hub"] == params["vit"]
    assert params["keras_hub_grown"] == params["vit_grown"] > params["vit"]


def test_report_divides_the_grown_step_by_the_step_before():
    seconds = {
        "keras_hub": 0.010,
        "keras_hub_grown": 0.015,
        "vit": 0.008,
        "vit_grown": 0.010,
    }
    params = dict.fromkeys(seconds, 1000)
    text = report({"jax": {"seconds": seconds, "params": params}}, QUICK, "x")
    assert (
        "| jax | KerasHub ViT, `make_growable` | 1,000 | 1,000 | 10.0 | "
        in text
    )
    assert text.count("| 1.50 |") == 1 and text.count("| 1.25 |") == 1
