"""Keras's built-in regularizers on torch tensors: ``regularizer(weight) -> scalar tensor`` (differentiable).

Formulas and defaults are Keras 3's: ``L1(l1=0.01)``: l1 * sum|w|; ``L2(l2=0.01)``: l2 * sum w^2 (no 1/2);
``L1L2(l1=0.0, l2=0.0)``: both; ``OrthogonalRegularizer(factor=0.01, mode="rows")``:
factor / 2 * sum_{i != j} |<u_i, u_j>| / (n (n - 1) / 2) over the L2-normalised rows (or columns) u of a 2-D
weight. The strings ``"l1"`` and ``"l2"`` mean 0.01; ``"l1l2"`` (Keras 3) means L1L2() = 0 and 0, while
tf-keras's ``"l1_l2"`` means l1 = l2 = 0.01.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .keras_objects import KerasObject, lookup, snake_case


def _penalty(name: str, value: object) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative float, got {value!r}")
    return float(value)


class Regularizer(KerasObject):
    """``regularizer(weight) -> scalar tensor``."""

    keras_module = "keras.regularizers"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(())


class L1L2(Regularizer):
    """l1 * sum|x| + l2 * sum x^2."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        self.l1 = _penalty("l1", l1)
        self.l2 = _penalty("l2", l2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        if self.l1:
            total = total + self.l1 * x.abs().sum()
        if self.l2:
            total = total + self.l2 * x.square().sum()
        return total

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1, "l2": self.l2}


class L1(Regularizer):
    """l1 * sum|x|."""

    def __init__(self, l1: float = 0.01) -> None:
        self.l1 = _penalty("l1", l1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.l1 * x.abs().sum()

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1}


class L2(Regularizer):
    """l2 * sum x^2."""

    def __init__(self, l2: float = 0.01) -> None:
        self.l2 = _penalty("l2", l2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2 * x.square().sum()

    def get_config(self) -> dict[str, Any]:
        return {"l2": self.l2}


class OrthogonalRegularizer(Regularizer):
    """Mean absolute cosine between distinct rows (``mode="rows"``) or columns of a 2-D weight, times
    factor / 2. Keras normalises with ``x * min(rsqrt(sum x^2), 1 / 1e-7)``."""

    def __init__(self, factor: float = 0.01, mode: str = "rows") -> None:
        if mode not in ("rows", "columns"):
            raise ValueError(f"OrthogonalRegularizer: mode must be 'rows' or 'columns', got mode={mode!r}")
        self.factor = _penalty("factor", factor)
        self.mode = mode

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(
                f"OrthogonalRegularizer: the weight must have rank 2, got shape {tuple(x.shape)} (a bias "
                "cannot be regularized this way)"
            )
        axis = 1 if self.mode == "rows" else 0
        inv_norm = torch.rsqrt(x.square().sum(dim=axis, keepdim=True)).clamp(max=1e7)
        u = x * inv_norm
        product = u @ u.t() if self.mode == "rows" else u.t() @ u
        size = product.shape[0]
        off_diagonal = product * (1.0 - torch.eye(size, dtype=x.dtype, device=x.device))
        pairs = size * (size - 1.0) / 2.0
        return self.factor * 0.5 * off_diagonal.abs().sum() / pairs

    def get_config(self) -> dict[str, Any]:
        return {"factor": self.factor, "mode": self.mode}


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    """tf-keras's ``l1_l2`` helper (defaults 0.01 and 0.01)."""
    return L1L2(l1=l1, l2=l2)


_CLASSES = [L1, L1L2, L2, OrthogonalRegularizer]
REGISTRY: dict[str, type[KerasObject] | Callable] = {cls.__name__: cls for cls in _CLASSES}
REGISTRY.update({snake_case(cls.__name__): cls for cls in _CLASSES})
REGISTRY["l1_l2"] = l1_l2  # tf-keras


def get(identifier: str | Mapping | Callable | None, argument: str = "regularizer") -> Callable | None:
    """Keras's ``regularizers.get``."""
    found = lookup(identifier, REGISTRY, kind="regularizer", argument=argument, base=Regularizer)
    if found is l1_l2:
        return l1_l2()
    return found
