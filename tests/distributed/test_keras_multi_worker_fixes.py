"""Canaries of the Keras multi-worker fixes (`utils.multi_worker`).

They fail when Keras changes the functions the fixes replace, or fixes
the bugs (keras-team/keras#20585), so that the fixes are revisited, and
they check that the fixes change nothing outside multi-worker training.
"""

import keras
import pytest

from keras_depthhet.utils import multi_worker
from tests.distributed.multi_process import launch
from tests.subprocess_utils import run_python


def test_replaced_keras_functions_are_the_ones_the_fixes_were_written_for():
    changed = multi_worker.changed_keras_functions()
    assert not changed, (
        f"Keras changed {changed}: check whether keras-team/keras#20585 is "
        "fixed, then update or remove keras_depthhet/utils/multi_worker.py "
        "and its PATCHED_SOURCES"
    )


if keras.backend.backend() == "tensorflow":

    @pytest.mark.slow
    def test_keras_fit_still_fails_on_two_workers_without_the_fixes(
        tmp_path,
    ):
        found = launch(
            "tensorflow", {"mode": "keras_fit_unpatched"}, tmp_path, timeout=600
        )
        for worker in found:
            assert worker.returncode == 1, (
                "Keras's fit now works under MultiWorkerMirroredStrategy "
                "without keras_depthhet's fixes: remove them.\n" + worker.tail()
            )
            assert "PerReplica" in worker.result["error"]

    def test_fixes_change_nothing_on_one_worker():
        out = run_python(
            """
            import json, keras, numpy as np, tensorflow as tf
            from keras_depthhet.utils import multi_worker
            from tests.growth.helpers import compiled_tiny_vit, random_data

            def train():
                keras.utils.set_random_seed(0)
                strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
                with strategy.scope():
                    model = compiled_tiny_vit(jit_compile=False)
                x, y = random_data(32)
                data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
                history = model.fit(data, epochs=1, verbose=0)
                return history.history["loss"], model.get_weights()

            loss, weights = train()
            multi_worker.enable_multi_worker_fit()
            multi_worker.enable_multi_worker_fit()  # Once is enough.
            fixed_loss, fixed_weights = train()
            print(json.dumps({
                "same_loss": loss == fixed_loss,
                "same_weights": all(
                    np.array_equal(a, b)
                    for a, b in zip(weights, fixed_weights)
                ),
            }))
            """,
            backend="tensorflow",
        )
        assert out == {"same_loss": True, "same_weights": True}
