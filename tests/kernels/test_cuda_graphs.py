# ruff: noqa: N803, N806
"""The CUDA-graph cache of the fast kernel, run on the CPU with a stand-in for graph capture.

The stand-in keeps the memory behaviour that matters: a replay writes its results into the same tensors
every time (as a graph replays into fixed addresses), reading the static arguments that ``run`` copied in.
So these tests catch results that alias one another across calls, arguments that are not copied in, and a
capturable variant of the kernel that computes something else. benchmarks/gpu_check.py runs the real graphs
on a GPU.
"""

from __future__ import annotations

import warnings

import torch
from hypothesis import HealthCheck, assume, given, settings
from kernel_cases import (
    ACCEPTED,
    assert_same,
    captures,
    case_strategies,
    fast_case,
    outputs_and_grads,
    projection,
)

from unilstm.kernels import cuda_graphs
from unilstm.kernels.fast import run_direction_fast
from unilstm.kernels.reference import run_direction_reference


def test_usable_only_on_cuda():
    assert not cuda_graphs.usable(torch.zeros(1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(**case_strategies(ACCEPTED, ["sigmoid", "hard_sigmoid"], max_steps=5, max_hidden=4))
def test_replays_equal_reference_and_do_not_alias(
    stand_in_graphs, seed, T, B, H, proj, mask_kind, reverse, zero, mx_kind, mh_kind, act, ract, bias
):
    cuda_graphs.clear()
    captures.clear()
    case = fast_case(seed, T, B, 3, H, projection(seed, H, proj), mask_kind, reverse, zero, mx_kind, mh_kind,
                     act, ract, bias, torch.float64)
    expected = outputs_and_grads(run_direction_reference, *case)
    assume(all(bool(torch.isfinite(t).all()) for t in expected))  # overflow: nan patterns need not match
    calls = [outputs_and_grads(run_direction_fast, *case) for _ in range(3)]  # direct, captured, replayed
    assert len(captures) == 2  # the forward and the backward body, each captured once
    for got in calls:  # the first call's results survive the later replays
        for e, g in zip(expected, got, strict=True):
            finite = e.detach().abs().nan_to_num(posinf=0.0, neginf=0.0)
            scale = max(1.0, float(finite.max())) if e.numel() else 1.0
            torch.testing.assert_close(g, e, atol=1e-10 * scale, rtol=1e-9, equal_nan=True)


def test_capturable_variant_equals_reference_on_masks_with_empty_steps(stand_in_graphs):
    case = fast_case(3, 6, 3, 4, 5, 2, "gaps_empty_step", True, False, "per_gate", "shared", "relu",
                     "sigmoid", True, torch.float64)
    for _ in range(3):
        assert_same(case, atol=1e-10, rtol=1e-9)


def test_new_layout_captures_again_and_lru_drops_the_oldest(stand_in_graphs, monkeypatch):
    monkeypatch.setattr(cuda_graphs, "MAX_GRAPHS", 2)
    body_calls = []

    def body(a):
        body_calls.append(1)
        return (a * 2.0,)

    for n in (1, 2, 3, 1):
        a = torch.full((n,), float(n))
        (first,) = cuda_graphs.run(("double",), body, (a,))
        (second,) = cuda_graphs.run(("double",), body, (a + 1.0,))
        assert torch.equal(first, a * 2.0) and torch.equal(second, (a + 1.0) * 2.0)
    assert len(cuda_graphs._entries) == 2
    assert len(captures) == 4  # shape (1,) was dropped after (2,) and (3,) came, and captured again
    first_pool = captures[0][1]
    assert first_pool is None and all(pool is not None for body, pool in captures[1:])  # shared, live


def test_results_that_are_arguments_or_views_of_one_buffer(stand_in_graphs):
    def body(a, b):
        buffer = a.new_empty(3, a.shape[0])
        buffer[0] = a
        buffer[1] = b
        buffer[2] = a + b
        return buffer[1:], buffer[2], a, None

    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])
    for _ in range(3):
        tail, total, same_a, none = cuda_graphs.run(("views",), body, (a, b))
        assert same_a is a and none is None
        assert total.data_ptr() == tail[1].data_ptr()  # one copy of the buffer, viewed twice
        assert torch.equal(tail, torch.stack([b, a + b]))


def test_a_failed_capture_warns_once_and_runs_directly(monkeypatch):
    monkeypatch.setattr(cuda_graphs, "usable", lambda x: True)
    monkeypatch.setattr(cuda_graphs, "_warned", False)

    def failing_capture(body, static_args, pool):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cuda_graphs, "_capture", failing_capture)
    cuda_graphs.clear()
    a = torch.arange(3.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [cuda_graphs.run(("negate",), lambda t: (-t,), (a,))[0] for _ in range(4)]
    assert all(torch.equal(r, -a) for r in results)
    assert [str(w.message) for w in caught if "CUDA graph" in str(w.message)] != []
    assert len([w for w in caught if "CUDA graph" in str(w.message)]) == 1
    cuda_graphs.clear()


def test_switched_off_by_enabled(monkeypatch):
    monkeypatch.setattr(cuda_graphs, "enabled", False)
    assert not cuda_graphs.usable(torch.zeros(1))


def test_byte_budget_drops_the_least_recently_used_graphs(stand_in_graphs, monkeypatch):
    monkeypatch.setattr(cuda_graphs, "MAX_GRAPH_BYTES", 20_000)  # room for two graphs of 8 kB, not three

    def body(a):
        return (a + 1.0,)  # static argument and result of (500,) float64: 8 kB a graph

    for n in range(3):
        a = torch.full((500,), float(n), dtype=torch.float64)
        for _ in range(2):
            (got,) = cuda_graphs.run(("add", n), body, (a,))
            assert torch.equal(got, a + 1.0)
    assert [key[0][1] for key in cuda_graphs._entries] == [1, 2]  # the first graph went to make room
    assert all(entry.nbytes == 8000 for entry in cuda_graphs._entries.values())
