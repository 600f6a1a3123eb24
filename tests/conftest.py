"""Shared pytest setup: the backend comes from KERAS_BACKEND (default jax)."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The test models are tiny: XLA's compile, not the compiled code, takes the
# time, so the suite compiles without LLVM's expensive optimisation passes
# (about a fifth off the JAX run). Child processes inherit the flags.
COMPILE_FAST = (
    "--xla_backend_optimization_level=0 "
    "--xla_llvm_disable_expensive_passes=true"
)
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " " + COMPILE_FAST
    ).strip()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked slow first: pytest-xdist hands tests out in this order,
    so the long ones start early instead of leaving one worker busy at the
    end while the others wait."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Fixed seeds and a clean Keras session (layer name counters) per test."""
    keras.utils.clear_session()
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def backend():
    return keras.backend.backend()
