"""unilstm.keras.LSTMCell against real Keras 3.15 and tf-keras 2.21 LSTMCells: states and gradients over one
to five steps, configs both ways (tests/fixtures/keras/cell_*.npz, written by
tools/fixtures/make_keras_cell_fixtures.py), and Keras's dropout-mask keeping."""

from __future__ import annotations

import copy
import json
import pathlib

import numpy as np
import pytest
import torch

from unilstm.keras import LSTM, LSTMCell
from unilstm.kernels import dispatch, force_kernel

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "keras"
CASES = sorted(p.stem.removeprefix("cell_") for p in FIXTURES.glob("cell_k*.npz"))
STATE_TOLERANCE, GRAD_TOLERANCE = 1e-6, 3e-6  # measured at most 2.4e-7 and 7.2e-7


@pytest.fixture(params=["dispatch", *(entry[0] for entry in dispatch.DIRECTION_KERNELS)])
def kernel(request):
    """The default dispatch, then every registered direction kernel forced (the reference loop included)."""
    force_kernel(None if request.param == "dispatch" else request.param)
    yield request.param
    force_kernel(None)


def cell_from_fixture(data) -> LSTMCell:
    cell = LSTMCell.from_config(json.loads(str(data["config"])), keras2=str(data["keras"]) == "2")
    count = sum(1 for key in data.files if key.startswith("weights_"))
    cell.set_weights([data[f"weights_{i}"] for i in range(count)])
    return cell


def test_fixtures_cover_both_kerases() -> None:
    assert {case[:2] for case in CASES} == {"k2", "k3"} and len(CASES) >= 6


@pytest.mark.parametrize("case", CASES)
def test_states_and_gradients_match_keras(case: str, kernel: str) -> None:
    data = np.load(FIXTURES / f"cell_{case}.npz")
    cell = cell_from_fixture(data)
    x = torch.from_numpy(data["x"]).requires_grad_()
    h0 = torch.from_numpy(data["h0"]).requires_grad_()
    c0 = torch.from_numpy(data["c0"]).requires_grad_()
    h, c = h0, c0
    hs, cs = [], []
    for step in x:
        output, (h, c) = cell(step, [h, c])
        assert output is h
        hs.append(h)
        cs.append(c)
    got_h, got_c = torch.stack(hs), torch.stack(cs)
    for got, name in ((got_h, "h"), (got_c, "c")):
        difference = float((got.detach() - torch.from_numpy(data[name])).abs().max())
        assert difference <= STATE_TOLERANCE, (name, difference)
    loss = (got_h * torch.from_numpy(data["w_h"])).sum() + (got_c * torch.from_numpy(data["w_c"])).sum()
    grads = torch.autograd.grad(loss, [x, h0, c0, *cell.weights])
    keys = ["grad_x", "grad_h0", "grad_c0", *(f"grad_w_{i}" for i in range(len(cell.weights)))]
    for key, grad in zip(keys, grads, strict=True):
        difference = float((grad - torch.from_numpy(data[key])).abs().max())
        assert difference <= GRAD_TOLERANCE, (key, difference)


@pytest.mark.parametrize("case", CASES)
def test_config_round_trips_as_keras_wrote_it(case: str) -> None:
    data = np.load(FIXTURES / f"cell_{case}.npz")
    config = json.loads(str(data["config"]))
    assert cell_from_fixture(data).get_config() == config


def test_the_cell_step_by_step_equals_the_keras_lstm_door() -> None:
    cell = LSTMCell(4, activation="relu")
    x = torch.randn(3, 6, 5)
    h = c = torch.zeros(3, 4)
    for t in range(6):
        _, (h, c) = cell(x[:, t], [h, c])
    layer = LSTM(4, activation="relu", return_state=True)
    layer.build((None, None, 5))
    layer.set_weights(cell.get_weights())
    _, h_n, c_n = layer(x)
    assert float((h - h_n).detach().abs().max()) < 1e-6 and float((c - c_n).detach().abs().max()) < 1e-6


def test_keras_keeps_dropout_masks_until_reset() -> None:
    """What Keras 3 did (cell_dropout.npz): the same masks at every training call until both resets; none in
    inference. The cell here does the same with its own masks."""
    data = np.load(FIXTURES / "cell_dropout.npz")
    assert np.array_equal(data["first_h"], data["second_h"])
    assert not np.array_equal(data["first_h"], data["reset_h"])
    cell = cell_from_fixture(data)
    x, states = data["x"], [data["h0"], data["c0"]]
    first, _ = cell(x, states, training=True)
    second, _ = cell(x, states, training=True)
    assert torch.equal(first, second)
    cell.reset_dropout_mask()
    cell.reset_recurrent_dropout_mask()
    reset, _ = cell(x, states, training=True)
    assert not torch.equal(first, reset)
    evaluated, _ = cell(x, states)  # the cell starts in eval mode: no dropout
    assert float((evaluated - torch.from_numpy(data["eval_h"])).detach().abs().max()) <= STATE_TOLERANCE


def test_dropout_masks_drop_and_scale_like_keras() -> None:
    """dropout=rate on the input alone: each input feature is kept (scaled by 1 / (1 - rate)) or dropped; the
    step equals the dropout-free step on the masked input for one of those masks."""
    torch.manual_seed(0)
    cell = LSTMCell(3, dropout=0.5, seed=11)
    x, h, c = torch.randn(2, 4), torch.randn(2, 3), torch.randn(2, 3)
    got, _ = cell(x, [h, c], training=True)
    plain = LSTMCell(3)
    plain.set_weights(cell.get_weights())
    matches = 0
    for bits in range(2 ** 8):
        keep = torch.tensor([(bits >> i) & 1 for i in range(8)], dtype=torch.float32).reshape(2, 4)
        want, _ = plain(x * keep * 2.0, [h, c])
        matches += bool(torch.allclose(got, want, atol=1e-6))
    assert matches >= 1


def test_signature_positional_arguments_and_layer_only_arguments() -> None:
    cell = LSTMCell(3, "relu", "sigmoid", False)
    assert cell.units == 3 and cell.use_bias is False and cell.get_config()["activation"] == "relu"
    assert cell.state_size == [3, 3] and cell.output_size == 3
    assert cell.name.startswith("lstm_cell")
    with pytest.raises(ValueError, match="Unrecognized keyword arguments passed to LSTMCell"):
        LSTMCell(3, return_sequences=True)
    with pytest.raises(TypeError, match="multiple values for argument 'activation'"):
        LSTMCell(3, "relu", activation="tanh")
    with pytest.raises(ValueError, match="activity_regularizer"):
        LSTMCell(3, activity_regularizer="l2")


def test_shape_errors_name_the_layer() -> None:
    cell = LSTMCell(3)
    cell(np.zeros((2, 4), np.float32), [np.zeros((2, 3), np.float32)] * 2)
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 4"):
        cell(np.zeros((2, 5), np.float32), [np.zeros((2, 3), np.float32)] * 2)
    with pytest.raises(ValueError, match="expected ndim=2"):
        cell(np.zeros((1, 2, 4), np.float32), [np.zeros((2, 3), np.float32)] * 2)
    with pytest.raises(ValueError, match=r"expected shape \(2, 3\)"):
        cell(np.zeros((2, 4), np.float32), [np.zeros((2, 5), np.float32)] * 2)


def test_deep_copy_LSTM() -> None:  # noqa: N802 - tf-keras's test name
    """Ported from tf-keras 2.21 lstm_test.py (LSTMLayerTest.test_deep_copy_LSTM), which the Keras door's port
    left out for want of an LSTMCell."""
    cell = LSTMCell(5)
    copied_cell = copy.deepcopy(cell)
    assert copied_cell.units == 5
    assert cell.get_config() == copied_cell.get_config()
