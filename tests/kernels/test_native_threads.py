# ruff: noqa: N803, N806
"""The native kernel on several threads: a cell step's rows split among torch's OpenMP team, the two
directions of a layer at once and the two halves of a batch at once. Tests of paths that depend on the
thread count set it (the ``two_threads`` fixture) instead of depending on the machine.
"""

from __future__ import annotations

import pytest
import torch
from kernel_cases import (
    ATOL64,
    COMBOS,
    GAPS,
    RTOL64,
    assert_results_close,
    make_case,
    needs_extension,
    reference_results,
    results,
)

import unilstm
import unilstm.torch
from unilstm.kernels import first_use, force_kernel, native, policy
from unilstm.kernels.native import _blas, _extension, run_direction_native
from unilstm.kernels.reference import DirectionRun, DirectionWeights, run_direction_reference


def c_loops_with_openmp() -> bool:
    """The C loops and torch's OpenMP runtime are there (the two-loop paths need both)."""
    return bool(native.blas_gemm(torch.float32)) and _blas._install_openmp()


@needs_extension
@pytest.mark.parametrize(
    "act, P, mask, mh_kind, reverse, zero",
    [
        ("tanh", 0, False, "none", False, True),  # the single-pass cell
        ("relu", 0, True, "shared", True, False),  # single pass, masks carried forward, reverse
        ("elu", 0, True, "per_gate", False, True),  # the per-operation cell, per-gate products
        ("tanh", 3, True, "none", False, False),  # projection: the hidden half runs as its own split task
    ],
)
def test_cell_split_among_threads_equals_one_thread(act, P, mask, mh_kind, reverse, zero, monkeypatch):
    """B * H = 4096 units per step reach the C cell's threshold for splitting its rows among torch's threads:
    two threads give exactly the bits of one, and both equal the reference."""
    if not native.blas_gemm(torch.float64) or not _blas._install_openmp():
        pytest.skip("the C loop or torch's OpenMP runtime is not available: the cell runs on one thread")
    T, B, H = 3, 8, 512
    step_mask = torch.rand(T, B, generator=torch.Generator().manual_seed(4)) > 0.3 if mask else None
    case = make_case(37, T=T, B=B, F=5, H=H, P=P, mask=step_mask, reverse=reverse, zero=zero,
                     mh_kind=mh_kind, act=act, scale=0.3)
    got = {}
    for threads in (1, 2):
        monkeypatch.setattr(_blas, "cell_threads", lambda split_agrees, threads=threads: threads)
        got[threads] = results(run_direction_native, *case)
    for name in got[1]:
        assert torch.equal(got[1][name], got[2][name]), name
    assert_results_close(got[2], results(run_direction_reference, *case), rtol=1e-9, atol=1e-9, scaled=True)


@needs_extension
@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(proj_size=3, masked_output="previous", activation="relu"),
    dict(recurrent_dropout=0.3, input_dropout=0.2),  # per-gate masks, drawn per direction
    dict(num_layers=2, masked_output="zero", go_backwards=True),
])
def test_bidirectional_layers_run_both_directions_at_once(cell, grad, kwargs, two_threads):
    """Each layer's two directions run as one pair call of the C loops (forward and, with gradients,
    backward), with the values and gradients of the reference loop; without the C loops (the per-step
    path) one after the other."""
    at_once = cell.loop_in_c(torch.float64) and native.cell_threads() == 2
    cell.calls.clear()  # (the first-use checks above ran the loops too)
    torch.manual_seed(0)
    layer = unilstm.LSTM(5, 6, bidirectional=True, dtype=torch.float64, **kwargs).train(True)
    x = torch.randn(7, 4, 5, dtype=torch.float64, requires_grad=grad)
    mask = None
    if "masked_output" in kwargs:
        mask = torch.rand(4, 7, generator=torch.Generator().manual_seed(2)) > 0.3

    def run(kernel):
        force_kernel(kernel)
        try:
            torch.manual_seed(1)  # the same dropout masks for both kernels
            with torch.set_grad_enabled(grad):
                out, (h, c) = layer(x, mask=mask)
                if not grad:
                    return [out, h, c]
                loss = out.sum() + h.square().sum() + c.sum()
                return [out, h, c, *torch.autograd.grad(loss, [x, *layer.parameters()])]
        finally:
            force_kernel(None)

    got = run(None)
    # inference of the standard cell is torch's kernel's (dispatch.native_trains_faster)
    pairs = layer.spec.num_layers if at_once and (grad or kwargs) else 0
    assert cell.calls["forward_loop_pair"] == pairs and cell.calls["forward_loop"] == 0, dict(cell.calls)
    assert cell.calls["backward_loop_pair"] == (pairs if grad else 0), dict(cell.calls)
    assert cell.calls["backward_loop"] == 0
    want = run("reference")
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=RTOL64, atol=ATOL64)


@needs_extension
def test_wide_hidden_thin_batch_runs_the_directions_one_after_the_other(cell, two_threads):
    """Above policy.PAIR_MAX_HIDDEN with fewer than policy.PAIR_MIN_BATCH sequences the directions run one
    after the other."""
    native.cell_threads()
    cell.calls.clear()
    layer = unilstm.LSTM(4, policy.PAIR_MAX_HIDDEN + 1, bidirectional=True, activation="relu")
    with torch.no_grad():
        layer(torch.randn(3, policy.PAIR_MIN_BATCH - 1, 4))
    assert cell.calls["forward_loop_pair"] == 0 and cell.forward_runs(torch.float32, 3) == 2


@needs_extension
@pytest.mark.parametrize("threads", [1, 4])
def test_directions_at_once_only_on_two_threads(monkeypatch, threads, two_threads):
    """With one thread there is nothing to share, with more than two each direction's GEMMs would give up
    the others (policy.TWO_LOOPS_THREADS)."""
    x = torch.randn(3, 4, 5)
    h0, c0 = torch.zeros(2, 4, 6), torch.zeros(2, 4, 6)
    weights = tuple(
        DirectionWeights(torch.randn(24, 5), torch.randn(24, 6), None, None, None) for _ in range(2)
    )
    runs = tuple(
        DirectionRun(torch.relu, torch.sigmoid, None, reverse, True, None, None) for reverse in (False, True)
    )
    if c_loops_with_openmp():  # (what this torch build links, not the machine's thread count)
        assert native.cell_threads() == 2
        assert native.pair_accepts(x, h0, c0, weights, runs)
    monkeypatch.setattr(_blas, "cell_threads", lambda split_agrees: threads)
    assert not native.pair_accepts(x, h0, c0, weights, runs)


@needs_extension
@pytest.mark.parametrize(("P", "mask", "reverse", "zero", "mx_kind", "mh_kind"), COMBOS)
def test_batch_halves_equal_the_reference_for_every_option_combination(P, mask, reverse, zero, mx_kind,
                                                                         mh_kind, cell):
    """run_direction_native_halves (here on B = 3: halves of 1 and 2 rows) gives the reference's values and
    gradients; the halves' loops ran as one pair call where the C loops are there."""
    key = (P, mask, reverse, zero, mx_kind, mh_kind)
    case = make_case(COMBOS.index(key), P=P, mask=GAPS if mask == "gaps" else None, reverse=reverse,
                     zero=zero, mx_kind=mx_kind, mh_kind=mh_kind)
    cell.calls.clear()
    got = results(native.run_direction_native_halves, *case)
    assert_results_close(got, reference_results(key, case), RTOL64, ATOL64)
    if cell.loop_in_c(torch.float64):
        assert (cell.calls["forward_loop_pair"], cell.calls["backward_loop_pair"]) == (1, 1), dict(cell.calls)
    with torch.no_grad():  # inference takes the pair too, without the autograd Function
        out, h, c = native.run_direction_native_halves(*case)
    torch.testing.assert_close(out, got["output"], rtol=0, atol=0)
    torch.testing.assert_close(c, got["c_T"], rtol=0, atol=0)


@needs_extension
@pytest.mark.parametrize(("hidden", "halves"), [(8, True), (512, False)])
def test_layers_split_the_batch_where_policy_says(cell, hidden, halves, two_threads):
    """From HALVES_MIN_BATCH sequences with recurrent weights of at most HALVES_MAX_WEIGHT_BYTES (H <= 256 in
    float32) a one-direction layer runs its batch's halves at once, with the reference's values and
    gradients; at H = 512 one loop runs."""
    at_once = halves and cell.loop_in_c(torch.float32) and native.cell_threads() == 2
    torch.manual_seed(0)
    layer = unilstm.LSTM(5, hidden, activation="relu", recurrent_dropout=0.3, proj_size=3 if halves else 0)
    layer.train()
    batch = policy.HALVES_MIN_BATCH + 1  # odd: halves of 8 and 9 rows
    x = torch.randn(4, batch, 5, requires_grad=True)
    mask = torch.rand(batch, 4, generator=torch.Generator().manual_seed(2)) > 0.3

    def run(kernel):
        force_kernel(kernel)
        try:
            torch.manual_seed(1)  # the same dropout masks for both kernels
            out, (h, c) = layer(x, mask=mask)
            loss = out.sum() + h.square().sum() + c.sum()
            return [out, h, c, *torch.autograd.grad(loss, [x, *layer.parameters()])]
        finally:
            force_kernel(None)

    native.cell_threads()
    cell.calls.clear()
    got = run(None)
    assert cell.calls["forward_loop_pair"] == int(at_once), dict(cell.calls)
    assert cell.calls["backward_loop_pair"] == int(at_once), dict(cell.calls)
    want = run("reference")
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


@needs_extension
@pytest.mark.parametrize("threads", [1, 4])
def test_batch_halves_only_on_two_threads(monkeypatch, threads, two_threads):
    x, h0, c0 = torch.randn(3, 16, 5), torch.zeros(16, 6), torch.zeros(16, 6)
    weights = DirectionWeights(torch.randn(24, 5), torch.randn(24, 6), None, None, None)
    run = DirectionRun(torch.relu, torch.sigmoid, None, False, True, None, None)
    if c_loops_with_openmp():  # (what this torch build links, not the machine's thread count)
        assert native.cell_threads() == 2
        assert native.halves_accept(x, h0, c0, weights, run)
        assert not native.halves_accept(x[:, :15], h0[:15], c0[:15], weights, run)  # below HALVES_MIN_BATCH
        # H = 256: for training only (policy.HALVES_MAX_WEIGHT_BYTES_INFERENCE)
        wide = DirectionWeights(torch.randn(1024, 5), torch.randn(1024, 256), None, None, None)
        h0_wide, c0_wide = torch.zeros(16, 256), torch.zeros(16, 256)
        assert not native.halves_accept(x, h0_wide, c0_wide, wide, run)
        wide.w_hh.requires_grad_()
        assert native.halves_accept(x, h0_wide, c0_wide, wide, run)
    monkeypatch.setattr(_blas, "cell_threads", lambda split_agrees: threads)
    assert not native.halves_accept(x, h0, c0, weights, run)


# -- thread splits measured at first use (UNILSTM_KERNEL_CHOICE=measure; the suite runs the fixed policy) --

@pytest.fixture
def measuring(monkeypatch):
    monkeypatch.setenv(first_use.CHOICE_ENV, "measure")
    first_use.forget()
    yield
    first_use.forget()


def measured(name: str) -> list[tuple[str, dict[str, float]]]:
    """The choices measured so far of the kind ``name`` ("pair", "halves", "cell_split")."""
    return [found for kind, found in first_use.routes().items() if kind[0] == name]


@needs_extension
@pytest.mark.parametrize(("bidirectional", "name"), [(True, "pair"), (False, "halves")])
def test_two_loops_at_once_are_measured_at_first_use(bidirectional, name, two_threads, measuring):
    """Measuring, the first call of a kind times the two loops at once and one after the other (here below
    the fixed policy's batch for halves) and keeps a choice, reused by the next call of the kind; either way
    the results equal the reference loop's."""
    if not c_loops_with_openmp():
        pytest.skip("the C loops or torch's OpenMP runtime are not available: one loop at a time")
    torch.manual_seed(0)
    layer = unilstm.LSTM(5, 8, bidirectional=bidirectional, activation="relu", dtype=torch.float64).eval()
    x = torch.randn(6, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        got = layer(x)[0]
        (first,) = measured(name)
        assert set(first[1]) == {"at_once", "apart"} and first[0] in first[1]
        layer(torch.randn(7, 5, 5, dtype=torch.float64))  # the same kind: nothing new measured
        assert measured(name) == [first]
        force_kernel("reference")
        try:
            want = layer(x)[0]
        finally:
            force_kernel(None)
    torch.testing.assert_close(got, want, rtol=RTOL64, atol=ATOL64)


@needs_extension
@pytest.mark.parametrize("grad", [False, True])
def test_the_cell_split_is_measured_at_first_use(grad, two_threads, measuring):
    """Measuring, the first forward loop of a kind that the C loop would split (B * H >= CELL_PARALLEL_MIN)
    runs split and unsplit and keeps one; the backward follows it; the results equal the reference's."""
    if not c_loops_with_openmp() or native.cell_threads() != 2:
        pytest.skip("the C loops or torch's OpenMP runtime are not available: the cell runs on one thread")
    case = make_case(5, T=3, B=8, F=5, H=512, act="relu", scale=0.3)
    with torch.set_grad_enabled(grad):
        got = results(run_direction_native, *case) if grad else dict(
            zip(("output", "h_T", "c_T"), run_direction_native(*case), strict=True)
        )
    ((winner, seconds),) = measured("cell_split")
    assert set(seconds) == {"split", "one"} and winner in seconds
    want = reference_results("cell_split", case)
    assert_results_close(got, {k: want[k] for k in got}, rtol=1e-9, atol=1e-9, scaled=True)


@needs_extension
def test_the_policy_can_keep_the_cell_unsplit(monkeypatch, two_threads):
    """With measuring off, policy.CELL_SPLIT False gives the forward and backward loops one thread for the
    cell: the same bits as split."""
    if not c_loops_with_openmp() or native.cell_threads() != 2:
        pytest.skip("the C loops or torch's OpenMP runtime are not available: the cell runs on one thread")
    case = make_case(6, T=3, B=8, F=5, H=512, act="tanh", scale=0.3)
    threads: list[int] = []
    for loop, names in (("forward_loop", _extension.FORWARD_LOOP_PARAMETERS),
                        ("backward_loop", _extension.BACKWARD_LOOP_PARAMETERS)):
        original = getattr(_extension, loop)
        at = names.index("threads")
        monkeypatch.setattr(_extension, loop, lambda args, original=original, at=at: (
            threads.append(args[at]), original(args))[1])
    split = results(run_direction_native, *case)
    assert threads == [2, 2]
    monkeypatch.setattr(policy, "CELL_SPLIT", False)
    unsplit = results(run_direction_native, *case)
    assert threads == [2, 2, 1, 1]
    for name in split:
        assert torch.equal(split[name], unsplit[name]), name
