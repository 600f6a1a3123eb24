"""Where a DeiT-S training step spends its time, per backend and op kind.

Each backend, in its own process, compiles the training step of
`benchmarks.train_step_throughput` (jit-compiled, AdamW, batch 16 at
224x224), dumps XLA's optimized HLO, and traces two steps with its
profiler (`jax.profiler`, `tf.profiler`). Every executed XLA op of the
trace is then put in one kind by the layer that produced it (the HLO's
`op_name`) and by whether it does a matrix product: dense matmuls (patch
embedding, `qkv`, `proj`, `fc1`, `fc2`, head), attention matmuls (`Q K^T`,
`A V`), softmax and attention layout, LayerNorm, GELU, the loss, the AdamW
update and the rest. The table gives each kind's milliseconds per step and
share, on both backends, from one run.

With PyTorch and timm in the Python named by `--timm-python` (default:
`$TIMM_PYTHON`, or this one), the uniform DeiT-S step of timm (eager,
`benchmarks.train_step_throughput.timm_step`) is profiled too, with
`torch.profiler`: each op's own time is put into a kind by its name or the
nearest enclosing op that names one (everything under the optimizer's step
is the AdamW update). timm's attention is one fused op, its matmuls and
softmax together, so a second table sets the three steps side by side with
the attention kinds merged.

`--retained-memory` starts every worker with `GLIBC_TUNABLES` set to
`benchmarks.common.RETAINED_MEMORY_TUNABLES` (glibc keeps freed memory for
reuse), and writes its table apart (`train_step_profile_retained.md`).

    python -m benchmarks.train_step_profile [--quick] [--model NAME]
        [--timm-python PATH] [--retained-memory]
"""

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    BACKENDS,
    RETAINED_MEMORY_TUNABLES,
    add_timm_python_argument,
    machine_description,
    retained_memory_env,
    run_json_worker,
    write_result,
)
from benchmarks.train_step_throughput import (
    MODELS,
    build_model,
    keras_step,
    timm_available,
)

KINDS = (
    "dense matmuls",
    "attention matmuls",
    "softmax and attention layout",
    "LayerNorm",
    "GELU",
    "loss",
    "AdamW update",
    "other",
)
"""The op kinds of the table, in its order."""

TRACED_STEPS = 2

TORCH_PATTERNS = (
    (r"scaled_?dot_?product", "attention matmuls"),
    (
        r"aten::(addmm|mm|bmm|matmul|linear|convolution|mkldnn_convolution"
        r"|convolution_backward)$|(addmm|mm|bmm|convolution)backward",
        "dense matmuls",
    ),
    (r"layer_?norm", "LayerNorm"),
    (r"gelu", "GELU"),
    (r"cross_?entropy|log_?softmax|nll_?loss", "loss"),
    # timm splits q, k and v apart with the one `unbind` of its attention.
    (r"unbind", "softmax and attention layout"),
)
"""PyTorch op names (lower case) and the kinds they put an op in, in order."""

MERGED_KINDS = {
    "attention matmuls": "attention (matmuls, softmax, layout)",
    "softmax and attention layout": "attention (matmuls, softmax, layout)",
}
"""The kinds merged in the table beside timm, whose attention is one op."""


def op_kind(op_name: str, has_dot: bool) -> str:
    """The kind of an XLA op, from its `op_name` and whether it has a dot.

    Both backends name ops after the Keras layers (`block_3_attn_qkv`,
    `block_3_norm1`) and the optimizer (`adam_w`).
    """
    name = op_name.lower()
    if re.search(r"adam_?w", name):
        return "AdamW update"
    if re.search(r"crossentropy|compile_loss", name):
        return "loss"
    if has_dot:
        dense = re.search(r"_(qkv|proj|fc1|fc2)(_\d+)?(/|$)", name)
        if "attn" in name and not dense:
            return "attention matmuls"
        return "dense matmuls"
    if "norm" in name:
        return "LayerNorm"
    if "fc1" in name:
        return "GELU"
    if "attn" in name:
        return "softmax and attention layout"
    return "other"


def torch_op_kind(names: list[str]) -> str:
    """The kind of a PyTorch profiler event, from its and its parents' names.

    `names` holds the event's name first, then its enclosing events' names
    outwards. Everything under the optimizer's step is the AdamW update;
    otherwise the innermost name that says a kind decides, so that a copy
    inside `aten::native_layer_norm` is LayerNorm's and an `aten::mm` inside
    `AddmmBackward0` a dense matmul.
    """
    lowered = [name.lower() for name in names]
    if any("optimizer.step" in name for name in lowered):
        return "AdamW update"
    for name in lowered:
        for pattern, kind in TORCH_PATTERNS:
            if re.search(pattern, name):
                return kind
    return "other"


def hlo_ops(hlo_text: str) -> dict[str, tuple[str, bool]]:
    """`{instruction: (op_name, has_dot)}` of an optimized HLO module."""
    bodies = dict(re.findall(r"\n(%[\w.-]+) \(.*?\n(.*?)\n\}", hlo_text, re.S))
    ops = {}
    for line in hlo_text[hlo_text.index("ENTRY") :].splitlines():
        match = re.match(r"\s*(?:ROOT )?%([\w.-]+) = \S+ ([\w-]+)\(", line)
        if not match:
            continue
        name, opcode = match.groups()
        op_name = re.search(r'op_name="([^"]*)"', line)
        calls = re.search(r"calls=(%[\w.-]+)", line)
        body = bodies.get(calls.group(1), "") if calls else ""
        has_dot = opcode in ("dot", "convolution") or bool(
            re.search(r" (dot|convolution)\(", body)
        )
        ops[name] = (op_name.group(1) if op_name else "", has_dot)
    return ops


def profile_worker(quick: bool, name: str, batch: int, out: Path) -> dict:
    """Compiles, warms up and traces the step; returns the trace's files."""
    import keras
    import numpy as np

    image_size, patch_size = (32, 8) if quick else (224, 16)
    rng = np.random.default_rng(0)
    model = build_model(name, quick, image_size, patch_size, rng)
    step = keras_step(model, batch, image_size, 100, rng)
    for _ in range(2):
        step()
    trace = out / "trace"
    start = time.perf_counter()
    if keras.backend.backend() == "jax":
        import jax

        with jax.profiler.trace(str(trace)):
            for _ in range(TRACED_STEPS):
                step()
    else:
        import tensorflow as tf

        tf.profiler.experimental.start(str(trace))
        for _ in range(TRACED_STEPS):
            step()
        tf.profiler.experimental.stop()
    seconds = (time.perf_counter() - start) / TRACED_STEPS
    return {"params": model.count_params(), "traced_step_s": seconds}


def timm_profile_worker(image_size: int, patch_size: int, batch: int) -> dict:
    """Profiles timm's DeiT-S step with `torch.profiler`; kinds in ms/step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.train_step_throughput import timm_step

    model, step = timm_step(image_size, patch_size, batch)
    for _ in range(2):
        step()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(TRACED_STEPS):
            step()
    seconds = (time.perf_counter() - start) / TRACED_STEPS
    times = collections.Counter()
    for event in prof.events():
        names, parent = [], event
        while parent is not None:
            names.append(parent.name)
            parent = parent.cpu_parent
        kind = torch_op_kind(names)
        times[kind] += event.self_cpu_time_total / 1e3 / TRACED_STEPS
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "traced_step_s": seconds,
        "times": dict(times),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _worker_env(args) -> dict:
    """The workers' environment; glibc keeps freed memory if asked."""
    if not args.retained_memory:
        return dict(os.environ)
    return {**os.environ, **retained_memory_env()}


def run_timm(python: str, args) -> dict | None:
    """`timm_profile_worker` in `python`, or None without torch and timm."""
    if not timm_available(python):
        return None
    command = [python, "-m", "benchmarks.train_step_profile", "--timm-worker"]
    return run_json_worker(command, _worker_env(args), "timm profile worker")


def _largest_train_module(dump: Path) -> str:
    """The optimized HLO of the training step: the largest module dumped."""
    files = glob.glob(str(dump / "*after_optimizations.txt"))
    return Path(max(files, key=os.path.getsize)).read_text()


def op_times(out: Path) -> collections.Counter:
    """Milliseconds per step of each op kind, from `out`'s trace and HLO."""
    from jax.profiler import ProfileData

    ops = hlo_ops(_largest_train_module(out / "hlo"))
    pattern = str(out / "trace" / "**" / "*.xplane.pb")
    [path] = glob.glob(pattern, recursive=True)
    times = collections.Counter()
    for plane in ProfileData.from_file(path).planes:
        for line in plane.lines:
            for event in line.events:
                stats = dict(event.stats)
                if stats.get("hlo_op") not in ops:
                    continue
                op_name, has_dot = ops[stats["hlo_op"]]
                kind = op_kind(op_name, has_dot)
                times[kind] += event.duration_ns / 1e6 / TRACED_STEPS
    return times


def run_backend(backend: str, args, out: Path) -> dict:
    """Runs `profile_worker` under `backend` with XLA's HLO dump on."""
    command = [sys.executable, "-m", "benchmarks.train_step_profile"]
    command += ["--worker", str(out), "--model", args.model]
    command += ["--quick"] if args.quick else []
    env = {
        **_worker_env(args),
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "XLA_FLAGS": f"--xla_dump_to={out / 'hlo'} --xla_dump_hlo_as_text",
    }
    return run_json_worker(command, env, f"profile worker under {backend}")


def report(results: dict, args, seconds: float, machine: str) -> str:
    totals = {b: sum(results[b]["times"].values()) for b in BACKENDS}
    lines = [
        "| op kind | JAX ms/step | JAX share | TensorFlow ms/step "
        "| TensorFlow share | JAX / TensorFlow |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in KINDS:
        jax_ms = results["jax"]["times"].get(kind, 0.0)
        tf_ms = results["tensorflow"]["times"].get(kind, 0.0)
        ratio = f"{jax_ms / tf_ms:.2f}" if tf_ms else "n/a"
        lines.append(
            f"| {kind} | {jax_ms:.1f} | {jax_ms / totals['jax']:.0%} "
            f"| {tf_ms:.1f} | {tf_ms / totals['tensorflow']:.0%} | {ratio} |"
        )
    lines.append(
        f"| all ops | {totals['jax']:.1f} | 100% | "
        f"{totals['tensorflow']:.1f} | 100% | "
        f"{totals['jax'] / totals['tensorflow']:.2f} |"
    )
    model = "two-block ViT, dim 64, 32x32" if args.quick else "DeiT-S, 224x224"
    command = "python -m benchmarks.train_step_profile" + (
        " --quick" if args.quick else ""
    )
    if args.model != "uniform":
        command += f" --model {args.model}"
    if args.retained_memory:
        command += " --retained-memory"
    steps = ", ".join(
        f"{b} {r['traced_step_s']:.2f} s"
        for b, r in results.items()
        if b in BACKENDS
    )
    retained = (
        ", every worker with freed memory retained (started with "
        f"`GLIBC_TUNABLES={RETAINED_MEMORY_TUNABLES}`)"
        if args.retained_memory
        else ""
    )
    text = (
        f"Op times of one {args.model} {model} training step (batch "
        f"{args.batch}, AdamW, jit-compiled, float32{retained}), from the "
        f"profiler trace of {TRACED_STEPS} steps (traced step: {steps}). "
        f"Measured {machine}.\n\n" + "\n".join(lines) + "\n"
    )
    if "timm" in results:
        text += "\n" + timm_table(results)
    else:
        if args.quick:
            why = "the quick mode profiles no DeiT-S"
        elif args.model != "uniform":
            why = "only the uniform DeiT-S has a timm twin"
        else:
            why = "PyTorch/timm not found"
        text += f"\n(timm not profiled: {why}.)\n"
    return text + f"\nCommand: `{command}` ({seconds:.0f} s).\n"


def timm_table(results: dict) -> str:
    """The three steps side by side, the attention kinds merged."""
    kinds = list(dict.fromkeys(MERGED_KINDS.get(k, k) for k in KINDS))
    merged = {}
    for name, result in results.items():
        merged[name] = collections.Counter()
        for kind, ms in result["times"].items():
            merged[name][MERGED_KINDS.get(kind, kind)] += ms
    lines = [
        "| op kind | Keras-JAX ms/step | Keras-TensorFlow ms/step "
        "| timm ms/step | JAX / timm | TensorFlow / timm |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def row(label, jax_ms, tf_ms, timm_ms):
        ratios = " | ".join(
            f"{ms / timm_ms:.2f}" if timm_ms else "n/a"
            for ms in (jax_ms, tf_ms)
        )
        return (
            f"| {label} | {jax_ms:.1f} | {tf_ms:.1f} | {timm_ms:.1f} "
            f"| {ratios} |"
        )

    for kind in kinds:
        lines.append(
            row(kind, *(merged[n].get(kind, 0.0) for n in (*BACKENDS, "timm")))
        )
    lines.append(
        row("all ops", *(sum(merged[n].values()) for n in (*BACKENDS, "timm")))
    )
    timm = results["timm"]
    return (
        f"Beside timm's eager step (PyTorch {timm['torch']}, "
        f"{timm['threads']} threads, {timm['params']:,} parameters; traced "
        f"step {timm['traced_step_s']:.2f} s under `torch.profiler`, each "
        "op's own time):\n\n" + "\n".join(lines) + "\n"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", choices=MODELS, default="uniform")
    add_timm_python_argument(parser)
    parser.add_argument(
        "--retained-memory",
        action="store_true",
        help="start every worker with glibc keeping freed memory "
        "(GLIBC_TUNABLES=benchmarks.common.RETAINED_MEMORY_TUNABLES)",
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--timm-worker", action="store_true", help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    args.batch = 4 if args.quick else 16
    if args.worker:
        out = profile_worker(args.quick, args.model, args.batch, args.worker)
        print(json.dumps(out))
        return
    if args.timm_worker:
        print(json.dumps(timm_profile_worker(224, 16, args.batch)))
        return
    machine = machine_description()
    start = time.time()
    results = {}
    for backend in BACKENDS:
        with tempfile.TemporaryDirectory() as tmp:
            results[backend] = run_backend(backend, args, Path(tmp))
            results[backend]["times"] = op_times(Path(tmp))
    if not args.quick and args.model == "uniform":
        timm = run_timm(args.timm_python, args)
        if timm is not None:
            results["timm"] = timm
    text = report(results, args, time.time() - start, machine)
    print(text)
    suffix = "" if args.model == "uniform" else f"_{args.model}"
    suffix += "_retained" if args.retained_memory else ""
    path = write_result("train_step_profile" + suffix, text, args.quick)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
