# ruff: noqa: N803, N806
"""The native kernel's first-use checks (BLAS functions, cell split): they pass whatever context the first
call runs in (inference mode, no_grad, autocast, torch.compile), in fresh processes where it matters.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from kernel_cases import (
    needs_extension,
)

import unilstm
import unilstm.torch
from unilstm.kernels import native
from unilstm.kernels.native import _blas, _loops


@needs_extension
def test_cell_threads_follow_torch_where_the_split_agrees():
    """Where torch's OpenMP runtime is found, the first-use check passes and the C loop takes torch's
    intra-op thread count (a failing check would silently fall back to one thread)."""
    if not native.blas_gemm(torch.float32) or not _blas._install_openmp():
        pytest.skip("the C loop or torch's OpenMP runtime is not available: the cell runs on one thread")
    assert _loops.split_step_agrees()
    assert native.cell_threads() == torch.get_num_threads()


@needs_extension
@pytest.mark.parametrize("context", ["inference_mode", "no_grad"])
def test_first_use_inside_inference_mode_or_no_grad(context, monkeypatch):
    """The first-use check of the thread split builds its own autograd graph: a first call of the layer inside
    torch.inference_mode() or torch.no_grad() runs (and the check still passes)."""
    if not native.blas_gemm(torch.float32) or not _blas._install_openmp():
        pytest.skip("the C loop or torch's OpenMP runtime is not available: the cell runs on one thread")
    monkeypatch.setattr(_blas, "_CELL_THREADS", None)
    layer = unilstm.LSTM(4, 512, activation="relu")  # a flexible spec: the native kernel runs
    manager = torch.inference_mode() if context == "inference_mode" else torch.no_grad()
    with manager:
        out, _ = layer(torch.randn(3, 16, 4))
    assert out.shape == (3, 16, 512)
    assert _blas._CELL_THREADS is True


@needs_extension
def test_first_call_inside_torch_compile(tmp_path):
    """A fresh process whose first layer calls run inside torch.compile: the first-use checks (BLAS, threads)
    are opaque to the tracer, which would otherwise free tensors the C loops write into (this crashed the
    process with a corrupted heap). One-direction (batch halves) and bidirectional layers, against the
    reference loop."""
    script = tmp_path / "first_call.py"
    script.write_text(
        "import torch, unilstm\n"
        "from unilstm.kernels import force_kernel\n"
        "torch.manual_seed(0)\n"
        "cases = ((dict(activation='relu'), 20), (dict(bidirectional=True, activation='relu'), 4))\n"
        "for kw, batch in cases:\n"
        "    layer = unilstm.LSTM(8, 32, **kw)\n"
        "    x = torch.randn(6, batch, 8)\n"
        "    compiled = torch.compile(lambda t, layer=layer: layer(t)[0], backend='eager')\n"
        "    for _ in range(2):\n"
        "        out = compiled(x)\n"
        "        out.sum().backward()\n"
        "    force_kernel('reference')\n"
        "    want = layer(x)[0]\n"
        "    force_kernel(None)\n"
        "    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)\n"
        "print('compiled first calls ok')\n"
    )
    assert "compiled first calls ok" in _run_fresh(script)


def _run_fresh(script) -> str:
    """Run ``script`` in a fresh interpreter (the first-use checks not run yet); its stdout."""
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@needs_extension
def test_first_call_under_autocast_keeps_the_c_loops(tmp_path):
    """A fresh process whose first layer call runs under CPU autocast finds the same float32 C loop and cell
    split as one whose first call does not: the first-use checks compare with torch outside autocast (they
    computed torch's side in bfloat16 and switched both off for the process)."""
    found = []
    for autocast in (False, True):
        script = tmp_path / f"first_call_{autocast}.py"
        script.write_text(
            "import torch, unilstm\n"
            "from unilstm.kernels import native\n"
            "layer = unilstm.LSTM(4, 8, activation='relu')\n"
            f"with torch.autocast('cpu', dtype=torch.bfloat16, enabled={autocast}):\n"
            "    layer(torch.randn(6, 3, 4))\n"
            "print(bool(native.blas_gemm(torch.float32)), native.cell_threads())\n"
        )
        found.append(_run_fresh(script).strip())
    assert found[1] == found[0], found
