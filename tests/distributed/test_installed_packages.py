"""Only the library is installed: `training` and `benchmarks` run from the
repository root and are not top-level packages of the installation."""

import json
import os
import subprocess
import sys

import pytest

from tests.subprocess_utils import REPO_ROOT

pytestmark = pytest.mark.integration

# Where each name is found: its file, or its folders (a namespace package).
_FIND = """
import importlib.util, json
found = {}
for name in ("keras_depthhet", "training", "benchmarks"):
    spec = importlib.util.find_spec(name)
    places = [] if spec is None else list(spec.submodule_search_locations or [])
    found[name] = places + ([spec.origin] if spec and spec.origin else [])
print(json.dumps(found))
"""


def _origins(cwd) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", _FIND],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_outside_the_repository_training_is_not_ours(tmp_path):
    origins = _origins(tmp_path)
    assert origins["keras_depthhet"]  # the installed library
    for name in ("training", "benchmarks"):
        ours = [p for p in origins[name] if p.startswith(str(REPO_ROOT))]
        assert not ours, (
            f"`import {name}` outside the repository finds ours ({ours}); "
            "reinstall the package (pip install -e .)"
        )


def test_from_the_repository_root_the_scripts_are_found():
    origins = _origins(REPO_ROOT)
    for name in ("training", "benchmarks"):
        assert str(REPO_ROOT / name) in origins[name]
    for module in ("training.train", "benchmarks.run_all"):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert f"python -m {module}" in proc.stdout
