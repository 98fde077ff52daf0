"""parameter_names: the one owner of ``weight_ih_l{k}[_reverse]``."""

from __future__ import annotations

import pytest

from unilstm.parameter_names import (
    ParameterName,
    parameter_kind,
    parameter_name,
    parameter_names,
    parameter_shape,
    parse_parameter_name,
    with_layer,
)
from unilstm.spec import LSTMSpec


def test_names_in_torchs_order():
    spec = LSTMSpec(3, 4, 2, bidirectional=True, proj_size=2)
    names = parameter_names(spec)
    assert names[:5] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_hr_l0"]
    assert names[5] == "weight_ih_l0_reverse" and names[-1] == "weight_hr_l1_reverse"
    assert parameter_names(LSTMSpec(3, 4, bias=False)) == ["weight_ih_l0", "weight_hh_l0"]


def test_parse_and_format_round_trip():
    parsed = parse_parameter_name("encoder.bias_hh_l1_reverse")
    assert parsed == ParameterName("encoder.", "bias_hh", 1, 1)
    assert parsed.local == "bias_hh_l1_reverse" == parameter_name("bias_hh", 1, 1)
    assert parse_parameter_name("encoder.scale") is None
    assert parameter_kind("weight_hr_l0") == "weight_hr" and parameter_kind("dense.kernel") is None
    assert with_layer("weight_ih_l0_reverse", 3) == "weight_ih_l3_reverse"


def test_shapes():
    spec = LSTMSpec(3, 4, 2, bidirectional=True, proj_size=2)
    assert parameter_shape(spec, "weight_ih_l0") == (16, 3)
    assert parameter_shape(spec, "weight_ih_l1_reverse") == (16, 4)  # D * P inputs
    assert parameter_shape(spec, "weight_hh_l0") == (16, 2)
    assert parameter_shape(spec, "bias_ih_l1") == (16,)
    assert parameter_shape(spec, "weight_hr_l0_reverse") == (2, 4)
    with pytest.raises(ValueError, match="not an LSTM parameter name"):
        parameter_shape(spec, "kernel")
