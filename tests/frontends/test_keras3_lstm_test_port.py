"""Keras 3's own LSTM tests, ported to the Keras door.

Source: keras-team/keras, ``keras/src/layers/rnn/lstm_test.py`` (commit 3422977a5e38, 2026-08-21). Expected
values and tolerances are copied as they are (``assertAllClose(..., atol=1e-5, rtol=1e-5)`` is
``np.testing.assert_allclose`` with the same atol and rtol). Translation: Keras tensors -> numpy in, torch
out; ``layers.LSTM`` -> ``unilstm.keras.LSTM``; ``initializers.Constant`` -> ``unilstm.keras.initializers``;
``layer(x, initial_state=..., mask=...)`` as in Keras.

Ported:
- ``test_basics``: each of its three ``run_layer_test`` cases, with the parts of ``run_layer_test`` the door
  has: the call with ``call_kwargs`` (``training=True``), the output shape, the numbers of trainable and
  non-trainable weights, the number of losses, the config round trip (``run_class_serialization_test``:
  ``from_config(get_config())`` gives the same config) and one SGD training step on ``sum(y_pred)``.
  Left out of it: ``supports_masking`` (a Keras ``Layer`` attribute the door does not have; it takes masks
  through ``mask=``), seed generators and mixed-precision policies (the door has neither; README).
- ``test_correctness`` (implementation 1 and 2): all five configurations (plain, ``go_backwards``,
  ``unroll``, ``unit_forget_bias=False``, ``use_bias=False``).
- ``test_statefulness``, ``test_pass_initial_state``, ``test_masking``: as they are.
- ``test_stateful_backward`` (Keras runs it on its torch backend only): a stateful layer's output
  backpropagates; on the CPU as in Keras's CPU run (its CUDA half spies on ``torch._VF.lstm``, Keras's own
  dispatch, and is left out).

Nothing else in the file.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unilstm.keras import LSTM, initializers


def assert_all_close(actual, desired, atol=1e-6, rtol=1e-6):
    """Keras's ``TestCase.assertAllClose`` (same defaults)."""
    actual = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    np.testing.assert_allclose(actual, desired, atol=atol, rtol=rtol)


def constant_lstm(units, **kwargs):
    return LSTM(
        units,
        kernel_initializer=initializers.Constant(0.01),
        recurrent_initializer=initializers.Constant(0.02),
        bias_initializer=initializers.Constant(0.03),
        **kwargs,
    )


def run_layer_test(
    init_kwargs,
    input_shape,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights,
    call_kwargs=None,
    expected_num_losses=None,
):
    """The parts of Keras's ``run_layer_test`` the door has (see the module docstring)."""
    call_kwargs = call_kwargs or {}
    layer = LSTM(**init_kwargs)
    again = LSTM.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    x = np.random.default_rng(0).standard_normal(input_shape).astype("float32")
    output = layer(x, **call_kwargs)
    assert tuple(output.shape) == expected_output_shape
    assert len(layer.trainable_weights) == expected_num_trainable_weights
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    if expected_num_losses is not None:
        assert len(layer.losses) == expected_num_losses
    # one training step (Keras: model.fit with SGD on the loss sum(y_pred))
    before = [w.detach().clone() for w in layer.trainable_weights]
    optimizer = torch.optim.SGD(layer.trainable_weights, lr=0.01)
    layer.train()
    loss = layer(x).sum() + sum(layer.losses)
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(b, w.detach()) for b, w in zip(before, layer.trainable_weights, strict=True))


def test_basics():
    run_layer_test(
        init_kwargs={"units": 3, "dropout": 0.5},
        input_shape=(3, 2, 4),
        call_kwargs={"training": True},
        expected_output_shape=(3, 3),
        expected_num_trainable_weights=3,
        expected_num_non_trainable_weights=0,
    )
    run_layer_test(
        init_kwargs={"units": 3, "dropout": 0.5, "recurrent_dropout": 0.5},
        input_shape=(3, 2, 4),
        call_kwargs={"training": True},
        expected_output_shape=(3, 3),
        expected_num_trainable_weights=3,
        expected_num_non_trainable_weights=0,
    )
    run_layer_test(
        init_kwargs={
            "units": 3,
            "return_sequences": True,
            "bias_regularizer": "l1",
            "kernel_regularizer": "l2",
            "recurrent_regularizer": "l2",
        },
        input_shape=(3, 2, 4),
        expected_output_shape=(3, 2, 3),
        expected_num_losses=3,
        expected_num_trainable_weights=3,
        expected_num_non_trainable_weights=0,
    )


@pytest.mark.parametrize("implementation", [1, 2])
def test_correctness(implementation):
    sequence = np.arange(72).reshape((3, 6, 4)).astype("float32")
    layer = constant_lstm(3, implementation=implementation)
    output = layer(sequence)
    assert_all_close(
        output,
        np.array(
            [
                [0.6288687, 0.6288687, 0.6288687],
                [0.86899155, 0.86899155, 0.86899155],
                [0.9460773, 0.9460773, 0.9460773],
            ]
        ),
        atol=1e-5,
        rtol=1e-5,
    )

    layer = constant_lstm(3, go_backwards=True, implementation=implementation)
    output = layer(sequence)
    assert_all_close(
        output,
        np.array(
            [
                [0.35622165, 0.35622165, 0.35622165],
                [0.74789524, 0.74789524, 0.74789524],
                [0.8872726, 0.8872726, 0.8872726],
            ]
        ),
        atol=1e-5,
        rtol=1e-5,
    )

    layer = constant_lstm(3, unroll=True, implementation=implementation)
    output = layer(sequence)
    assert_all_close(
        output,
        np.array(
            [
                [0.6288687, 0.6288687, 0.6288687],
                [0.86899155, 0.86899155, 0.86899155],
                [0.9460773, 0.9460773, 0.9460773],
            ]
        ),
        atol=1e-5,
        rtol=1e-5,
    )

    layer = constant_lstm(3, unit_forget_bias=False, implementation=implementation)
    output = layer(sequence)
    assert_all_close(
        output,
        np.array(
            [
                [0.57019705, 0.57019705, 0.57019705],
                [0.8661914, 0.8661914, 0.8661914],
                [0.9459622, 0.9459622, 0.9459622],
            ]
        ),
        atol=1e-5,
        rtol=1e-5,
    )

    layer = constant_lstm(3, use_bias=False, implementation=implementation)
    output = layer(sequence)
    assert_all_close(
        output,
        np.array(
            [
                [0.54986924, 0.54986924, 0.54986924],
                [0.86226785, 0.86226785, 0.86226785],
                [0.9443936, 0.9443936, 0.9443936],
            ]
        ),
        atol=1e-5,
        rtol=1e-5,
    )


def test_statefulness():
    sequence = np.arange(24).reshape((2, 3, 4)).astype("float32")
    layer = constant_lstm(4, stateful=True)
    layer(sequence)
    output = layer(sequence)
    assert_all_close(
        output,
        np.array(
            [
                [0.3124785, 0.3124785, 0.3124785, 0.3124785],
                [0.6863672, 0.6863672, 0.6863672, 0.6863672],
            ]
        ),
        atol=1e-5,
        rtol=1e-5,
    )
    layer.reset_state()
    layer(sequence)
    output = layer(sequence)
    assert_all_close(
        output,
        np.array(
            [
                [0.3124785, 0.3124785, 0.3124785, 0.3124785],
                [0.6863672, 0.6863672, 0.6863672, 0.6863672],
            ]
        ),
        atol=1e-5,
        rtol=1e-5,
    )


def test_pass_initial_state():
    sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
    initial_state = [
        np.arange(4).reshape((2, 2)).astype("float32"),
        np.arange(4).reshape((2, 2)).astype("float32"),
    ]
    layer = constant_lstm(2)
    output = layer(sequence, initial_state=initial_state)
    assert_all_close(
        output,
        np.array([[0.20574439, 0.3558822], [0.64930826, 0.66276]]),
        atol=1e-5,
        rtol=1e-5,
    )

    layer = constant_lstm(2, go_backwards=True)
    output = layer(sequence, initial_state=initial_state)
    assert_all_close(
        output,
        np.array([[0.13281618, 0.2790356], [0.5839337, 0.5992567]]),
        atol=1e-5,
        rtol=1e-5,
    )


def test_masking():
    sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
    mask = np.array([[True, True, True, False], [True, True, False, False]])
    layer = constant_lstm(2, unroll=True)
    output = layer(sequence, mask=mask)
    assert_all_close(
        output,
        np.array([[0.11755939, 0.11755939], [0.28556206, 0.28556206]]),
        atol=1e-5,
        rtol=1e-5,
    )

    layer = constant_lstm(2, return_sequences=True)
    output = layer(sequence, mask=mask)
    assert_all_close(
        output[0],
        np.array(
            [
                [0.01588910, 0.01588910],
                [0.05552048, 0.05552048],
                [0.11755939, 0.11755939],
                [0.11755939, 0.11755939],
            ]
        ),
        atol=1e-5,
        rtol=1e-5,
    )
    assert_all_close(
        output[1],
        np.array(
            [
                [0.14185596, 0.14185596],
                [0.28556206, 0.28556206],
                [0.28556206, 0.28556206],
                [0.28556206, 0.28556206],
            ]
        ),
        atol=1e-5,
        rtol=1e-5,
    )

    layer = constant_lstm(2, return_sequences=True, zero_output_for_mask=True)
    output = layer(sequence, mask=mask)
    assert_all_close(
        output[0],
        np.array(
            [
                [0.01588910, 0.01588910],
                [0.05552048, 0.05552048],
                [0.11755939, 0.11755939],
                [0.0, 0.0],
            ]
        ),
        atol=1e-5,
        rtol=1e-5,
    )
    assert_all_close(
        output[1],
        np.array(
            [
                [0.14185596, 0.14185596],
                [0.28556206, 0.28556206],
                [0.0, 0.0],
                [0.0, 0.0],
            ]
        ),
        atol=1e-5,
        rtol=1e-5,
    )

    backwards_mask = np.array([[False, True, True, True], [False, False, True, True]])
    layer = constant_lstm(2, go_backwards=True)
    output = layer(sequence, mask=backwards_mask)
    assert_all_close(
        output,
        np.array([[0.15341201, 0.15341201], [0.3844719, 0.3844719]]),
        atol=1e-5,
        rtol=1e-5,
    )


def test_stateful_backward():
    """Keras's torch-backend regression test (#23462): a stateful layer keeps its states after a call, and
    the call's output still backpropagates (the stored states must not be tensors autograd saved)."""
    inputs = torch.randn(2, 3, 4)
    layer = LSTM(5, stateful=True)
    layer(inputs).sum().backward()
    assert all(w.grad is not None for w in layer.trainable_weights)
    layer(inputs).sum().backward()  # the second call starts from the stored states
    assert all(torch.isfinite(w.grad).all() for w in layer.trainable_weights)
