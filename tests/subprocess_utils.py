"""Run a Python snippet in a fresh interpreter (other backend, device flags).

Settings such as `KERAS_BACKEND` or `XLA_FLAGS` must be fixed before the
backend is imported, so tests that change them run their body elsewhere.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def xla_flags(own: str = "") -> str:
    """This process's XLA flags (the suite's compile settings) followed by a
    child's `own` flags (a device count), which add to them."""
    return f"{os.environ.get('XLA_FLAGS', '')} {own}".strip()


def run_python(
    code: str, *, backend: str, env: dict | None = None, timeout: int = 600
) -> dict:
    """Runs `code` under `backend`; returns the JSON its last line printed.

    Raises AssertionError with the child's output when it fails.
    """
    child_env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(REPO_ROOT),
        **(env or {}),
    }
    child_env["XLA_FLAGS"] = xla_flags((env or {}).get("XLA_FLAGS", ""))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, (
        f"child under {backend} failed:\n{proc.stdout}\n{proc.stderr}"
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])
