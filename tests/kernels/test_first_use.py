"""Kernel choices measured at first use (kernels/first_use.py): CPU inference of standard cells runs torch's
fused kernel or the native kernel, whichever measured faster for that kind of call on this processor."""

from __future__ import annotations

import pytest
import torch

import unilstm
from unilstm.kernels import dispatch, first_use, policy
from unilstm.kernels import native as native_kernels


@pytest.fixture
def measuring(monkeypatch):
    monkeypatch.setenv(first_use.CHOICE_ENV, "measure")
    first_use.forget()
    yield
    first_use.forget()


def test_the_first_call_measures_both_kernels_and_later_calls_reuse_the_winner(measuring, monkeypatch):
    """One choice per kind of call, made from both kernels' timings; the result equals the other kernel's."""
    if not native_kernels.available():
        pytest.skip("the native kernel is not built")
    layer = unilstm.LSTM(8, 16, num_layers=2, bidirectional=True).eval()
    x = torch.randn(20, 4, 8)
    with torch.no_grad():
        first = layer(x)[0]
        measured = first_use.winners()
        assert len(measured) == 1
        ((winner, timings),) = measured.values()
        assert set(timings) == {"torch_fused", "native"} and winner in timings
        assert all(seconds > 0 for seconds in timings.values())
        calls = []
        original = dispatch._run_layer_by_layer
        monkeypatch.setattr(dispatch, "_run_layer_by_layer", lambda *a: calls.append(1) or original(*a))
        second = layer(x)[0]
    assert len(first_use.winners()) == 1
    assert len(calls) == (1 if winner == "native" else 0)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    with torch.no_grad():
        dispatch.force_kernel("native")
        try:
            torch.testing.assert_close(layer(x)[0], first, rtol=1e-5, atol=1e-6)
        finally:
            dispatch.force_kernel(None)


def test_a_new_kind_of_call_is_measured_again(measuring):
    if not native_kernels.available():
        pytest.skip("the native kernel is not built")
    layer = unilstm.LSTM(8, 16).eval()
    with torch.no_grad():
        layer(torch.randn(10, 4, 8))
        layer(torch.randn(12, 4, 8))  # the same power-of-two bucket of steps
        assert len(first_use.winners()) == 1
        layer(torch.randn(100, 4, 8))
    assert len(first_use.winners()) == 2


def test_training_and_autograd_are_never_measured(measuring):
    layer = unilstm.LSTM(8, 16)
    layer(torch.randn(10, 4, 8))[0].sum().backward()
    with torch.no_grad():
        unilstm.LSTM(8, 16, dropout=0.5, num_layers=2).train()(torch.randn(10, 4, 8))
    assert first_use.winners() == {}


def test_training_mode_without_draws_is_measured_as_inference(measuring):
    """A layer left in training mode with nothing to draw (no dropout, no zoneout) computes the inference
    numbers, so its no-grad calls take the measured choice too."""
    if not native_kernels.available():
        pytest.skip("the native kernel is not built")
    layer = unilstm.LSTM(8, 16, dropout=0.5)  # one layer: the dropout between layers draws nothing
    assert layer.training and not layer.spec.draws_in_training
    x = torch.randn(10, 4, 8)
    with torch.no_grad():
        in_training_mode = layer(x)[0]
        assert len(first_use.winners()) == 1
        torch.testing.assert_close(layer.eval()(x)[0], in_training_mode, rtol=0, atol=0)


def test_a_mask_with_gaps_uses_the_kernel_that_computes_it():
    """torch's fused kernel cannot compute a mask with gaps; the other candidate does, and nothing is chosen
    from that call."""
    first_use.forget()
    calls = {"fused": 0, "native": 0}

    def fused():
        calls["fused"] += 1
        return None

    def native():
        calls["native"] += 1
        return "native result"

    assert first_use.fastest("kind", {"torch_fused": fused, "native": native}) == "native result"
    assert first_use.winners() == {}
    assert calls == {"fused": 1, "native": 1}


def test_policy_turns_measuring_off(monkeypatch):
    monkeypatch.setenv(first_use.CHOICE_ENV, "policy")
    first_use.forget()
    with torch.no_grad():
        unilstm.LSTM(8, 16).eval()(torch.randn(10, 4, 8))
    assert first_use.winners() == {}
    assert not first_use.measuring()


# -- the input projection's GEMM route (native/_blas.projection_route) -------------------------------------


def _direction_case(dtype: torch.dtype, T: int = 7, B: int = 3, F: int = 5, H: int = 4):  # noqa: N803
    from unilstm.kernels.reference import DirectionRun, DirectionWeights

    generator = torch.Generator().manual_seed(1)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator, dtype=dtype) * 0.5).requires_grad_()

    weights = DirectionWeights(rand(4 * H, F), rand(4 * H, H), rand(4 * H), rand(4 * H), None)
    run = DirectionRun(torch.relu, torch.sigmoid, None, False, True)
    return rand(T, B, F), rand(B, H), rand(B, H), weights, run


def _results(kernel, case) -> list[torch.Tensor]:
    x, h0, c0, weights, run = case
    out, h, c = kernel(x, h0, c0, weights, run)
    leaves = [x, h0, c0, weights.w_ih, weights.w_hh, weights.b_ih, weights.b_hh]
    return [out, h, c, *torch.autograd.grad((out * out).sum() + h.sum() + c.sum(), leaves)]


@pytest.mark.parametrize("route", ["c_gemm", "torch_mm", "onednn"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_projection_route_equals_the_reference(route, dtype, monkeypatch):
    """The route the policy names (deterministic without measuring) computes what the reference loop
    computes, forward and every gradient: float64 within 1e-10 (oneDNN, float32 only, falls back to torch's
    addmm there), float32 within 1e-5."""
    from unilstm.kernels import policy
    from unilstm.kernels.native import _blas, _loops
    from unilstm.kernels.reference import run_direction_reference

    if not native_kernels.available() or not _blas.blas_gemm(dtype):
        pytest.skip("the native C loop is not built")
    monkeypatch.setenv(first_use.CHOICE_ENV, "policy")
    monkeypatch.setattr(policy, "INPUT_PROJECTION_ROUTE", route)
    case = _direction_case(dtype)
    chosen = _blas.projection_route(case[0], case[3].w_ih, case[3].b_ih, case[3].b_hh)
    assert chosen == ("torch_mm" if route == "onednn" and not _blas._onednn_available(dtype) else route)
    got = _results(_loops.run_direction_native, case)
    want = _results(run_direction_reference, case)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance)


def test_the_projection_route_is_measured_once_per_kind_and_reused(measuring, monkeypatch):
    from unilstm.kernels.native import _blas

    if not native_kernels.available() or not _blas.blas_gemm(torch.float32):
        pytest.skip("the native C loop is not built")
    layer = unilstm.LSTM(8, 16, activation="relu").eval()  # not a standard cell: the native kernel runs
    # (with autograd: inference measures whole forwards instead, _blas.inference_route)
    with torch.enable_grad():
        first = layer(torch.ones(10, 4, 8))[0]
        # (with two threads the batch halves are measured too, their products another kind)
        measured = projection_routes()
        whole = [found for kind, found in measured.items() if kind[2] == (10 * 4).bit_length()]
        assert len(whole) == 1
        ((winner, timings),) = whole
        assert winner in timings and {"c_gemm", "torch_mm"} <= set(timings) <= set(_blas.PROJECTION_ROUTES)
        made = []
        original = _blas._projection_candidates
        monkeypatch.setattr(_blas, "_projection_candidates", lambda *a: made.append(1) or original(*a))
        second = layer(torch.ones(12, 4, 8))[0]  # the same kind: no new measurement
        assert made == [] and projection_routes() == measured
        layer(torch.ones(100, 4, 8))  # a new kind of product
    assert made and len(projection_routes()) > len(measured)
    torch.testing.assert_close(second[:10], first, rtol=0, atol=0)


def projection_routes() -> dict:
    """The input projection's measured routes (first_use.routes() also holds the loops' gemm choices)."""
    return {kind: found for kind, found in first_use.routes().items() if kind[0] == "projection"}


def test_route_picks_the_fastest_candidate_and_policy_mode_measures_nothing(monkeypatch):
    import time

    first_use.forget()
    made = []

    def candidates():
        made.append(1)
        return {"slow": lambda: time.sleep(0.004), "fast": lambda: None}

    monkeypatch.setenv(first_use.CHOICE_ENV, "policy")
    assert first_use.route("kind", candidates, "slow") == "slow"
    assert made == [] and first_use.routes() == {}
    monkeypatch.setenv(first_use.CHOICE_ENV, "measure")
    assert first_use.route("kind", candidates, "slow") == "fast"
    assert first_use.route("kind", candidates, "slow") == "fast"
    assert made == [1]
    ((winner, timings),) = first_use.routes().values()
    assert winner == "fast" and timings["slow"] > timings["fast"]
    first_use.forget()


def test_measuring_follows_the_variable_as_it_changes(monkeypatch):
    """measuring() reads os.environ's own table (it runs several times per call): every change through
    os.environ is seen at the next call."""
    for value, expected in (("policy", False), ("measure", True), (" Policy ", False), ("", True)):
        monkeypatch.setenv(first_use.CHOICE_ENV, value)
        assert first_use.measuring() is expected, value
    monkeypatch.delenv(first_use.CHOICE_ENV)
    assert first_use.measuring() is True


def test_tiny_candidates_are_timed_in_more_rounds(measuring):
    """Candidates that take microseconds run in policy.FIRST_USE_TINY_ROUNDS interleaved rounds after their
    warm-up run; the fastest round of each is kept."""
    calls = {"a": 0, "b": 0}

    def count(name):
        def run():
            calls[name] += 1

        return run

    chosen = first_use.route(("tiny rounds",), lambda: {"a": count("a"), "b": count("b")}, "a")
    assert chosen in calls
    assert calls == {"a": 1 + policy.FIRST_USE_TINY_ROUNDS, "b": 1 + policy.FIRST_USE_TINY_ROUNDS}
