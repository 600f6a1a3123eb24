"""One worker of a multi-process test (started by `multi_process.launch`).

Usage: `python worker.py CONFIG_JSON`, with `WORKER_RANK`, `NUM_WORKERS`,
`KERAS_BACKEND` and `JOB_ADDRESSES` (every worker's `host:port`) set.
It joins the run, trains a tiny ViT on the same 64 samples as the other
workers with in-place growth (`GrowthCallback` in `model.fit`) or the
rebuild loop (`fit_with_growth`), writes its final weights to
`weights_{rank}.npz` in the working directory and prints one line
`RESULT {json}`; on an error it prints `RESULT {"error": ...}` and exits
with status 1.

On TensorFlow every mode except `"keras_fit_unpatched"` calls
`keras_depthhet.distributed.enable_multi_worker_fit()` before it resolves
`"multi_worker_mirrored"`, as a user must.

CONFIG keys (all optional): `mode` (`"in_place"`, `"rebuild"`, or
`"keras_fit_unpatched"`: TensorFlow's strategy made directly, without
`enable_multi_worker_fit`; `resolve_distribution` must refuse it, and the
worker records the refusal as `refusal`, then runs a plain `fit` without
growth),
`epochs`, `criterion`, `local_data` (each worker analyses its own data),
`param_budget` (a list: one per rank), `backup` (a `ChiefBackupAndRestore`
in `backup/`), `crash_at_epoch` (raise when that epoch begins),
`local_choice` (record the plan this worker alone would choose at the
first event), `coordinator` (the address given instead of the first
worker's), `num_workers` (a list: the worker count each rank is told, which
`TF_CONFIG` or the JAX addresses may contradict),
`all_addresses` (JAX: give every process's address, not only the
coordinator's), `timeout` (seconds to wait for the other workers).
"""

import json
import os
import sys

CONFIG = json.loads(sys.argv[1])
RANK = int(os.environ["WORKER_RANK"])
NUM_WORKERS = int(os.environ["NUM_WORKERS"])
REFUSAL = {}
"""What `resolve_distribution` raised for the unfixed strategy, if it did."""


def report(**values):
    print("RESULT " + json.dumps(values, default=str), flush=True)


def join():
    """The run's `Runtime`, after this worker has joined the others."""
    import keras

    from keras_depthhet import distributed

    num_workers = CONFIG.get("num_workers", [NUM_WORKERS] * NUM_WORKERS)[RANK]
    timeout = CONFIG.get("timeout", 120)
    addresses = os.environ["JOB_ADDRESSES"].split(",")
    if "coordinator" in CONFIG:
        addresses[0] = CONFIG["coordinator"]
    if keras.backend.backend() == "jax":
        given = addresses if CONFIG.get("all_addresses") else addresses[:1]
        distributed.initialize_multi_host(
            ",".join(given), num_workers, RANK, timeout=timeout
        )
        return distributed.resolve_distribution("data_parallel")
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": addresses},
            "task": {"type": "worker", "index": RANK},
        }
    )
    if CONFIG.get("mode") == "keras_fit_unpatched":
        import tensorflow as tf

        from keras_depthhet.utils import multi_worker

        multi_worker.bound_tf_cluster_waits(timeout)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        try:
            distributed.resolve_distribution(strategy)
        except RuntimeError as error:
            REFUSAL["refusal"] = str(error)
        return distributed.Runtime("keras", strategy=strategy)
    distributed.enable_multi_worker_fit()
    return distributed.resolve_distribution(
        "multi_worker_mirrored", num_workers=num_workers, timeout=timeout
    )


class LocalChoice:
    """Records the plan this worker alone would choose at the first event.

    Listed before `GrowthCallback`: at the end of epoch 1 it scores the
    neurons on this worker's own analysis data and selects them as the
    callback would, without growing.
    """

    def __new__(cls, growth, data):
        import keras

        from keras_depthhet.growth import select_neurons
        from keras_depthhet.models import growable_layer_map
        from keras_depthhet.splitting import splitting_eigenvalues
        from keras_depthhet.utils.keras_internals import sync_trainer_state

        class Choice(keras.callbacks.Callback):
            plan = None

            def on_epoch_end(self, epoch, logs=None):
                if epoch != 0:
                    return
                sync_trainer_state(self.model)
                layers = growable_layer_map(self.model)
                scores = splitting_eigenvalues(
                    self.model, data, num_batches=1, layers=list(layers)
                )
                plan = select_neurons(
                    scores,
                    {k: layer.growth_cost(1) for k, layer in layers.items()},
                    param_budget=growth.param_budget,
                    layer_threshold=growth.layer_threshold,
                    seed=growth.seed,
                )
                self.plan = {k: [int(i) for i in v] for k, v in plan.items()}

        return Choice()


class CrashAt:
    """Stands for a worker killed when epoch `epoch` (from 0) begins."""

    def __new__(cls, epoch):
        import keras

        class Crash(keras.callbacks.Callback):
            def on_epoch_begin(self, e, logs=None):
                if e == epoch:
                    raise RuntimeError(f"simulated crash at epoch {e}")

        return Crash()


def count_saves():
    """Counts `Model.save_weights` calls (the backups this worker writes)."""
    import keras

    saves = []
    original = keras.Model.save_weights

    def save_weights(self, filepath, *args, **kwargs):
        saves.append(str(filepath))
        return original(self, filepath, *args, **kwargs)

    keras.Model.save_weights = save_weights
    return saves


def main():
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_depthhet.distributed import (
        ChiefBackupAndRestore,
        fit_with_growth,
    )
    from keras_depthhet.growth import GrowthCallback
    from keras_depthhet.models import growable_layer_map
    from tests.growth.helpers import random_data, tiny_vit

    runtime = join()
    saves = count_saves()
    x, y = random_data(64, seed=0)
    seed = 100 + (RANK if CONFIG.get("local_data", True) else 0)
    analysis = random_data(16, seed=seed)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

    def build():
        keras.utils.set_random_seed(1)
        model = tiny_vit()
        model.compile(
            keras.optimizers.Adam(1e-2),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    budgets = CONFIG.get("param_budget", [300] * NUM_WORKERS)
    growth = GrowthCallback(
        interval=1,
        warmup=1,
        param_budget=budgets[RANK],
        layer_threshold=0,
        analysis_data=analysis,
        analysis_batches=1,
        criterion=CONFIG.get("criterion", "splitting"),
        seed=0,
        log_path="events.jsonl",
        verbose=0,
    )
    epochs = CONFIG.get("epochs", 3)
    if CONFIG.get("mode") == "keras_fit_unpatched":
        with runtime.scope():
            model = build()
        model.fit(train, epochs=1, verbose=0)
        report(rank=RANK, fit=True, **REFUSAL)
        return
    if CONFIG.get("mode", "in_place") == "rebuild":
        run = fit_with_growth(
            build,
            train,
            epochs=epochs,
            growth=growth,
            distribution=runtime,
            verbose=0,
        )
        model, losses = run.model, run.history.history["loss"]
        seconds = [e["seconds"] for e in run.events]
        local_plan = None
    else:
        with runtime.scope():
            model = build()
        choice = LocalChoice(growth, analysis)
        callbacks = [choice, growth] if CONFIG.get("local_choice") else [growth]
        if CONFIG.get("backup"):
            callbacks.append(ChiefBackupAndRestore("backup", growth))
        if CONFIG.get("crash_at_epoch") is not None:
            callbacks.append(CrashAt(CONFIG["crash_at_epoch"]))
        history = model.fit(
            train, epochs=epochs, callbacks=callbacks, verbose=0
        )
        losses = history.history["loss"]
        seconds = None
        local_plan = choice.plan
    weights = {
        v.path.replace("/", "|"): keras.ops.convert_to_numpy(v)
        for v in model.weights
    }
    np.savez(f"weights_{RANK}.npz", **weights)
    report(
        rank=RANK,
        events=[
            {k: e[k] for k in ("epoch", "plan", "params_after", "budget")}
            for e in growth.history
        ],
        rounds={
            key: [r.tolist() for r in layer.growth_rounds]
            for key, layer in growable_layer_map(model).items()
        },
        num_params=model.count_params(),
        losses=losses,
        saves=len(saves),
        local_plan=local_plan,
        seconds=seconds,
    )


if __name__ == "__main__":
    try:
        main()
    except Exception as error:
        report(rank=RANK, error=f"{type(error).__name__}: {error}", **REFUSAL)
        sys.exit(1)
