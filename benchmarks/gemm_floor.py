"""The time of the matrix products alone in an LSTM's forward+backward, at torch's own GEMM speed.

Every LSTM implementation that computes float32 exactly (no lower precision, no skipped work) does at least
these five products for forward+backward when the input needs no gradient (the benchmark's case, for
unilstm, torch and Keras alike):

* X W_ih^T for all steps: (T*B, in) x (in, 4H);
* h_{t-1} W_hh^T per step: T products (B, H) x (H, 4H);
* dZ_t W_hh per step (the gradient reaching h_{t-1}): T products (B, 4H) x (4H, H);
* dW_ih = dZ^T X and dW_hh = dZ^T H: (4H, T*B) x (T*B, in) and (4H, T*B) x (T*B, H).

The sum, each product timed alone with ``torch.mm`` (best of several runs), is a floor that an
implementation can only undercut with a faster GEMM than torch's MKL. ``benchmarks/RESULTS.md`` compares
it with the measured times::

    python benchmarks/gemm_floor.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from unilstm.bench import blas_description, cpu_model

SHAPES = ((100, 64, 512, 512), (50, 32, 64, 128), (1000, 16, 256, 256), (100, 1, 512, 512))
PER_STEP_BATCH = 20  # per-step products are timed 20 at a time (one is a few microseconds)


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed runs after two warm-ups, in seconds."""
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def product_times(steps: int, batch: int, inputs: int, hidden: int, repeats: int) -> dict[str, float]:
    """Seconds per forward+backward spent in each of the five products (the per-step ones times T)."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    x, w_ih, w_hh = rand(steps * batch, inputs), rand(4 * hidden, inputs), rand(4 * hidden, hidden)
    h, dz = rand(batch, hidden), rand(batch, 4 * hidden)
    dz_all, hs = rand(steps * batch, 4 * hidden), rand(steps * batch, hidden)
    w_hh_t = w_hh.t().contiguous()

    def per_step(a: torch.Tensor, b: torch.Tensor) -> Callable[[], object]:
        return lambda: [torch.mm(a, b) for _ in range(PER_STEP_BATCH)]

    return {
        "X W_ih^T": best_time(lambda: torch.mm(x, w_ih.t()), repeats),
        "h W_hh^T (T steps)": steps * best_time(per_step(h, w_hh_t), repeats) / PER_STEP_BATCH,
        "dZ_t W_hh (T steps)": steps * best_time(per_step(dz, w_hh), repeats) / PER_STEP_BATCH,
        "dW_ih": best_time(lambda: torch.mm(dz_all.t(), x), repeats),
        "dW_hh": best_time(lambda: torch.mm(dz_all.t(), hs), repeats),
    }


def main() -> None:
    print(
        f"CPU: {cpu_model()}; torch {torch.__version__} ({blas_description()}), {torch.get_num_threads()} "
        "threads; milliseconds, best of several runs"
    )
    for shape in SHAPES:
        times = product_times(*shape, repeats=5 if shape[0] * shape[1] >= 6400 else 30)
        parts = ", ".join(f"{name} {seconds * 1e3:.1f}" for name, seconds in times.items())
        print(f"(T, B, in, H) = {shape}: {parts}; total {sum(times.values()) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
