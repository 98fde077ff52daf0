"""Per-step GEMMs of the fast kernel on CUDA, each replayed 500 times from a CUDA graph: ``python3
benchmarks/gpu_small_gemm.py`` on a GPU machine.

Why: on an H100 with torch 2.11 (2026-11-27) the projection product of a proj_size run at B = 16,
(16, 256) x (256, 128) in float32, took 52 us per call in cuBLAS whatever the weight's layout, against 3-7 us
for the other per-step products and 6-9 us at B = 32 or 64; it made bidir+proj+mask at (1000, 16, 256, 256)
2.0x cuDNN forward. This times the product as the kernel forms it and rewrites that compute the same
numbers (up to summation order), for a few shapes, to pick a replacement. The rewrites were not run yet.
"""

from __future__ import annotations

import torch


def per_call_us(fn, calls: int = 500) -> float:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / calls * 1e3


def variants(batch: int, hidden: int, proj: int) -> dict:
    """The product r W_hr^T, (batch, hidden) x (hidden, proj), as the kernel forms it and rewritten."""
    w_hr = torch.randn(proj, hidden, device="cuda")
    r = torch.randn(batch, hidden, device="cuda")
    h = torch.empty(batch, proj, device="cuda")
    h_t = torch.empty(proj, batch, device="cuda")
    w_hr_t = w_hr.t().contiguous()
    return {
        "mm(r, w_hr.t(), out=h)  (the kernel's)": lambda: torch.mm(r, w_hr.t(), out=h),
        "mm(r, contiguous w_hr^T, out=h)": lambda: torch.mm(r, w_hr_t, out=h),
        "mm(w_hr, r.t(), out=h^T)": lambda: torch.mm(w_hr, r.t(), out=h_t),
        "bmm(r[None], w_hr.t()[None])": lambda: torch.bmm(r[None], w_hr.t()[None]),
        "(r[:, None, :] * w_hr).sum(-1)": lambda: torch.sum(r[:, None, :] * w_hr, dim=-1),
    }


def main() -> None:
    torch.manual_seed(0)
    for batch, hidden, proj in ((16, 256, 128), (8, 256, 128), (16, 512, 256), (16, 128, 64), (64, 512, 256)):
        print(f"B={batch} H={hidden} P={proj}")
        for name, fn in variants(batch, hidden, proj).items():
            print(f"  {name:42s} {per_call_us(fn):8.2f} us", flush=True)


if __name__ == "__main__":
    main()
