"""The one place that translates Keras's names: activation identifiers <-> unilstm's activation names, and
class names -> Keras's snake-case names (``'LSTM'`` -> ``'lstm'``, the keys of Keras weight files).

unilstm's activation registry (:data:`unilstm.activations.REGISTRY`) uses Keras 3's names, plus
``"hard_sigmoid_keras2"`` for Keras 2's ``hard_sigmoid`` (``clip(0.2 x + 0.5, 0, 1)``; Keras 3's is
``clip(x / 6 + 0.5, 0, 1)``): a Keras 2 config saying ``"hard_sigmoid"`` means that one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .activations import REGISTRY
from .spec import ActivationLike

#: Activation names Keras 3 accepts for a layer (``keras.activations``), plus "linear" for None.
KERAS_ACTIVATIONS = (
    "celu",
    "elu",
    "exponential",
    "gelu",
    "glu",
    "hard_shrink",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "leaky_relu",
    "linear",
    "log_sigmoid",
    "log_softmax",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "soft_shrink",
    "softmax",
    "softplus",
    "softsign",
    "sparse_plus",
    "sparse_sigmoid",
    "sparsemax",
    "squareplus",
    "swish",
    "tanh",
    "tanh_shrink",
    "threshold",
)

#: unilstm's name for Keras 2's hard_sigmoid, clip(0.2 x + 0.5, 0, 1).
KERAS2_HARD_SIGMOID = "hard_sigmoid_keras2"


class UnknownKerasActivationError(ValueError):
    """A stored activation name that is neither a Keras built-in nor in ``custom_objects``."""


def snake_case(name: str) -> str:
    """Keras's ``to_snake_case``: ``'LSTM'`` -> ``'lstm'``, ``'GlorotUniform'`` -> ``'glorot_uniform'``,
    ``'L1L2'`` -> ``'l1l2'``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def stored_activation_name(value: Any) -> Any:
    """A serialized Keras activation -> its name: ``'tanh'`` stays, ``{'class_name': 'function', 'config':
    'my_act'}`` (how Keras 3 stores a function) gives ``'my_act'``; anything else is returned unchanged."""
    if (
        isinstance(value, dict)
        and value.get("class_name") == "function"
        and isinstance(value.get("config"), str)
    ):
        return value["config"]
    return value


def is_keras_builtin(name: str) -> bool:
    """Whether a stored activation name (``'relu'``, ``'keras.activations.relu'``) is one unilstm computes."""
    return name.rsplit(".", 1)[-1] in REGISTRY


def activation_from_keras(identifier: Any, argument: str, keras2: bool) -> str | Callable:
    """What a spec gets for a Keras layer's activation argument: a registry name (so kernels can recognise
    it) or a callable.

    ``None`` is linear; ``hard_sigmoid`` is Keras 2's clip(0.2x + 0.5, 0, 1) when ``keras2``, else Keras 3's
    clip(x / 6 + 0.5, 0, 1); serialized forms (``{"class_name": "function", "config": name}``, a legacy
    ``{"class_name": name}``) and module paths (``keras.activations.relu``) are accepted.
    """
    if identifier is None:
        return "linear"
    if isinstance(identifier, Mapping):
        inner = identifier.get("config")
        identifier = inner if isinstance(inner, str) else identifier.get("class_name")
    if isinstance(identifier, str):
        name = identifier.rsplit(".", 1)[-1]
        if name == "threshold":
            raise ValueError(
                f"{argument}: 'threshold' needs threshold and default_value arguments (Keras fails when it "
                "is called); pass a callable, e.g. lambda x: torch.where(x > t, x, v)"
            )
        if name == "glu":
            raise ValueError(
                f"{argument}: 'glu' halves the last axis (H -> H/2), so it cannot be an LSTM activation "
                "(Keras fails when the layer is called)"
            )
        if name == "hard_sigmoid" and keras2:
            return KERAS2_HARD_SIGMOID
        if name in REGISTRY:
            return name
        raise ValueError(
            f"{argument}: unknown activation {identifier!r}; Keras names: {', '.join(KERAS_ACTIVATIONS)}, "
            "None, or a callable on tensors"
        )
    if callable(identifier):
        return identifier
    raise TypeError(
        f"{argument} must be a name, None or a callable, got {type(identifier).__name__} {identifier!r}"
    )


def activation_from_stored_config(
    value: Any, keras2: bool, custom_objects: Mapping[str, Any]
) -> ActivationLike:
    """The spec activation for an activation stored in a Keras file's config: ``None`` stays None (linear),
    a built-in name its registry name, a name in ``custom_objects`` that function.

    Raises:
        UnknownKerasActivationError: a name that is neither built in nor in ``custom_objects``.
        TypeError: a value no Keras config holds as an activation.
    """
    value = stored_activation_name(value)
    if value is None or value == "linear":
        return value
    if isinstance(value, str):
        if value in custom_objects:
            return custom_objects[value]
        if keras2 and value == "hard_sigmoid":
            return KERAS2_HARD_SIGMOID
        if value in REGISTRY:
            return value
        raise UnknownKerasActivationError(value)
    raise TypeError(f"cannot read the activation {value!r}")


def activation_to_keras(value: str | Callable) -> str:
    """The name a Keras config stores for a spec activation (Keras 2's hard_sigmoid is ``'hard_sigmoid'``)."""
    if isinstance(value, str):
        return "hard_sigmoid" if value == KERAS2_HARD_SIGMOID else value
    return getattr(value, "__name__", repr(value))
