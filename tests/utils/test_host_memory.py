"""`keras_depthhet.retain_freed_memory`: JAX steps stop faulting in memory.

Each case runs in a fresh Python, because the allocator settings are
process-wide and must precede JAX's start.
"""

import os
import platform
import subprocess
import sys

import pytest

import keras_depthhet
from keras_depthhet import host_memory

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the allocator settings exist only in glibc",
)

# A jitted function whose 4096x4096 float32 product (64 MiB) is a
# temporary of every call, between two matmuls, as the activations are in
# a training step. The median call counts: while the heap grows to its
# steady size, some calls still fault in fresh memory.
SCRIPT = """
import resource, sys, warnings
from keras_depthhet import host_memory
mode = sys.argv[1]
if mode == "early":
    assert host_memory.retain_freed_memory() is True
import jax, jax.numpy as jnp
f = jax.jit(lambda a, b: jnp.tanh(a @ b) @ b.T)
a, b = jnp.ones((4096, 64)), jnp.ones((64, 4096))
if mode == "late":
    f(a, b).block_until_ready()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert host_memory.retain_freed_memory() is True
    assert [str(w.message) for w in caught if "after JAX" in str(w.message)]
faults = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(a, b).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults)[len(faults) // 2])
"""


def faults_per_call(mode):
    """Median minor page faults per call of the jitted function."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("GLIBC_TUNABLES", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.strip().splitlines()[-1])


@glibc_only
def test_retained_memory_removes_the_page_faults_of_each_call():
    # As glibc does by default, every call faults its 64 MiB temporary in
    # again (16,384 pages of 4 KiB)...
    assert faults_per_call("default") > 12000
    # ... and reuses it once freed memory is retained.
    assert faults_per_call("early") < 1000


@glibc_only
def test_a_call_after_jax_started_warns_and_does_not_reach_jax():
    assert faults_per_call("late") > 12000


def test_without_glibc_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(host_memory.platform, "libc_ver", lambda: ("", ""))

    def no_libc(*args, **kwargs):
        raise AssertionError("the C library must not be touched")

    monkeypatch.setattr(host_memory.ctypes, "CDLL", no_libc)
    assert host_memory.retain_freed_memory() is False


def test_exported_from_the_package():
    assert keras_depthhet.retain_freed_memory is host_memory.retain_freed_memory
