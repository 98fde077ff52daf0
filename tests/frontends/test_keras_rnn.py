"""unilstm.keras.RNN and StackedRNNCells against real Keras 3.15 and tf-keras 2.21
(tests/fixtures/keras/rnn_*.npz, written by tools/fixtures/make_keras_rnn_fixtures.py): outputs, returned
structure and gradients of ``RNN(LSTMCell)`` and ``RNN([LSTMCell, LSTMCell])`` with masks, go_backwards,
return_state and initial states, on both roads (the whole sequence through the engine, and step by step
through the cell), which are also checked equal to each other; plus tf-keras's
``LSTMLayerTest.test_masking_with_stacking_LSTM``, ported."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from unilstm.keras import LSTM, RNN, LSTMCell, StackedRNNCells

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "keras"
CASES = sorted(p.stem.removeprefix("rnn_") for p in FIXTURES.glob("rnn_*.npz"))
OUTPUT_TOLERANCE, GRAD_TOLERANCE = 1e-6, 3e-6  # measured at most 1.8e-7 and 6.2e-7 (relative)
ROADS = ["whole", "steps"]


@pytest.fixture(params=ROADS)
def road(request, monkeypatch):
    """Both roads: the default (the whole sequence through the engine where it can), and step by step."""
    if request.param == "steps":
        monkeypatch.setattr(RNN, "uses_whole_sequence", lambda self, training=None: False)
    return request.param


def structure(value):
    if isinstance(value, (list, tuple)):
        return {"list": [structure(v) for v in value]}
    return list(value.shape)


def flatten(value) -> list:
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in flatten(v)]
    return [value]


def layer_from_fixture(data) -> tuple[RNN, list[LSTMCell]]:
    layer = RNN.from_config(json.loads(str(data["config"])))  # tf-keras's configs: read as tf-keras's
    cells = layer.cell.cells if isinstance(layer.cell, StackedRNNCells) else [layer.cell]
    assert [cell.units for cell in cells] == [int(u) for u in data["units"]]
    for j, cell in enumerate(cells):
        count = sum(1 for key in data.files if key.startswith(f"cell{j}_weights_"))
        cell.set_weights([data[f"cell{j}_weights_{i}"] for i in range(count)])
    return layer, cells


def without_build_config(config):
    """A config as Keras wrote it, less ``build_config`` (Keras's record of build shapes)."""
    if isinstance(config, dict):
        return {k: without_build_config(v) for k, v in config.items() if k != "build_config"}
    if isinstance(config, list):
        return [without_build_config(v) for v in config]
    return config


@pytest.mark.parametrize("case", CASES)
def test_config_round_trips_as_keras_wrote_it(case: str) -> None:
    config = json.loads(str(np.load(FIXTURES / f"rnn_{case}.npz")["config"]))
    layer = RNN.from_config(config)
    assert layer.get_config() == without_build_config(config)
    assert isinstance(layer.cell, StackedRNNCells) == ("StackedRNNCells" in json.dumps(config))


def test_fixtures_cover_what_the_task_names() -> None:
    names = " ".join(CASES)
    assert {case[:2] for case in CASES} == {"k2", "k3"}
    for feature in ("single", "stacked", "mask", "backwards", "state", "init", "zero"):
        assert feature in names, feature


@pytest.mark.parametrize("case", CASES)
def test_outputs_states_and_gradients_match_keras(case: str, road: str) -> None:
    data = np.load(FIXTURES / f"rnn_{case}.npz")
    layer, cells = layer_from_fixture(data)
    x = torch.from_numpy(data["x"]).requires_grad_()
    inits = [torch.from_numpy(data[f"init_{k}"]).requires_grad_() for k in range(4) if f"init_{k}" in data]
    kwargs = {}
    if "mask" in data:
        kwargs["mask"] = torch.from_numpy(data["mask"])
    if inits:
        kwargs["initial_state"] = (
            [inits[2 * j: 2 * j + 2] for j in range(len(cells))] if bool(data["stacked"]) else inits
        )
    assert layer.uses_whole_sequence() == (road == "whole")
    result = layer(x, **kwargs)
    assert structure(result) == json.loads(str(data["structure"]))
    outs = flatten(result)
    for k, out in enumerate(outs):
        difference = float((out.detach() - torch.from_numpy(data[f"out_{k}"])).abs().max())
        assert difference <= OUTPUT_TOLERANCE, (k, difference)
    loss = sum((out * torch.from_numpy(data[f"cot_{k}"])).sum() for k, out in enumerate(outs))
    weights = [w for cell in cells for w in cell.trainable_weights]
    grads = torch.autograd.grad(loss, [x, *inits, *weights])
    keys = ["grad_x", *(f"grad_init_{k}" for k in range(len(inits)))]
    keys += [f"grad_cell{j}_w_{i}" for j, c in enumerate(cells) for i in range(len(c.trainable_weights))]
    for key, grad in zip(keys, grads, strict=True):
        expected = torch.from_numpy(data[key])
        difference = float((grad - expected).abs().max() / max(1.0, float(expected.abs().max())))
        assert difference <= GRAD_TOLERANCE, (key, difference)


# -- the two roads compute the same function -------------------------------------------------------------
@pytest.mark.parametrize(
    "units, options",
    [
        (6, dict(return_sequences=True, return_state=True)),
        (6, dict(return_sequences=True, go_backwards=True, zero_output_for_mask=True)),
        ([5, 4, 3], dict(return_sequences=True, return_state=True, go_backwards=True)),
        ([5, 3], dict(return_state=True, zero_output_for_mask=True)),
    ],
)
def test_whole_sequence_equals_the_step_loop(units, options, monkeypatch) -> None:
    torch.manual_seed(3)
    stacked = isinstance(units, list)
    cells = [LSTMCell(u, dtype="float64", activation="relu") for u in (units if stacked else [units])]
    layer = RNN(cells if stacked else cells[0], **options)
    x = torch.randn(4, 7, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(4, 7) > 0.4
    mask[3] = False  # a fully masked row: zeros out, initial states kept
    state = [torch.randn(4, u, dtype=torch.float64) for u in (units if stacked else [units]) for _ in "hc"]

    def run():
        result = flatten(layer(x, initial_state=state, mask=mask))
        loss = sum((r * torch.linspace(-1, 1, r.numel(), dtype=r.dtype).view_as(r)).sum() for r in result)
        return [r.detach() for r in result], torch.autograd.grad(loss, [x, *layer.trainable_weights])

    assert layer.uses_whole_sequence()
    whole = run()
    monkeypatch.setattr(RNN, "uses_whole_sequence", lambda self, training=None: False)
    steps = run()
    for got, expected in zip(flatten(list(steps)), flatten(list(whole)), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_rnn_over_a_cell_equals_the_lstm_layer() -> None:
    cell = LSTMCell(5)
    layer = RNN(cell, return_sequences=True, return_state=True, go_backwards=True)
    x = torch.randn(3, 6, 4)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    out, h, c = layer(x, mask=mask)
    lstm = LSTM(5, return_sequences=True, return_state=True, go_backwards=True)
    lstm.build((None, None, 4))
    lstm.set_weights(cell.get_weights())
    expected = lstm(x, mask=mask)
    for got, want in zip((out, h, c), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_dropout_in_training_runs_step_by_step_with_masks_kept_for_the_sequence() -> None:
    cell = LSTMCell(4, dropout=0.5, recurrent_dropout=0.5, seed=1)
    layer = RNN(cell, return_sequences=True, return_state=True)
    x = torch.randn(2, 5, 3)
    layer.train()
    assert not layer.uses_whole_sequence()
    out, h, c = layer(x)
    assert cell._mask_seed is None  # reset after the sequence, as Keras: the next call draws new masks
    # Keras's loop by hand on a twin cell (same seed, same weights): one mask period for all five steps
    twin = LSTMCell(4, dropout=0.5, recurrent_dropout=0.5, seed=1)
    twin.build((None, 3))
    twin.set_weights(cell.get_weights())
    states = [torch.zeros(2, 4), torch.zeros(2, 4)]
    outputs = []
    for t in range(5):
        y, states = twin(x[:, t], states, training=True)
        outputs.append(y)
    torch.testing.assert_close(out, torch.stack(outputs, 1), rtol=0, atol=0)
    torch.testing.assert_close(c, states[1], rtol=0, atol=0)
    layer.eval()
    assert layer.uses_whole_sequence()
    assert not torch.allclose(out, layer(x)[0])  # inference: no dropout


def test_dropout_with_rate_zero_in_training_takes_the_whole_sequence() -> None:
    layer = RNN([LSTMCell(4), LSTMCell(2)], return_sequences=True)
    layer.train()
    assert layer.uses_whole_sequence()
    out = layer(torch.randn(2, 3, 5))
    assert out.shape == (2, 3, 2) and out.requires_grad


# -- StackedRNNCells ----------------------------------------------------------------------------------------
def test_stacked_cells_state_size_and_one_step() -> None:
    first, second = LSTMCell(5), LSTMCell(3)
    stacked = StackedRNNCells([first, second])
    assert stacked.state_size == [[5, 5], [3, 3]] and stacked.output_size == 3
    stacked.build((None, 4))
    x = torch.randn(2, 4)
    states = [torch.randn(2, 5), torch.randn(2, 5), torch.randn(2, 3), torch.randn(2, 3)]
    output, new_states = stacked(x, [states[:2], states[2:]])
    y1, s1 = first(x, states[:2])
    y2, s2 = second(y1, states[2:])
    torch.testing.assert_close(output, y2, rtol=0, atol=0)
    assert len(new_states) == 2
    for got, want in zip(flatten(new_states), [*s1, *s2], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    flat_output, _ = stacked(x, states)  # tf-keras's flat list
    torch.testing.assert_close(flat_output, y2, rtol=0, atol=0)
    assert [list(s.shape) for s in flatten(stacked.get_initial_state(2))] == [[2, 5], [2, 5], [2, 3], [2, 3]]
    one = StackedRNNCells([LSTMCell(3)])
    _, alone = one(x, [[torch.zeros(2, 3), torch.zeros(2, 3)]])
    assert len(alone) == 2 and alone[0].shape == (2, 3)  # Keras 3: a single cell's states alone
    with pytest.raises(ValueError, match="expected 4 state tensors"):
        stacked(x, states[:3])


def test_a_generic_keras_style_cell_runs_step_by_step() -> None:
    class MinimalRNNCell:  # Keras's documentation example, in torch
        state_size = 3

        def __init__(self) -> None:
            self.kernel = torch.randn(2, 3)

        def __call__(self, inputs, states):
            output = inputs @ self.kernel + states[0]
            return output, [output]

    cell = MinimalRNNCell()
    layer = RNN(cell, return_state=True)
    x = torch.randn(4, 5, 2)
    out, state = layer(x)
    assert not layer.uses_whole_sequence()
    torch.testing.assert_close(out, x.sum(1) @ cell.kernel)
    assert state is out or torch.equal(state, out)


# -- layer behaviour --------------------------------------------------------------------------------------
def test_stateful_calls_continue_the_sequence_and_reset() -> None:
    torch.manual_seed(1)
    cells = [LSTMCell(4), LSTMCell(3)]
    whole = RNN(cells, return_sequences=True)
    x = torch.randn(2, 6, 5)
    expected = whole(x)
    stateful = RNN(whole.cell, return_sequences=True, stateful=True)
    got = torch.cat([stateful(x[:, :4]), stateful(x[:, 4:])], 1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert [list(s.shape) for s in flatten(stateful.states)] == [[2, 4], [2, 4], [2, 3], [2, 3]]
    stateful.reset_states()
    torch.testing.assert_close(stateful(x[:, :4]), expected[:, :4], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="batch size of the input sequences"):
        stateful(x[:1])
    with pytest.raises(AttributeError, match="Layer must be stateful"):
        whole.reset_states()


def test_time_major_shapes_and_errors() -> None:
    layer = RNN(LSTMCell(3), return_sequences=True, time_major=True, return_state=True)
    out, h, c = layer(np.ones((5, 2, 4), np.float32), mask=np.ones((5, 2), bool))
    assert out.shape == (5, 2, 3) and h.shape == c.shape == (2, 3)
    assert layer.compute_output_shape((5, None, 4)) == ((5, None, 3), (None, 3), (None, 3))
    stacked = RNN([LSTMCell(3), LSTMCell(2)], return_state=True)
    shapes = stacked.compute_output_shape((None, 7, 4))
    assert shapes == ((None, 2), [(None, 3), (None, 3)], [(None, 2), (None, 2)])
    with pytest.raises(ValueError, match="Unrecognized keyword arguments"):
        RNN(LSTMCell(3), foo=1)
    with pytest.raises(ValueError, match="but was passed 1 initial state"):
        stacked(torch.ones(2, 4, 4), initial_state=[torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="expected ndim=3"):
        stacked(torch.ones(2, 4))
    with pytest.raises(ValueError, match="state_size"):
        RNN(lambda x, s: (x, s))
    assert len(stacked.get_weights()) == 6
    stacked.set_weights([w * 0 for w in stacked.get_weights()])
    with torch.no_grad():
        assert float(stacked(torch.ones(2, 4, 4))[0].abs().max()) == 0.0


# -- tf-keras's LSTMLayerTest.test_masking_with_stacking_LSTM ---------------------------------------------
def test_masking_with_stacking_LSTM():  # noqa: N802 (the source's name)
    """Source: keras-team/tf-keras, ``tf_keras/layers/rnn/lstm_test.py`` (commit dd0a7237b9b2),
    ``LSTMLayerTest.test_masking_with_stacking_LSTM``: ``Masking`` then ``RNN([LSTMCell(10), LSTMCell(5)],
    return_sequences=True)``, one ``fit`` epoch of categorical crossentropy with SGD(0.01). Here: the mask
    of ``Masking()``, one SGD step, and the check that the step runs and moves the weights."""
    rng = np.random.default_rng(13)
    inputs = rng.random((2, 3, 4))
    targets = np.abs(rng.random((2, 3, 5)))
    targets /= targets.sum(axis=-1, keepdims=True)
    layer = RNN([LSTMCell(10), LSTMCell(5)], return_sequences=True, unroll=False)
    layer.train()
    y = layer(inputs, mask=(inputs != 0).any(-1))
    y = y / y.sum(-1, keepdim=True)
    loss = -(torch.as_tensor(targets, dtype=y.dtype) * torch.log(y.clamp_min(1e-7))).sum(-1).mean()
    before = [w.detach().clone() for w in layer.trainable_weights]
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.01)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and y.shape == (2, 3, 5)
    after = layer.trainable_weights
    assert len(before) == 6 and all(not torch.equal(b, w) for b, w in zip(before, after, strict=True))


def test_parameters_and_state_dict_reach_every_cell() -> None:
    layer = RNN([LSTMCell(4), LSTMCell(2)])
    layer.build((None, 3, 5))
    names = [name for name, _ in layer.named_parameters()]
    assert names == [f"cell.cells.{j}.{w}" for j in range(2) for w in ("kernel", "recurrent_kernel", "bias")]
    copy = RNN([LSTMCell(4), LSTMCell(2)])
    copy.build((None, 3, 5))
    copy.load_state_dict(layer.state_dict())
    x = torch.randn(2, 3, 5)
    torch.testing.assert_close(copy(x), layer(x), rtol=0, atol=0)
