"""Per-step GEMMs of the fast kernel on CUDA, each replayed 500 times from a CUDA graph: ``python3
benchmarks/gpu_small_gemm.py`` on a GPU machine.

Why: on an H100 with torch 2.11 (2026-11-27) the projection product of a proj_size run at B = 16,
(16, 256) x (256, 128) in float32, took 52 us per call in cuBLAS whatever the weight's layout, against 3-7 us
for the other per-step products and 6-9 us at B = 32 or 64; it made bidir+proj+mask at (1000, 16, 256, 256)
2.0x cuDNN forward. This times the product as the kernel forms it and rewrites that compute the same
numbers (up to summation order), for a few shapes. Outcome (benchmarks/GPU_RESULTS.md): cublasLt, reached
through addmm with a 1-D zero bias, takes 2.7 us there and is as fast or faster up to 16 rows but slower at
32-64, so the fast kernel uses it up to ``policy.PROJECTION_THROUGH_BIAS_MAX_ROWS`` = 16 rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from unilstm.bench import cpu_model


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
    rows = max(32, batch)
    r_padded = torch.zeros(rows, hidden, device="cuda")
    h_padded = torch.empty(rows, proj, device="cuda")
    zero_bias = torch.zeros(proj, device="cuda")
    return {
        "mm(r, w_hr.t(), out=h)": lambda: torch.mm(r, w_hr.t(), out=h),
        "addmm(zero (P,) bias, r, w_hr.t(), out=h)": lambda: torch.addmm(zero_bias, r, w_hr.t(), out=h),
        "mm(r, contiguous w_hr^T, out=h)": lambda: torch.mm(r, w_hr_t, out=h),
        "mm(w_hr, r.t(), out=h^T)": lambda: torch.mm(w_hr, r.t(), out=h_t),
        "addmm(h, r, w_hr.t(), beta=0, out=h)": lambda: torch.addmm(h, r, w_hr.t(), beta=0, out=h),
        "F.linear(r, w_hr)": lambda: F.linear(r, w_hr),
        "bmm(r[None], w_hr.t()[None])": lambda: torch.bmm(r[None], w_hr.t()[None]),
        f"mm on {rows} zero-padded rows + copy": lambda: (
            torch.mm(r_padded, w_hr.t(), out=h_padded), h.copy_(h_padded[:batch])),
        "(r[:, None, :] * w_hr).sum(-1)": lambda: torch.sum(r[:, None, :] * w_hr, dim=-1),
    }


def main() -> None:
    torch.manual_seed(0)
    print(f"GPU: {torch.cuda.get_device_name()}; CPU: {cpu_model()}; torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}")
    shapes = ((16, 256, 128), (8, 256, 128), (1, 256, 128), (32, 256, 128), (16, 512, 256), (1, 512, 256),
              (16, 128, 64), (32, 128, 64), (64, 512, 256), (16, 1024, 512), (4, 64, 32))
    for batch, hidden, proj in shapes:
        print(f"B={batch} H={hidden} P={proj}")
        for name, fn in variants(batch, hidden, proj).items():
            print(f"  {name:42s} {per_call_us(fn):8.2f} us", flush=True)
    # for comparison: the recurrent product of the same run, (16, 128) x (128, 1024)
    h, w_hh = torch.randn(16, 128, device="cuda"), torch.randn(1024, 128, device="cuda")
    z = torch.empty(16, 1024, device="cuda")
    print(f"recurrent z.addmm_(h, W_hh^T), (16, 128) x (128, 1024): "
          f"{per_call_us(lambda: z.addmm_(h, w_hh.t())):.2f} us")
    for library in ("cublaslt", "cublas"):
        try:
            torch.backends.cuda.preferred_blas_library(library)
        except Exception as error:  # noqa: BLE001 - older torch: report and go on
            print(f"preferred_blas_library({library!r}) unavailable: {error}")
            continue
        for batch, hidden, proj in ((16, 256, 128), (16, 512, 256)):
            r, w_hr = torch.randn(batch, hidden, device="cuda"), torch.randn(proj, hidden, device="cuda")
            h = torch.empty(batch, proj, device="cuda")
            print(f"{library}: mm(r, w_hr.t(), out=h) B={batch} H={hidden} P={proj}: "
                  f"{per_call_us(lambda r=r, w=w_hr, h=h: torch.mm(r, w.t(), out=h)):.2f} us", flush=True)
    torch.backends.cuda.preferred_blas_library("default")
    torch.backends.cuda.matmul.allow_tf32 = True
    r, w_hr = torch.randn(16, 256, device="cuda"), torch.randn(128, 256, device="cuda")
    h = torch.empty(16, 128, device="cuda")
    print(f"TF32 allowed: mm(r, w_hr.t(), out=h) B=16 H=256 P=128: "
          f"{per_call_us(lambda: torch.mm(r, w_hr.t(), out=h)):.2f} us")
    torch.backends.cuda.matmul.allow_tf32 = False


if __name__ == "__main__":
    main()
