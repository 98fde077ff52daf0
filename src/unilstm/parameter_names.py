"""The one place that formats and parses LSTM parameter names: torch's ``weight_ih_l{k}[_reverse]``.

Per layer ``k`` and direction (``_reverse`` for the backward one) an LSTM has ``weight_ih``, ``weight_hh``,
with a bias ``bias_ih`` and ``bias_hh``, with a projection ``weight_hr``; cell variants add peephole weights
``weight_ph`` and layer-normalisation gains and biases ``ln_weight_ih`` ... (:data:`VARIANT_KINDS`).
unilstm, torch and MindSpore use these names; a bigger network puts an attribute path in front
(``encoder.weight_ih_l0``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .spec import LSTMSpec

#: The parameter kinds, in torch's order within one (layer, direction).
PARAMETER_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")

#: The kinds that cell variants add after those, in order: peephole weights (3H,) blocks [i, f, o]
#: (``peepholes``), then the gains and biases of the three layer normalisations (``layer_norm``): of the
#: input pre-activations (4H,), of the recurrent ones (4H,) and of the cell state (H,).
PEEPHOLE_KINDS = ("weight_ph",)
LAYER_NORM_KINDS = ("ln_weight_ih", "ln_bias_ih", "ln_weight_hh", "ln_bias_hh", "ln_weight_c", "ln_bias_c")
VARIANT_KINDS = PEEPHOLE_KINDS + LAYER_NORM_KINDS

_NAME = re.compile(
    r"^(?P<prefix>.*?)(?P<kind>"
    + "|".join(VARIANT_KINDS + PARAMETER_KINDS)
    + r")_l(?P<layer>\d+)(?P<reverse>_reverse)?$"
)


@dataclass(frozen=True)
class ParameterName:
    """A parsed parameter name: ``encoder.bias_hh_l1_reverse`` -> prefix ``encoder.``, kind ``bias_hh``,
    layer 1, direction 1."""

    prefix: str
    kind: str
    layer: int
    direction: int

    @property
    def local(self) -> str:
        """The name without the prefix (``bias_hh_l1_reverse``)."""
        return self.kind + parameter_suffix(self.layer, self.direction)


def parameter_suffix(layer: int, direction: int) -> str:
    """``_l{layer}``, plus ``_reverse`` for the backward direction (``direction`` 1)."""
    return f"_l{layer}" + ("_reverse" if direction == 1 else "")


def parameter_name(kind: str, layer: int, direction: int = 0) -> str:
    """``weight_ih`` , 1, 1 -> ``weight_ih_l1_reverse``."""
    return kind + parameter_suffix(layer, direction)


def parse_parameter_name(name: str) -> ParameterName | None:
    """The parts of an LSTM parameter name, or None when ``name`` is not one."""
    match = _NAME.match(name)
    if match is None:
        return None
    return ParameterName(
        match["prefix"], match["kind"], int(match["layer"]), 1 if match["reverse"] else 0
    )


def parameter_kind(name: str) -> str | None:
    """The kind (``weight_ih`` ...) of an LSTM parameter name, None for other names."""
    parsed = parse_parameter_name(name)
    return None if parsed is None else parsed.kind


def with_layer(name: str, layer: int) -> str:
    """The same parameter (prefix, kind, direction) of layer ``layer``: for stacking layers into one LSTM."""
    parsed = parse_parameter_name(name)
    if parsed is None:
        raise ValueError(f"not an LSTM parameter name: {name!r}")
    return parsed.prefix + parameter_name(parsed.kind, layer, parsed.direction)


def parameter_names(spec: LSTMSpec) -> list[str]:
    """Parameter names in torch's order: per (layer, direction) weight_ih, weight_hh[, bias_ih, bias_hh]
    [, weight_hr], then the cell variants' [weight_ph][, ln_weight_ih, ln_bias_ih, ln_weight_hh,
    ln_bias_hh, ln_weight_c, ln_bias_c]."""
    kinds = ["weight_ih", "weight_hh"]
    if spec.bias:
        kinds += ["bias_ih", "bias_hh"]
    if spec.proj_size > 0:
        kinds.append("weight_hr")
    if spec.peepholes:
        kinds += PEEPHOLE_KINDS
    if spec.layer_norm:
        kinds += LAYER_NORM_KINDS
    return [
        parameter_name(kind, layer, direction)
        for layer in range(spec.num_layers)
        for direction in range(spec.num_directions)
        for kind in kinds
    ]


def parameter_shape(spec: LSTMSpec, name: str) -> tuple[int, ...]:
    """The shape of parameter ``name``: weight_ih (4H, F_layer), weight_hh (4H, P), biases (4H,),
    weight_hr (P, H), weight_ph (3H,), ln_*_ih and ln_*_hh (4H,), ln_*_c (H,)."""
    parsed = parse_parameter_name(name)
    if parsed is None or parsed.prefix:
        raise ValueError(f"not an LSTM parameter name: {name!r}")
    gates = 4 * spec.hidden_size
    if parsed.kind == "weight_ih":
        return (gates, spec.layer_input_size(parsed.layer))
    if parsed.kind == "weight_hh":
        return (gates, spec.output_size)
    if parsed.kind in ("bias_ih", "bias_hh", "ln_weight_ih", "ln_bias_ih", "ln_weight_hh", "ln_bias_hh"):
        return (gates,)
    if parsed.kind == "weight_ph":
        return (3 * spec.hidden_size,)
    if parsed.kind in ("ln_weight_c", "ln_bias_c"):
        return (spec.hidden_size,)
    return (spec.proj_size, spec.hidden_size)
