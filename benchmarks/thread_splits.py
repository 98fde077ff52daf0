"""What the first use measures and chooses for the native kernel's thread splits on this CPU (issue 18).

    python benchmarks/thread_splits.py [--threads 2]

With two intra-op threads (the two-loop paths need exactly two: ``policy.TWO_LOOPS_THREADS``), one fresh
measurement per kind of call, as a process's first calls make them (``UNILSTM_KERNEL_CHOICE`` measuring):
both directions of a bidirectional layer at once or one after the other ("pair"), a batch's two halves at
once or one loop ("halves"), each step's cell split among the threads or not ("cell_split"; only where the C
loop would split: B * H >= CELL_PARALLEL_MIN). Each line: the kind, the choice, and each candidate's
fastest round (``first_use.route``: interleaved rounds, the minimum) in microseconds, with the CPU model and
the BLAS. Inference calls of relu layers (the native kernel runs them; torch's kernel cannot), float32.
A loaded machine moves single rounds by tens of percent: run it when the load is low, twice.
"""

from __future__ import annotations

import argparse
import os

import torch

import unilstm
from unilstm.bench import blas_description, cpu_model
from unilstm.kernels import first_use


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ[first_use.CHOICE_ENV] = "measure"
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()}; torch {torch.__version__} ({blas_description()}), {torch.get_num_threads()} "
          f"threads")
    shapes = [  # (T, B, in, H, bidirectional)
        (50, 32, 64, 128, True), (50, 4, 64, 128, True), (100, 1, 512, 512, True),
        (50, 32, 64, 128, False), (50, 8, 64, 128, False), (50, 64, 256, 256, False),
        (20, 16, 512, 512, False),
    ]
    print("\n| (T, B, in, H) | layer | choice | kind | chosen | seconds per candidate (us) |")
    print("|---|---|---|---|---|---|")
    for steps, batch, features, hidden, bidirectional in shapes:
        first_use.forget()
        torch.manual_seed(0)
        layer = unilstm.LSTM(features, hidden, activation="relu", bidirectional=bidirectional).eval()
        with torch.no_grad():
            layer(torch.randn(steps, batch, features))
        for kind, (chosen, seconds) in first_use.routes().items():
            if kind[0] not in ("pair", "halves", "cell_split"):
                continue
            timings = ", ".join(f"{name} {value * 1e6:.0f}" for name, value in seconds.items())
            layer_kind = "bidirectional" if bidirectional else "one"
            print(f"| ({steps}, {batch}, {features}, {hidden}) | {layer_kind} | {kind[0]} | {kind[1:]} "
                  f"| {chosen} | {timings} |")


if __name__ == "__main__":
    main()
