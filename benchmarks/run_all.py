"""Run every benchmark script, one subprocess each, and summarise.

Usage:

    python -m benchmarks.run_all [--quick] [--only NAME ...]

Each script in `BENCHMARKS` runs as `python -m benchmarks.NAME [--quick]`
with its output shown as it comes, under a header, followed by its
elapsed time; a summary table ends the run. The exit status is 1 when
any script failed (all still run), 2 when a selected script does not
exist.

The full run regenerates the published tables in `benchmarks/results/`
(hours on a 2-core CPU; `replication` is most of it); `gpu_check` only
measures where it finds an accelerator. `--quick` runs
every script on tiny sizes as a smoke test (a few minutes; `.ci/run`
does this under JAX) and writes only to the git-ignored
`benchmarks/results/quick/`, never over the published tables.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = (
    "growable_dense_overhead",
    "splitting_cost",
    "growth_event_cost",
    "multi_process_event_cost",
    "recent_batches_overhead",
    "train_step_throughput",
    "train_step_profile",
    "step_page_faults",
    "converted_step",
    "replication",
    "gpu_check",
)
"""The benchmark modules of `benchmarks/`, in the order they run."""

REPO_ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run_all",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, results to benchmarks/results/quick/ only",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        action="extend",
        choices=BENCHMARKS,
        metavar="NAME",
        help=f"run only these (of: {', '.join(BENCHMARKS)})",
    )
    return parser.parse_args(argv)


def missing_scripts(names) -> list[str]:
    """The names whose `benchmarks/NAME.py` does not exist."""
    return [
        name
        for name in names
        if not (REPO_ROOT / "benchmarks" / f"{name}.py").is_file()
    ]


def run_one(name: str, quick: bool) -> tuple[int, float]:
    """Runs one benchmark; returns its exit status and wall seconds."""
    command = [sys.executable, "-m", f"benchmarks.{name}"]
    command += ["--quick"] if quick else []
    print(f"\n===== {' '.join(['python', *command[1:]])}", flush=True)
    env = {**os.environ}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    returncode = subprocess.run(command, cwd=REPO_ROOT, env=env).returncode
    seconds = time.perf_counter() - start
    status = "ok" if returncode == 0 else f"FAILED (exit {returncode})"
    print(f"===== {name}: {status} in {seconds:.0f} s", flush=True)
    return returncode, seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n for n in BENCHMARKS if n in args.only] if args.only else []
    names = names or list(BENCHMARKS)
    missing = missing_scripts(names)
    if missing:
        files = ", ".join(f"benchmarks/{name}.py" for name in missing)
        print(f"error: benchmark script(s) missing: {files}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    outcomes = {name: run_one(name, args.quick) for name in names}
    total = time.perf_counter() - start
    mode = "quick" if args.quick else "full"
    print(f"\n===== summary ({mode}, {total:.0f} s in all)")
    print("| benchmark | status | seconds |\n|---|---|---:|")
    for name, (returncode, seconds) in outcomes.items():
        status = "ok" if returncode == 0 else f"failed (exit {returncode})"
        print(f"| {name} | {status} | {seconds:.0f} |")
    failed = [name for name, (code, _) in outcomes.items() if code != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
