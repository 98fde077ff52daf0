"""Keras's built-in weight constraints on torch tensors: ``constraint(weight) -> projected weight``.

Keras applies them after each optimizer update, never at initialisation; here that is
:func:`unilstm.keras.apply_constraints` (or the optimizer hook :func:`unilstm.keras.constrain`).
Norms are taken along ``axis`` (default 0: for a kernel (F, 4H) each column, for a bias the whole vector),
with Keras's epsilon 1e-7::

    MaxNorm(max_value=2, axis=0):              w * clip(n, 0, max) / (eps + n)
    MinMaxNorm(min_value=0, max_value=1, rate=1, axis=0):
                                               w * (rate * clip(n, min, max) + (1 - rate) * n) / (eps + n)
    UnitNorm(axis=0):                          w / (eps + n)
    NonNeg():                                  max(w, 0)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .keras_objects import KerasObject, lookup, snake_case

EPSILON = 1e-7


class Constraint(KerasObject):
    """``constraint(weight) -> weight``."""

    keras_module = "keras.constraints"

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return w


def _norms(w: torch.Tensor, axis: int | list[int]) -> torch.Tensor:
    dims = axis if isinstance(axis, (list, tuple)) else [axis]
    for dim in dims:
        if not -w.dim() <= dim < w.dim():
            raise ValueError(f"constraint axis={axis} does not exist for a weight of shape {tuple(w.shape)}")
    return torch.sqrt(w.square().sum(dim=tuple(dims), keepdim=True))


class MaxNorm(Constraint):
    """Norms along ``axis`` at most ``max_value``."""

    def __init__(self, max_value: float = 2, axis: int = 0) -> None:
        self.max_value, self.axis = max_value, axis

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        norms = _norms(w, self.axis)
        desired = norms.clamp(0, self.max_value)
        return w * (desired / (EPSILON + norms))

    def get_config(self) -> dict[str, Any]:
        return {"max_value": self.max_value, "axis": self.axis}


class MinMaxNorm(Constraint):
    """Norms along ``axis`` moved (at ``rate``) into [min_value, max_value]."""

    def __init__(
        self, min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0, axis: int = 0
    ) -> None:
        self.min_value, self.max_value, self.rate, self.axis = min_value, max_value, rate, axis

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        norms = _norms(w, self.axis)
        desired = self.rate * norms.clamp(self.min_value, self.max_value) + (1 - self.rate) * norms
        return w * (desired / (EPSILON + norms))

    def get_config(self) -> dict[str, Any]:
        return {
            "min_value": self.min_value,
            "max_value": self.max_value,
            "rate": self.rate,
            "axis": self.axis,
        }


class NonNeg(Constraint):
    """Negative entries set to zero."""

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return w.clamp(min=0)


class UnitNorm(Constraint):
    """Norms along ``axis`` set to one."""

    def __init__(self, axis: int = 0) -> None:
        self.axis = axis

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return w / (EPSILON + _norms(w, self.axis))

    def get_config(self) -> dict[str, Any]:
        return {"axis": self.axis}


_CLASSES = [MaxNorm, MinMaxNorm, NonNeg, UnitNorm]
REGISTRY: dict[str, type[KerasObject] | Callable] = {cls.__name__: cls for cls in _CLASSES}
REGISTRY.update({snake_case(cls.__name__): cls for cls in _CLASSES})
REGISTRY.update({"maxnorm": MaxNorm, "nonneg": NonNeg, "unitnorm": UnitNorm})  # tf-keras aliases


def get(identifier: str | Mapping | Callable | None, argument: str = "constraint") -> Callable | None:
    """Keras's ``constraints.get``."""
    return lookup(identifier, REGISTRY, kind="constraint", argument=argument, base=Constraint)
