"""Keras's built-in initializers, drawing with torch.

Every class has Keras 3's name, arguments, defaults and config; the distributions are Keras's (the random
numbers are torch's, so values differ from TensorFlow's, their law does not). Fans follow Keras's
``compute_fans``: a 2-D shape (in, out) has fan_in = in and fan_out = out, a 1-D shape (n,) has
fan_in = fan_out = n. An LSTM kernel (F, 4H) is therefore initialised as one matrix, not per gate block.

Seeds: an initializer built with ``seed=s`` gives the same values at every call (Keras's rule); with
``seed=None`` a seed is drawn once from torch's global generator when the initializer is made, so
``torch.manual_seed`` makes a whole layer reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .keras_objects import KerasObject, lookup, snake_case

Shape = Sequence[int]


class Initializer(KerasObject):
    """``initializer(shape, dtype=torch.float32) -> Tensor`` of that shape (on the CPU)."""

    keras_module = "keras.initializers"

    def __call__(self, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        raise NotImplementedError


def _float_dtype(dtype: torch.dtype | None) -> torch.dtype:
    return torch.float32 if dtype is None else dtype


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Draw half precision in float32, then cast."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class Zeros(Initializer):
    """All zeros."""

    def __call__(self, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.zeros(tuple(shape), dtype=_float_dtype(dtype))


class Ones(Initializer):
    """All ones."""

    def __call__(self, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.ones(tuple(shape), dtype=_float_dtype(dtype))


class Constant(Initializer):
    """Every entry ``value``."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def __call__(self, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.full(tuple(shape), float(self.value), dtype=_float_dtype(dtype))

    def get_config(self) -> dict[str, Any]:
        return {"value": self.value}


class Identity(Initializer):
    """``gain * eye(rows, cols)``, 2-D shapes only."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = gain

    def __call__(self, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        if len(shape) != 2:
            raise ValueError(
                f"Identity initializer: expected a 2-D shape, got shape={tuple(shape)} of rank {len(shape)}"
            )
        return self.gain * torch.eye(shape[0], shape[1], dtype=_float_dtype(dtype))

    def get_config(self) -> dict[str, Any]:
        return {"gain": self.gain}


def _seed_value(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, Mapping):  # a serialized keras.random.SeedGenerator
        inner = seed.get("config", {})
        return _seed_value(inner.get("seed") if isinstance(inner, Mapping) else None)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int or None, got {type(seed).__name__} {seed!r}")
    return int(seed)


def _fresh_seed() -> int:
    return int(torch.randint(0, 2**31 - 1, ()).item())


class RandomInitializer(Initializer):
    """An initializer that draws: ``seed`` (int or None) as described in the module docstring."""

    def __init__(self, seed: int | None = None) -> None:
        self._init_seed = _seed_value(seed)
        self._draw_seed = self._init_seed if self._init_seed is not None else _fresh_seed()

    def redraw_seed(self) -> None:
        """An unseeded initializer draws a new seed from torch's global generator (what a copy made from
        its config gets in Keras); one built with ``seed=s`` keeps drawing with s."""
        if self._init_seed is None:
            self._draw_seed = _fresh_seed()

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self._draw_seed)

    def get_config(self) -> dict[str, Any]:
        return {"seed": self._init_seed}


def _truncated_normal(shape: Shape, mean: float, stddev: float, dtype: torch.dtype, gen) -> torch.Tensor:
    """Normal(mean, stddev) re-drawn outside two standard deviations (Keras/TF ``truncated_normal``)."""
    out = torch.empty(tuple(shape), dtype=_work_dtype(dtype))
    torch.nn.init.trunc_normal_(out, mean, stddev, mean - 2 * stddev, mean + 2 * stddev, generator=gen)
    return out.to(dtype)


class RandomNormal(RandomInitializer):
    """Normal(mean, stddev)."""

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        self.mean, self.stddev = mean, stddev
        super().__init__(seed)

    def __call__(self, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = _float_dtype(dtype)
        out = torch.empty(tuple(shape), dtype=_work_dtype(dtype))
        return out.normal_(self.mean, self.stddev, generator=self.generator()).to(dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mean": self.mean, "stddev": self.stddev}


class TruncatedNormal(RandomNormal):
    """Normal(mean, stddev) truncated at two standard deviations."""

    def __call__(self, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        return _truncated_normal(shape, self.mean, self.stddev, _float_dtype(dtype), self.generator())


class RandomUniform(RandomInitializer):
    """Uniform[minval, maxval)."""

    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None) -> None:
        self.minval, self.maxval = minval, maxval
        super().__init__(seed)

    def __call__(self, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = _float_dtype(dtype)
        out = torch.empty(tuple(shape), dtype=_work_dtype(dtype))
        return out.uniform_(self.minval, self.maxval, generator=self.generator()).to(dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "minval": self.minval, "maxval": self.maxval}


def compute_fans(
    shape: Shape, input_axes: Sequence[int] | None = None, output_axes: Sequence[int] | None = None
) -> tuple[int, int]:
    """Keras's ``compute_fans``: (fan_in, fan_out) of a weight shape."""
    shape = tuple(shape)
    if input_axes is not None and output_axes is not None:
        return int(math.prod(shape[a] for a in input_axes)), int(math.prod(shape[a] for a in output_axes))
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class VarianceScaling(RandomInitializer):
    """Keras's VarianceScaling: with n = fan_in, fan_out or their mean (``mode``) and s = scale / max(1, n):
    truncated_normal -> stddev sqrt(s) / 0.8796..., untruncated_normal -> stddev sqrt(s),
    uniform -> U(-sqrt(3 s), sqrt(3 s))."""

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
        seed: int | None = None,
        input_axes: Sequence[int] | None = None,
        output_axes: Sequence[int] | None = None,
    ) -> None:
        if scale <= 0.0:
            raise ValueError(f"VarianceScaling: scale must be a positive float, got scale={scale}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(
                f"VarianceScaling: mode must be 'fan_in', 'fan_out' or 'fan_avg', got mode={mode!r}"
            )
        distribution = distribution.lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in ("uniform", "truncated_normal", "untruncated_normal"):
            raise ValueError(
                "VarianceScaling: distribution must be 'uniform', 'truncated_normal' or "
                f"'untruncated_normal', got distribution={distribution!r}"
            )
        self.scale, self.mode, self.distribution = scale, mode, distribution
        self.input_axes, self.output_axes = input_axes, output_axes
        super().__init__(seed)

    def __call__(self, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = _float_dtype(dtype)
        fan_in, fan_out = compute_fans(shape, self.input_axes, self.output_axes)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        scale = self.scale / max(1.0, n)
        gen = self.generator()
        if self.distribution == "truncated_normal":
            return _truncated_normal(shape, 0.0, math.sqrt(scale) / 0.87962566103423978, dtype, gen)
        out = torch.empty(tuple(shape), dtype=_work_dtype(dtype))
        if self.distribution == "untruncated_normal":
            return out.normal_(0.0, math.sqrt(scale), generator=gen).to(dtype)
        limit = math.sqrt(3.0 * scale)
        return out.uniform_(-limit, limit, generator=gen).to(dtype)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "input_axes": self.input_axes,
            "output_axes": self.output_axes,
        }


def _variance_scaling_preset(name: str, scale: float, mode: str, distribution: str, doc: str) -> type:
    def __init__(self, seed=None, input_axes=None, output_axes=None):  # noqa: N807
        VarianceScaling.__init__(self, scale, mode, distribution, seed, input_axes, output_axes)

    def get_config(self):
        return {"seed": self._init_seed, "input_axes": self.input_axes, "output_axes": self.output_axes}

    return type(name, (VarianceScaling,), {"__init__": __init__, "get_config": get_config, "__doc__": doc})


GlorotUniform = _variance_scaling_preset(
    "GlorotUniform", 1.0, "fan_avg", "uniform", "U(-l, l), l = sqrt(6 / (fan_in + fan_out))."
)
GlorotNormal = _variance_scaling_preset(
    "GlorotNormal",
    1.0,
    "fan_avg",
    "truncated_normal",
    "truncated normal, stddev sqrt(2 / (fan_in + fan_out)).",
)
HeUniform = _variance_scaling_preset("HeUniform", 2.0, "fan_in", "uniform", "U(-l, l), l = sqrt(6 / fan_in).")
HeNormal = _variance_scaling_preset(
    "HeNormal", 2.0, "fan_in", "truncated_normal", "truncated normal, stddev sqrt(2 / fan_in)."
)
LecunUniform = _variance_scaling_preset(
    "LecunUniform", 1.0, "fan_in", "uniform", "U(-l, l), l = sqrt(3 / fan_in)."
)
LecunNormal = _variance_scaling_preset(
    "LecunNormal", 1.0, "fan_in", "truncated_normal", "truncated normal, stddev sqrt(1 / fan_in)."
)


class Orthogonal(RandomInitializer):
    """Keras's Orthogonal: the Q of a QR of a normal (max(r, c), min(r, c)) matrix with sign(diag R) folded
    in, transposed when rows < cols, times ``gain``; rows = prod(shape[:-1]), cols = shape[-1]. For an LSTM
    recurrent kernel (H, 4H) the H rows of the whole matrix are orthonormal (not each gate block)."""

    def __init__(self, gain: float = 1.0, seed: int | None = None) -> None:
        self.gain = gain
        super().__init__(seed)

    def __call__(self, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = _float_dtype(dtype)
        if len(shape) < 2:
            raise ValueError(
                f"Orthogonal initializer: the shape must be at least 2-D, got shape={tuple(shape)} of rank "
                f"{len(shape)}"
            )
        rows, cols = math.prod(shape[:-1]), shape[-1]
        work = torch.float64 if dtype == torch.float64 else torch.float32
        a = torch.empty(max(rows, cols), min(rows, cols), dtype=work).normal_(generator=self.generator())
        q, r = torch.linalg.qr(a)
        q = q * torch.sign(torch.diagonal(r))
        if rows < cols:
            q = q.t()
        return (self.gain * q.reshape(tuple(shape))).to(dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gain": self.gain}


class STFT(Initializer):
    """Keras 3's STFT initializer builds (T, 1, F // 2 + 1) convolution kernels; it has no meaning for LSTM
    weights and is refused with a clear error."""

    def __init__(self, side="real", window="hann", scaling="density", periodic=False) -> None:
        self.side, self.window, self.scaling, self.periodic = side, window, scaling, periodic

    def __call__(self, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        raise ValueError(
            f"STFT initializer: builds 3-D (window, 1, bins) convolution kernels, not LSTM weights; got "
            f"shape={tuple(shape)}"
        )

    def get_config(self) -> dict[str, Any]:
        return {"side": self.side, "window": self.window, "scaling": self.scaling, "periodic": self.periodic}


_CLASSES = [
    Constant,
    GlorotNormal,
    GlorotUniform,
    HeNormal,
    HeUniform,
    Identity,
    LecunNormal,
    LecunUniform,
    Ones,
    Orthogonal,
    RandomNormal,
    RandomUniform,
    STFT,
    TruncatedNormal,
    VarianceScaling,
    Zeros,
]
REGISTRY: dict[str, type[KerasObject] | Callable] = {cls.__name__: cls for cls in _CLASSES}
REGISTRY.update({snake_case(cls.__name__): cls for cls in _CLASSES})
REGISTRY.update(
    {
        "IdentityInitializer": Identity,
        "normal": RandomNormal,
        "one": Ones,
        "STFTInitializer": STFT,
        "OrthogonalInitializer": Orthogonal,
        "uniform": RandomUniform,
        "zero": Zeros,
    }
)

InitializerLike = str | Mapping | Initializer | Callable | None


def get(identifier: InitializerLike, argument: str = "initializer") -> Initializer | Callable | None:
    """Keras's ``initializers.get``: a name, a config dict, an :class:`Initializer`, a class, a callable
    ``fn(shape, dtype=None)``, or a numpy array / tensor used as the values."""
    if isinstance(identifier, (np.ndarray, torch.Tensor)):
        values = identifier

        def initialize_fn(shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
            if tuple(values.shape) != tuple(shape):
                raise ValueError(
                    f"{argument}: expected shape {tuple(shape)} for an array used as initializer, got "
                    f"{tuple(values.shape)}"
                )
            return torch.as_tensor(np.asarray(values) if isinstance(values, np.ndarray) else values).to(
                _float_dtype(dtype)
            )

        return initialize_fn
    return lookup(identifier, REGISTRY, kind="initializer", argument=argument, base=Initializer)


def initialize(
    initializer: Initializer | Callable | None, shape: Shape, dtype: torch.dtype, argument: str
) -> torch.Tensor:
    """Call an initializer (ours or a user callable) and check what it returns; ``None`` (what :func:`get`
    gives for ``None``) is refused with a TypeError."""
    if initializer is None:
        raise TypeError(f"{argument}: None cannot initialize a weight; pass an initializer or its name")
    values = initializer(tuple(shape), dtype=dtype)
    values = torch.as_tensor(values.detach() if isinstance(values, torch.Tensor) else np.asarray(values))
    if tuple(values.shape) != tuple(shape):
        raise ValueError(f"{argument}: returned shape {tuple(values.shape)}, expected {tuple(shape)}")
    return values.to(dtype=dtype, device="cpu")
