# ruff: noqa: N806, E501
"""One short GPU check (run by benchmarks/gpu_check.sh on a CUDA machine).

1. Property comparison on CUDA: the fast kernel against the reference loop, outputs, states and all
   gradients, on random runs (float64 tight, float32 loose), and on every cell-variant case.
2. Timing on CUDA (``--all``: also with CUDA graphs alone and with the fused Triton steps alone): unilstm standard spec (cuDNN through torch) and flexible specs (fast kernel) against
   torch.nn.LSTM (cuDNN), forward and forward+backward, via unilstm.bench with --device cuda.
Writes $OUT/gpu_check.md (or ./gpu_check.md).
"""

from __future__ import annotations

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


def variant_check(dtype, tol, device: str) -> tuple[int, float]:
    """Every cell-variant case of tests/kernels/variant_cases.py on ``device``: the fast kernel (its variant
    body, three calls: direct, graph capture, replay) against the reference loop, outputs, states and every
    gradient (the variant tensors' included)."""
    import dataclasses

    from variant_cases import COMBINED_VARIANTS, SINGLE_VARIANTS, make_variant_case, variant_results

    def moved(value):
        if not isinstance(value, torch.Tensor):
            return value
        return value.detach().to(device).requires_grad_(value.requires_grad)

    worst, count = 0.0, 0
    for index, kwargs in enumerate([*SINGLE_VARIANTS.values(), *COMBINED_VARIANTS.values()]):
        x, h0, c0, w, run = make_variant_case(index, dtype=dtype, **kwargs)
        w = DirectionWeights(*(moved(t) for t in w.tensors()))
        run = dataclasses.replace(run, **{f.name: moved(getattr(run, f.name)) for f in dataclasses.fields(run)})
        case = (moved(x), moved(h0), moved(c0), w, run)
        expected = variant_results(run_direction_reference, *case)
        for call in range(3):
            got = variant_results(run_direction_fast, *case)
            for name, e in expected.items():
                g = got[name]
                assert g.device.type == device, name
                scale = max(1.0, float(e.abs().max())) if e.numel() else 1.0
                err = float((g - e).abs().max()) / scale if e.numel() else 0.0
                worst = max(worst, err)
                assert err <= tol, (index, call, name, err)
        count += 1
    return count, worst


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
    triton_steps = count_fused_steps()
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
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        def check_variants(dtype=dtype, tol=tol):
            count, worst = variant_check(dtype, tol, device)
            return (f"cell variants {dtype}: {count} cases, each three times: fast kernel (variant body) == "
                    f"reference on {device}, worst scaled error {worst:.2e}")
        stage(lines, f"cell variants {dtype}", check_variants)
    lines.append(f"- {graph_counts()}")
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
