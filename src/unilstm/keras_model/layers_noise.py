"""Keras's regularization layers in torch: Dropout, SpatialDropout1D, GaussianNoise, GaussianDropout,
AlphaDropout, ActivityRegularization.

At inference (``self.training`` False) each is the identity. In training each draws its noise with torch's
RNG (Keras's ``seed`` names a Keras RNG stream that torch cannot reproduce: the distribution is Keras's, the
numbers are not) with the formulas of Keras's source (Keras 3.15 and tf-keras 2.21 agree unless noted).
Every one passes the incoming mask on (measured on both generations) and uses it for nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .base import KerasLayer, LayerSpec, Masks, Shape, Tensors, register, single

# SELU's constants, as Keras's AlphaDropout writes them.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _rate(spec: LayerSpec, key: str = "rate") -> float:
    """A probability argument; Keras refuses one outside [0, 1] (a rate of 1 is accepted, and fails only
    when the layer runs in training)."""
    value = spec.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise spec.error(f"{key} must be a number in [0, 1], got {value!r}")
    return float(value)


class _Identity(KerasLayer):
    """The inference-time identity the regularization layers share; ``noise`` is their training-time
    output."""

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        return input_shapes[0]

    def noise(self, x: Tensor) -> Tensor:
        return x

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        x, mask = single(self.spec, inputs, mask)
        return (self.noise(x) if self.training else x), mask


def _dropout(x: Tensor, rate: float, noise_shape: Sequence[int]) -> Tensor:
    """``tf.nn.dropout``: keep where uniform[0, 1) >= rate (one draw per element of ``noise_shape``,
    broadcast over x), kept values scaled by 1 / (1 - rate)."""
    keep = torch.rand(tuple(noise_shape), device=x.device) >= rate
    return x * (1.0 / (1.0 - rate)) * keep.to(x.dtype)


@register("Dropout")
class Dropout(_Identity):
    """Training: each element (or each slice sharing a draw, with ``noise_shape``, whose None entries are
    the input's sizes) is zeroed with probability ``rate`` and the rest scaled by 1 / (1 - rate)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self.rate = _rate(spec)
        noise_shape = spec.get("noise_shape")
        if noise_shape is not None:
            rank = len(spec.input_shape)
            if not isinstance(noise_shape, (list, tuple)) or len(noise_shape) != rank:
                raise spec.error(f"noise_shape {noise_shape!r} does not fit inputs of rank {rank}")
            if not all(d is None or (isinstance(d, int) and d > 0) for d in noise_shape):
                raise spec.error(f"noise_shape {noise_shape!r} must hold positive ints or None")
        self.noise_shape = noise_shape

    def _noise_shape(self, x: Tensor) -> list[int]:
        if self.noise_shape is None:
            return list(x.shape)
        return [x.shape[i] if d is None else int(d) for i, d in enumerate(self.noise_shape)]

    def noise(self, x: Tensor) -> Tensor:
        if self.rate == 0:
            return x
        if self.rate == 1:
            raise self.spec.error("rate 1 drops everything; Keras fails on it in training")
        return _dropout(x, self.rate, self._noise_shape(x))


@register("SpatialDropout1D")
class SpatialDropout1D(Dropout):
    """Dropout of whole channels: inputs ``(B, T, C)``, one draw per (sample, channel), noise shape
    ``(B, 1, C)``."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        if len(spec.input_shape) != 3:
            raise spec.error(f"needs inputs (batch, steps, channels), got shape {spec.input_shape}")

    def _noise_shape(self, x: Tensor) -> list[int]:
        return [x.shape[0], 1, x.shape[2]]


@register("GaussianNoise")
class GaussianNoise(_Identity):
    """Training: x + N(0, stddev^2), one draw per element."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        value = spec.get("stddev")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise spec.error(f"stddev must be a number >= 0, got {value!r}")
        if not spec.keras2 and value > 1:
            raise spec.error(f"stddev must be in [0, 1] in Keras 3, got {value!r}")
        self.stddev = float(value)

    def noise(self, x: Tensor) -> Tensor:
        if self.stddev == 0:
            return x
        return x + torch.randn_like(x) * self.stddev


@register("GaussianDropout")
class GaussianDropout(_Identity):
    """Training: x * N(1, rate / (1 - rate)), one draw per element. tf-keras leaves x unchanged for a rate
    of 0 or 1; Keras 3 fails on rate 1."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self.rate = _rate(spec)

    def noise(self, x: Tensor) -> Tensor:
        if self.rate == 0 or (self.rate == 1 and self.spec.keras2):
            return x
        if self.rate == 1:
            raise self.spec.error("rate 1 makes an infinite standard deviation; Keras 3 fails on it")
        stddev = math.sqrt(self.rate / (1.0 - self.rate))
        return x * (1.0 + torch.randn_like(x) * stddev)


@register("AlphaDropout")
class AlphaDropout(_Identity):
    """Training: SELU-preserving dropout. With alpha' = -SELU_ALPHA * SELU_SCALE, keep = uniform >= rate
    (per element, or per ``noise_shape`` slice in Keras 3; tf-keras does not save its noise_shape),
    a = ((1 - rate)(1 + rate alpha'^2))^-1/2, b = -a alpha' rate:
    y = a * (keep ? x : alpha') + b. tf-keras leaves x unchanged for a rate of 0 or 1; Keras 3 fails on 1."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self.rate = _rate(spec)
        noise_shape = spec.get("noise_shape")
        if noise_shape is not None and (
            not isinstance(noise_shape, (list, tuple)) or len(noise_shape) != len(spec.input_shape)
        ):
            rank = len(spec.input_shape)
            raise spec.error(f"noise_shape {noise_shape!r} does not fit inputs of rank {rank}")
        self.noise_shape = noise_shape

    def noise(self, x: Tensor) -> Tensor:
        if self.rate == 0 or (self.rate == 1 and self.spec.keras2):
            return x
        if self.rate == 1:
            raise self.spec.error("rate 1 divides by zero; Keras 3 fails on it in training")
        shape = list(x.shape)
        if self.noise_shape is not None:
            shape = [x.shape[i] if d is None else int(d) for i, d in enumerate(self.noise_shape)]
        keep = (torch.rand(shape, device=x.device) >= self.rate).to(x.dtype)
        alpha_p = -SELU_ALPHA * SELU_SCALE
        a = ((1 - self.rate) * (1 + self.rate * alpha_p**2)) ** -0.5
        b = -a * alpha_p * self.rate
        return a * (x * keep + alpha_p * (1 - keep)) + b


@register("ActivityRegularization")
class ActivityRegularization(_Identity):
    """The identity, in training too: its l1/l2 penalty on the activity is a loss term Keras adds to the
    training loss, not part of the output (torch users add ``l1 * |y|.sum() + l2 * (y**2).sum()``)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        for key in ("l1", "l2"):
            value = spec.get(key, 0.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise spec.error(f"{key} must be a number >= 0, got {value!r}")
        self.l1 = float(spec.get("l1", 0.0))
        self.l2 = float(spec.get("l2", 0.0))
