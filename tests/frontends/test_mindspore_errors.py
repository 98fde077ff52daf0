"""Bad input to unilstm.mindspore.LSTM raises what real MindSpore 2.10 raises
(tests/fixtures/mindspore/errors.json), with a message that names the argument, the expected and the
received value."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from unilstm.mindspore import LSTM, SeqLengthError

ERRORS = json.loads(
    (pathlib.Path(__file__).parents[1] / "fixtures" / "mindspore" / "errors.json").read_text()
)

# Where MindSpore's error is an accident of its implementation (an IndexError from indexing, a RuntimeError
# from oneDNN), we raise the error type that says what is wrong instead.
DEVIATIONS = {
    "x_no_steps": ValueError,  # MindSpore: RuntimeError "could not execute a primitive"
    "h0_layers": ValueError,  # MindSpore: IndexError "index 1 is out of bounds"
    "seq_scalar": ValueError,  # MindSpore: IndexError "tuple index out of range"
    "seq_list": TypeError,  # MindSpore: AttributeError "'list' object has no attribute 'dtype'"
}

net = LSTM(3, 4, 2)
bi = LSTM(3, 4, 2, bidirectional=True)
x = torch.zeros(5, 2, 3)
h = torch.zeros(2, 2, 4)
hb = torch.zeros(4, 2, 4)


def seq(values, dtype=torch.int32):
    return torch.tensor(values, dtype=dtype)


CASES = {
    "dropout_int": lambda: LSTM(3, 4, dropout=0),
    "dropout_one": lambda: LSTM(3, 4, dropout=1.0),
    "dropout_negative": lambda: LSTM(3, 4, dropout=-0.1),
    "dropout_nan": lambda: LSTM(3, 4, dropout=float("nan")),
    "dropout_bool": lambda: LSTM(3, 4, dropout=False),
    "dropout_numpy_float32": lambda: LSTM(3, 4, dropout=np.float32(0.1)),
    "input_size_zero": lambda: LSTM(0, 4),
    "input_size_float": lambda: LSTM(3.0, 4),
    "hidden_size_bool": lambda: LSTM(3, True),
    "num_layers_zero": lambda: LSTM(3, 4, 0),
    "has_bias_int": lambda: LSTM(3, 4, has_bias=1),
    "batch_first_int": lambda: LSTM(3, 4, batch_first=1),
    "bidirectional_int": lambda: LSTM(3, 4, bidirectional=1),
    "x_rank_2": lambda: net(torch.zeros(5, 3)),
    "x_rank_4": lambda: net(torch.zeros(5, 2, 3, 1)),
    "x_features": lambda: net(torch.zeros(5, 2, 4)),
    "x_int32": lambda: net(torch.zeros(5, 2, 3, dtype=torch.int32)),
    "x_bfloat16": lambda: net(x.bfloat16()),
    "x_no_steps": lambda: net(torch.zeros(0, 2, 3)),
    "x_float64_with_hx": lambda: net(x.double(), (h.double(), h.double())),
    "hx_list": lambda: net(x, [h, h]),
    "hx_tensor": lambda: net(x, h),
    "hx_three": lambda: net(x, (h, h, h)),
    "h0_layers": lambda: net(x, (torch.zeros(1, 2, 4), h)),
    "c0_batch": lambda: net(x, (h, torch.zeros(2, 3, 4))),
    "h0_hidden": lambda: net(x, (torch.zeros(2, 2, 5), h)),
    "h0_rank_2": lambda: net(x, (torch.zeros(2, 4), h)),
    "h0_float16": lambda: net(x, (h.half(), h)),
    "c0_float64": lambda: net(x, (h, h.double())),
    "seq_float32": lambda: net(x, None, seq([5, 3], torch.float32)),
    "seq_int16": lambda: net(x, None, seq([5, 3], torch.int16)),
    "seq_bool": lambda: net(x, None, seq([True, True], torch.bool)),
    "seq_batch": lambda: net(x, None, seq([5, 3, 1])),
    "seq_rank_2": lambda: bi(x, None, seq([[5], [3]])),
    "seq_scalar": lambda: net(x, None, seq(5)),
    "seq_list": lambda: net(x, None, [5, 3]),
    "seq_negative_uni": lambda: net(x, None, seq([-1, 3])),
    "seq_beyond_T_uni": lambda: net(x, None, seq([6, 3])),
    "seq_negative_bi": lambda: bi(x, (hb, hb), seq([-1, 3])),
    "seq_beyond_T_bi": lambda: bi(x, None, seq([6, 3])),
    "seq_zero_bi": lambda: bi(x, None, seq([0, 3])),
}


def test_every_recorded_case_is_covered() -> None:
    assert set(CASES) == set(ERRORS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_error_type_matches_mindspore(name: str) -> None:
    recorded = ERRORS[name]["type"]
    if recorded is None:
        CASES[name]()  # MindSpore accepts it: so do we
        return
    expected = (
        DEVIATIONS.get(name)
        or {"TypeError": TypeError, "ValueError": ValueError, "RuntimeError": RuntimeError}[recorded]
    )
    with pytest.raises(expected) as caught:
        CASES[name]()
    message = str(caught.value)
    assert len(message) > 20 and "LSTM" in message


def test_messages_name_argument_expected_and_received() -> None:
    with pytest.raises(TypeError, match=r"'dropout' must be 'float', but got 'int'"):
        LSTM(3, 4, dropout=0)
    with pytest.raises(ValueError, match=r"range \[0, 1\).*got 1.5"):
        LSTM(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match=r"'x' must be 3-D.*got 2-D with shape \(5, 3\)"):
        net(torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"input_size=3 features.*got 4"):
        net(torch.zeros(5, 2, 4))
    with pytest.raises(TypeError, match=r"'hx' must be a tuple.*got list.*tuple\(hx\)"):
        net(x, [h, h])
    with pytest.raises(ValueError, match=r"'hx\[0\]' must have shape .* = \(2, 2, 4\), but got \(1, 2, 4\)"):
        net(x, (torch.zeros(1, 2, 4), h))
    with pytest.raises(TypeError, match=r"'hx\[0\]' should be same as 'x'.*torch.float32.*torch.float16"):
        net(x, (h.half(), h))
    with pytest.raises(
        TypeError, match=r"'seq_length' should be one of \[int32, int64\], but got torch.float32"
    ):
        net(x, None, seq([5, 3], torch.float32))
    with pytest.raises(ValueError, match=r"'seq_length' must have shape \(batch,\) = \(2,\), but got \(3,\)"):
        net(x, None, seq([5, 3, 1]))
    with pytest.raises(SeqLengthError, match=r"\[0, 5\].*min -1 and max 3"):
        bi(x, None, seq([-1, 3]))


def test_unidirectional_out_of_range_lengths_act_like_mindspore() -> None:
    """MindSpore keeps step t where t < length: a negative length runs no step, one beyond T runs all."""
    xs = torch.randn(5, 2, 3)
    h0 = torch.randn(2, 2, 4)
    clipped, (h_clip, _) = net(xs, (h0, h0), seq([0, 5]))
    raw, (h_raw, _) = net(xs, (h0, h0), seq([-4, 99]))
    assert torch.equal(clipped, raw) and torch.equal(h_clip, h_raw)
    assert torch.equal(h_raw[:, 0], h0[:, 0])


def test_seq_length_error_is_value_and_runtime_error() -> None:
    assert issubclass(SeqLengthError, ValueError) and issubclass(SeqLengthError, RuntimeError)


def test_numpy_inputs_and_int64_lengths() -> None:
    out, (h_n, _) = bi(np.zeros((5, 2, 3), np.float32), None, np.array([5, 2], np.int64))
    assert out.shape == (5, 2, 8) and h_n.shape == (4, 2, 4)
    assert torch.equal(out[2:, 1], torch.zeros(3, 8))
