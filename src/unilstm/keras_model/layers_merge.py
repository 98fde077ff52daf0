"""Keras's merge layers: Concatenate, Add, Subtract, Multiply, Average, Maximum, Minimum and Dot.

Every merge is called on a list of tensors ``x_i`` (batch first) with a list of masks ``m_i`` (``(B, T)``
bools or None). The two Keras generations differ in the masks (measured on Keras 3.15.1 and tf-keras 2.21):

- **output mask**, elementwise merges: Keras 3 gives ``m_1 | m_2 | ...`` when every input carries a mask
  and None as soon as one does not; Keras 2 gives ``m_1 & m_2 & ...`` over the inputs that carry one
  (None when none does).
- **values**: Keras 2 ignores the masks. Keras 3 ignores them in Add, Subtract and Average, but
  Multiply treats a masked element as 1 (and zeroes the steps masked in every input when all inputs carry a
  mask), and Maximum / Minimum take a masked element of one side from the other side (see
  :func:`_or_masked`).
- **Concatenate**: each input's mask is taken as all True when it has none and expanded over the features
  ``(B, T) -> (B, T, 1)``; the masks are concatenated along the layer's axis and reduced over the last
  axis, with ``any`` in Keras 3 (whose masks are first broadcast to the input's shape) and ``all`` in Keras
  2 (whose ``(B, T, 1)`` masks do not concatenate with another input's ``(B, T, F)`` ones along the time
  axis: tf-keras raises there, and so does this layer).
- **Dot** outputs no mask in either.

Inputs of different ranks are made equal as Keras does, by inserting size-1 axes at axis 1 of the lower
ranked ones (``(B, F)`` + ``(B, T, F)``: ``(B, 1, F)`` broadcast over T); in Keras 3 the reshaped inputs
lose their mask for the value rules above (their mask still counts for the output mask).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .base import KerasLayer, LayerSpec, Masks, Shape, Tensors, register


def _inputs_and_masks(
    spec: LayerSpec, inputs: Tensors, mask: Masks, kwargs: dict[str, Any]
) -> tuple[list[Tensor], list[Tensor | None]]:
    """The call's tensors and one mask (or None) per tensor; unknown call arguments refused by name."""
    if kwargs:
        raise spec.error(f"unsupported call arguments: {', '.join(sorted(kwargs))}")
    if not isinstance(inputs, list):
        raise spec.error("a merge layer is called on a list of tensors, got one tensor")
    if mask is None:
        masks: list[Tensor | None] = [None] * len(inputs)
    elif isinstance(mask, list):
        masks = list(mask)
    else:
        raise spec.error("the masks of a merge layer are a list, one per input")
    if len(masks) != len(inputs):
        raise spec.error(f"{len(inputs)} inputs but {len(masks)} masks")
    return inputs, masks


def _elementwise_shape(spec: LayerSpec, first: Shape, second: Shape) -> Shape:
    """Keras's ``_compute_elemwise_op_output_shape`` (without the batch axis): right-aligned broadcasting in
    which a size of 1 takes the other size and an unknown size stays unknown."""
    if len(first) < len(second):
        first, second = second, first
    if not second:
        return first
    out: list[int | None] = list(first[: len(first) - len(second)])
    for i, j in zip(first[len(first) - len(second) :], second, strict=True):
        if i is None or j is None:
            out.append(None)
        elif i == 1:
            out.append(j)
        elif j == 1 or i == j:
            out.append(i)
        else:
            raise spec.error(f"inputs of incompatible shapes {first} and {second}")
    return tuple(out)


def _check_batches(spec: LayerSpec, shapes: Sequence[Shape]) -> None:
    batches = {s[0] for s in shapes if s} - {None}
    if len(batches) > 1:
        raise spec.error(f"cannot merge tensors of different batch sizes: {list(shapes)}")


class _Merge(KerasLayer):
    """An elementwise merge of two or more tensors (``minimum`` inputs at least)."""

    minimum = 1
    maximum: int | None = None

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self._check_count(len(spec.input_shapes))
        self.output_shape(spec.input_shapes)

    def _check_count(self, count: int) -> None:
        if count < self.minimum or (self.maximum is not None and count > self.maximum):
            wanted = f"exactly {self.minimum}" if self.minimum == self.maximum else f"at least {self.minimum}"
            raise self.spec.error(f"is called on {wanted} inputs, got {count}")

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        self._check_count(len(input_shapes))
        _check_batches(self.spec, input_shapes)
        out = tuple(input_shapes[0][1:])
        for shape in input_shapes[1:]:
            out = _elementwise_shape(self.spec, out, tuple(shape[1:]))
        batches = {s[0] for s in input_shapes if s} - {None}
        return (batches.pop() if batches else None, *out)

    def _merge(self, inputs: list[Tensor], masks: list[Tensor | None]) -> tuple[Tensor, Tensor | None]:
        """The merged values from inputs of equal rank, with the masks Keras 3 lets the values see; and the
        mask the merge itself sets on the output (Keras 3's Multiply / Maximum / Minimum), else None."""
        raise NotImplementedError

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        tensors, masks = _inputs_and_masks(self.spec, inputs, mask, kwargs)
        self._check_count(len(tensors))
        top = max(t.dim() for t in tensors)
        seen: list[Tensor | None] = []
        reshaped = []
        for t, m in zip(tensors, masks, strict=True):
            lifted = t
            while lifted.dim() < top:
                lifted = lifted.unsqueeze(1)
            reshaped.append(lifted)
            # Keras 3 reads the masks from the tensors; a tensor reshaped here is a new one without a mask.
            seen.append(m if lifted is t and not self.spec.keras2 else None)
        out, set_mask = self._merge(reshaped, seen)
        if set_mask is not None:
            return out, set_mask
        return out, self._output_mask(masks)

    def _output_mask(self, masks: list[Tensor | None]) -> Tensor | None:
        present = [m for m in masks if m is not None]
        if not present:
            return None
        if self.spec.keras2:
            return _reduce(torch.logical_and, present)
        if len(present) < len(masks):
            return None
        return _reduce(torch.logical_or, present)


def _reduce(op: Callable[[Tensor, Tensor], Tensor], tensors: Sequence[Tensor]) -> Tensor:
    out = tensors[0]
    for t in tensors[1:]:
        out = op(out, t)
    return out


def _feature_mask(mask: Tensor, x: Tensor) -> Tensor:
    """A ``(B, T)`` mask broadcast to ``x``'s shape ``(B, T, F)`` (Keras 3's ``broadcast_to(expand_dims(m,
    -1), shape(x))``)."""
    return torch.broadcast_to(mask.unsqueeze(-1), x.shape)


def _or_masked(
    op: Callable[[Tensor, Tensor], Tensor], inputs: list[Tensor], masks: list[Tensor | None]
) -> tuple[Tensor, Tensor | None]:
    """Keras 3's ``_apply_merge_op_and_or_mask`` (Maximum, Minimum): left to right, a masked element of the
    next input is replaced by the running output and a masked element of the running output by the next
    input, then ``op``; the output mask is the OR while every input so far carried one (None after)."""
    output: Tensor | None = None
    output_mask: Tensor | None = None
    for x, m in zip(inputs, masks, strict=True):
        mask = _feature_mask(m, x) if m is not None else None
        if output is None:
            output, output_mask = x, mask
            continue
        if mask is not None:
            x = torch.where(mask, x, output)
        if output_mask is not None:
            output = torch.where(output_mask, output, x)
        output_mask = (
            torch.logical_or(output_mask, mask) if mask is not None and output_mask is not None else None
        )
        output = op(output, x)
    assert output is not None
    return output, None if output_mask is None else output_mask.any(dim=-1)


@register("Add")
class Add(_Merge):
    """``x_1 + x_2 + ...`` (broadcast as Keras)."""

    def _merge(self, inputs: list[Tensor], masks: list[Tensor | None]) -> tuple[Tensor, Tensor | None]:
        return _reduce(torch.add, inputs), None


@register("Subtract")
class Subtract(_Merge):
    """``x_1 - x_2``; exactly two inputs."""

    minimum = maximum = 2

    def _merge(self, inputs: list[Tensor], masks: list[Tensor | None]) -> tuple[Tensor, Tensor | None]:
        return inputs[0] - inputs[1], None


@register("Average")
class Average(_Merge):
    """``(x_1 + ... + x_n) / n``."""

    def _merge(self, inputs: list[Tensor], masks: list[Tensor | None]) -> tuple[Tensor, Tensor | None]:
        return _reduce(torch.add, inputs) / len(inputs), None


@register("Multiply")
class Multiply(_Merge):
    """``x_1 * x_2 * ...``. Keras 3: a masked element counts as 1; when every input carries a mask the
    output is 0 where all of them are masked and the output mask is their OR."""

    def _merge(self, inputs: list[Tensor], masks: list[Tensor | None]) -> tuple[Tensor, Tensor | None]:
        all_masked = all(m is not None for m in masks)
        output: Tensor | None = None
        output_mask: Tensor | None = None
        for x, m in zip(inputs, masks, strict=True):
            if m is not None:
                wide = _feature_mask(m, x)
                x = torch.where(wide, x, torch.ones((), dtype=x.dtype, device=x.device))
                if all_masked:
                    output_mask = wide if output_mask is None else torch.logical_or(output_mask, wide)
            output = x if output is None else output * x
        assert output is not None
        if output_mask is None:
            return output, None
        output = torch.where(output_mask, output, torch.zeros((), dtype=output.dtype, device=output.device))
        return output, output_mask.any(dim=-1)


@register("Maximum")
class Maximum(_Merge):
    """Elementwise maximum; Keras 3 takes a masked element from the other inputs (:func:`_or_masked`)."""

    def _merge(self, inputs: list[Tensor], masks: list[Tensor | None]) -> tuple[Tensor, Tensor | None]:
        return _or_masked(torch.maximum, inputs, masks)


@register("Minimum")
class Minimum(_Merge):
    """Elementwise minimum; Keras 3 takes a masked element from the other inputs (:func:`_or_masked`)."""

    def _merge(self, inputs: list[Tensor], masks: list[Tensor | None]) -> tuple[Tensor, Tensor | None]:
        return _or_masked(torch.minimum, inputs, masks)


@register("Concatenate")
class Concatenate(KerasLayer):
    """``cat(x_1, x_2, ..., axis)``: the inputs agree in every axis but ``axis`` (any axis but the batch);
    output mask as the module docstring says."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        axis = spec.get("axis", -1)
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise spec.error(f"axis must be an integer, got {axis!r}")
        self.axis = axis
        self.output_shape(spec.input_shapes)

    def _axis(self, rank: int) -> int:
        if not -rank <= self.axis < rank:
            raise self.spec.error(f"axis {self.axis} is out of range for inputs of rank {rank}")
        axis = self.axis % rank
        if axis == 0:
            raise self.spec.error("concatenation along the batch axis (axis 0) is not supported")
        return axis

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        if not input_shapes:
            raise self.spec.error("is called on at least 1 input, got 0")
        ranks = {len(s) for s in input_shapes}
        if len(ranks) != 1:
            raise self.spec.error(f"inputs of different ranks: {list(input_shapes)}")
        rank = ranks.pop()
        axis = self._axis(rank)
        out: list[int | None] = list(input_shapes[0])
        for shape in input_shapes[1:]:
            for i, (a, b) in enumerate(zip(out, shape, strict=True)):
                if i == axis:
                    out[i] = None if a is None or b is None else a + b
                elif a is None:
                    out[i] = b
                elif b is not None and a != b:
                    raise self.spec.error(
                        f"inputs must match except in the concatenation axis, got {list(input_shapes)}"
                    )
        return tuple(out)

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        tensors, masks = _inputs_and_masks(self.spec, inputs, mask, kwargs)
        axis = self._axis(tensors[0].dim())
        out = torch.cat(tensors, dim=axis)
        if all(m is None for m in masks):
            return out, None
        pieces = []
        for x, m in zip(tensors, masks, strict=True):
            if m is None:
                pieces.append(torch.ones(x.shape, dtype=torch.bool, device=x.device))
            elif m.dim() < x.dim():
                wide = m.unsqueeze(-1)
                pieces.append(wide if self.spec.keras2 else torch.broadcast_to(wide, x.shape))
            else:
                pieces.append(m)
        try:
            joined = torch.cat(pieces, dim=axis)
        except RuntimeError as error:
            shapes = [tuple(p.shape) for p in pieces]
            raise self.spec.error(
                f"tf-keras cannot concatenate the masks of these inputs along axis {self.axis} (mask shapes "
                f"{shapes}: an input without a mask has a mask of its full shape, one with a mask (B, T, 1)) "
                "and fails on this call"
            ) from error
        return out, joined.all(dim=-1) if self.spec.keras2 else joined.any(dim=-1)


@register("Dot")
class Dot(KerasLayer):
    """Keras's ``batch_dot``: the sum over ``x_1``'s axis ``a_1`` and ``x_2``'s axis ``a_2`` (axes > 0, of
    equal size), per batch element. The output axes are ``x_1``'s remaining ones then ``x_2``'s remaining
    non-batch ones: ``(B, T1, F) . (B, T2, F)`` with axes (2, 2) gives ``(B, T1, T2)``; a result of shape
    ``(B,)`` is ``(B, 1)``. With ``normalize`` each input is first L2-normalised along its axis (Keras 3:
    ``x * min(rsqrt(sum x^2), 1e7)``; Keras 2: ``x * rsqrt(max(sum x^2, 1e-12))``). No output mask."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        axes = spec.get("axes")
        if isinstance(axes, int) and not isinstance(axes, bool):
            pair = [axes, axes]
        elif (
            isinstance(axes, (list, tuple))
            and len(axes) == 2
            and all(isinstance(a, int) and not isinstance(a, bool) for a in axes)
        ):
            pair = [int(axes[0]), int(axes[1])]
        else:
            raise spec.error(f"axes must be an integer or a list of two integers, got {axes!r}")
        self.axes = pair
        self.normalize = spec.get("normalize", False)
        if not isinstance(self.normalize, bool):
            raise spec.error(f"normalize must be a boolean, got {self.normalize!r}")
        self.output_shape(spec.input_shapes)

    def _resolved(self, ranks: Sequence[int]) -> list[int]:
        axes = []
        for axis, rank in zip(self.axes, ranks, strict=True):
            if rank < 2:
                raise self.spec.error(f"inputs must have rank 2 or more, got rank {rank}")
            if not -rank <= axis < rank:
                raise self.spec.error(f"axis {axis} is out of range for an input of rank {rank}")
            resolved = axis % rank
            if resolved == 0:
                raise self.spec.error("cannot take the dot product over the batch axis (axis 0)")
            axes.append(resolved)
        return axes

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        if len(input_shapes) != 2:
            raise self.spec.error(f"is called on exactly 2 inputs, got {len(input_shapes)}")
        first, second = list(input_shapes[0]), list(input_shapes[1])
        _check_batches(self.spec, input_shapes)
        a1, a2 = self._resolved([len(first), len(second)])
        if first[a1] is not None and second[a2] is not None and first[a1] != second[a2]:
            raise self.spec.error(
                f"incompatible input shapes {tuple(first)} and {tuple(second)}: axis {a1} has size "
                f"{first[a1]}, axis {a2} {second[a2]}"
            )
        first.pop(a1)
        second.pop(a2)
        second.pop(0)
        out = first + second
        return tuple(out + [1] if len(out) == 1 else out)

    def _normalized(self, x: Tensor, axis: int) -> Tensor:
        square_sum = (x * x).sum(dim=axis, keepdim=True)
        if self.spec.keras2:
            return x * torch.rsqrt(torch.clamp(square_sum, min=1e-12))
        return x * torch.clamp(torch.rsqrt(square_sum), max=1.0 / 1e-7)

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        tensors, _ = _inputs_and_masks(self.spec, inputs, mask, kwargs)
        if len(tensors) != 2:
            raise self.spec.error(f"is called on exactly 2 inputs, got {len(tensors)}")
        x1, x2 = tensors
        a1, a2 = self._resolved([x1.dim(), x2.dim()])
        if self.normalize:
            x1, x2 = self._normalized(x1, a1), self._normalized(x2, a2)
        letters = "abcdefghijklmnopqrstuvwxyz"
        left = list(letters[: x1.dim()])
        right = [left[0], *letters[x1.dim() : x1.dim() + x2.dim() - 1]]
        right[a2] = left[a1]
        out_axes = [c for i, c in enumerate(left) if i != a1] + [
            c for i, c in enumerate(right) if i not in (0, a2)
        ]
        out = torch.einsum(f"{''.join(left)},{''.join(right)}->{''.join(out_axes)}", x1, x2)
        if out.dim() == 1:
            out = out.unsqueeze(1)
        return out, None
