"""Keras's reshaping layers in torch: Flatten, Reshape, Permute, RepeatVector.

None of them supports masking in either generation: an incoming mask is dropped (measured: Keras 3.15 drops
it with a warning, tf-keras 2.21 silently; standalone Keras 2.0-2.2 refused to build such a model, so no file
of theirs has one) and the output carries none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .base import KerasLayer, LayerSpec, Masks, Shape, Tensors, register, single
from .layers_core import positive_int


def _product(dims: Sequence[int | None]) -> int | None:
    return None if any(d is None for d in dims) else math.prod(d for d in dims if d is not None)


@register("Flatten")
class Flatten(KerasLayer):
    """``(B, d1, ..., dk)`` -> ``(B, d1 * ... * dk)`` (``(B,)`` -> ``(B, 1)``), row-major; with
    ``data_format="channels_first"`` the channel axis 1 is first moved last (as Keras does). Drops the
    mask."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        data_format = spec.get("data_format") or "channels_last"
        if data_format not in ("channels_last", "channels_first"):
            raise spec.error(f"data_format must be channels_last or channels_first, got {data_format!r}")
        self.channels_first = data_format == "channels_first"
        self.output_shape(spec.input_shapes)

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        (shape,) = input_shapes
        return (shape[0], _product(shape[1:]) if len(shape) > 1 else 1)

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        x, _ = single(self.spec, inputs, mask)
        if self.channels_first and x.dim() > 2:
            x = x.permute(0, *range(2, x.dim()), 1)
        return x.reshape(x.shape[0], -1), None


@register("Reshape")
class Reshape(KerasLayer):
    """``(B, ...)`` -> ``(B, *target_shape)``, row-major; one entry of ``target_shape`` may be -1 (the size
    the others leave). Drops the mask."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        target = spec.get("target_shape")
        if not isinstance(target, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in target
        ):
            raise spec.error(f"target_shape must be positive ints and at most one -1, got {target!r}")
        if list(target).count(-1) > 1:
            raise spec.error(f"target_shape {target!r} has more than one -1")
        self.target = tuple(target)
        self.output_shape(spec.input_shapes)

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        (shape,) = input_shapes
        size = _product(shape[1:])
        known = math.prod(d for d in self.target if d != -1)
        if -1 not in self.target:
            if size is not None and size != known:
                raise self.spec.error(f"cannot reshape {shape} to {self.target}: {size} != {known} values")
            return (shape[0], *self.target)
        if size is None:
            return (shape[0], *(None if d == -1 else d for d in self.target))
        if size % known:
            raise self.spec.error(f"cannot reshape {shape} to {self.target}: {size} values, not n * {known}")
        return (shape[0], *(size // known if d == -1 else d for d in self.target))

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        x, _ = single(self.spec, inputs, mask)
        return x.reshape(x.shape[0], *self.target), None


@register("Permute")
class Permute(KerasLayer):
    """Axes 1..n reordered: output axis i (1-based, after the batch) is input axis ``dims[i - 1]``. Drops
    the mask."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        dims = spec.get("dims")
        if not isinstance(dims, (list, tuple)) or sorted(dims) != list(range(1, len(dims) + 1)):
            raise spec.error(f"dims must be a permutation of 1..n, got {dims!r}")
        self.dims = tuple(int(d) for d in dims)
        self.output_shape(spec.input_shapes)

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        (shape,) = input_shapes
        if len(shape) != len(self.dims) + 1:
            raise self.spec.error(f"dims {self.dims} need inputs of rank {len(self.dims) + 1}, got {shape}")
        return (shape[0], *(shape[d] for d in self.dims))

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        x, _ = single(self.spec, inputs, mask)
        return x.permute(0, *self.dims), None


@register("RepeatVector")
class RepeatVector(KerasLayer):
    """``(B, F)`` -> ``(B, n, F)``, the vector repeated n times. Drops the mask."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self.n = positive_int(spec, "n")
        self.output_shape(spec.input_shapes)

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        (shape,) = input_shapes
        if len(shape) != 2:
            raise self.spec.error(f"needs inputs (batch, features), got shape {shape}")
        return (shape[0], self.n, shape[1])

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        x, _ = single(self.spec, inputs, mask)
        return x.unsqueeze(1).repeat(1, self.n, 1), None
