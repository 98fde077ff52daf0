"""Keras 3 operations recorded in a functional graph.

Keras 3 records the ``keras.ops`` calls made between layers as graph entries of their own (module
``keras.src.ops.*``): most often ``NotEqual(ids, 0)``, the mask an ``Embedding(mask_zero=True)`` hands to
the next layer, which Keras 3.15 writes as an explicit ``mask=`` argument. The ones a model between LSTMs
uses are run here; any other is refused by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .base import KerasModelError, Shape


def _broadcast(shapes: Sequence[Shape]) -> Shape:
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    out: list[int | None] = []
    for sizes in zip(*padded, strict=True):
        known = {s for s in sizes if s is not None and s != 1}
        out.append(known.pop() if len(known) == 1 else (None if None in sizes else 1))
    return tuple(out)


def _reduced(shape: Shape, axis: Any, keepdims: bool) -> Shape:
    if axis is None:
        return (1,) * len(shape) if keepdims else ()
    axes = {a % len(shape) for a in (axis if isinstance(axis, list) else [axis])}
    return tuple(1 if i in axes else s for i, s in enumerate(shape) if keepdims or i not in axes)


def _reduce(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    def run(x: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
        if axis is None:
            out = fn(x.bool()) if not keepdims else fn(x.bool()).reshape((1,) * x.dim())
            return out
        axes = axis if isinstance(axis, list) else [axis]
        for a in sorted((a % x.dim() for a in axes), reverse=True):
            x = fn(x.bool(), dim=a, keepdim=keepdims)
        return x

    return run


def _elementwise(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[..., Tensor]:
    def run(x: Any, y: Any) -> Tensor:
        return fn(torch.as_tensor(x), torch.as_tensor(y))

    return run


_DTYPES = {
    "bool": torch.bool,
    "float32": torch.float32,
    "float64": torch.float64,
    "int32": torch.int32,
    "int64": torch.int64,
    "float16": torch.float16,
}


def _convert_to_tensor(x: Any, dtype: Any = None, sparse: Any = None, ragged: Any = None) -> Tensor:
    """``keras.ops.convert_to_tensor``: Keras 3 records it on a mask handed on explicitly."""
    tensor = torch.as_tensor(x)
    if sparse or ragged:
        raise KerasModelError("convert_to_tensor: sparse and ragged tensors are not supported")
    if dtype is None:
        return tensor
    if dtype not in _DTYPES:
        raise KerasModelError(f"convert_to_tensor: dtype {dtype!r} is not supported")
    return tensor.to(_DTYPES[dtype])


#: class name -> (function of the call's arguments, output shape from the arguments' shapes and kwargs).
OPERATIONS: dict[str, tuple[Callable[..., Tensor], Callable[..., Shape]]] = {
    "NotEqual": (_elementwise(torch.ne), lambda shapes, **_: _broadcast(shapes)),
    "Equal": (_elementwise(torch.eq), lambda shapes, **_: _broadcast(shapes)),
    "LogicalAnd": (_elementwise(torch.logical_and), lambda shapes, **_: _broadcast(shapes)),
    "LogicalOr": (_elementwise(torch.logical_or), lambda shapes, **_: _broadcast(shapes)),
    "LogicalNot": (torch.logical_not, lambda shapes, **_: shapes[0]),
    "ConvertToTensor": (_convert_to_tensor, lambda shapes, **_: shapes[0]),
    "Any": (
        _reduce(torch.any),
        lambda shapes, axis=None, keepdims=False: _reduced(shapes[0], axis, keepdims),
    ),
    "All": (
        _reduce(torch.all),
        lambda shapes, axis=None, keepdims=False: _reduced(shapes[0], axis, keepdims),
    ),
}


def operation(class_name: str, where: str) -> tuple[Callable[..., Tensor], Callable[..., Shape]]:
    """The function and shape rule of a recorded Keras 3 operation."""
    try:
        return OPERATIONS[class_name]
    except KeyError:
        known = ", ".join(sorted(OPERATIONS))
        raise KerasModelError(
            f"{where}: the Keras operation {class_name!r} is not supported (supported operations: {known})"
        ) from None
