"""Keras's 1D pooling and convolution: GlobalAveragePooling1D, GlobalMaxPooling1D, MaxPooling1D,
AveragePooling1D and Conv1D.

Inputs are ``(B, T, C)`` (``data_format="channels_last"``, the default) or ``(B, C, T)``
(``"channels_first"``). Masks (measured on Keras 3.15.1 and tf-keras 2.21, the same in both):

- GlobalAveragePooling1D averages over the present steps only, ``sum_t m_t x_t / sum_t m_t``, so a fully
  masked sequence gives ``0 / 0 = NaN`` as in Keras; its output has no mask.
- GlobalMaxPooling1D, MaxPooling1D, AveragePooling1D and Conv1D ignore a mask (masked steps are pooled and
  convolved like the others) and drop it: their output has no mask. Keras 3 warns that the mask is lost;
  tf-keras does so silently.

``padding="same"`` follows TensorFlow: for a window ``k`` (dilated: ``(k - 1) d + 1``) and stride ``s``
over ``T`` steps the output has ``ceil(T / s)`` steps and ``max((ceil(T / s) - 1) s + k - T, 0)`` padded
steps, the smaller half on the left. Padded steps are zeros for Conv1D, never the maximum for
MaxPooling1D, and are not counted by AveragePooling1D (its mean is over the window's real steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..activations import resolve
from ..keras_names import UnknownKerasActivationError, activation_from_stored_config
from .base import KerasLayer, LayerSpec, Masks, Shape, Tensors, parameter, register, single

_DATA_FORMATS = ("channels_last", "channels_first")


def _no_call_arguments(spec: LayerSpec, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise spec.error(f"unsupported call arguments: {', '.join(sorted(kwargs))}")


def _data_format(spec: LayerSpec) -> str:
    value = spec.get("data_format") or "channels_last"
    if value not in _DATA_FORMATS:
        raise spec.error(f"data_format must be 'channels_last' or 'channels_first', got {value!r}")
    return str(value)


def _one_int(spec: LayerSpec, key: str, default: Any, minimum: int = 1) -> int:
    """A 1D layer's size argument: an int or a list of one int (how Keras stores it), at least ``minimum``."""
    value = spec.get(key, default)
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise spec.error(f"{key} must be an integer >= {minimum} (or a list of one), got {value!r}")
    return value


def _padding(spec: LayerSpec, allowed: Sequence[str]) -> str:
    value = spec.get("padding", "valid")
    if not isinstance(value, str) or value.lower() not in allowed:
        raise spec.error(f"padding must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value.lower()


def _three_d(spec: LayerSpec, shape: Shape) -> None:
    if len(shape) != 3:
        raise spec.error(f"expects inputs of rank 3 (batch, steps, channels), got shape {shape}")


def _out_steps(steps: int | None, window: int, stride: int, padding: str) -> int | None:
    """Output steps for a (dilated) window: ``ceil(T / s)`` for same and causal, else
    ``floor((T - window) / s) + 1``; None for an unknown T."""
    if steps is None:
        return None
    if padding in ("same", "causal"):
        return -(-steps // stride)
    return (steps - window) // stride + 1


def _same_padding(steps: int, window: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding (left, right) of a time axis."""
    total = max((-(-steps // stride) - 1) * stride + window - steps, 0)
    return total // 2, total - total // 2


def _channels_last(x: Tensor, data_format: str) -> Tensor:
    return x if data_format == "channels_last" else x.transpose(1, 2)


@register("GlobalAveragePooling1D")
class GlobalAveragePooling1D(KerasLayer):
    """The mean over the steps: ``(B, T, C) -> (B, C)`` (``(B, 1, C)`` with ``keepdims``; channels_first
    ``(B, C, T) -> (B, C)`` or ``(B, C, 1)``); with a mask the mean over the present steps (NaN for none)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self.data_format = _data_format(spec)
        self.keepdims = bool(spec.get("keepdims", False))
        self.output_shape(spec.input_shapes)

    def _steps_axis(self) -> int:
        return 1 if self.data_format == "channels_last" else 2

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        if len(input_shapes) != 1:
            raise self.spec.error(f"expects one input tensor, is called on {len(input_shapes)}")
        shape = input_shapes[0]
        _three_d(self.spec, shape)
        axis = self._steps_axis()
        if self.keepdims:
            return tuple(1 if i == axis else s for i, s in enumerate(shape))
        return tuple(s for i, s in enumerate(shape) if i != axis)

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        _no_call_arguments(self.spec, kwargs)
        x, m = single(self.spec, inputs, mask)
        axis = self._steps_axis()
        if m is None:
            return x.mean(dim=axis, keepdim=self.keepdims), None
        present = m.to(torch.bool).unsqueeze(2 if self.data_format == "channels_last" else 1)
        weights = present.to(x.dtype)
        # Keras 3 selects the present steps (a masked inf or NaN is dropped); Keras 2 multiplies by the mask.
        kept = (
            x * weights
            if self.spec.keras2
            else torch.where(present, x, torch.zeros((), dtype=x.dtype, device=x.device))
        )
        total = kept.sum(dim=axis, keepdim=self.keepdims)
        return total / weights.sum(dim=axis, keepdim=self.keepdims), None


@register("GlobalMaxPooling1D")
class GlobalMaxPooling1D(GlobalAveragePooling1D):
    """The maximum over the steps, masked steps included (both Kerases ignore the mask); no output mask."""

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        _no_call_arguments(self.spec, kwargs)
        x, _ = single(self.spec, inputs, mask)
        return x.amax(dim=self._steps_axis(), keepdim=self.keepdims), None


class _Pooling1D(KerasLayer):
    """A window of ``pool_size`` steps every ``strides`` steps (default ``pool_size``): ``(B, T, C) ->
    (B, T', C)`` (channels_first ``(B, C, T) -> (B, C, T')``), T' as :func:`_out_steps`."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self.pool_size = _one_int(spec, "pool_size", 2)
        strides = spec.get("strides")
        self.strides = self.pool_size if strides is None else _one_int(spec, "strides", strides)
        self.padding = _padding(spec, ("valid", "same"))
        self.data_format = _data_format(spec)
        self.output_shape(spec.input_shapes)

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        if len(input_shapes) != 1:
            raise self.spec.error(f"expects one input tensor, is called on {len(input_shapes)}")
        shape = input_shapes[0]
        _three_d(self.spec, shape)
        axis = 1 if self.data_format == "channels_last" else 2
        steps = _out_steps(shape[axis], self.pool_size, self.strides, self.padding)
        if steps is not None and steps < 1:
            raise self.spec.error(f"pool_size {self.pool_size} is longer than the {shape[axis]} input steps")
        return tuple(steps if i == axis else s for i, s in enumerate(shape))

    def _windows(self, x: Tensor, fill: float) -> tuple[Tensor, Tensor]:
        """The windows ``(B, T', C, pool_size)`` of channels-last ``x``, padding filled with ``fill``, and
        which of their steps are real ``(T', pool_size)``."""
        steps = x.shape[1]
        left = right = 0
        if self.padding == "same":
            left, right = _same_padding(steps, self.pool_size, self.strides)
        elif steps < self.pool_size:
            raise self.spec.error(f"pool_size {self.pool_size} is longer than the {steps} input steps")
        padded = F.pad(x, (0, 0, left, right), value=fill)
        real = F.pad(torch.ones(steps, dtype=torch.bool, device=x.device), (left, right), value=False)
        return padded.unfold(1, self.pool_size, self.strides), real.unfold(0, self.pool_size, self.strides)

    def _pool(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        _no_call_arguments(self.spec, kwargs)
        x, _ = single(self.spec, inputs, mask)
        x = _channels_last(x, self.data_format)
        return _channels_last(self._pool(x), self.data_format), None


@register("MaxPooling1D")
class MaxPooling1D(_Pooling1D):
    """The maximum of each window's real steps; the mask is ignored and dropped."""

    def _pool(self, x: Tensor) -> Tensor:
        windows, _ = self._windows(x, float("-inf"))
        return windows.amax(dim=-1)


@register("AveragePooling1D")
class AveragePooling1D(_Pooling1D):
    """The mean of each window's real steps (padding not counted); the mask is ignored and dropped."""

    def _pool(self, x: Tensor) -> Tensor:
        windows, real = self._windows(x, 0.0)
        counts = real.sum(dim=-1).to(x.dtype)  # (T',)
        return windows.sum(dim=-1) / counts.unsqueeze(-1)


@register("Conv1D")
class Conv1D(KerasLayer):
    """``y[b, t, f] = act(bias[f] + sum_{j, c} x[b, t s + j d - pad_left, g(f) C/G + c] kernel[j, c, f])``:
    Keras's cross-correlation with kernel ``(kernel_size, C / groups, filters)``, stride ``s``, dilation
    ``d``, ``groups`` G (filter f sees the channels of its group g(f) = f // (filters / G)), padding valid,
    same (TensorFlow's, :func:`_same_padding`) or causal (``d (k - 1)`` zeros on the left). ``(B, T, C) ->
    (B, T', filters)`` (channels_first ``(B, C, T) -> (B, filters, T')``); the mask is ignored and
    dropped."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self.filters = _one_int(spec, "filters", None)
        self.kernel_size = _one_int(spec, "kernel_size", None)
        self.strides = _one_int(spec, "strides", 1)
        self.dilation_rate = _one_int(spec, "dilation_rate", 1)
        self.groups = _one_int(spec, "groups", 1)
        self.padding = _padding(spec, ("valid", "same", "causal"))
        self.data_format = _data_format(spec)
        self.use_bias = spec.get("use_bias", True)
        if not isinstance(self.use_bias, bool):
            raise spec.error(f"use_bias must be a boolean, got {self.use_bias!r}")
        if self.strides > 1 and self.dilation_rate > 1:
            raise spec.error(
                f"strides > 1 together with dilation_rate > 1 is not supported (Keras refuses it), got "
                f"strides={self.strides}, dilation_rate={self.dilation_rate}"
            )
        if self.filters % self.groups:
            raise spec.error(f"filters ({self.filters}) must be divisible by groups ({self.groups})")
        if spec.get("lora_rank"):
            raise spec.error(f"lora_rank={spec.get('lora_rank')!r} (LoRA) is not supported")
        self._activation = self._resolve_activation(spec)
        self.weight_names = ["kernel", "bias"] if self.use_bias else ["kernel"]
        shape = spec.input_shape
        _three_d(spec, shape)
        channels = shape[2] if self.data_format == "channels_last" else shape[1]
        if channels is None:
            raise spec.error(f"the channel axis of the input shape {shape} must be known")
        if channels % self.groups:
            raise spec.error(f"the {channels} input channels must be divisible by groups ({self.groups})")
        self.channels = channels
        self.kernel: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        self.output_shape(spec.input_shapes)

    @staticmethod
    def _resolve_activation(spec: LayerSpec) -> Any:
        value = spec.get("activation")
        if value == "glu" or (isinstance(value, dict) and value.get("config") == "glu"):
            raise spec.error("activation 'glu' (it halves the last axis) is not supported")
        try:
            return resolve(activation_from_stored_config(value, spec.keras2, spec.custom_objects))
        except (UnknownKerasActivationError, TypeError, ValueError) as error:
            raise spec.error(f"activation {value!r} is not supported: {error}") from None

    @property
    def _window(self) -> int:
        return (self.kernel_size - 1) * self.dilation_rate + 1

    def weight_shapes(self) -> list[Shape]:
        kernel = (self.kernel_size, self.channels // self.groups, self.filters)
        return [kernel, (self.filters,)] if self.use_bias else [kernel]

    def load(self, arrays: Sequence[np.ndarray]) -> None:
        self.kernel = parameter(arrays[0])
        self.bias = parameter(arrays[1]) if self.use_bias else None

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        if len(input_shapes) != 1:
            raise self.spec.error(f"expects one input tensor, is called on {len(input_shapes)}")
        shape = input_shapes[0]
        _three_d(self.spec, shape)
        axis = 1 if self.data_format == "channels_last" else 2
        steps = _out_steps(shape[axis], self._window, self.strides, self.padding)
        if steps is not None and steps < 1:
            raise self.spec.error(
                f"the dilated kernel ({self._window} steps) is longer than the {shape[axis]} steps"
            )
        if self.data_format == "channels_last":
            return (shape[0], steps, self.filters)
        return (shape[0], self.filters, steps)

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        _no_call_arguments(self.spec, kwargs)
        x, _ = single(self.spec, inputs, mask)
        if self.kernel is None:
            raise self.spec.error("called before its weights were loaded")
        x = _channels_last(x, self.data_format).transpose(1, 2)  # (B, C, T), torch's layout
        steps = x.shape[2]
        if self.padding == "causal":
            x = F.pad(x, (self._window - 1, 0))
        elif self.padding == "same":
            x = F.pad(x, _same_padding(steps, self._window, self.strides))
        if x.shape[2] < self._window:
            raise self.spec.error(
                f"the dilated kernel ({self._window} steps) is longer than the {steps} steps"
            )
        weight = self.kernel.to(x.dtype).permute(2, 1, 0)  # (filters, C / groups, k)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        y = F.conv1d(x, weight, bias, stride=self.strides, dilation=self.dilation_rate, groups=self.groups)
        y = y.transpose(1, 2)  # (B, T', filters)
        if self.data_format == "channels_first":
            y = y.transpose(1, 2)
        return self._activation(y), None
