# ruff: noqa: N803, N806  (T, B, F, H are the maths names of the shapes)
"""Each cell variant's cost on the CPU: forward+backward (and forward-only) time of ``unilstm.LSTM`` with
one variant, over the same layer's standard spec, at (T, B, F, H) = (50, 32, 64, 128) and (100, 64, 512,
512).

The target (issue 16): every variant at most 1.2x the standard spec's forward+backward. The layers run as
dispatch chooses (training: the native kernel for both; forward-only under ``torch.no_grad``: torch's
fused kernel may take the standard spec, which only the variant loops' rows then show). The two layers of
a pair are timed interleaved, ``--reps`` times each, and the medians compared: the machine may be shared,
and interleaving spreads its noise over both. Writes benchmarks/cell_variants.md (with ``--write``).

    python benchmarks/cell_variants.py [--reps 7] [--shapes small,large] [--only layer_norm,...] [--threads N]
                                       [--write] [--floor]

``--floor`` splits each pair's forward+backward instead (torch's profiler, the two layers' calls
interleaved): the C time loops (the autograd Functions' own time: the loops and their Python) and the
torch ops around them, per call: where a variant's time goes beyond the standard spec's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch

import unilstm
from unilstm.activations import parametric
from unilstm.bench import blas_description, cpu_model

SHAPES = {"small": (50, 32, 64, 128), "large": (100, 64, 512, 512)}

#: name -> (the variant's LSTM arguments, the standard layer's arguments it is compared with)
VARIANTS: dict[str, tuple[dict, dict]] = {
    "layer_norm": ({"layer_norm": True}, {}),
    "peepholes": ({"peepholes": True}, {}),
    "gate_clip": ({"gate_clip": 3.0}, {}),
    "cell_clip": ({"cell_clip": 3.0}, {}),
    "proj_clip": ({"proj_clip": 1.0, "proj_size": "half"}, {"proj_size": "half"}),
    "coupled_gates": ({"coupled_gates": True}, {}),
    "zoneout": ({"zoneout_hidden": 0.1, "zoneout_cell": 0.05}, {}),
    "forget_bias": ({"forget_bias": 1.0}, {}),
    "output_activation": ({"output_activation": "softsign"}, {}),
    "scaled_tanh": ({"activation": parametric("scaled_tanh", 1.5, 0.7)}, {}),
    "hard_sigmoid_ab": ({"recurrent_activation": parametric("hard_sigmoid", 0.3, 0.4)}, {}),
    "leaky_relu_a": ({"activation": parametric("leaky_relu", 0.05)}, {}),
    "elu_a": ({"activation": parametric("elu", 0.6)}, {}),
    "affine_out": ({"output_activation": parametric("affine", 0.8, 0.1)}, {}),
    "thresholded_relu_out": ({"output_activation": parametric("thresholded_relu", 0.1)}, {}),
    "tf1_like": ({"peepholes": True, "cell_clip": 3.0, "forget_bias": 1.0, "proj_clip": 1.0,
                  "proj_size": "half"}, {"proj_size": "half"}),
}


def _layer(F: int, H: int, arguments: dict) -> unilstm.LSTM:
    arguments = dict(arguments)
    if arguments.get("proj_size") == "half":
        arguments["proj_size"] = H // 2
    torch.manual_seed(0)
    return unilstm.LSTM(F, H, **arguments)


def _timers(layer: unilstm.LSTM, x: torch.Tensor) -> tuple[Callable[[], float], Callable[[], float]]:
    def both() -> float:
        start = time.perf_counter()
        out, (h, c) = layer(x)
        (out.sum() + c.sum()).backward()
        return time.perf_counter() - start

    def forward() -> float:
        with torch.no_grad():
            start = time.perf_counter()
            layer(x)
            return time.perf_counter() - start

    return both, forward


def measure(name: str, shape: tuple[int, int, int, int], reps: int) -> dict[str, float]:
    """Medians (seconds) of forward+backward and forward-only of the variant and its standard layer."""
    T, B, F, H = shape
    x = torch.randn(T, B, F, generator=torch.Generator().manual_seed(1))
    variant_args, standard_args = VARIANTS[name]
    layers = {"standard": _layer(F, H, standard_args).train(), "variant": _layer(F, H, variant_args).train()}
    timers = {key: _timers(layer, x) for key, layer in layers.items()}
    times: dict[str, list[float]] = {f"{key}_{kind}": [] for key in layers for kind in ("both", "forward")}
    for key in layers:  # warm-up: first-use checks, allocations
        timers[key][0]()
        timers[key][1]()
    for _ in range(reps):
        for key in layers:  # interleaved
            times[f"{key}_both"].append(timers[key][0]())
            times[f"{key}_forward"].append(timers[key][1]())
        for layer in layers.values():
            layer.zero_grad(set_to_none=True)
    return {key: statistics.median(values) for key, values in times.items()}


#: the autograd Functions of the native loops (the standard cell's, the variants'): their own time is the
#: C loop's plus their Python
_LOOPS = {
    "_NativeLSTM": "standard C forward", "_NativeLSTMBackward": "standard C backward",
    "_NativeLSTMPair": "standard C forward", "_NativeLSTMPairBackward": "standard C backward",
    "_NativeLSTMVariants": "variant C forward", "_NativeLSTMVariantsBackward": "variant C backward",
    "_NativeLSTMVariantsHalves": "variant C forward",
    "_NativeLSTMVariantsHalvesBackward": "variant C backward",
}


def floor(name: str, shape: tuple[int, int, int, int], reps: int) -> list[str]:
    """Per call (ms): each layer's whole forward+backward, its C loops, and the torch ops of both layers."""
    from torch.profiler import ProfilerActivity, profile, record_function

    T, B, F, H = shape
    x = torch.randn(T, B, F, generator=torch.Generator().manual_seed(1))
    variant_args, standard_args = VARIANTS[name]
    layers = {"standard": _layer(F, H, standard_args).train(), "variant": _layer(F, H, variant_args).train()}
    both = {key: _timers(layer, x)[0] for key, layer in layers.items()}
    for key in layers:
        both[key]()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            for key in layers:
                with record_function(f"call:{key}"):
                    both[key]()
    events = {e.key: e for e in prof.key_averages()}

    def ms(key: str, own: bool = True) -> float:
        e = events.get(key)
        return 0.0 if e is None else (e.self_cpu_time_total if own else e.cpu_time_total) / reps / 1e3

    loops: dict[str, float] = {}
    for key, label in _LOOPS.items():
        loops[label] = loops.get(label, 0.0) + ms(key)
    ops = sorted(((ms(k), k) for k in events if k.startswith(("aten::", "mkldnn::"))), reverse=True)[:6]
    standard, variant = ms("call:standard", False), ms("call:variant", False)
    return [
        f"{name} {shape}: standard {standard:.2f} ms, variant {variant:.2f} ms per forward+backward; "
        + ", ".join(f"{label} {value:.2f}" for label, value in loops.items())
        + "; torch ops of both layers: " + ", ".join(f"{k} {v:.2f}" for v, k in ops)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--shapes", default="small,large")
    parser.add_argument("--only", default="")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--write", action="store_true", help="write benchmarks/cell_variants.md")
    parser.add_argument("--floor", action="store_true", help="where the time goes (torch's profiler)")
    options = parser.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)
    names = [n for n in VARIANTS if not options.only or n in options.only.split(",")]
    if options.floor:
        for shape_name in options.shapes.split(","):
            for name in names:
                print("\n".join(floor(name, SHAPES[shape_name], options.reps)), flush=True)
        return
    lines = [
        "# Cell variants on the CPU: each variant / the same layer's standard spec",
        "",
        f"`python benchmarks/cell_variants.py --reps {options.reps}"
        f"{f' --threads {options.threads}' if options.threads else ''}` on {date.today().isoformat()}: "
        f"{cpu_model()}, {torch.get_num_threads()} torch threads, {blas_description()}, torch "
        f"{torch.__version__}. `unilstm.LSTM` in training mode as dispatch chooses its kernel; medians of "
        f"{options.reps} interleaved runs (the machine was shared with other jobs: the ratios are the "
        "measure, the absolute times are noisy). Forward+backward: the target is <= 1.2x; forward-only runs "
        "under `torch.no_grad()` (the standard spec may then take torch's fused kernel).",
        "",
    ]
    for shape_name in options.shapes.split(","):
        shape = SHAPES[shape_name]
        lines += [
            f"## (T, B, F, H) = {shape}",
            "",
            "| variant | standard fwd+bwd ms | variant fwd+bwd ms | ratio | standard fwd ms | variant fwd ms "
            "| ratio |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name in names:
            m = measure(name, shape, options.reps)
            row = (
                f"| {name} | {m['standard_both'] * 1e3:.2f} | {m['variant_both'] * 1e3:.2f} | "
                f"{m['variant_both'] / m['standard_both']:.2f} | {m['standard_forward'] * 1e3:.2f} | "
                f"{m['variant_forward'] * 1e3:.2f} | {m['variant_forward'] / m['standard_forward']:.2f} |"
            )
            print(shape_name, row, flush=True)
            lines.append(row)
        lines.append("")
    if options.write:
        Path(__file__).with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
