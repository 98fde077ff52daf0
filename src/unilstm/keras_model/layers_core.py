"""Keras's core layers around the LSTMs, in torch: Embedding, Masking, Dense, Activation, BatchNormalization,
LayerNormalization and TimeDistributed (of any registered layer).

Shapes are Keras's, batch first; a mask is a bool tensor over all axes but the last (``(B, T)`` for a
``(B, T, F)`` sequence), True where a step is present. Mask rules, measured on Keras 3.15 and tf-keras 2.21:

- Embedding makes a mask ``ids != 0`` when ``mask_zero`` and otherwise none; a mask arriving at it is dropped
  (both generations).
- Masking makes ``any(x != mask_value, -1)`` and ignores the incoming mask (both).
- Dense, Activation, BatchNormalization and LayerNormalization pass the incoming mask on unchanged (both);
  BatchNormalization also uses it for its batch statistics in training (both).
- TimeDistributed: Keras 3 passes its input mask on; tf-keras passes on the inner layer's output mask
  (reshaped back to ``(B, T, ...)``) when the inner layer makes one (Masking does), else the input mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..activations import Activation, resolve
from ..keras_names import (
    KERAS_ACTIVATIONS,
    UnknownKerasActivationError,
    activation_from_stored_config,
    stored_activation_name,
)
from .base import REGISTRY, KerasLayer, LayerSpec, Masks, Shape, Tensors, parameter, register, single

# -- helpers shared by the core, shape and noise layers ---------------------------------------------


def refuse_set(spec: LayerSpec, **defaults: Any) -> None:
    """Refuse, by name, each config argument that differs from its default (the value under which the
    layer computes what this module implements); an absent argument is its default."""
    for key, default in defaults.items():
        value = spec.get(key, default)
        if value != default and not (default is None and value in (None, 0, False)):
            raise spec.error(f"argument {key}={value!r} is not supported (only {key}={default!r})")


def refuse_quantized(spec: LayerSpec) -> None:
    """Refuse Keras 3's quantized layers (a ``dtype`` policy in int8/int4/float8 mode, a
    ``quantization_config``) and LoRA (``lora_rank``): their weights are not the float kernel read here."""
    refuse_set(spec, lora_rank=None, quantization_config=None)
    dtype = spec.get("dtype")
    if isinstance(dtype, dict):
        inner = dtype.get("config")
        mode = inner.get("mode") if isinstance(inner, dict) else None
        if "Quantized" in str(dtype.get("class_name", "")) or mode is not None:
            kind = dtype.get("class_name")
            raise spec.error(f"quantized layers (dtype {kind}, mode {mode!r}) are not supported")


def positive_int(spec: LayerSpec, key: str) -> int:
    """A config argument that must be a positive integer (Keras refuses anything else)."""
    value = spec.get(key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise spec.error(f"{key} must be a positive integer, got {value!r}")
    return value


def known_dim(spec: LayerSpec, shape: Shape, axis: int, what: str) -> int:
    """``shape[axis]``, which the layer's weights need known."""
    if not -len(shape) <= axis < len(shape):
        raise spec.error(f"{what}: axis {axis} is out of range for input shape {shape}")
    dim = shape[axis]
    if dim is None:
        raise spec.error(f"{what}: axis {axis} of input shape {shape} must be known")
    return dim


def normalized_axes(spec: LayerSpec, axis: Any, rank: int) -> list[int]:
    """Keras's ``axis`` argument (an int or a list of ints, negative counting from the end) as non-negative
    axes in the given order; an axis 0 (the batch), out of range or repeated is an error."""
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if not axes or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise spec.error(f"axis must be an int or a list of ints, got {axis!r}")
    result = [a + rank if a < 0 else a for a in axes]
    if any(not 0 < a < rank for a in result) or len(set(result)) != len(result):
        raise spec.error(f"axis {axis!r} is not valid for inputs of rank {rank}")
    return result


def keras_activation(spec: LayerSpec, key: str = "activation") -> Activation:
    """The function of a layer's stored activation (a Keras name, a serialized function, None for linear,
    or a name in ``custom_objects``). Outside an LSTM ``glu`` (halving the last axis) and ``softmax`` (over
    the last axis) are fine; ``threshold`` needs arguments a config cannot give (Keras fails on it)."""
    value = stored_activation_name(spec.get(key))
    if isinstance(value, dict) and isinstance(value.get("class_name"), str):
        value = value["class_name"]  # Keras 2's legacy {"class_name": name, "config": {...}}
    if isinstance(value, str) and value not in spec.custom_objects:
        value = value.rsplit(".", 1)[-1]
        if value == "threshold":
            raise spec.error(f"{key}: 'threshold' needs threshold and default_value arguments (Keras fails)")
    try:
        found = activation_from_stored_config(value, spec.keras2, spec.custom_objects)
        return resolve(found, key)
    except UnknownKerasActivationError:
        raise spec.error(
            f"{key}: unknown activation {value!r}; Keras names: {', '.join(KERAS_ACTIVATIONS)}, or a name in "
            "custom_objects"
        ) from None
    except (TypeError, ValueError) as exc:
        raise spec.error(f"{key}: {exc}") from None


def activation_width(spec: LayerSpec, key: str, width: int | None) -> int | None:
    """The last axis after the activation: ``glu`` halves it (and needs it even)."""
    if stored_activation_name(spec.get(key)) in ("glu", "keras.activations.glu") and width is not None:
        if width % 2:
            raise spec.error(f"{key}: 'glu' splits the last axis in two halves, {width} is odd")
        return width // 2
    return width


# -- Embedding, Masking -----------------------------------------------------------------------------------


@register("Embedding")
class Embedding(KerasLayer):
    """``embeddings[ids]``: ids ``(B, ...)`` (an integer tensor; floats are truncated to int32 as Keras
    casts them) -> ``(B, ..., output_dim)``. Weight ``embeddings`` ``(input_dim, output_dim)``.

    Out-of-range ids raise as Keras on CPU does (never clamped): tf-keras accepts ``0 <= id < input_dim``;
    Keras 3 (``ops.take``) also accepts ``-input_dim <= id < 0``, counting from the end. With ``mask_zero``
    the output mask is ``ids != 0`` (on the ids as given, before any cast); otherwise no mask. Keras 2's
    ``input_length`` only fixes the output shape."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self.weight_names = ["embeddings"]
        refuse_quantized(spec)
        self.input_dim = positive_int(spec, "input_dim")
        self.output_dim = positive_int(spec, "output_dim")
        self.mask_zero = bool(spec.get("mask_zero", False))
        self.input_length = spec.get("input_length")
        self.output_shape(spec.input_shapes)

    def weight_shapes(self) -> list[Shape]:
        return [(self.input_dim, self.output_dim)]

    def load(self, arrays: Sequence[np.ndarray]) -> None:
        (embeddings,) = arrays
        self.embeddings = parameter(embeddings)

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        (shape,) = input_shapes
        dims = list(shape[1:])
        if self.input_length is not None:
            given_length = self.input_length
            lengths = list(given_length) if isinstance(given_length, (list, tuple)) else [given_length]
            misfit = self.spec.error(f"input_length {given_length!r} does not fit input shape {shape}")
            if len(lengths) != len(dims):
                raise misfit
            for i, (given, have) in enumerate(zip(lengths, dims, strict=True)):
                if given is not None and have is not None and given != have:
                    raise misfit
                dims[i] = have if have is not None else given
        return (shape[0], *dims, self.output_dim)

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        ids, _ = single(self.spec, inputs, mask)
        out_mask = ids != 0 if self.mask_zero else None
        index = ids if ids.dtype in (torch.int32, torch.int64) else ids.to(torch.int32)
        index = index.long()
        low = -self.input_dim if not self.spec.keras2 else 0
        smallest = 0
        if index.numel():
            smallest, largest = (int(v) for v in torch.aminmax(index))
            if smallest < low or largest >= self.input_dim:
                bad = index[(index < low) | (index >= self.input_dim)][0]
                raise self.spec.error(
                    f"id {int(bad)} is out of range [{low}, {self.input_dim}) (Keras fails on it too)"
                )
        if smallest < 0:
            index = torch.where(index < 0, index + self.input_dim, index)
        return F.embedding(index, self.embeddings), out_mask


@register("Masking")
class Masking(KerasLayer):
    """Marks the steps whose features all equal ``mask_value`` as absent.

    mask = any(x != mask_value, axis=-1); output = where(mask, x, 0) in Keras 3, x * mask in tf-keras (the
    two differ only for inf/nan features of a masked step). Any incoming mask is ignored."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        value = spec.get("mask_value", 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise spec.error(f"mask_value must be a number, got {value!r}")
        self.mask_value = float(value)

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        return input_shapes[0]

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        x, _ = single(self.spec, inputs, mask)
        keep = (x != self.mask_value).any(dim=-1, keepdim=True)
        if self.spec.keras2:
            out = x * keep.to(x.dtype)
        else:
            out = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
        return out, keep.squeeze(-1)


# -- Dense, Activation ------------------------------------------------------------------------------------


@register("Dense")
class Dense(KerasLayer):
    """``activation(x @ kernel + bias)`` on the last axis of inputs of any rank >= 2: ``(B, ..., in)`` ->
    ``(B, ..., units)`` (``units / 2`` after ``glu``). Weights ``kernel`` ``(in, units)``, ``bias``
    ``(units,)`` when ``use_bias``. The mask passes on."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        refuse_quantized(spec)
        self.units = positive_int(spec, "units")
        self.use_bias = bool(spec.get("use_bias", True))
        self.activation = keras_activation(spec)
        shape = spec.input_shape
        if len(shape) < 2:
            raise spec.error(f"needs inputs of rank >= 2, got shape {shape}")
        self.in_features = known_dim(spec, shape, -1, "the kernel's input size")
        self.weight_names = ["kernel", "bias"] if self.use_bias else ["kernel"]
        self.output_shape(spec.input_shapes)

    def weight_shapes(self) -> list[Shape]:
        shapes: list[Shape] = [(self.in_features, self.units), (self.units,)]
        return shapes[: len(self.weight_names)]

    def load(self, arrays: Sequence[np.ndarray]) -> None:
        self.kernel = parameter(arrays[0])
        self.bias = parameter(arrays[1]) if self.use_bias else None

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        (shape,) = input_shapes
        return (*shape[:-1], activation_width(self.spec, "activation", self.units))

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        x, mask = single(self.spec, inputs, mask)
        y = torch.matmul(x, self.kernel)
        if self.bias is not None:
            y = y + self.bias
        return self.activation(y), mask


@register("Activation")
class KerasActivation(KerasLayer):
    """``activation(x)`` elementwise (``softmax``/``log_softmax`` over the last axis, ``glu`` halving it).
    The mask passes on."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self.activation = keras_activation(spec)
        self.output_shape(spec.input_shapes)

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        (shape,) = input_shapes
        if not shape:
            return shape
        return (*shape[:-1], activation_width(self.spec, "activation", shape[-1]))

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        x, mask = single(self.spec, inputs, mask)
        return self.activation(x), mask


# -- BatchNormalization, LayerNormalization -------------------------------------------------------------


def _normalize(
    x: Tensor, mean: Tensor, variance: Tensor, gamma: Tensor | None, beta: Tensor | None, epsilon: float
) -> Tensor:
    """``tf.nn.batch_normalization``'s order of operations (all arguments broadcast against ``x``):
    inv = rsqrt(variance + epsilon) * gamma; x * inv + (beta - mean * inv)."""
    inv = torch.rsqrt(variance + epsilon)
    if gamma is not None:
        inv = inv * gamma
    shift = -mean * inv if beta is None else beta - mean * inv
    return x * inv + shift


@register("BatchNormalization")
class BatchNormalization(KerasLayer):
    """Normalization of each channel (``axis``, default the last) with its mean and variance.

    y = (x - mean) / sqrt(variance + epsilon) * gamma + beta, with ``gamma`` (when ``scale``) and ``beta``
    (when ``center``) parameters of shape ``(C,)``, and buffers ``moving_mean``, ``moving_variance``
    ``(C,)``. Weights in Keras's order: gamma, beta, moving_mean, moving_variance.

    At inference mean/variance are the moving statistics. In training (``self.training`` and the config's
    ``trainable``; a frozen Keras BatchNormalization runs in inference mode even in training) they are the
    batch's, over all axes but ``axis``, biased (divided by n, measured on both generations), weighted by
    the mask where one comes (present steps only: Keras 3 divides by count + 1e-7, tf-keras by the count),
    and the buffers become ``moving * momentum + batch * (1 - momentum)``. tf-keras on 4-D/5-D inputs with
    the channel axis first or last uses its fused kernel: the moving variance then takes the unbiased batch
    variance (n / (n - 1)) and the mask is ignored (as tf-keras does, with a warning).
    """

    moving_mean: Tensor
    moving_variance: Tensor

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        refuse_set(spec, renorm=False, virtual_batch_size=None, adjustment=None)
        # ``synchronized`` reduces the moments across replicas; on one device they are the plain ones.
        shape = spec.input_shape
        rank = len(shape)
        axes = normalized_axes(spec, spec.get("axis", -1), rank)
        if len(axes) != 1:
            raise spec.error(f"normalizing over several axes (axis={spec.get('axis')!r}) is not supported")
        self.axis = axes[0]
        self.channels = known_dim(spec, shape, self.axis, "the normalized axis")
        self.momentum = float(spec.get("momentum", 0.99))
        self.epsilon = float(spec.get("epsilon", 1e-3))
        if self.epsilon < 0:
            raise spec.error(f"epsilon must be >= 0, got {self.epsilon}")
        self.center = bool(spec.get("center", True))
        self.scale = bool(spec.get("scale", True))
        self.trainable = bool(spec.get("trainable", True))
        fused_axes = {4: (1, 3), 5: (1, 4)}.get(rank, ())
        if spec.keras2 and rank == 4 and spec.get("fused") is not False and self.axis not in fused_axes:
            raise spec.error(f"tf-keras's fused kernel on 4-D inputs needs axis 1 or 3, got {self.axis}")
        self.fused = spec.keras2 and self.axis in fused_axes and spec.get("fused") is not False
        params = (["gamma"] if self.scale else []) + (["beta"] if self.center else [])
        self.weight_names = [*params, "moving_mean", "moving_variance"]

    def weight_shapes(self) -> list[Shape]:
        return [(self.channels,)] * len(self.weight_names)

    def load(self, arrays: Sequence[np.ndarray]) -> None:
        named = dict(zip(self.weight_names, arrays, strict=True))
        self.gamma = parameter(named["gamma"]) if self.scale else None
        self.beta = parameter(named["beta"]) if self.center else None
        for key in ("moving_mean", "moving_variance"):
            self.register_buffer(key, torch.from_numpy(np.array(named[key], np.float32)))

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        return input_shapes[0]

    def _moments(self, x: Tensor, mask: Tensor | None, axes: list[int]) -> tuple[Tensor, Tensor]:
        if mask is None or self.fused:
            mean = x.mean(dim=axes)
            diff = x - mean.view(self._broadcast(x))
            return mean, (diff * diff).mean(dim=axes)
        if mask.dim() != x.dim() - 1:
            shapes = f"{tuple(mask.shape)}, inputs {tuple(x.shape)}"
            raise self.spec.error(f"a mask needs one axis less than the inputs: mask {shapes}")
        weights = mask.unsqueeze(-1).expand_as(x).to(x.dtype)
        count = weights.sum(dim=axes)
        if not self.spec.keras2:
            count = count + 1e-7  # Keras 3's backend.epsilon() guarding an all-masked batch
        mean = (x * weights).sum(dim=axes) / count
        diff = (x - mean.view(self._broadcast(x))) * weights
        return mean, (diff * diff).sum(dim=axes) / count

    def _broadcast(self, x: Tensor) -> list[int]:
        shape = [1] * x.dim()
        shape[self.axis] = self.channels
        return shape

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        x, mask = single(self.spec, inputs, mask)
        view = self._broadcast(x)
        if self.training and self.trainable:
            axes = [i for i in range(x.dim()) if i != self.axis]
            mean, variance = self._moments(x, mask, axes)
            moving_variance = variance
            if self.fused:
                count = x.numel() // self.channels
                moving_variance = variance * (count / max(count - 1, 1))
            with torch.no_grad():
                for buffer, value in ((self.moving_mean, mean), (self.moving_variance, moving_variance)):
                    if self.spec.keras2:  # tf-keras: moving -= (moving - value) * (1 - momentum)
                        buffer.sub_((buffer - value.detach()) * (1.0 - self.momentum))
                    else:
                        buffer.copy_(buffer * self.momentum + value.detach() * (1.0 - self.momentum))
        else:
            mean, variance = self.moving_mean, self.moving_variance
        gamma = None if self.gamma is None else self.gamma.view(view)
        beta = None if self.beta is None else self.beta.view(view)
        return _normalize(x, mean.view(view), variance.view(view), gamma, beta, self.epsilon), mask


@register("LayerNormalization")
class LayerNormalization(KerasLayer):
    """Normalization of each sample over ``axis`` (an int or list, default the last).

    y = (x - mean) / sqrt(variance + epsilon) * gamma + beta, mean and (biased) variance over the axes;
    ``gamma`` (when ``scale``) and ``beta`` (when ``center``) have the shape of those axes. Keras 3's
    deprecated ``rms_scaling=True``: y = x / sqrt(variance + epsilon) * gamma (the variance still centred,
    no beta; Keras's own warning says so). The mask passes on, unused."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        shape = spec.input_shape
        raw = spec.get("axis", -1)
        listed = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        if not spec.keras2 and all(isinstance(a, int) for a in listed):
            listed = sorted(listed)  # Keras 3 sorts the axes as given and shapes gamma in that order
        axes = normalized_axes(spec, listed, len(shape))
        if axes != sorted(axes):
            raise spec.error(f"axis {raw!r}: gamma's axes out of the inputs' order are not supported")
        self.axes = axes
        self.param_shape = tuple(known_dim(spec, shape, a, "a normalized axis") for a in axes)
        self.epsilon = float(spec.get("epsilon", 1e-3))
        self.rms_scaling = bool(spec.get("rms_scaling", False))
        if self.rms_scaling and spec.keras2:
            raise spec.error("rms_scaling is a Keras 3 argument")
        self.scale = bool(spec.get("scale", True)) or self.rms_scaling
        self.center = bool(spec.get("center", True)) and not self.rms_scaling
        self.weight_names = (["gamma"] if self.scale else []) + (["beta"] if self.center else [])

    def weight_shapes(self) -> list[Shape]:
        shape: Shape = self.param_shape
        return [shape] * len(self.weight_names)

    def load(self, arrays: Sequence[np.ndarray]) -> None:
        named = dict(zip(self.weight_names, arrays, strict=True))
        self.gamma = parameter(named["gamma"]) if self.scale else None
        self.beta = parameter(named["beta"]) if self.center else None

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        return input_shapes[0]

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        x, mask = single(self.spec, inputs, mask)
        view = [x.shape[i] if i in self.axes else 1 for i in range(x.dim())]
        gamma = None if self.gamma is None else self.gamma.reshape(view)
        beta = None if self.beta is None else self.beta.reshape(view)
        mean = x.mean(dim=self.axes, keepdim=True)
        diff = x - mean
        variance = (diff * diff).mean(dim=self.axes, keepdim=True)
        if self.rms_scaling:
            out = x * torch.rsqrt(variance + self.epsilon)
            return (out if gamma is None else out * gamma), mask
        return _normalize(x, mean, variance, gamma, beta, self.epsilon), mask


# -- TimeDistributed ----------------------------------------------------------------------------------------


@register("TimeDistributed")
class TimeDistributed(KerasLayer):
    """Its inner layer (any registered class, built for the per-step input shape ``(B, *shape[2:])``)
    applied to every step: ``(B, T, ...)`` is run as ``(B * T, ...)`` and reshaped back to ``(B, T, ...)``;
    a mask ``(B, T, ...)`` reaches the inner layer as ``(B * T, ...)``. Its weights are the inner layer's
    (the module ``layer``).

    Keras 3 runs the inner layer step by step: in training, where that matters (a BatchNormalization takes
    each step's batch statistics and updates its moving ones T times), it is run so too. The output mask is
    the input mask in Keras 3; in tf-keras it is the inner layer's output mask reshaped to ``(B, T, ...)``
    where the inner layer makes one, else the input mask reduced to ``(B, T)`` with ``any`` (measured with
    the batch size open and fixed: tf-keras's two code paths agree on this).
    """

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        inner = spec.get("layer")
        if not isinstance(inner, dict) or not isinstance(inner.get("class_name"), str):
            raise spec.error(f"needs a serialized inner layer, got {inner!r}")
        class_name = inner["class_name"]
        config = inner.get("config") or {}
        shape = spec.input_shape
        if len(shape) < 3:
            raise spec.error(f"needs inputs of rank >= 3 (batch, time, ...), got shape {shape}")
        if class_name not in REGISTRY:
            raise spec.error(f"the inner layer's class {class_name!r} is not supported")
        name = str(config.get("name", class_name))
        inner_spec = LayerSpec(
            name=name,
            class_name=class_name,
            config=config,
            input_shapes=((None, *shape[2:]),),
            keras2=spec.keras2,
            where=f"{spec.where or 'TimeDistributed ' + repr(spec.name)} > {class_name} {name!r}",
            custom_objects=spec.custom_objects,
        )
        self.layer = REGISTRY[class_name](inner_spec)
        self.weight_names = list(self.layer.weight_names)
        self.output_shape(spec.input_shapes)

    def weight_shapes(self) -> list[Shape]:
        return self.layer.weight_shapes()

    def load(self, arrays: Sequence[np.ndarray]) -> None:
        self.layer.load(arrays)

    def output_shape(self, input_shapes: Sequence[Shape]) -> Shape:
        (shape,) = input_shapes
        inner = self.layer.output_shape([(None, *shape[2:])])
        if isinstance(inner, list):
            raise self.spec.error("an inner layer with several outputs is not supported")
        return (shape[0], shape[1], *inner[1:])

    def _inner(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        y, out_mask = self.layer(x, mask)
        if isinstance(y, list) or isinstance(out_mask, list):
            raise self.spec.error("an inner layer with several outputs is not supported")
        return y, out_mask

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        x, mask = single(self.spec, inputs, mask)
        if mask is not None and (mask.dim() < 2 or mask.shape[:2] != x.shape[:2]):
            raise self.spec.error(f"a mask {tuple(mask.shape)} does not fit inputs {tuple(x.shape)}")
        batch, steps = x.shape[0], x.shape[1]
        if self.training and not self.spec.keras2:
            outputs = [self._inner(x[:, t], None if mask is None else mask[:, t])[0] for t in range(steps)]
            return torch.stack(outputs, dim=1), mask
        flat_mask = None if mask is None else mask.reshape(batch * steps, *mask.shape[2:])
        y, inner_mask = self._inner(x.reshape(batch * steps, *x.shape[2:]), flat_mask)
        y = y.reshape(batch, steps, *y.shape[1:])
        if not self.spec.keras2:
            return y, mask
        if inner_mask is not None:
            return y, inner_mask.reshape(batch, steps, *inner_mask.shape[1:])
        if mask is None:
            return y, None
        return y, mask.reshape(batch, steps, -1).any(dim=-1)
