# ruff: noqa: N806  (T, B, F, H: the maths names of the shapes)
"""Forward (inference) of unilstm's specs against torch.nn.LSTM's standard forward, and where the native
kernel's forward spends its time (issue 18).

One process, interleaved rounds: in each round every contender runs ``--repeats`` calls and keeps their
median; the table holds the median of the rounds' medians (min-max of the round medians in brackets) and
the ratio to torch.nn.LSTM's standard forward (oneDNN's fused LSTM primitive on x86); the last column
compares the fastest round medians instead (on a shared machine a round only ever loses time). The CPU
model and the BLAS torch links head the output. ``--fwbw`` adds forward+backward of the standard spec
against torch's. ``--profile`` adds the native forward's parts, each timed alone on the same operands
and interleaved with the whole loop (relu: always the native kernel): the input projection X W_ih^T
through the route its first use chose, and the T per-step products h_{t-1} W_hh^T, packed once as the C
loop packs them::

    python benchmarks/forward_specs.py --threads 1 --rounds 5
    python benchmarks/forward_specs.py --threads 2 --fwbw --shapes 50,32,64,128
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import unilstm
from unilstm.bench import cpu_model, make_mask, right_padded_mask

SHAPES = ((50, 32, 64, 128), (100, 64, 512, 512), (100, 1, 512, 512))
#: spec name -> (unilstm keyword arguments, mask kind: None | "gaps" | "right")
SPECS: dict[str, tuple[dict, str | None]] = {
    "standard": ({}, None),
    "relu": ({"activation": "relu"}, None),
    "mask_gaps": ({"masked_output": "previous"}, "gaps"),
    "go_backwards": ({"go_backwards": True}, None),
    "go_backwards_mask": ({"go_backwards": True, "masked_output": "previous"}, "right"),
}


def blas_info() -> str:
    lines = [line.strip() for line in torch.__config__.show().splitlines()]
    found = [line.lstrip("- ") for line in lines if "Math Kernel" in line or "MKL-DNN" in line
             or "BLAS_INFO" in line]
    return "; ".join(s.split(", CUDA")[0][:120] for s in found)


#: the clock (``--cpu-time``: the process's CPU time, which other processes' use of the cores does not
#: add to; meaningful on one thread, where no OpenMP worker spins)
CLOCK: Callable[[], float] = time.perf_counter


def median_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
    return statistics.median(times)


def rounds(
    contenders: dict[str, Callable[[], object]], n_rounds: int, repeats: int
) -> dict[str, list[float]]:
    for fn in contenders.values():  # warm-up (and every first-use measurement) before timing
        fn()
        fn()
    out: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(n_rounds):
        for name, fn in contenders.items():
            out[name].append(median_of(fn, repeats))
    return out


def layer_pair(shape: tuple[int, int, int, int], kwargs: dict) -> tuple[torch.nn.LSTM, unilstm.LSTM]:
    T, B, F, H = shape
    torch.manual_seed(0)
    ref = torch.nn.LSTM(F, H)
    uni = unilstm.LSTM(F, H, **kwargs)
    uni.load_state_dict(ref.state_dict())
    return ref.eval(), uni.eval()


def forward_contenders(shape: tuple[int, int, int, int], specs: list[str]) -> dict[str, Callable[[], object]]:
    T, B, F, H = shape
    x = torch.randn(T, B, F, generator=torch.Generator().manual_seed(1))
    contenders: dict[str, Callable[[], object]] = {}
    ref, _ = layer_pair(shape, {})

    def torch_fw() -> None:
        with torch.no_grad():
            ref(x)

    contenders["torch standard"] = torch_fw
    for name in specs:
        kwargs, mask_kind = SPECS[name]
        _, uni = layer_pair(shape, kwargs)
        mask = make_mask(mask_kind, T, B) if mask_kind != "right" else right_padded_mask(T, B)

        def uni_fw(uni: unilstm.LSTM = uni, mask: torch.Tensor | None = mask) -> None:
            with torch.no_grad():
                uni(x, mask=mask)

        contenders[name] = uni_fw
    return contenders


def fwbw_contenders(shape: tuple[int, int, int, int]) -> dict[str, Callable[[], object]]:
    T, B, F, H = shape
    x = torch.randn(T, B, F, generator=torch.Generator().manual_seed(1))
    ref, uni = layer_pair(shape, {})
    ref.train()
    uni.train()

    def run(layer: torch.nn.Module) -> Callable[[], object]:
        return lambda: layer(x)[0].sum().backward()

    return {"torch fw+bw": run(ref), "unilstm fw+bw": run(uni)}


def profile_contenders(shape: tuple[int, int, int, int]) -> dict[str, Callable[[], object]]:
    """The native forward (relu: always the native kernel) beside its products timed alone."""
    from unilstm.kernels.native import _blas
    from unilstm.kernels.native import _extension as C
    from unilstm.kernels.native._loops import run_direction_native
    from unilstm.kernels.reference import DirectionRun, DirectionWeights

    T, B, F, H = shape
    g = torch.Generator().manual_seed(2)
    x = torch.randn(T, B, F, generator=g)
    # torch.nn.LSTM's initialisation, U(-1/sqrt(H), 1/sqrt(H)): larger weights can drive the cell state
    # into float32's subnormal range over the steps, where every multiplication costs ~100 cycles
    def uniform(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=g) * 2 - 1) / H**0.5

    w_ih, w_hh, b = uniform(4 * H, F), uniform(4 * H, H), uniform(4 * H)
    weights = DirectionWeights(w_ih, w_hh, b, b.clone(), None)
    run = DirectionRun(torch.relu, torch.sigmoid, None, False, True)
    h0, c0 = torch.zeros(B, H), torch.zeros(B, H)
    rows = x.reshape(T * B, F)
    h, rec = torch.randn(B, H, generator=g), torch.empty(B, 4 * H)
    blas = _blas.blas_functions(torch.float32)
    route = _blas.projection_route(x, w_ih, b, b)
    candidates = _blas._projection_candidates(rows, w_ih, b, b)

    def native() -> None:
        with torch.no_grad():
            run_direction_native(x, h0, c0, weights, run)

    def steps() -> None:
        C.product(float64=False, blas=blas, trans=True, M=B, N=4 * H, K=H, A=h.data_ptr(), lda=H,
                        W=w_hh.data_ptr(), ldw=H, C=rec.data_ptr(), ldc=4 * H, repeat=T)

    return {"native loop (relu)": native, f"projection ({route})": candidates[route],
            "T per-step products": steps}


def table(title: str, results: dict[str, list[float]], baseline: str) -> None:
    base, fastest = statistics.median(results[baseline]), min(results[baseline])
    print(f"\n{title}\n\n| contender | ms | ratio to {baseline} | ratio of the fastest rounds |\n"
          "|---|---|---|---|")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"| {name} | {med * 1e3:.2f} ({min(values) * 1e3:.2f}-{max(values) * 1e3:.2f}) "
              f"| {med / base:.2f} | {min(values) / fastest:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=0, help="calls per round (0: by the shape)")
    parser.add_argument("--shapes", nargs="*", default=None, help="T,B,in,H (default: the issue's three)")
    parser.add_argument("--specs", nargs="*", default=["standard", "relu", "mask_gaps", "go_backwards"])
    parser.add_argument("--fwbw", action="store_true", help="forward+backward of the standard spec too")
    parser.add_argument("--profile", action="store_true", help="the native forward's parts")
    parser.add_argument("--no-forward", action="store_true")
    parser.add_argument("--cpu-time", action="store_true", help="time the process's CPU time (1 thread)")
    args = parser.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else list(SHAPES)
    clock = "process CPU time" if args.cpu_time else "wall clock"
    print(f"CPU: {cpu_model()}; threads {args.threads}; {clock}; torch {torch.__version__}; {blas_info()}")
    for shape in shapes:
        T, B, F, H = shape
        repeats = args.repeats or max(3, min(30, int(2e8 / (T * B * H * (F + H) * 8 + 1))))
        if not args.no_forward:
            results = rounds(forward_contenders(shape, args.specs), args.rounds, repeats)
            table(f"forward {shape}, {args.rounds} rounds x {repeats} calls", results, "torch standard")
        if args.profile:
            contenders = {"torch standard": forward_contenders(shape, [])["torch standard"]}
            contenders.update(profile_contenders(shape))
            table(f"native forward parts {shape}", rounds(contenders, args.rounds, repeats), "torch standard")
        if not args.no_forward:
            from unilstm.kernels import first_use

            for kind, (winner, seconds) in first_use.routes().items():
                if kind[0] == "inference projection":
                    timed = ", ".join(f"{name} {value * 1e3:.2f} ms" for name, value in seconds.items())
                    print(f"first use, {kind[0]} {kind[2:6]}: {winner} ({timed})")
        if args.fwbw:
            results = rounds(fwbw_contenders(shape), args.rounds, max(3, repeats // 3))
            table(f"forward+backward standard {shape}", results, "torch fw+bw")


if __name__ == "__main__":
    main()
