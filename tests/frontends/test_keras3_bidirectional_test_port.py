"""Keras 3's own Bidirectional tests, ported to the Keras door.

Source: keras-team/keras, ``keras/src/layers/rnn/bidirectional_test.py`` (commit 3422977a5e38,
2026-08-21). Expected values and tolerances are copied as they are (``assertAllClose`` with Keras's defaults,
atol = rtol = 1e-6, unless the test gives others). Translation: numpy in, torch out;
``layers.Bidirectional`` / ``layers.LSTM`` -> ``unilstm.keras``.

Ported:
- ``test_statefulness``, ``test_pass_initial_state``, ``test_return_state``, ``test_output_shape``: as they
  are (LSTM only in the source).
- ``test_keeps_use_cudnn``: its LSTM loop (the door has no GRU or SimpleRNN).
- ``test_fused_lstm_matches_unfused``: ``use_cudnn=False`` against ``"auto"`` with the same weights (the door
  computes both on its one engine; Keras on its fused path where the backend has one).
- ``test_basics``: adapted, it wraps ``SimpleRNN(4)`` in Keras; here ``LSTM(4)`` with the same arguments
  and checks (output shape, 6 trainable and 0 non-trainable weights, config round trip), ``supports_masking``
  left out (a Keras ``Layer`` attribute the door does not have; it takes masks through ``mask=``).

Left out:
- ``test_correctness`` and ``test_masking``: SimpleRNN and GRU only, whose numbers the door cannot produce.
- ``test_fused_lstm_eligibility``: Keras's private ``_can_attempt_fused_lstm`` (its backend dispatch); the
  door's counterpart, running both layers as one stack, is tested in test_keras_bidirectional_one_stack.py.
- ``test_fused_gru_eligibility``, ``test_fused_gru_matches_unfused``,
  ``test_torch_cudnn_bidirectional_gru_dispatch_fires``: GRU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unilstm.keras import LSTM, Bidirectional, initializers


def assert_all_close(actual, desired, atol=1e-6, rtol=1e-6):
    """Keras's ``TestCase.assertAllClose`` (same defaults); either side may be a torch tensor."""

    def as_numpy(value):
        return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)

    np.testing.assert_allclose(as_numpy(actual), as_numpy(desired), atol=atol, rtol=rtol)


def constant_lstm(units, **kwargs):
    return LSTM(
        units,
        kernel_initializer=initializers.Constant(0.01),
        recurrent_initializer=initializers.Constant(0.02),
        bias_initializer=initializers.Constant(0.03),
        **kwargs,
    )


@pytest.mark.parametrize(
    "init_kwargs, expected_output_shape",
    [
        (lambda: {"layer": LSTM(4)}, (3, 8)),
        (
            lambda: {"layer": LSTM(4), "backward_layer": LSTM(4, go_backwards=True), "merge_mode": "sum"},
            (3, 4),
        ),
    ],
)
def test_basics_adapted_to_lstm(init_kwargs, expected_output_shape):
    layer = Bidirectional(**init_kwargs())
    again = Bidirectional.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype("float32")
    output = layer(x)
    assert tuple(output.shape) == expected_output_shape
    assert len(layer.trainable_weights) == 6
    assert len(layer.non_trainable_weights) == 0
    before = [w.detach().clone() for w in layer.trainable_weights]
    optimizer = torch.optim.SGD(layer.trainable_weights, lr=0.01)
    layer(x, training=True).sum().backward()
    optimizer.step()
    assert all(not torch.equal(b, w.detach()) for b, w in zip(before, layer.trainable_weights, strict=True))


def test_statefulness():
    sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
    forward_layer = constant_lstm(2, stateful=True)
    layer = Bidirectional(layer=forward_layer)
    layer(sequence)
    output = layer(sequence)
    assert_all_close(
        np.array(
            [
                [0.26234663, 0.26234663, 0.16959146, 0.16959146],
                [0.6137073, 0.6137073, 0.5381646, 0.5381646],
            ]
        ),
        output,
    )
    layer.reset_state()
    layer(sequence)
    output = layer(sequence)
    assert_all_close(
        np.array(
            [
                [0.26234663, 0.26234663, 0.16959146, 0.16959146],
                [0.6137073, 0.6137073, 0.5381646, 0.5381646],
            ]
        ),
        output,
    )


def test_pass_initial_state():
    sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
    initial_state = [
        np.arange(4).reshape((2, 2)).astype("float32") * 1,
        np.arange(4).reshape((2, 2)).astype("float32") * 2,
        np.arange(4).reshape((2, 2)).astype("float32") * 3,
        np.arange(4).reshape((2, 2)).astype("float32") * 4,
    ]
    forward_layer = constant_lstm(2)
    layer = Bidirectional(layer=forward_layer)
    output = layer(sequence, initial_state=initial_state)
    assert_all_close(
        np.array(
            [
                [0.20794602, 0.4577124, 0.14046375, 0.48191673],
                [0.6682636, 0.6711909, 0.60943645, 0.60950446],
            ]
        ),
        output,
    )


def test_return_state():
    sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
    forward_layer = constant_lstm(2, return_state=True)
    layer = Bidirectional(layer=forward_layer)
    output, h1, c1, h2, c2 = layer(sequence)
    assert_all_close(
        np.array(
            [
                [0.1990008, 0.1990008, 0.12659755, 0.12659755],
                [0.52335435, 0.52335435, 0.44717982, 0.44717982],
            ]
        ),
        output,
    )
    assert_all_close(np.array([[0.1990008, 0.1990008], [0.52335435, 0.52335435]]), h1)
    assert_all_close(np.array([[0.35567185, 0.35567185], [1.0492687, 1.0492687]]), c1)
    assert_all_close(np.array([[0.12659755, 0.12659755], [0.44717982, 0.44717982]]), h2)
    assert_all_close(np.array([[0.2501858, 0.2501858], [0.941473, 0.941473]]), c2)


def test_output_shape():
    x = np.array([[[101, 202], [303, 404]]])
    for merge_mode in ["ave", "concat", "mul", "sum", None]:
        sub_layer = LSTM(2, return_state=True)
        layer = Bidirectional(sub_layer, merge_mode=merge_mode)
        output = layer(x)
        output_shape = layer.compute_output_shape(x.shape)
        for out, shape in zip(output, output_shape, strict=False):
            assert tuple(out.shape) == shape

    for merge_mode in ["concat", "ave", "mul", "sum"]:
        sub_layer = LSTM(2, return_state=False)
        layer = Bidirectional(sub_layer, merge_mode=merge_mode)
        output = layer(x)
        output_shape = layer.compute_output_shape(x.shape)
        assert tuple(output.shape) == output_shape

    # return_state=False & merge_mode=None
    sub_layer = LSTM(2, return_state=False)
    layer = Bidirectional(sub_layer, merge_mode=None)
    output = layer(x)
    output_shape = layer.compute_output_shape(x.shape)
    for out, shape in zip(output, output_shape, strict=False):
        assert tuple(out.shape) == shape


def test_keeps_use_cudnn():
    """Guards issue 13 item 7: the layers made from ``layer``'s config lost ``use_cudnn`` (it is not in a
    config) and fell back to "auto"."""
    for use_cudnn in [True, False, "auto"]:
        rnn = LSTM(1, use_cudnn=use_cudnn)
        bidi = Bidirectional(rnn)
        assert bidi.forward_layer.use_cudnn == use_cudnn
        assert bidi.backward_layer.use_cudnn == use_cudnn


def test_fused_lstm_matches_unfused():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6, 4)).astype("float32")

    def build(use_cudnn):
        layer = Bidirectional(
            LSTM(
                5,
                use_cudnn=use_cudnn,
                return_sequences=True,
                kernel_initializer=initializers.GlorotUniform(seed=1),
                recurrent_initializer=initializers.Orthogonal(seed=2),
            )
        )
        layer.build(x.shape)
        return layer

    ref = build(use_cudnn=False)
    fused = build(use_cudnn="auto")
    with torch.no_grad():
        for rv, fv in zip(ref.weights, fused.weights, strict=True):
            fv.copy_(rv)

    assert_all_close(ref(x), fused(x), atol=1e-5)
