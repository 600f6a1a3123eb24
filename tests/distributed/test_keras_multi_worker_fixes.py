"""Canaries of the Keras multi-worker fixes (`utils.multi_worker`).

They fail when Keras changes the functions the fixes replace, or fixes
the bugs (keras-team/keras#20585), so that the fixes are revisited, and
they check that the fixes change nothing outside multi-worker training,
that only an explicit `enable_multi_worker_fit()` applies them (it logs
once what it replaced) and that `resolve_distribution` refuses several
workers without it. Cases that patch Keras run in fresh processes.
"""

import json
import socket

import keras
import pytest

from keras_depthhet import distributed
from keras_depthhet.utils import multi_worker
from tests.distributed.multi_process import launch
from tests.subprocess_utils import run_python

CALL = "keras_depthhet.distributed.enable_multi_worker_fit()"
"""The call the library's errors and log name."""


def _tf_config(num_workers: int) -> str:
    ports = []
    for _ in range(num_workers):
        with socket.socket() as s:
            s.bind(("localhost", 0))
            ports.append(s.getsockname()[1])
    return json.dumps(
        {
            "cluster": {"worker": [f"localhost:{p}" for p in ports]},
            "task": {"type": "worker", "index": 0},
        }
    )


def test_replaced_keras_functions_are_the_ones_the_fixes_were_written_for():
    changed = multi_worker.changed_keras_functions()
    assert not changed, (
        f"Keras changed {changed}: check whether keras-team/keras#20585 is "
        "fixed, then update or remove keras_depthhet/utils/multi_worker.py "
        "and its PATCHED_SOURCES"
    )


if keras.backend.backend() == "tensorflow":

    @pytest.mark.integration
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
            # The library refused the strategy instead of patching Keras.
            assert CALL in worker.result["refusal"]

    @pytest.mark.integration
    def test_resolve_distribution_alone_leaves_keras_untouched():
        out = run_python(
            f"""
            import json, os
            import tensorflow as tf
            from keras.src.backend.tensorflow import trainer
            from keras_depthhet.distributed import resolve_distribution
            from keras_depthhet.utils import multi_worker

            build = trainer.TensorFlowTrainer._maybe_symbolic_build
            reduce = trainer.reduce_per_replica

            def untouched():
                return (
                    trainer.TensorFlowTrainer._maybe_symbolic_build is build
                    and trainer.reduce_per_replica is reduce
                    and not multi_worker.multi_worker_fit_enabled()
                )

            # TensorFlow sets collectives up once, at its start: the
            # one-worker strategy comes first.
            os.environ["TF_CONFIG"] = {_tf_config(1)!r}
            names = [resolve_distribution("multi_worker_mirrored").name]
            for name in ("auto", "none", "mirrored"):
                names.append(resolve_distribution(name).name)
            resolve_distribution(tf.distribute.MirroredStrategy(["/cpu:0"]))
            one_worker = untouched()
            # Two workers: refused before waiting for the other one.
            os.environ["TF_CONFIG"] = {_tf_config(2)!r}
            try:
                resolve_distribution("multi_worker_mirrored", timeout=60)
                refusal = None
            except RuntimeError as error:
                refusal = str(error)
            print(json.dumps({{
                "names": names,
                "one_worker_untouched": one_worker,
                "refusal": refusal,
                "untouched": untouched(),
            }}))
            """,
            backend="tensorflow",
        )
        assert out["names"] == [
            "multi_worker_mirrored",
            "none",
            "none",
            "mirrored",
        ]
        assert out["one_worker_untouched"] and out["untouched"]
        assert CALL in out["refusal"]
        assert "keras-team/keras#20585" in out["refusal"]

    @pytest.mark.integration
    def test_the_fix_applied_by_name_logs_once_what_and_why():
        out = run_python(
            """
            import json, logging
            from keras.src.backend.tensorflow import trainer
            from keras_depthhet import distributed

            records = []

            class Keep(logging.Handler):
                def emit(self, record):
                    records.append(record)

            logging.getLogger().addHandler(Keep())
            build = trainer.TensorFlowTrainer._maybe_symbolic_build
            reduce = trainer.reduce_per_replica
            distributed.enable_multi_worker_fit()
            distributed.enable_multi_worker_fit()
            new_build = trainer.TensorFlowTrainer._maybe_symbolic_build
            ours = [r for r in records if r.name.startswith("keras_depthhet")]
            print(json.dumps({
                "messages": [r.getMessage() for r in ours],
                "levels": [r.levelname for r in ours],
                "replaced": new_build is not build
                and trainer.reduce_per_replica is not reduce,
                "wrap_keras": new_build.__wrapped__ is build
                and trainer.reduce_per_replica.__wrapped__ is reduce,
            }))
            """,
            backend="tensorflow",
        )
        assert out["replaced"] and out["wrap_keras"]
        assert out["levels"] == ["WARNING"]
        (message,) = out["messages"]
        for words in (
            "enable_multi_worker_fit()",
            "TensorFlowTrainer._maybe_symbolic_build",
            "reduce_per_replica",
            "MultiWorkerMirroredStrategy",
            "keras-team/keras#20585",
            "tensorflow/tensorflow#72388",
        ):
            assert words in message

    @pytest.mark.integration
    def test_fixes_change_nothing_on_one_worker():
        out = run_python(
            """
            import json, keras, numpy as np, tensorflow as tf
            from keras_depthhet import distributed
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
            distributed.enable_multi_worker_fit()
            distributed.enable_multi_worker_fit()  # Once is enough.
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

else:

    def test_the_fix_is_refused_on_another_backend():
        with pytest.raises(ValueError, match="TensorFlow backend only"):
            distributed.enable_multi_worker_fit()
        assert not multi_worker.multi_worker_fit_enabled()
