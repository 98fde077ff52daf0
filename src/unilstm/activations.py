"""Activation functions by name, as Keras 3 names them, plus any callable on tensors.

``resolve(None)`` is the identity (Keras's linear). Keras 2's ``hard_sigmoid`` (``clip(0.2x + 0.5, 0, 1)``)
differs from Keras 3's (``relu6(x + 3) / 6``); the Keras 2 one is registered as ``"hard_sigmoid_keras2"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F

Activation = Callable[[torch.Tensor], torch.Tensor]


def linear(x: torch.Tensor) -> torch.Tensor:
    return x


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras 3: relu6(x + 3) / 6 = clip(x / 6 + 1/2, 0, 1)."""
    return F.relu6(x + 3.0) / 6.0


def hard_sigmoid_keras2(x: torch.Tensor) -> torch.Tensor:
    """Keras 2 (tf-keras): clip(0.2 x + 0.5, 0, 1)."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


def hard_silu(x: torch.Tensor) -> torch.Tensor:
    return x * hard_sigmoid(x)


def selu(x: torch.Tensor) -> torch.Tensor:
    return F.selu(x)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """gelu with the tanh approximation, ``keras.activations.gelu(x, approximate=True)``; registered as
    ``"gelu_tanh"``. The name ``"gelu"`` is Keras's default, the exact :func:`gelu_exact`."""
    return F.gelu(x, approximate="tanh")


def gelu_exact(x: torch.Tensor) -> torch.Tensor:
    """Keras 3 and tf-keras ``gelu`` (approximate=False): x/2 (1 + erf(x / sqrt 2))."""
    return F.gelu(x)


def sparse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras 3 ``sparse_sigmoid``: 0 for x <= -1, 1 for x >= 1, (x + 1) / 2 between."""
    return torch.clamp(0.5 * (x + 1.0), 0.0, 1.0)


def sparsemax(x: torch.Tensor) -> torch.Tensor:
    """Keras 3's ``sparsemax`` over the last axis, as every Keras backend computes it (Keras 3.15).

    With z sorted descending, cumulative sums s_j and the support j <= k where z_j - (s_j - 1) / j > 0, Keras
    takes tau = (sum_{j<=k} s_j - 1) / k (the sum of the cumulative sums, where the textbook sparsemax of
    Martins & Astudillo has s_k), then max(x - tau, 0). The two agree when the support has one element; in
    general Keras's outputs do not sum to 1. Reproduced here so that Keras models keep their numbers."""
    z, _ = torch.sort(x, dim=-1, descending=True)
    k = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=x.device)
    cumulative = z.cumsum(dim=-1)
    support = z - (cumulative - 1.0) / k > 0
    k_z = support.sum(dim=-1, keepdim=True).to(x.dtype)
    kept = torch.where(support, cumulative, torch.zeros_like(cumulative))
    tau = (kept.sum(dim=-1, keepdim=True) - 1.0) / k_z
    return torch.clamp(x - tau, min=0.0)


def leaky_relu(x: torch.Tensor) -> torch.Tensor:
    """Keras's activations.leaky_relu default negative_slope is 0.2."""
    return F.leaky_relu(x, negative_slope=0.2)


def softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def log_softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(x, dim=-1)


def exponential(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(x)


def mish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tanh(F.softplus(x))


def squareplus(x: torch.Tensor, b: float = 4.0) -> torch.Tensor:
    return (x + torch.sqrt(x * x + b)) / 2.0


def sparse_plus(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= -1, torch.zeros_like(x), torch.where(x >= 1, x, (x + 1) ** 2 / 4))


def tanh_shrink(x: torch.Tensor) -> torch.Tensor:
    return x - torch.tanh(x)


def celu(x: torch.Tensor) -> torch.Tensor:
    return F.celu(x, alpha=1.0)


def elu(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x, alpha=1.0)


def soft_shrink(x: torch.Tensor) -> torch.Tensor:
    return F.softshrink(x, lambd=0.5)


def hard_shrink(x: torch.Tensor) -> torch.Tensor:
    return F.hardshrink(x, lambd=0.5)


def hard_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.hardtanh(x)


def log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return F.logsigmoid(x)


def glu(x: torch.Tensor) -> torch.Tensor:
    return F.glu(x, dim=-1)


def silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)


def relu6(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x)


def softsign(x: torch.Tensor) -> torch.Tensor:
    return F.softsign(x)


def softplus(x: torch.Tensor) -> torch.Tensor:
    return F.softplus(x)


@dataclass(frozen=True)
class ParametricActivation:
    """An activation with ONNX's ``alpha`` and ``beta`` (the LSTM operator's ``activation_alpha`` and
    ``activation_beta``), as ONNX defines each kind:

    ========================  =====================================  ======================
    kind                      f(x)                                   defaults (alpha, beta)
    ========================  =====================================  ======================
    ``"affine"``              alpha x + beta                         (1, 0)
    ``"leaky_relu"``          x if x >= 0 else alpha x               (0.01, -)
    ``"thresholded_relu"``    x if x > alpha else 0                  (1, -)
    ``"scaled_tanh"``         alpha tanh(beta x)                     (1, 1)
    ``"hard_sigmoid"``        max(0, min(1, alpha x + beta))         (0.2, 0.5)
    ``"elu"``                 x if x >= 0 else alpha (e^x - 1)       (1, -)
    ========================  =====================================  ======================

    Instances are hashable and compare by value, so kernels look them up by ``kind`` and read the two
    numbers; gradients at the kinks are torch's (those of the ops in :meth:`__call__`).
    """

    kind: str
    alpha: float
    beta: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in PARAMETRIC_DEFAULTS:
            known = ", ".join(sorted(PARAMETRIC_DEFAULTS))
            raise ValueError(f"parametric activation: unknown kind {self.kind!r}; known kinds: {known}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(
                    f"parametric activation {self.kind}: {name} must be a finite number, got {value!r}"
                )
            object.__setattr__(self, name, float(value))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.alpha, self.beta
        if self.kind == "affine":
            return x * a + b
        if self.kind == "leaky_relu":
            return F.leaky_relu(x, negative_slope=a)
        if self.kind == "thresholded_relu":
            return torch.where(x > a, x, torch.zeros_like(x))
        if self.kind == "scaled_tanh":
            return torch.tanh(x * b) * a
        if self.kind == "hard_sigmoid":
            return torch.clamp(x * a + b, 0.0, 1.0)
        return F.elu(x, alpha=a)  # "elu"


#: ONNX's default (alpha, beta) per parametric kind; None where the kind has no such parameter
PARAMETRIC_DEFAULTS: dict[str, tuple[float, float | None]] = {
    "affine": (1.0, 0.0),
    "leaky_relu": (0.01, None),
    "thresholded_relu": (1.0, None),
    "scaled_tanh": (1.0, 1.0),
    "hard_sigmoid": (0.2, 0.5),
    "elu": (1.0, None),
}


def parametric(kind: str, alpha: float | None = None, beta: float | None = None) -> ParametricActivation:
    """A :class:`ParametricActivation` with ONNX's defaults for the numbers not given."""
    if kind not in PARAMETRIC_DEFAULTS:
        ParametricActivation(kind, 0.0)  # raises the error naming the known kinds
    default_alpha, default_beta = PARAMETRIC_DEFAULTS[kind]
    return ParametricActivation(
        kind,
        default_alpha if alpha is None else alpha,
        (default_beta or 0.0) if beta is None else beta,
    )


REGISTRY: dict[str, Activation] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "linear": linear,
    "hard_sigmoid": hard_sigmoid,
    "hard_sigmoid_keras2": hard_sigmoid_keras2,
    "hard_silu": hard_silu,
    "hard_swish": hard_silu,
    "elu": elu,
    "selu": selu,
    "celu": celu,
    "gelu": gelu_exact,
    "gelu_tanh": gelu,
    "sparse_sigmoid": sparse_sigmoid,
    "sparsemax": sparsemax,
    "glu": glu,
    "silu": silu,
    "swish": silu,
    "softplus": softplus,
    "softsign": softsign,
    "softmax": softmax,
    "log_softmax": log_softmax,
    "exponential": exponential,
    "relu6": relu6,
    "leaky_relu": leaky_relu,
    "mish": mish,
    "squareplus": squareplus,
    "sparse_plus": sparse_plus,
    "tanh_shrink": tanh_shrink,
    "soft_shrink": soft_shrink,
    "hard_shrink": hard_shrink,
    "hard_tanh": hard_tanh,
    "log_sigmoid": log_sigmoid,
}


def resolve(activation: str | None | Activation, argument: str = "activation") -> Activation:
    """The function for a name, ``None`` (linear) or a callable; a clear error for anything else."""
    if activation is None:
        return linear
    if isinstance(activation, str):
        try:
            return REGISTRY[activation]
        except KeyError:
            known = ", ".join(sorted(REGISTRY))
            raise ValueError(f"{argument}: unknown activation {activation!r}; known names: {known}") from None
    if callable(activation):
        return activation
    raise TypeError(f"{argument} must be a name, None or a callable, got {type(activation).__name__}")


Entry = TypeVar("Entry")


def kernel_entry(table: Mapping[Callable, Entry], fn: Callable) -> Entry | None:
    """A kernel's entry for the resolved activation ``fn`` (its code, id, derivative ...), or None when the
    kernel lacks it; a user's callable may be unhashable, and then no kernel has it either."""
    try:
        return table.get(fn)
    except TypeError:  # unhashable callables
        return None


def kernel_ids(ids: Mapping[str, int]) -> dict[Callable, int]:
    """A compiled kernel's activation ids (``unilstm.kernels.activation_ids``, keyed by registry name) keyed
    by the resolved functions instead, for :func:`kernel_entry`."""
    return {REGISTRY[name]: code for name, code in ids.items()}
