"""The grown forward pass: a constant number of matmuls, no dense scatter.

The traced computation of the layer is inspected with each backend's own
tracer: JAX's jaxpr and TensorFlow's graph.
"""

import keras
import pytest

from keras_depthhet.layers import GrowableDense

UNITS, D = 24, 10


def _traced_ops(layer, x):
    """(operation name, output shapes) of every op in the traced forward."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]

        def forward(inputs):
            return layer.stateless_call(trainable, [], inputs)[0]

        ops = []

        def walk(jaxpr):
            for eqn in jaxpr.eqns:
                ops.append(
                    (
                        eqn.primitive.name,
                        [tuple(v.aval.shape) for v in eqn.outvars],
                    )
                )
                for param in eqn.params.values():
                    inner = getattr(param, "jaxpr", None)
                    if inner is not None:
                        walk(getattr(inner, "jaxpr", inner))

        walk(jax.make_jaxpr(forward)(x).jaxpr)
        return ops
    import tensorflow as tf

    graph = tf.function(layer).get_concrete_function(tf.constant(x)).graph
    return [
        (op.type, [tuple(t.shape.as_list()) for t in op.outputs])
        for op in graph.get_operations()
    ]


def _is_matmul(name):
    return name in {"dot_general", "MatMul", "BatchMatMulV2", "Einsum"}


@pytest.mark.parametrize("rank", [2, 3])
def test_matmul_count_does_not_grow_with_rounds(rng, rank):
    shape = (6, D) if rank == 2 else (2, 3, D)
    x = rng.normal(size=shape).astype("float32")
    counts = []
    for num_rounds in (0, 1, 5):
        keras.utils.clear_session(free_memory=False)
        layer = GrowableDense(UNITS, activation="gelu")
        layer.build((None, D))
        for _ in range(num_rounds):
            layer.grow(rng.choice(UNITS, 8, replace=False))
        counts.append(
            sum(_is_matmul(name) for name, _ in _traced_ops(layer, x))
        )
    assert counts[0] == 1
    assert counts[1] == counts[2] == 2


def test_no_dense_units_by_added_projection(rng):
    layer = GrowableDense(UNITS)
    layer.build((None, D))
    for _ in range(4):
        layer.grow(rng.choice(UNITS, 9, replace=False))
    added = layer.num_grown
    x = rng.normal(size=(5, D)).astype("float32")
    for name, shapes in _traced_ops(layer, x):
        for shape in shapes:
            assert sorted(shape[-2:]) != sorted((added, UNITS)), (name, shape)
