"""Is ``train-sae``'s default matmul dtype (``auto``) ever slower than float32? The SAE training
step timed with ``--matmul-dtype auto``, ``float32`` and ``bfloat16`` on this CPU as it is and on
an emulated AVX2-only CPU.

    python benchmarks/cpu_bf16.py [--steps 4] [--repeats 3] [--bf16-avx2-steps 2] [--bf16-avx2-repeats 1]

Each (CPU, dtype) case runs in its own subprocess (so torch reads the ISA environment at start)
on one torch thread: ``interplab.dictionary.trainer.train`` with the library's defaults on
synthetic activations (d_model 576, a TopK SAE of d_sae 4608, k 32, batch 4096), timing each
step after the first (the first pays for allocation and warm-up) through ``on_step``. Cases are
interleaved: every repeat runs each case once, in a seeded random order — except bfloat16 on the
emulated AVX2 CPU, ~50x slower than the rest, which runs in the first ``--bf16-avx2-repeats``
repeats only, for ``--bf16-avx2-steps`` steps. Reported: the median step time per case, its ratio
to float32 on the same CPU, and what ``auto`` resolved to there.

The AVX2-only CPU is emulated by limiting the libraries torch computes with:
``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN: bf16 matmuls), ``ATEN_CPU_CAPABILITY=avx2`` (ATen's
vectorised kernels) and ``MKL_ENABLE_INSTRUCTIONS=AVX2`` (MKL: float32 matmuls). The emulation is
checked first: a bf16 matmul ([1024, 576] @ [576, 4608]) must be much slower under it than
natively (printed, and recorded).
Writes ``benchmarks/results/cpu_bf16.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

D_MODEL, D_SAE, K, BATCH = 576, 4608, 32, 4096
CHECK_ROWS = 1024
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
CPUS = {"native": {}, "avx2": AVX2_ENV}
DTYPES = ("auto", "float32", "bfloat16")
LIMITS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


# -- inside a subprocess --------------------------------------------------------------------------

def _describe() -> dict:
    import torch

    from interplab.core.hardware import isa_limited_below_bf16, native_bf16, resolve_matmul_dtype

    return {"torch_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": native_bf16("cpu"),
            "auto_resolves_to": resolve_matmul_dtype("auto", "cpu"), "limit": isa_limited_below_bf16(),
            "threads": torch.get_num_threads()}


def worker_check(repeats: int = 3) -> dict:
    """Median seconds of an encoder matmul ([1024, d_model] @ [d_model, d_sae]) in each dtype."""
    import torch

    torch.manual_seed(0)
    x, w = torch.randn(CHECK_ROWS, D_MODEL), torch.randn(D_MODEL, D_SAE)
    out = _describe()
    for dtype in (torch.float32, torch.bfloat16):
        a, b = x.to(dtype), w.to(dtype)
        a @ b  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        out[f"matmul_{str(dtype).split('.')[1]}_s"] = statistics.median(times)
    return out


def worker_train(dtype: str, steps: int) -> dict:
    """Per-step seconds of ``train`` (library defaults) with ``matmul_dtype=dtype``."""
    import torch

    from interplab.activations.source import TensorSource
    from interplab.dictionary import DictionaryConfig
    from interplab.dictionary.train_config import TrainConfig
    from interplab.dictionary.trainer import train

    torch.manual_seed(0)
    n = BATCH * max(steps + 1, 16384 // BATCH)  # the default init_tokens (16,384) included
    basis = torch.randn(64, D_MODEL)  # low-rank structure plus noise, like a residual stream
    acts = torch.randn(n, 64) @ basis + 0.1 * torch.randn(n, D_MODEL)
    dcfg = DictionaryConfig(arch="topk", d_in=D_MODEL, d_sae=D_SAE, k=K, input_site="x")
    ends: list[float] = []
    with tempfile.TemporaryDirectory(prefix="interplab-cpu-bf16-") as out:
        tcfg = TrainConfig(steps=steps, batch_size=BATCH, out_dir=out, device="cpu", matmul_dtype=dtype,
                           checkpoint_every=0)
        train(TensorSource({"x": acts}), [dcfg], tcfg, progress=False,
              on_step=lambda step: ends.append(time.perf_counter()))
    return {**_describe(), "step_s": [b - a for a, b in itertools.pairwise(ends)]}


# -- the driver -----------------------------------------------------------------------------------

def _spawn(cpu: str, args: list[str], timeout: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LIMITS}
    env.update(CPUS[cpu], OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{cpu} {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="steps per case (the first is not timed)")
    ap.add_argument("--bf16-avx2-steps", type=int, default=2,
                    help="steps for bfloat16 on the emulated AVX2 CPU (emulated bf16 is very slow)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bf16-avx2-repeats", type=int, default=1,
                    help="repeats (the first ones) that run bfloat16 on the emulated AVX2 CPU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_bf16.json"))
    ap.add_argument("--worker", choices=("check", "train"), help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(1)
        out = worker_check() if args.worker == "check" else worker_train(args.dtype, args.steps)
        print(json.dumps(out))
        return

    check = {cpu: _spawn(cpu, ["--worker", "check"], 300) for cpu in CPUS}
    slowdown = check["avx2"]["matmul_bfloat16_s"] / check["native"]["matmul_bfloat16_s"]
    print(f"emulation check (one [{CHECK_ROWS}, {D_MODEL}] @ [{D_MODEL}, {D_SAE}] matmul, 1 thread, median of 3):")
    for cpu, c in check.items():
        print(f"  {cpu:6s} capability={c['torch_capability']:7s} float32 {c['matmul_float32_s'] * 1e3:7.1f} ms"
              f"  bfloat16 {c['matmul_bfloat16_s'] * 1e3:8.1f} ms  native_bf16={c['native_bf16']}")
    print(f"  bf16 matmul under the AVX2 emulation: {slowdown:.1f}x the native time")
    if slowdown < 3:
        sys.exit("The AVX2 emulation did not slow bf16 down (torch ignored the ISA limits?): no benchmark.")

    cases = [(cpu, dtype) for cpu in CPUS for dtype in DTYPES]
    rng = random.Random(args.seed)
    steps: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    info: dict[tuple[str, str], dict] = {}
    for r in range(args.repeats):
        order = cases[:]
        rng.shuffle(order)
        for cpu, dtype in order:
            slow = (cpu, dtype) == ("avx2", "bfloat16")
            if slow and r >= args.bf16_avx2_repeats:
                continue
            n = args.bf16_avx2_steps if slow else args.steps
            res = _spawn(cpu, ["--worker", "train", "--dtype", dtype, "--steps", str(n)], 600)
            steps[cpu, dtype].append(statistics.median(res["step_s"]))
            info[cpu, dtype] = res
            print(f"  repeat {r + 1}: {cpu:6s} {dtype:8s} {steps[cpu, dtype][-1]:.3f} s/step", flush=True)

    rows = []
    for cpu, dtype in cases:
        med = statistics.median(steps[cpu, dtype])
        fp32 = statistics.median(steps[cpu, "float32"])
        rows.append({"cpu": cpu, "matmul_dtype": dtype, "resolved": info[cpu, dtype]["auto_resolves_to"]
                     if dtype == "auto" else dtype, "median_step_s": med, "vs_float32": med / fp32,
                     "repeats_s": steps[cpu, dtype], "torch_capability": info[cpu, dtype]["torch_capability"]})
    print(f"\n{'cpu':7s} {'dtype':9s} {'runs as':9s} {'s/step':>8s} {'x float32':>10s}")
    for row in rows:
        print(f"{row['cpu']:7s} {row['matmul_dtype']:9s} {row['resolved']:9s} {row['median_step_s']:8.3f} "
              f"{row['vs_float32']:10.2f}")
    import torch

    result = {"command": "python benchmarks/cpu_bf16.py " + " ".join(sys.argv[1:]),
              "setup": {"d_model": D_MODEL, "d_sae": D_SAE, "k": K, "batch": BATCH, "threads": 1,
                        "steps": args.steps, "bf16_avx2_steps": args.bf16_avx2_steps, "repeats": args.repeats,
                        "bf16_avx2_repeats": args.bf16_avx2_repeats,
                        "avx2_env": AVX2_ENV, "torch": torch.__version__, "cpu": _cpu_model(),
                        "platform": platform.platform()},
              "emulation_check": {**check, "bf16_slowdown_under_avx2": slowdown}, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
