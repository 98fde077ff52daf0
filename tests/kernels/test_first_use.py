"""Kernel choices measured at first use (kernels/first_use.py): CPU inference of standard cells runs torch's
fused kernel or the native kernel, whichever measured faster for that kind of call on this processor."""

from __future__ import annotations

import pytest
import torch

import unilstm
from unilstm.kernels import dispatch, first_use
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
