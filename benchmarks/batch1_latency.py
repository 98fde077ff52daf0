# ruff: noqa: B023  (each closure is called within the iteration that made it)
"""Batch-1 latency and the input projection's GEMM routes, on this CPU (issue 18).

    python benchmarks/batch1_latency.py [--rounds 5] [--repeats 200]

Four tables, each with the CPU model and the BLAS torch uses:

1. **Streaming latency** of one layer at batch 1, T = 1, 4, 16, 60 steps per call, (in, H) = (1, 50) (the
   forecaster's first LSTM) and (64, 128): ``torch.nn.LSTM`` (standard cell), ``unilstm.LSTM`` standard and
   relu, state passed in, under ``torch.inference_mode()``. Each round times every contender ``repeats``
   times back to back (median); rounds interleave the contenders; the table holds the median of the rounds.
2. **Where one call's time goes** (standard cell through the native kernel, relu: T = 1 and 60 at
   (1, 50)): the same call entered at each level below the layer (``LSTM._run`` ->
   ``dispatch.run_stack`` -> ``dispatch._run_layer_by_layer`` -> ``native._loops.run_direction_native`` ->
   ``forward_pass``) and the C loop alone (timed inside the call): each level's own Python is the
   difference of two rows.
3. **The input projection routes** Z = X W_ih^T + b that the native kernel chooses among at first use
   (``native._blas.projection_route``): the C loop's own gemm call, torch's MKL addmm and oneDNN's linear,
   at the products of the issue's shapes and two batch-1 ones, timed the way the first use times them
   (interleaved rounds, medians).
4. **The C forward loop with either gemm** (``native._small_gemm``): MKL's (the BLAS torch links) and the
   hand-written one of ``_lstm_small_gemm.h`` for tiny products, the loop alone, interleaved rounds.

The machine of ``benchmarks/RESULTS.md`` is a shared 2-core VM: run it when the load is low, and read the
spread (min-max of the round medians) next to each number.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import unilstm
from unilstm.activations import resolve
from unilstm.bench import blas_description, cpu_model
from unilstm.kernels import dispatch
from unilstm.kernels.native import _blas, _extension, _loops, _small_gemm
from unilstm.kernels.reference import DirectionRun


def _median_us(run: Callable[[], object], repeats: int) -> float:
    for _ in range(max(3, repeats // 20)):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def _rounds(contenders: dict[str, Callable[[], object]], rounds: int, repeats: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            found[name].append(_median_us(contenders[name], repeats))
    return found


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.0f}-{max(values):.0f})"


def streaming(rounds: int, repeats: int) -> None:
    print("\n| (in, H) | T | torch.nn.LSTM (us) | unilstm standard (us) | unilstm relu (us) | "
          "standard / torch | relu / torch |")
    print("|---|---|---|---|---|---|---|")
    for features, hidden in ((1, 50), (64, 128)):
        torch.manual_seed(0)
        reference = torch.nn.LSTM(features, hidden)
        standard = unilstm.LSTM(features, hidden)
        relu = unilstm.LSTM(features, hidden, activation="relu")
        standard.load_state_dict(reference.state_dict())
        relu.load_state_dict(reference.state_dict())
        # inference: eval() (a module in training mode never takes the first-use choice of kernel)
        for module in (reference, standard, relu):
            module.eval()
        for steps in (1, 4, 16, 60):
            x = torch.randn(steps, 1, features)
            state = (torch.zeros(1, 1, hidden), torch.zeros(1, 1, hidden))
            with torch.inference_mode():
                found = _rounds(
                    {
                        "torch": lambda: reference(x, state),
                        "standard": lambda: standard(x, state),
                        "relu": lambda: relu(x, state),
                    },
                    rounds, repeats,
                )
            base = statistics.median(found["torch"])
            print(
                f"| ({features}, {hidden}) | {steps} | {_cell(found['torch'])} | "
                f"{_cell(found['standard'])} | {_cell(found['relu'])} | "
                f"{statistics.median(found['standard']) / base:.2f} | "
                f"{statistics.median(found['relu']) / base:.2f} |"
            )


def levels(rounds: int, repeats: int) -> None:
    print("\n| T | level entered (relu, (in, H) = (1, 50), B = 1) | us per call | its own share (us) |")
    print("|---|---|---|---|")
    for steps in (1, 60):
        torch.manual_seed(0)
        layer = unilstm.LSTM(1, 50, activation="relu")
        x, h, c = torch.randn(steps, 1, 1), torch.zeros(1, 1, 50), torch.zeros(1, 1, 50)
        spec = layer.spec
        layers = layer.direction_weights()
        weights = layers[0][0]
        run = DirectionRun(resolve(spec.activation, "activation"),
                           resolve(spec.recurrent_activation, "recurrent_activation"), None, False, True)
        arguments = _loops.function_arguments(_loops.run_config(run), x, h[0], c[0], weights, run)
        c_loop: list[float] = []
        original = _extension.forward_loop

        def timed_loop(loop_arguments: tuple[int, ...]) -> None:
            start = time.perf_counter()
            original(loop_arguments)
            c_loop.append(time.perf_counter() - start)

        contenders = {
            "unilstm.LSTM(x, (h, c))": lambda: layer(x, (h, c)),
            "LSTM._run": lambda: layer._run(x, h, c, training=False),
            "dispatch.run_stack": lambda: dispatch.run_stack(spec, x, h, c, layers),
            "dispatch._run_layer_by_layer": lambda: dispatch._run_layer_by_layer(
                spec, x, h, c, layers, None, False, None
            ),
            "native run_direction_native": lambda: _loops.run_direction_native(x, h[0], c[0], weights, run),
            "native forward_pass": lambda: _loops.forward_pass(*arguments, save=False),
        }
        with torch.inference_mode():
            found = _rounds(contenders, rounds, repeats)
            _extension.forward_loop = timed_loop
            try:
                _median_us(lambda: _loops.forward_pass(*arguments, save=False), repeats)
            finally:
                _extension.forward_loop = original
        medians = [statistics.median(v) for v in found.values()] + [statistics.median(c_loop) * 1e6]
        names = [*found, "C forward_loop (inside forward_pass)"]
        for index, (name, value) in enumerate(zip(names, medians, strict=True)):
            own = value - medians[index + 1] if index + 1 < len(medians) else value
            print(f"| {steps} | {name} | {value:.1f} | {own:.1f} |")


def projection_routes(rounds: int) -> None:
    print("\n| product (M = T*B, K = in, N = 4H) | from | c_gemm (us) | torch_mm (us) | onednn (us) | "
          "fastest |")
    print("|---|---|---|---|---|---|")
    shapes = [
        ((100, 64, 512, 512), "(100, 64, 512, 512)"), ((50, 32, 64, 128), "(50, 32, 64, 128)"),
        ((100, 1, 512, 512), "(100, 1, 512, 512)"), ((60, 1, 1, 50), "forecaster LSTM(50), batch 1"),
        ((60, 1, 50, 50), "forecaster 2nd LSTM(50), batch 1"), ((1, 1, 64, 128), "one step, (64, 128)"),
    ]
    for (steps, batch, features, hidden), where in shapes:
        torch.manual_seed(0)
        rows = torch.randn(steps * batch, features)
        weight, bias = torch.randn(4 * hidden, features) * 0.1, torch.randn(4 * hidden) * 0.1
        candidates = _blas._projection_candidates(rows, weight, bias, None)
        found: dict[str, list[float]] = {name: [] for name in candidates}
        per_run = steps * batch * features * hidden * 8 / 1e9  # GFLOP; a few runs per round for tiny products
        repeats = 3 if per_run > 0.05 else 50
        names = list(candidates)
        for round_ in range(rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                found[name].append(_median_us(candidates[name], repeats))
        medians = {name: statistics.median(v) for name, v in found.items()}
        cells = [_cell(found[name]) if name in found else "–" for name in _blas.PROJECTION_ROUTES]
        print(f"| {steps * batch}, {features}, {4 * hidden} | {where} | {' | '.join(cells)} | "
              f"{min(medians, key=medians.__getitem__)} |")


def loop_gemms(rounds: int, repeats: int) -> None:
    print("\n| (T, B, in, H) | C forward loop, BLAS gemm (us) | hand-written gemm (us) | "
          "hand-written / BLAS |")
    print("|---|---|---|---|")
    shapes = [(1, 1, 1, 50), (60, 1, 1, 50), (1, 1, 64, 128), (60, 1, 64, 128), (60, 4, 64, 128),
              (60, 16, 64, 128), (20, 1, 512, 512)]
    for steps, batch, features, hidden in shapes:
        torch.manual_seed(0)
        layer = unilstm.LSTM(features, hidden, activation="relu")
        weights = layer.direction_weights()[0][0]
        run = DirectionRun(resolve("relu", "activation"), resolve("sigmoid", "recurrent_activation"), None,
                           False, True)
        x, h, c = torch.randn(steps, batch, features), torch.zeros(batch, hidden), torch.zeros(batch, hidden)
        with torch.no_grad():
            arguments = _loops.function_arguments(_loops.run_config(run), x, h, c, weights, run)
            # defer: the loop's arguments, with every buffer they point into kept alive
            deferred: list = []
            _loops.forward_pass(*arguments, save=False, defer=deferred)
            ((loop_arguments, _buffers),) = deferred
            blas = _small_gemm.with_gemm(loop_arguments, _blas.blas_gemm(x.dtype))
            small = _small_gemm.with_gemm(loop_arguments, _small_gemm.small_gemm(x.dtype))
            found = _rounds({"blas": lambda: _extension.forward_loop(blas),
                             "small": lambda: _extension.forward_loop(small)}, rounds, repeats)
        ratio = statistics.median(found["small"]) / statistics.median(found["blas"])
        print(f"| ({steps}, {batch}, {features}, {hidden}) | {_cell(found['blas'])} | "
              f"{_cell(found['small'])} | {ratio:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--only", choices=["streaming", "levels", "routes", "gemms"], action="append")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()}; torch {torch.__version__} ({blas_description()}), {torch.get_num_threads()} "
          f"threads; medians of {args.rounds} interleaved rounds (min-max of the round medians in brackets)")
    if not args.only or "streaming" in args.only:
        streaming(args.rounds, args.repeats)
    if not args.only or "levels" in args.only:
        levels(args.rounds, args.repeats)
    if not args.only or "routes" in args.only:
        projection_routes(args.rounds)
    if not args.only or "gemms" in args.only:
        loop_gemms(args.rounds, args.repeats)


if __name__ == "__main__":
    main()
