"""Train-step cost of keeping the training batches (`RecentBatches`).

Without `analysis_data`, growth is scored on the last training batches,
which `RecentBatches` keeps only in the epoch before an event. A tiny ViT
(32px, patches of 8, dim 64, depth 2) trains on NumPy arrays in one-epoch
`fit` calls, in rotation under three settings:

- `without`: no `RecentBatches`;
- `attached`: a callback holds a `RecentBatches` attached to the model but
  not started (every epoch that is not followed by an event);
- `keeping`: the same, started for the epoch (the epoch before an event).

A callback present in all three times each epoch, from `on_epoch_begin`
to the weights being ready at `on_epoch_end`, in the process's CPU time
and in wall time; the step time is that over the steps. Each worker runs
on one core (its thread pools sized to it), so that its CPU time counts
its own work rather than threads waiting on a machine shared with other
jobs. Ratios are taken between the epochs of one round (adjacent in
time); their median over the rounds is reported, one process per
backend. Goal: `attached / without` <= 1.02. A model this small makes
per-step Python costs as visible as they can be.

    python -m benchmarks.recent_batches_overhead [--quick]
"""

import argparse
import json
import os
import time

from benchmarks.common import run_per_backend, write_result

MODES = ("without", "attached", "keeping")
CLOCKS = ("cpu", "wall")
GOAL = 1.02


def worker(steps: int, batch: int, rounds: int, keep: int) -> dict:
    # Before the backend starts, so that its thread pools fit one core.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    import keras
    import numpy as np

    from keras_depthhet.growth.recent_batches import RecentBatches
    from keras_depthhet.models import vit

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.process_time(), time.perf_counter()
            self.functions = set()

        def on_train_batch_begin(self, batch, logs=None):
            self.functions.add(self.model.train_function)

        def on_epoch_end(self, epoch, logs=None):
            # JAX dispatches steps asynchronously; the updated weights are
            # ready only once every step has run.
            keras.ops.convert_to_numpy(self.model.trainable_variables[0])
            cpu, wall = self.start
            self.seconds = (
                time.process_time() - cpu,
                time.perf_counter() - wall,
            )

    class Keeper(keras.callbacks.Callback):
        # What `GrowthCallback` does with no `analysis_data`.
        def __init__(self, recent, start):
            super().__init__()
            self.recent, self.keep = recent, start

        def on_train_begin(self, logs=None):
            self.recent.attach(self.model)

        def on_epoch_begin(self, epoch, logs=None):
            if self.keep:
                self.recent.start()

        def on_epoch_end(self, epoch, logs=None):
            self.recent.stop()

    keras.utils.set_random_seed(0)
    model = vit(
        image_size=32,
        patch_size=8,
        num_channels=3,
        num_classes=10,
        dim=64,
        depth=2,
        num_heads=2,
        attention_width=0.5,
        mlp_width=0.5,
    )
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, steps * batch)
    recent = RecentBatches(keep)
    timer = EpochTimer()
    callbacks = {
        "without": [timer],
        "attached": [timer, Keeper(RecentBatches(keep), start=False)],
        "keeping": [timer, Keeper(recent, start=True)],
    }

    def epoch(mode):
        model.fit(
            x,
            y,
            batch_size=batch,
            epochs=1,
            callbacks=callbacks[mode],
            verbose=0,
        )
        # Not started, the model trains through Keras's own function.
        assert (timer.functions == {keras_function}) == (mode != "keeping")
        return np.array(timer.seconds) / steps

    model.make_train_function()
    keras_function = model.train_function
    for mode in MODES:  # compile, and the TF one-step path once
        epoch(mode)
    times = {mode: [] for mode in MODES}
    for index in range(rounds):
        # Rotate the order so that drifting load hits every setting alike.
        for mode in MODES[index % 3 :] + MODES[: index % 3]:
            times[mode].append(epoch(mode))
    assert len(recent.batches()) == min(keep, steps)
    result = {"params": model.count_params()}
    for i, clock in enumerate(CLOCKS):
        t = {mode: np.array(values)[:, i] for mode, values in times.items()}
        ratios = {m: t[m] / t["without"] for m in MODES[1:]}
        result[clock] = {
            "best_step_s": {m: float(v.min()) for m, v in t.items()},
            "ratio": {m: float(np.median(r)) for m, r in ratios.items()},
            "quartiles": {
                m: np.quantile(r, [0.25, 0.75]).tolist()
                for m, r in ratios.items()
            },
        }
    return result


def _markdown(results: dict, args, seconds: float, load: tuple) -> str:
    lines = [
        "| backend | clock | without (ms/step) | attached, not started | "
        "keeping | attached / without | keeping / without |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend, result in results.items():
        for clock in CLOCKS:
            best = result[clock]["best_step_s"]
            ratio = result[clock]["ratio"]
            spread = {
                m: "{:.3f}-{:.3f}".format(*q)
                for m, q in result[clock]["quartiles"].items()
            }
            lines.append(
                f"| {backend} | {clock} | {1e3 * best['without']:.2f} | "
                f"{1e3 * best['attached']:.2f} | "
                f"{1e3 * best['keeping']:.2f} | "
                f"**{ratio['attached']:.3f}** ({spread['attached']}) | "
                f"{ratio['keeping']:.3f} ({spread['keeping']}) |"
            )
    params = results["jax"]["params"]
    note = (
        f"Tiny ViT (32px, patches of 8, dim 64, depth 2, {params:,} "
        f"parameters), NumPy arrays, batch {args.batch}, {args.steps} steps "
        f"per epoch, keeping the last {args.keep} batches, {args.rounds} "
        "rounds, each worker on one core. Step times: the best epoch over "
        "the rounds, per step. Ratios: the median over the rounds of the "
        "ratio between the epochs of one round (quartiles in brackets). "
        f"Goal: attached / without <= {GOAL}; `attached` trains through "
        "Keras's own train function (checked every epoch), so it adds no "
        "work per step and its ratio differs from 1 by noise only. Shared "
        f"2-core CPU, load average {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} at the start. Command: `python -m "
        "benchmarks.recent_batches_overhead"
        f"{' --quick' if args.quick else ''}` ({seconds:.0f} s).\n"
    )
    return note + "\n" + "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--keep", type=int, default=10)
    args = parser.parse_args(argv)
    args.steps = args.steps or (12 if args.quick else 30)
    args.rounds = args.rounds or (3 if args.quick else 25)
    if args.worker:
        result = worker(args.steps, args.batch, args.rounds, args.keep)
        print(json.dumps(result))
        return
    start, load = time.time(), os.getloadavg()
    extra = [
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--rounds",
        str(args.rounds),
        "--keep",
        str(args.keep),
    ]
    results = run_per_backend("benchmarks.recent_batches_overhead", extra)
    markdown = _markdown(results, args, time.time() - start, load)
    print(markdown)
    path = write_result("recent_batches_overhead", markdown, args.quick)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
