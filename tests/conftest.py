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


def _jax_compilation_cache():
    """JAX's persistent compilation cache in a folder of this test run.

    Many tests compile the same small programs again (the same tiny ViT's
    train step in another test, a training run and its resumed twin in
    child processes); with the cache, XLA compiles each once per run. The
    key is the program and the compile options, so a hit returns what a
    fresh compile would. The first process to import this file (pytest
    itself, before its workers start) makes the folder and removes it at
    exit; workers and child processes inherit it through the environment.
    A cache folder that the caller set is used and left alone.
    """
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="keras-depthhet-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


_jax_compilation_cache()

import gc  # noqa: E402
import itertools  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

TIERS = ("fast", "integration", "all")
"""Values of `--tier`: the fast tier (the default), the integration tier
(tests marked `integration`: real child processes, full-size DeiT shapes,
the documentation and the README executed) or both."""


def pytest_addoption(parser):
    parser.addoption(
        "--tier",
        choices=TIERS,
        default="fast",
        help=(
            "which tests to run: fast (default; minutes), integration "
            "(child processes, full-size DeiT, docs and README executed) "
            "or all"
        ),
    )


def _in_tier(item, tier: str) -> bool:
    integration = item.get_closest_marker("integration") is not None
    return tier == "all" or integration == (tier == "integration")


def pytest_collection_modifyitems(config, items):
    """Keeps the tests of the chosen `--tier`, the slow ones first.

    Tests outside the tier are deselected (pytest reports how many), not
    skipped; a run that selects no test exits with status 5, a failure.
    pytest-xdist hands tests out in this order, so the long ones start
    early instead of leaving one worker busy at the end while the others
    wait.
    """
    tier = config.getoption("--tier")
    chosen = [item for item in items if _in_tier(item, tier)]
    dropped = [item for item in items if not _in_tier(item, tier)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = chosen
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


FULL_COLLECTION_EVERY = 20
"""Tests between two full garbage collections in a worker. A full
collection walks every object the process holds, which grows to about a
million here (the backends' modules and caches), so collecting before
every test, as `clear_session()` does by default, cost about a quarter of
the suite's time. Between full collections Python's own collector still
frees garbage as it goes; this bounds what can wait for it."""

_tests_started = itertools.count()


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Fixed seeds and a clean Keras session (layer name counters) per test."""
    keras.utils.clear_session(free_memory=False)
    if next(_tests_started) % FULL_COLLECTION_EVERY == 0:
        gc.collect()
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def backend():
    return keras.backend.backend()
