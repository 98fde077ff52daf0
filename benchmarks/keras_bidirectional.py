"""Keras door ``Bidirectional(LSTM)``: one bidirectional stack against Keras's two layers one after the other
(``one_stack = False``), interleaved in one process, medians.

    python benchmarks/keras_bidirectional.py [--repeats 9] [--shape 50,32,64,128 ...]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from unilstm.bench import cpu_model
from unilstm.keras import LSTM, Bidirectional


def _time(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--shape", action="append", help="T,B,in,H")
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split(",")) for s in (args.shape or ["50,32,64,128"])]
    print(f"CPU: {cpu_model()}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    print("| (T, B, in, H) | spec | mode | one stack (ms) | two layers (ms) | ratio |")
    print("|---|---|---|---|---|---|")
    for steps, batch, features, units in shapes:
        for spec, kwargs, masked in (("standard", {}, False), ("standard, mask", {}, True),
                                     ("relu", {"activation": "relu"}, False)):
            torch.manual_seed(0)
            one = Bidirectional(LSTM(units, return_sequences=True, **kwargs))
            one.build((batch, steps, features))
            two = copy.deepcopy(one)
            two.one_stack = False
            x = torch.randn(batch, steps, features)
            mask = (torch.rand(batch, steps) > 0.15) if masked else None
            for mode in ("forward", "fw+bw"):
                def run(layer, mode=mode, x=x, mask=mask):
                    if mode == "forward":
                        with torch.no_grad():
                            layer(x, mask=mask)
                    else:
                        layer(x, mask=mask, training=True).sum().backward()
                for layer in (one, two):
                    run(layer)
                times: dict[str, list[float]] = {"one": [], "two": []}
                for _ in range(args.repeats):
                    times["one"] += _time(lambda layer=one: run(layer), 1)
                    times["two"] += _time(lambda layer=two: run(layer), 1)
                a, b = statistics.median(times["one"]), statistics.median(times["two"])
                shape = f"{steps}, {batch}, {features}, {units}"
                print(f"| {shape} | {spec} | {mode} | {a * 1e3:.2f} | {b * 1e3:.2f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
