"""A training script killed with SIGKILL after a growth event resumes exactly.

The script builds a fresh (ungrown) model every time it starts and trains
with `GrowthCallback` followed by `GrowthBackupAndRestore`. It is killed
for real after its second event, rerun unchanged, and must end with the
weights of an uninterrupted run.
"""

import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from tests.subprocess_utils import REPO_ROOT

pytestmark = pytest.mark.integration

SCRIPT = """
import sys, time
import keras, numpy as np
import keras_depthhet as kd
from tests.growth.helpers import compiled_tiny_vit, random_data

backup, out, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
keras.utils.set_random_seed(7)
x, y = random_data(32)
model = compiled_tiny_vit()


class Slow(keras.callbacks.Callback):
    # Leaves the test time to kill the run after epoch 2, where it does.
    def on_epoch_end(self, epoch, logs=None):
        print(f"epoch {epoch + 1} done", flush=True)
        if epoch == 1:
            time.sleep(pause)


grower = kd.GrowthCallback(
    warmup=1, interval=1, param_budget=300, layer_threshold=0,
    criterion="random", seed=0, verbose=0,
)
model.fit(
    x, y, batch_size=8, epochs=5, shuffle=False, verbose=0,
    callbacks=[
        grower, kd.growth.GrowthBackupAndRestore(backup, grower), Slow()
    ],
)
np.savez(out, *[keras.ops.convert_to_numpy(v) for v in model.weights])
print("events", [e["epoch"] for e in grower.history], flush=True)
"""


def _start(tmp_path, backup, out, pause):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": keras.backend.backend(),
    }
    return subprocess.Popen(
        [sys.executable, str(script), str(backup), str(out), str(pause)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process, timeout=600):
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        process.kill()
    assert process.returncode == 0, output
    return output


@pytest.mark.slow
def test_sigkill_after_a_growth_event_resumes_to_the_same_weights(tmp_path):
    backup = tmp_path / "backup"
    killed = _start(tmp_path, backup, tmp_path / "never.npz", pause=30)
    try:
        deadline = time.monotonic() + 600
        lines = []
        while time.monotonic() < deadline:
            line = killed.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("epoch 2 done"):
                break
        assert lines and lines[-1].startswith("epoch 2 done"), "".join(lines)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=60)
    finally:
        killed.kill()
    assert killed.returncode == -signal.SIGKILL
    assert (backup / "growth_state.json").exists()

    resumed = _finish(_start(tmp_path, backup, tmp_path / "resumed", 0))
    assert "epoch 1 done" not in resumed  # continued, not restarted
    assert "events [1, 2, 3, 4, 5]" in resumed
    straight = _finish(
        _start(tmp_path, tmp_path / "other", tmp_path / "straight", 0)
    )
    assert "events [1, 2, 3, 4, 5]" in straight
    a = np.load(tmp_path / "resumed.npz")
    b = np.load(tmp_path / "straight.npz")
    assert len(a.files) == len(b.files) > 40
    for name in a.files:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5)
