"""The one place where private Keras APIs are touched.

Keras locks a layer's state after `build()`; growth must add variables to a
built layer, and tools that analyse a model must walk nested layers. Both need
Keras internals, which are wrapped here once so that a Keras upgrade breaks a
single, tested module (`tests/utils/test_keras_internals.py`).
"""

import contextlib
from collections.abc import Iterator

import keras


@contextlib.contextmanager
def unlocked_state(layer: keras.layers.Layer) -> Iterator[None]:
    """Lets `layer` create variables although it is already built.

    The previous lock state is restored on exit, also when the body raises.
    """
    tracker = layer._tracker
    was_locked = tracker.locked
    tracker.unlock()
    try:
        yield
    finally:
        if was_locked:
            tracker.lock()


def untrack_variable(layer: keras.layers.Layer, variable) -> None:
    """Removes `variable` from `layer`'s tracked state (used for rollback)."""
    layer._untrack_variable(variable)


def iter_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Yields `layer`'s sub-layers depth first (not `layer` itself), once each.

    Input layers are skipped, as in `Model.layers`.

    Works for functional, sequential and subclassed models and for layers
    that own other layers.
    """
    seen = set()
    stack = list(reversed(layer._layers))
    while stack:
        sub = stack.pop()
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        if not isinstance(sub, keras.layers.InputLayer):
            yield sub
        stack.extend(reversed(sub._layers))
