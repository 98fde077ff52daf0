"""The activations of an ONNX ``LSTM`` node (its ``activations``, ``activation_alpha`` and
``activation_beta``) as unilstm activations, for :mod:`unilstm.formats.onnx_import`.

ONNX lists f, g, h per direction (gates, candidate, output: unilstm's ``recurrent_activation``,
``activation``, ``output_activation``). The alphas and betas are consumed in that order by the activations
that take them (Affine, ScaledTanh and HardSigmoid an alpha and a beta; LeakyRelu, ThresholdedRelu and Elu an
alpha), as onnxruntime consumes them; names compare in any case, as onnxruntime compares them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..activations import PARAMETRIC_DEFAULTS, ParametricActivation, parametric
from ..spec import ActivationLike


class ActivationError(ValueError):
    """An LSTM node's activations that cannot be read (the importer adds the file's name)."""


#: ONNX activation (lower case, as onnxruntime compares) -> unilstm registry name
_PLAIN = {
    "relu": "relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "softsign": "softsign",
    "softplus": "softplus",
}
#: ONNX activation -> (parametric kind, takes alpha, takes beta)
_PARAMETRIC = {
    "affine": ("affine", True, True),
    "leakyrelu": ("leaky_relu", True, False),
    "thresholdedrelu": ("thresholded_relu", True, False),
    "scaledtanh": ("scaled_tanh", True, True),
    "hardsigmoid": ("hard_sigmoid", True, True),
    "elu": ("elu", True, False),
}
#: onnxruntime 1.32's defaults for these differ from ONNX's (Affine 1, 0; ScaledTanh 1, 1; ThresholdedRelu 1):
#: a file that leaves them out computes different numbers in different runtimes, so they must be given
_AMBIGUOUS_DEFAULTS = ("affine", "scaledtanh", "thresholdedrelu")
#: parametric activations that are exactly a named one (as unilstm's exporter writes them)
_NAMED = {
    ("affine", 1.0, 0.0): "linear",
    ("leaky_relu", 0.2, 0.0): "leaky_relu",
    ("elu", 1.0, 0.0): "elu",
    ("hard_sigmoid", 0.2, 0.5): "hard_sigmoid_keras2",
    ("hard_sigmoid", float(np.float32(1.0 / 6.0)), 0.5): "hard_sigmoid",
}

# -- activations -----------------------------------------------------------------------------------------


def onnx_activations(
    node: Any, directions: int, what: str
) -> tuple[ActivationLike, ActivationLike, ActivationLike]:
    """(recurrent_activation, activation, output_activation) of an LSTM node: its f, g, h, the same in both
    directions, with the alphas and betas each takes (see the module docstring)."""
    attributes = node_attributes(node)
    names = attributes.get("activations", ["Sigmoid", "Tanh", "Tanh"] * directions)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    alphas = [float(a) for a in attributes.get("activation_alpha", [])]
    betas = [float(b) for b in attributes.get("activation_beta", [])]
    if len(names) != 3 * directions:
        raise ActivationError(
            f"{what}: activations lists {len(names)} functions; expected 3 per direction ({3 * directions})"
        )
    resolved: list[ActivationLike] = []
    for position, name in enumerate(names):
        key = name.lower()
        if key in _PLAIN:
            resolved.append(_PLAIN[key])
            continue
        if key not in _PARAMETRIC:
            known = ", ".join(
                [
                    "Relu",
                    "Tanh",
                    "Sigmoid",
                    "Affine",
                    "LeakyRelu",
                    "ThresholdedRelu",
                    "ScaledTanh",
                    "HardSigmoid",
                    "Elu",
                    "Softsign",
                    "Softplus",
                ]
            )
            raise ActivationError(
                f"{what}: activation {name!r} (position {position}) is not an ONNX LSTM activation ({known})"
            )
        kind, takes_alpha, takes_beta = _PARAMETRIC[key]
        alpha = alphas.pop(0) if takes_alpha and alphas else None
        beta = betas.pop(0) if takes_beta and betas else None
        if key in _AMBIGUOUS_DEFAULTS and (alpha is None or (takes_beta and beta is None)):
            raise ActivationError(
                f"{what}: activation {name} (position {position}) without its activation_alpha/beta: ONNX's "
                "defaults and onnxruntime's differ, so the file's numbers depend on the runtime; give them"
            )
        activation = parametric(kind, alpha, beta)
        resolved.append(_named(activation))
    if alphas or betas:
        raise ActivationError(
            f"{what}: activation_alpha / activation_beta hold {len(alphas)} / {len(betas)} values more "
            "than the activations take"
        )
    f, g, h = resolved[:3]
    if directions == 2 and resolved[3:] != resolved[:3]:
        raise ActivationError(
            f"{what}: the reverse direction's activations {names[3:]} differ from the forward one's "
            f"{names[:3]}: "
            "one unilstm LSTM has one set"
        )
    return f, g, h


def _named(activation: ParametricActivation) -> ActivationLike:
    for (kind, alpha, beta), name in _NAMED.items():
        if (
            activation.kind == kind
            and np.float32(activation.alpha) == np.float32(alpha)
            and (PARAMETRIC_DEFAULTS[kind][1] is None or np.float32(activation.beta) == np.float32(beta))
        ):
            return name
    return activation


def node_attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}
