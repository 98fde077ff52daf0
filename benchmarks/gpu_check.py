# ruff: noqa: N806, E501
"""One short GPU check (run by benchmarks/gpu_check.sh on a CUDA machine).

1. Property comparison on CUDA: the fast kernel against the reference loop, outputs, states and all
   gradients, on random runs (float64 tight, float32 loose), and on every cell-variant case through the
   fused Triton variant steps (direct, CUDA-graph capture, replay; it fails where a variant run on CUDA ran
   no fused step).
2. Timing on CUDA (``--all``: also with CUDA graphs alone and with the fused Triton steps alone): unilstm standard spec (cuDNN through torch) and flexible specs (fast kernel) against
   torch.nn.LSTM (cuDNN), forward and forward+backward, via unilstm.bench with --device cuda.
Writes $OUT/gpu_check.md (or ./gpu_check.md). A dry run on a machine without CUDA checks the script; with
TRITON_INTERPRET=1 it also runs the fused steps on the CPU through Triton's interpreter.
"""

from __future__ import annotations

import collections
import os
import random
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "kernels"))
from kernel_cases import ACCEPTED, outputs_and_grads  # noqa: E402
from test_triton_cell import count_fused_steps  # noqa: E402
from test_triton_variants import count_variant_steps  # noqa: E402

from unilstm import bench  # noqa: E402
from unilstm.kernels import cuda_graphs, triton_cell  # noqa: E402
from unilstm.kernels.fast import run_direction_fast  # noqa: E402
from unilstm.kernels.reference import DirectionRun, DirectionWeights, run_direction_reference  # noqa: E402


def to_device(case, device):
    x, h0, c0, w, run = case

    def mv(t):
        return None if t is None else t.detach().to(device).requires_grad_(t.requires_grad)

    w2 = DirectionWeights(*(mv(getattr(w, k)) for k in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")))
    run2 = DirectionRun(
        run.activation, run.recurrent_activation,
        None if run.step_mask is None else run.step_mask.to(device), run.reverse, run.zero_masked_output,
        None if run.input_dropout_mask is None else run.input_dropout_mask.to(device),
        None if run.recurrent_dropout_mask is None else run.recurrent_dropout_mask.to(device),
    )
    return mv(x), mv(h0), mv(c0), w2, run2


def property_check(n: int, dtype, tol, device: str) -> tuple[int, float]:
    from kernel_cases import fast_case as make_case

    rng = random.Random(0)
    worst = 0.0
    for i in range(n):
        H = rng.randint(1, 6)
        P = rng.randint(1, H - 1) if H > 1 and rng.random() < 0.3 else 0
        # every fifth run has more rows than policy.PROJECTION_THROUGH_BIAS_MAX_ROWS (the other product route)
        B = rng.randint(17, 20) if i % 5 == 4 else rng.randint(1, 5)
        case = make_case(
            i, rng.randint(1, 7), B, rng.randint(1, 5), H, P,
            rng.choice(["none", "gaps", "gaps_empty_row", "gaps_empty_step", "right"]), rng.random() < 0.5,
            rng.random() < 0.5, rng.choice(["none", "shared", "per_gate"]), rng.choice(["none", "shared", "per_gate"]),
            rng.choice(ACCEPTED), rng.choice([a for a in ACCEPTED if a != "exponential"]), rng.random() < 0.8, dtype,
        )
        case = to_device(case, device)
        expected = outputs_and_grads(run_direction_reference, *case)
        if not all(bool(torch.isfinite(t).all()) for t in expected):
            continue
        # three calls: the first runs directly, the second captures CUDA graphs, the third replays them
        calls = [outputs_and_grads(run_direction_fast, *case) for _ in range(3)]
        for call, got in enumerate(calls):
            for e, g in zip(expected, got, strict=True):
                assert g.device.type == device
                scale = max(1.0, float(e.detach().abs().max())) if e.numel() else 1.0
                err = float((g - e).detach().abs().max()) / scale if e.numel() else 0.0
                worst = max(worst, err)
                assert err <= tol, (i, call, err)
    return n, worst


def variant_check(dtype, tol, device: str, fused: collections.Counter) -> tuple[int, float, list[str]]:
    """Every cell-variant case of tests/kernels/variant_cases.py on ``device``: the fast kernel (its variant
    body, three calls: direct, graph capture, replay) against the reference loop, outputs, states and every
    gradient (the variant tensors' included). Returns (cases, worst scaled error, the variant cases that
    ran no fused Triton variant step: none is right on CUDA, where every variant is fused)."""
    import dataclasses

    from variant_cases import (
        COMBINED_VARIANTS,
        SINGLE_VARIANTS,
        cast_variant_case,
        make_variant_case,
        variant_results,
    )

    from unilstm.kernels.reference import is_variant

    def moved(value):
        if not isinstance(value, torch.Tensor):
            return value
        return value.detach().to(device).requires_grad_(value.requires_grad)

    worst, count, unfused = 0.0, 0, []
    for index, (name, kwargs) in enumerate([*SINGLE_VARIANTS.items(), *COMBINED_VARIANTS.items()]):
        x, h0, c0, w, run = make_variant_case(index, dtype=dtype, **kwargs)
        w = DirectionWeights(*(moved(t) for t in w.tensors()))
        run = dataclasses.replace(run, **{f.name: moved(getattr(run, f.name)) for f in dataclasses.fields(run)})
        case = (moved(x), moved(h0), moved(c0), w, run)
        # the reference in float64: the half types' own reference loop is further off than the kernels
        expected = variant_results(run_direction_reference, *cast_variant_case(*case, torch.float64))
        before = fused["backward"]
        for call in range(3):
            got = variant_results(run_direction_fast, *case)
            for name, e in expected.items():
                g = got[name]
                assert g.device.type == device and g.dtype == dtype, name
                scale = max(1.0, float(e.abs().max())) if e.numel() else 1.0
                err = float((g.double() - e).abs().max()) / scale if e.numel() else 0.0
                worst = max(worst, err)
                assert err <= tol, (index, call, name, err)
        if is_variant(w, run) and fused["backward"] == before:
            unfused.append(name)
        count += 1
    return count, worst, unfused


#: the variant layers timed on CUDA: name -> unilstm.LSTM arguments (beyond input and hidden size)
TIMED_VARIANTS = {
    "standard spec (cuDNN)": {},
    "standard cell on the fast kernel (relu)": {"activation": "relu"},
    "peepholes": {"peepholes": True},
    "layer_norm": {"layer_norm": True},
    "zoneout (training draws)": {"zoneout_hidden": 0.1, "zoneout_cell": 0.1},
    "TF1 cell: peepholes, cell_clip, proj 256 + proj_clip, forget_bias": {
        "peepholes": True, "cell_clip": 3.0, "proj_size": 256, "proj_clip": 1.0, "forget_bias": 1.0},
    "ONNX: coupled gates, gate clip, hard_sigmoid(0.2, 0.5), scaled_tanh(1, 1)": {
        "coupled_gates": True, "gate_clip": 3.0, "recurrent_activation": ("hard_sigmoid", 0.2, 0.5),
        "activation": ("scaled_tanh", 1.0, 1.0)},
}


def variant_timing(device: str, dry: bool) -> list[str]:
    """Forward+backward of one variant layer (training mode) with the fused Triton variant steps and with
    the torch-op steps (UNILSTM_TRITON=0), CUDA graphs on for both: per configuration the lower of two
    blocks' medians of ``reps`` calls after warm-up, the blocks alternating (graphs are kept per
    configuration, so single calls cannot alternate)."""
    import unilstm
    from unilstm.activations import parametric

    T, B, F, H = (6, 3, 5, 8) if dry else (100, 64, 512, 512)
    reps = 2 if dry else 10
    x = torch.randn(T, B, F, device=device, requires_grad=True)
    lines = [f"fw+bw ms at (T, B, F, H) = {(T, B, F, H)}, training; fused Triton variant steps vs torch ops"]

    def timed(layer) -> float:
        times = []
        for rep in range(reps + 3):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out, (h, c) = layer(x, training=True)
            (out.sum() + h.sum() + c.sum()).backward()
            if device == "cuda":
                torch.cuda.synchronize()
            if rep >= 3:
                times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2] * 1e3

    for name, kwargs in TIMED_VARIANTS.items():
        kwargs = {k: parametric(*v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
        if dry and "proj_size" in kwargs:
            kwargs["proj_size"] = 4
        layer = unilstm.LSTM(F, H, **kwargs).to(device)
        medians: dict[bool, list[float]] = {True: [], False: []}
        for fused in (True, False, True, False):
            cuda_graphs.clear()
            triton_cell.enabled = fused
            medians[fused].append(timed(layer))
        triton_cell.enabled = True
        on, off = min(medians[True]), min(medians[False])
        lines.append(f"{name}: fused {on:.2f} ms, torch ops {off:.2f} ms (x{off / on:.2f})")
    cuda_graphs.clear()
    return lines


def graph_counts() -> str:
    entries = list(cuda_graphs._entries.values())
    ready = sum(e.graph is not None for e in entries)
    failed = sum(e.failed for e in entries)
    return f"{ready} graphs captured, {failed} captures failed, {len(entries)} keys kept"


def peak_memory(device: str) -> list[str]:
    """Peak CUDA memory of relu fw+bw at (100, 64, 512, 512), with and without graphs."""
    if device != "cuda":
        return []
    import unilstm

    lines = []
    for use_graphs in (False, True):
        cuda_graphs.clear()
        cuda_graphs.enabled = use_graphs
        layer = unilstm.LSTM(512, 512, activation="relu").cuda()
        x = torch.randn(100, 64, 512, device="cuda", requires_grad=True)
        for _ in range(3):
            layer(x)[0].sum().backward()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        layer(x)[0].sum().backward()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        kept = torch.cuda.memory_allocated() / 2**20
        lines.append(f"relu fw+bw (100, 64, 512, 512), graphs {'on' if use_graphs else 'off'}: peak above "
                     f"the live tensors {peak:.0f} MiB, allocated after the step {kept:.0f} MiB")
    cuda_graphs.enabled = True
    return lines


def stage(lines: list[str], title: str, fn) -> None:
    """Run one part of the check; a failure is reported and the next part still runs."""
    start = time.time()
    try:
        result = fn()
    except Exception:  # noqa: BLE001 - report and go on: device time is scarce
        text = traceback.format_exc()
        print(text, flush=True)
        lines.append(f"- FAILED {title}: {text.strip().splitlines()[-1]}")
        return
    for line in result if isinstance(result, list) else [result]:
        lines.append(f"- {line}")
        print(line, flush=True)
    print(f"({title}: {time.time() - start:.0f} s)", flush=True)


def main() -> int:
    out_dir = Path(os.environ.get("OUT", "."))
    dry = not torch.cuda.is_available()  # a dry run on CPU checks the script itself
    device = "cpu" if dry else "cuda"
    name = "CPU dry run" if dry else torch.cuda.get_device_name()
    lines = [f"# GPU check: {name} (torch {torch.__version__})", ""]
    if dry and os.environ.get("TRITON_INTERPRET") == "1":  # the fused steps through Triton's interpreter
        triton_cell.run_on_cpu = True
    triton_steps = count_fused_steps()
    variant_steps = count_variant_steps()
    # each case compiles its own Triton variants (a fraction of a second each): counts sized for a short run
    for dtype, n, tol in ((torch.float64, 50, 1e-9), (torch.float32, 30, 1e-4), (torch.float16, 15, 3e-2),
                          (torch.bfloat16, 15, 1e-1)):
        def check(dtype=dtype, n=n, tol=tol):
            before = len(triton_steps)
            count, worst = property_check(5 if dry else n, dtype, tol, device)
            return (f"property check {dtype}: {count} random runs, each three times (direct, graph capture, "
                    f"replay): fast kernel == reference on {device}, worst scaled error {worst:.2e}; "
                    f"{len(triton_steps) - before} fused Triton steps ran")
        stage(lines, f"property check {dtype}", check)
    # (relative to the float64 reference; bfloat16 is left out: its 8-bit mantissa leaves even the torch ops
    # a whole unit off the float64 gradients on the "everything" case)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4), (torch.float16, 3e-2)):
        def check_variants(dtype=dtype, tol=tol):
            before = dict(variant_steps)
            count, worst, unfused = variant_check(dtype, tol, device, variant_steps)
            ran = {k: v - before.get(k, 0) for k, v in variant_steps.items()}
            line = (f"cell variants {dtype}: {count} cases, each three times: fast kernel (variant body) vs "
                    f"float64 reference on {device}, worst scaled error {worst:.2e}; fused Triton variant steps "
                    f"(Python calls: capture and direct runs, not replays) {ran}")
            if unfused and (device == "cuda" or triton_cell.run_on_cpu):
                raise AssertionError(f"{line}; variant cases that ran no fused step: {unfused}")
            return line
        stage(lines, f"cell variants {dtype}", check_variants)
    lines.append(f"- {graph_counts()}")
    stage(lines, "cell variant timing", lambda: variant_timing(device, dry))
    stage(lines, "peak memory", lambda: peak_memory(device))
    configs = [("CUDA graphs and fused Triton steps (default)", "bench", True, True)]
    if "--all" in sys.argv[1:]:  # each part alone, to see what it brings
        configs += [
            ("CUDA graphs, torch-op cell (UNILSTM_TRITON=0)", "bench_graphs_only", True, False),
            ("fused Triton steps, no graphs (UNILSTM_CUDA_GRAPHS=0)", "bench_triton_only", False, True),
        ]
    for title, folder, use_graphs, use_triton in configs:
        cuda_graphs.clear()
        cuda_graphs.enabled, triton_cell.enabled = use_graphs, use_triton
        lines += ["", f"## {title}", ""]
        stage(lines, title, lambda folder=folder: bench_table(device, dry, out_dir / folder))
    cuda_graphs.enabled = triton_cell.enabled = True
    (out_dir / "gpu_check.md").write_text("\n".join(lines))
    return 0


def bench_table(device: str, dry: bool, report_dir: Path) -> str:
    shapes = ["--shape", "6,3,5,8"] if dry else [
        "--shape", "100,64,512,512", "--shape", "50,32,64,128", "--shape", "1000,16,256,256",
        "--shape", "100,1,512,512",
    ]
    bench.main([
        "--device", device, "--no-peers", "--no-streaming", "--repeats", "2" if dry else "10",
        "--out", str(report_dir), *shapes,
        "--spec", "standard", "--spec", "relu", "--spec", "recurrent_dropout", "--spec", "mask_gaps",
        "--spec", "bidir_proj_mask",
    ])
    if report_dir.name != "bench":  # the device returns at most eight files: the variants keep their table
        for extra in ("results.json", "chart.png"):
            (report_dir / extra).unlink(missing_ok=True)
    return [(report_dir / "results.md").read_text()]


if __name__ == "__main__":
    sys.exit(main())
