"""The retained-memory recipe: JAX steps stop faulting in fresh memory.

`GLIBC_TUNABLES` set to `benchmarks.common.RETAINED_MEMORY_TUNABLES`
makes glibc keep freed memory in the process; the benchmarks start their
workers with it (`--retained-memory`) and docs/benchmarks.md gives it to
users who want the speed. glibc reads it when a process starts, so each
case runs in a fresh Python, one with glibc's defaults and one with the
setting.
"""

import os
import platform
import subprocess
import sys

import pytest

from benchmarks.common import RETAINED_MEMORY_TUNABLES, retained_memory_env
from tests.subprocess_utils import REPO_ROOT

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="GLIBC_TUNABLES exists only in glibc",
)

# A jitted function whose 4096x4096 float32 product (64 MiB) is a
# temporary of every call, between two matmuls, as the activations are in
# a training step. The median call counts: while the heap grows to its
# steady size, some calls still fault in fresh memory.
SCRIPT = """
import resource
import jax, jax.numpy as jnp
f = jax.jit(lambda a, b: jnp.tanh(a @ b) @ b.T)
a, b = jnp.ones((4096, 64)), jnp.ones((64, 4096))
faults = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(a, b).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults)[len(faults) // 2])
"""


def faults_per_call(extra_env: dict) -> int:
    """Median minor page faults per call, in a fresh Python."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("GLIBC_TUNABLES", None)
    env.update(extra_env)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.strip().splitlines()[-1])


@pytest.mark.integration
@glibc_only
def test_the_setting_removes_the_page_faults_of_each_call():
    # As glibc does by default, every call faults its 64 MiB temporary in
    # again (16,384 pages of 4 KiB)...
    assert faults_per_call({}) > 12000
    # ... and reuses it when the process starts with the setting.
    assert faults_per_call(retained_memory_env()) < 1000


def test_the_benchmarks_page_gives_the_measured_setting():
    docs = (REPO_ROOT / "docs" / "benchmarks.md").read_text()
    assert f"GLIBC_TUNABLES={RETAINED_MEMORY_TUNABLES}" in docs
