"""`benchmarks.train_step_throughput`'s report of the side-by-side ratios.

`python -m benchmarks.run_all --quick` runs the benchmark itself.
"""

from benchmarks.train_step_throughput import RETAINED, report


def test_report_sets_the_retained_memory_twins_beside_the_defaults():
    # Seconds per uniform step of 16 images for every worker.
    seconds = {
        "jax": 4.0,
        "tensorflow": 3.2,
        "timm": 2.0,
        "jax" + RETAINED: 3.2,
        "tensorflow" + RETAINED: 3.2,
        "timm" + RETAINED: 1.6,
    }
    best = {name: {"uniform": s} for name, s in seconds.items()}
    ready = {
        "jax": {"params": {"uniform": 21_704_164}},
        "timm": {"torch": "2.x", "threads": 2, "params": 21_704_164},
    }
    text = report(
        False, 224, 16, ready, best, 4, 60.0, "here", retained=True
    )
    assert "Keras-JAX / Keras-TensorFlow 0.80" in text
    assert "Keras-JAX / timm 0.50" in text
    assert "| jax, freed memory retained | 5.00 |" in text
    retained = text[text.index("With freed memory retained") :]
    assert "Keras-JAX / Keras-TensorFlow 1.00" in retained
    assert "Keras-JAX / timm 0.50" in retained
    assert "Keras-JAX / timm at its default 0.62" in retained
    assert "--retained-memory" in text
