"""unilstm.mindspore.LSTMCell against real MindSpore 2.10's nn.LSTMCell: states and gradients over one to six
steps (tests/fixtures/mindspore/cell_*.npz), the constructor's use of numpy's generator (cell_init.json) and
the error types for bad input (cell_errors.json), all written by
tools/fixtures/make_mindspore_cell_fixtures.py."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from unilstm.kernels import dispatch, force_kernel
from unilstm.mindspore import LSTMCell, float16

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "mindspore"
CASES = sorted(p.stem.removeprefix("cell_") for p in FIXTURES.glob("cell_*.npz"))
ERRORS = json.loads((FIXTURES / "cell_errors.json").read_text())
INIT = json.loads((FIXTURES / "cell_init.json").read_text())
TOLERANCE = {  # max |unilstm - MindSpore| (states, gradients); measured at most 6e-7, 8e-7 and 1e-3, 2e-3
    "float32": (1e-6, 2e-6),
    "float16": (3e-3, 6e-3),
}
NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@pytest.fixture(params=["dispatch", *(entry[0] for entry in dispatch.DIRECTION_KERNELS)])
def kernel(request):
    """The default dispatch, then every registered direction kernel forced (the reference loop included)."""
    force_kernel(None if request.param == "dispatch" else request.param)
    yield request.param
    force_kernel(None)


def cell_from_fixture(data) -> LSTMCell:
    cell = LSTMCell(**json.loads(str(data["config"]))["args"])  # dtype as MindSpore's name: 'float16'
    with torch.no_grad():
        for name, parameter in cell.parameters_and_names():
            parameter.copy_(torch.from_numpy(data[f"param/{name}"]))
    return cell


def test_fixtures_exist() -> None:
    assert len(CASES) >= 6 and "float16" in CASES and "steps6" in CASES


@pytest.mark.parametrize("case", CASES)
def test_states_and_gradients_match_mindspore(case: str, kernel: str) -> None:
    data = np.load(FIXTURES / f"cell_{case}.npz")
    cell = cell_from_fixture(data)
    x = torch.from_numpy(data["x"]).requires_grad_()
    h0 = torch.from_numpy(data["h0"]).requires_grad_()
    c0 = torch.from_numpy(data["c0"]).requires_grad_()
    dtype = str(x.dtype).removeprefix("torch.")
    state_tolerance, grad_tolerance = TOLERANCE[dtype]
    h, c = h0, c0
    hs, cs = [], []
    for step in x:
        h, c = cell(step, (h, c))
        hs.append(h)
        cs.append(c)
    got_h, got_c = torch.stack(hs), torch.stack(cs)
    assert got_h.dtype == x.dtype
    for got, name in ((got_h, "h"), (got_c, "c")):
        difference = float((got.detach().double() - torch.from_numpy(data[name]).double()).abs().max())
        assert difference <= state_tolerance, (name, difference)

    loss = (got_h * torch.from_numpy(data["w_h"])).sum() + (got_c * torch.from_numpy(data["w_c"])).sum()
    names = [name for name, _ in cell.parameters_and_names()]
    grads = torch.autograd.grad(loss, [x, h0, c0, *cell.get_parameters()])
    for key, grad in zip(["x", "h0", "c0", *(f"param/{n}" for n in names)], grads, strict=True):
        want = torch.from_numpy(data[f"grad/{key}"]).double()
        difference = float((grad.double() - want).abs().max())
        assert difference <= grad_tolerance * max(1.0, float(want.abs().max())), (key, difference)


def test_numpy_inputs_as_the_mindspore_door_accepts() -> None:
    data = np.load(FIXTURES / "cell_basic.npz")
    cell = cell_from_fixture(data)
    h, c = cell(data["x"][0], (data["h0"], data["c0"]))
    assert isinstance(h, torch.Tensor) and isinstance(c, torch.Tensor)
    assert float((h.detach() - torch.from_numpy(data["h"][0])).abs().max()) <= TOLERANCE["float32"][0]


@pytest.mark.parametrize("config", INIT["configs"], ids=lambda config: str(config["seed"]))
def test_constructor_draws_from_numpy_like_mindspore(config: dict) -> None:
    """Same names, shapes, dtypes and bound; numpy's generator is left where MindSpore leaves it; the same
    seed gives the same weights (the values differ from MindSpore's C++ uniform draw)."""
    np.random.seed(config["seed"])
    cell = LSTMCell(**config["args"])
    assert float(np.random.rand()) == config["next_draw"]
    params = list(cell.parameters_and_names())
    assert [name for name, _ in params] == config["names"]
    assert [list(p.shape) for _, p in params] == config["shapes"]
    assert [str(p.dtype).removeprefix("torch.") for _, p in params] == [d.lower() for d in config["dtypes"]]
    bound = 1.0 / np.sqrt(config["args"]["hidden_size"])
    largest = max(float(p.detach().abs().max()) for _, p in params)
    assert largest <= bound * (1 + 1e-3)
    assert config["max_abs"] <= bound * (1 + 1e-3)
    np.random.seed(config["seed"])
    again = LSTMCell(**config["args"])
    assert all(torch.equal(a, b) for a, b in zip(cell.get_parameters(), again.get_parameters(), strict=True))


def test_parameters_state_dict_and_cell_api() -> None:
    cell = LSTMCell(3, 4)
    assert not cell.training  # a MindSpore Cell starts in eval mode
    assert cell.set_train() is cell and cell.training
    assert [name for name, _ in cell.parameters_and_names("rnn")] == [f"rnn.{n}" for n in NAMES]
    assert list(cell.parameters_dict()) == list(NAMES)
    assert len(cell.trainable_params()) == 4
    nobias = LSTMCell(3, 4, has_bias=False)
    assert nobias.bias_ih is None
    assert [n for n, _ in nobias.parameters_and_names()] == ["weight_ih", "weight_hh"]
    reference = torch.nn.LSTMCell(3, 4)
    cell.load_state_dict(reference.state_dict())
    x, h, c = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)
    got, want = cell(x, (h, c)), reference(x, (h, c))
    assert max(float((g - w).detach().abs().max()) for g, w in zip(got, want, strict=True)) < 1e-6
    assert LSTMCell(3, 4, dtype=float16).weight_hh.dtype == torch.float16
    assert LSTMCell(3, 4, dtype=np.float64).weight_hh.dtype == torch.float64


def test_a_state_of_batch_one_is_broadcast_as_mindspore_does() -> None:
    """MindSpore adds and multiplies with broadcasting: an h_0 or c_0 of batch 1 serves every row."""
    assert ERRORS["h0_batch_1"]["type"] is None
    cell = LSTMCell(3, 4)
    x, h, c = torch.randn(5, 3), torch.randn(1, 4), torch.randn(1, 4)
    got = cell(x, (h, c))
    want = cell(x, (h.expand(5, 4).contiguous(), c.expand(5, 4).contiguous()))
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_float64_is_an_extension() -> None:
    """MindSpore refuses float64 input; unilstm runs a float64 cell on float64 input."""
    assert ERRORS["x_float64"]["type"] == "TypeError"
    cell = LSTMCell(3, 4, dtype="float64")
    h, _ = cell(torch.randn(2, 3, dtype=torch.float64), (torch.zeros(2, 4, dtype=torch.float64),) * 2)
    assert h.dtype == torch.float64


cell = LSTMCell(3, 4)
x = torch.zeros(2, 3)
h = torch.zeros(2, 4)
f16 = torch.zeros(2, 4, dtype=torch.float16)

ERROR_CASES = {
    "input_size_zero": lambda: LSTMCell(0, 4),
    "hidden_size_zero": lambda: LSTMCell(3, 0),
    "input_size_float": lambda: LSTMCell(3.0, 4),
    "hidden_size_bool": lambda: LSTMCell(3, True),
    "has_bias_int": lambda: LSTMCell(3, 4, has_bias=1),
    "old_positional": lambda: LSTMCell(3, 4, True, "float32", 1),
    "old_batch_size": lambda: LSTMCell(3, 4, batch_size=2),
    "old_dropout": lambda: LSTMCell(3, 4, dropout=0.5),
    "old_bidirectional": lambda: LSTMCell(3, 4, bidirectional=True),
    "hx_missing": lambda: cell(x),
    "hx_none": lambda: cell(x, None),
    "hx_list": lambda: cell(x, [h, h]),
    "hx_tensor": lambda: cell(x, h),
    "hx_one": lambda: cell(x, (h,)),
    "hx_three": lambda: cell(x, (h, h, h)),
    "x_rank_1": lambda: cell(torch.zeros(3), (h, h)),
    "x_rank_3": lambda: cell(torch.zeros(1, 2, 3), (h, h)),
    "x_features": lambda: cell(torch.zeros(2, 5), (h, h)),
    "x_float64": lambda: cell(torch.zeros(2, 3, dtype=torch.float64), (h, h)),
    "x_int32": lambda: cell(torch.zeros(2, 3, dtype=torch.int32), (h, h)),
    "x_float16_params_float32": lambda: cell(torch.zeros(2, 3, dtype=torch.float16), (f16, f16)),
    "h0_float16": lambda: cell(x, (f16, h)),
    "h0_batch": lambda: cell(x, (torch.zeros(3, 4), h)),
    "h0_batch_1": lambda: cell(x, (torch.zeros(1, 4), h)),
    "c0_batch": lambda: cell(x, (h, torch.zeros(3, 4))),
    "h0_hidden": lambda: cell(x, (torch.zeros(2, 5), h)),
    "c0_hidden": lambda: cell(x, (h, torch.zeros(2, 5))),
    "h0_rank_1": lambda: cell(x, (torch.zeros(4), h)),
    "x_numpy": lambda: cell(np.zeros((2, 3), np.float32), (h, h)),
}
# MindSpore's own cell takes only MindSpore tensors; the MindSpore door takes numpy arrays everywhere.
ACCEPTED_HERE = {"x_numpy"}


def test_every_recorded_error_case_is_covered() -> None:
    assert set(ERROR_CASES) == set(ERRORS)


@pytest.mark.parametrize("name", sorted(ERROR_CASES))
def test_error_type_matches_mindspore(name: str) -> None:
    recorded = ERRORS[name]["type"]
    if recorded is None or name in ACCEPTED_HERE:
        ERROR_CASES[name]()
        return
    expected = {"TypeError": TypeError, "ValueError": ValueError}[recorded]
    with pytest.raises(expected) as caught:
        ERROR_CASES[name]()
    if ERRORS[name]["message"].startswith("For 'LSTMCell'"):
        assert str(caught.value) == ERRORS[name]["message"] or "LSTMCell" in str(caught.value)


def test_constructor_messages_are_mindspores() -> None:
    names = ("input_size_zero", "hidden_size_zero", "input_size_float", "hidden_size_bool", "has_bias_int",
             "old_positional", "old_dropout", "hx_one", "hx_three")
    for name in names:
        with pytest.raises(Exception) as caught:  # noqa: B017 - the type is checked above
            ERROR_CASES[name]()
        assert str(caught.value) == ERRORS[name]["message"], name


def test_operator_failures_name_the_argument() -> None:
    """Where MindSpore fails inside MatMul, Mul or AddExt, the message names the argument and both shapes."""
    with pytest.raises(ValueError, match=r"'x' must have shape \(batch, input_size\) with input_size=3.*"
                                         r"\(2, 5\)"):
        cell(torch.zeros(2, 5), (h, h))
    with pytest.raises(ValueError, match=r"'hx\[1\]' must have shape \(batch, hidden_size\) = \(2, 4\).*"
                                         r"\(3, 4\)"):
        cell(x, (h, torch.zeros(3, 4)))
    with pytest.raises(TypeError, match=r"parameters' dtype torch.float32.*got torch.float16"):
        cell(torch.zeros(2, 3, dtype=torch.float16), (f16, f16))
