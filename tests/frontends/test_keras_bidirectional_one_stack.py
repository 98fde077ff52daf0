"""Keras ``Bidirectional`` runs its two layers as one bidirectional stack where that computes exactly what the
two layers compute one after the other (Keras's own way, kept as ``one_stack = False``)."""

from __future__ import annotations

import copy

import pytest
import torch

from unilstm import layer as canonical
from unilstm.frontends import keras as keras_layer
from unilstm.frontends import keras_bidirectional
from unilstm.keras import LSTM, Bidirectional


def _pair(wrapper: Bidirectional) -> tuple[Bidirectional, Bidirectional]:
    separate = copy.deepcopy(wrapper)
    separate.one_stack = False
    return wrapper, separate


def _as_list(result) -> list[torch.Tensor]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _mask(batch: int, steps: int, kind: str) -> torch.Tensor | None:
    if kind == "none":
        return None
    lengths = torch.tensor([steps, 3, 1, 0][:batch])
    t = torch.arange(steps).unsqueeze(0)
    if kind == "right":
        return t < lengths.unsqueeze(1)
    return torch.rand(batch, steps, generator=torch.Generator().manual_seed(3)) > 0.4


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "right", "gaps"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_one_stack_equals_two_layers(merge_mode, return_sequences, mask_kind, activation):
    torch.manual_seed(0)
    inner = LSTM(5, activation=activation, return_sequences=return_sequences, return_state=True,
                 dtype="float64")
    wrapper = Bidirectional(inner, merge_mode=merge_mode)
    x = torch.randn(4, 6, 3, dtype=torch.float64, requires_grad=True)
    wrapper.build(tuple(x.shape))
    one, two = _pair(wrapper)
    mask = _mask(4, 6, mask_kind)
    state = [torch.randn(4, 5, dtype=torch.float64) for _ in range(4)]
    results = []
    for layer in (one, two):
        out = _as_list(layer(x, initial_state=state, mask=mask))
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in out)
        grads = torch.autograd.grad(loss, [x, *layer.parameters()])
        results.append(out + list(grads))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


def test_one_stack_is_one_engine_call(monkeypatch):
    calls = []
    original = canonical.compute_stack
    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(keras_bidirectional, "compute_stack", counting)
    monkeypatch.setattr(keras_layer, "compute_stack", counting)
    wrapper = Bidirectional(LSTM(4, return_sequences=True))
    wrapper(torch.randn(2, 5, 3))
    assert len(calls) == 1 and calls[0].bidirectional
    wrapper.one_stack = False
    calls.clear()
    wrapper(torch.randn(2, 5, 3))
    assert len(calls) == 2 and not calls[0].bidirectional


def test_time_major_and_stateful_keep_their_states():
    torch.manual_seed(1)
    wrapper = Bidirectional(LSTM(3, return_sequences=True, stateful=True, time_major=True))
    wrapper.build((5, 2, 4))
    one, two = _pair(wrapper)
    for _ in range(2):  # the second call starts from the stored states
        x = torch.randn(5, 2, 4)
        torch.testing.assert_close(one(x), two(x), atol=1e-6, rtol=1e-5)
        for a, b in zip(one.states, two.states, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_training_dropout_from_the_global_generator_draws_the_same_masks():
    wrapper = Bidirectional(LSTM(4, dropout=0.3, recurrent_dropout=0.2, return_sequences=True))
    wrapper.build((3, 6, 2))
    one, two = _pair(wrapper)
    assert one._one_stack_spec(True) is not None
    x = torch.randn(3, 6, 2)
    torch.manual_seed(7)
    a = one(x, training=True)
    torch.manual_seed(7)
    b = two(x, training=True)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_layers_that_cannot_share_a_stack_run_one_after_the_other():
    seeded = Bidirectional(LSTM(4, dropout=0.3, seed=5))
    seeded.build((2, 3, 2))
    assert seeded._one_stack_spec(True) is None and seeded._one_stack_spec(False) is not None
    different = Bidirectional(LSTM(4), backward_layer=LSTM(4, activation="relu", go_backwards=True))
    different.build((2, 3, 2))
    assert different._one_stack_spec(False) is None
    regularized = Bidirectional(LSTM(4, activity_regularizer="l2"))
    regularized.build((2, 3, 2))
    assert regularized._one_stack_spec(False) is None
