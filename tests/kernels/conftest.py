"""Fixtures of the kernel tests; the case builders they share are in kernel_cases.py."""

from __future__ import annotations

import collections

import pytest
import torch
from kernel_cases import captures, stand_in_capture

from unilstm.kernels import cuda_graphs, native
from unilstm.kernels.native import _blas, _extension


@pytest.fixture
def stand_in_graphs(monkeypatch):
    """cuda_graphs on the CPU, with StandInGraph for capture; ``kernel_cases.captures`` lists the captures."""
    monkeypatch.setattr(cuda_graphs, "usable", lambda x: True)
    monkeypatch.setattr(cuda_graphs, "_capture", stand_in_capture)
    cuda_graphs.clear()
    captures.clear()
    yield
    cuda_graphs.clear()


@pytest.fixture
def two_threads():
    """torch's intra-op thread count set to 2 for the test (the native kernel's two-loop paths and its cell
    split depend on it), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


class CountingCell:
    """Stands in for the compiled ``_lstm_cell``: delegates every entry point and counts its calls."""

    def __init__(self, real, path):
        self.real, self.path, self.calls = real, path, collections.Counter()

    def __getattr__(self, name):
        fn = getattr(self.real, name)
        if not callable(fn):  # the module's constants
            return fn

        def call(*args):
            self.calls[name] += 1
            return fn(*args)

        return call

    def loop_in_c(self, dtype):
        return self.path == "c_loop" and _blas.blas_gemm(dtype) != 0

    def loops(self, kind):
        """C loops of this kind (forward or backward) that ran, the two of a pair call counted."""
        return self.calls[f"{kind}_loop"] + 2 * self.calls[f"{kind}_loop_pair"]

    def forward_runs(self, dtype, steps):
        """How many forward passes ran, checking that they took this fixture's path."""
        if self.loop_in_c(dtype):
            assert self.calls["forward_step"] == 0
            return self.loops("forward")
        assert self.loops("forward") == 0 and self.calls["forward_step"] % steps == 0
        return self.calls["forward_step"] // steps

    def assert_ran(self, dtype, backward=True):
        loop = self.loop_in_c(dtype)
        for kind in ("forward", "backward") if backward else ("forward",):
            steps = self.calls[f"{kind}_step"]
            assert (self.loops(kind) > 0 and steps == 0) if loop else (self.loops(kind) == 0 and steps > 0), (
                dict(self.calls)
            )


@pytest.fixture(params=["c_loop", "per_step"])
def cell(request, monkeypatch):
    """Runs the test on the native kernel's C time loop (where the BLAS gemm is found) or its per-step
    Python loop, counting the C calls."""
    native.cell_threads()  # the first-use checks (gemm, cell split) run the loops: before counting
    counting = CountingCell(_extension._lstm_cell, request.param)
    monkeypatch.setattr(_extension, "_lstm_cell", counting)
    if request.param == "per_step":
        monkeypatch.setattr(_blas, "_BLAS_GEMM", {})
    return counting
