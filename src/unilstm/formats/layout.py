"""The only place that knows how each framework lays out LSTM weights.

unilstm, torch, MindSpore, Keras and cuDNN all order the four gate blocks along the 4H axis as
[i, f, g, o]; ONNX orders them [i, o, f, g] (its "iofc"). torch and MindSpore store ``weight_ih`` (4H, F),
``weight_hh`` (4H, P) and two biases; Keras stores ``kernel`` (F, 4H), ``recurrent_kernel`` (H, 4H) and one
bias (4H,), which is the sum of torch's two.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Array = np.ndarray | torch.Tensor
#: a numpy array or a tensor, kept as it came
Blocks = TypeVar("Blocks", np.ndarray, torch.Tensor)

GATE_ORDER = "ifgo"
ONNX_GATE_ORDER = "iofg"  # ONNX names these i, o, f, c: c is the candidate block g
PEEPHOLE_ORDER = "ifo"  # unilstm's weight_ph (3H,)
ONNX_PEEPHOLE_ORDER = "iof"  # ONNX's P


def _reorder_gates(array: Blocks, source: str, target: str, axis: int = 0) -> Blocks:
    """Permute the gate blocks (as many as ``source`` names) along ``axis`` from ``source`` order to
    ``target`` order."""
    if isinstance(array, np.ndarray):
        array_blocks = np.split(array, len(source), axis=axis)
        return np.concatenate([array_blocks[source.index(gate)] for gate in target], axis=axis)
    tensor_blocks = torch.chunk(array, len(source), dim=axis)
    return torch.cat([tensor_blocks[source.index(gate)] for gate in target], dim=axis)


def to_onnx_gates(array: Blocks, axis: int = 0) -> Blocks:
    """Gate blocks [i, f, g, o] -> ONNX's [i, o, f, c]."""
    return _reorder_gates(array, GATE_ORDER, ONNX_GATE_ORDER, axis)


def from_onnx_gates(array: Blocks, axis: int = 0) -> Blocks:
    """ONNX's gate blocks [i, o, f, c] -> [i, f, g, o]."""
    return _reorder_gates(array, ONNX_GATE_ORDER, GATE_ORDER, axis)


def keras_from_torch(
    weight_ih: Array, weight_hh: Array, bias_ih: Array | None, bias_hh: Array | None
) -> list[np.ndarray]:
    """torch (4H, F), (4H, H), (4H,), (4H,) -> Keras [kernel (F, 4H), recurrent_kernel (H, 4H), bias (4H,)]
    (no bias entry when both biases are None)."""
    arrays = [_numpy(weight_ih).T.copy(), _numpy(weight_hh).T.copy()]
    if bias_ih is not None or bias_hh is not None:
        total = np.zeros(arrays[0].shape[1], dtype=arrays[0].dtype)
        for bias in (bias_ih, bias_hh):
            if bias is not None:
                total = total + _numpy(bias)
        arrays.append(total.astype(arrays[0].dtype))
    return arrays


def torch_from_keras(
    kernel: Array, recurrent_kernel: Array, bias: Array | None = None
) -> dict[str, np.ndarray]:
    """Keras [kernel (F, 4H), recurrent_kernel (H, 4H), bias (4H,)] -> torch weight_ih (4H, F),
    weight_hh (4H, H), and when there is a bias: bias_ih = bias, bias_hh = 0."""
    result = {
        "weight_ih": np.ascontiguousarray(_numpy(kernel).T),
        "weight_hh": np.ascontiguousarray(_numpy(recurrent_kernel).T),
    }
    if bias is not None:
        result["bias_ih"] = _numpy(bias).copy()
        result["bias_hh"] = np.zeros_like(result["bias_ih"])
    return result


def _numpy(array: Array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def torch_views_from_keras(
    kernel: torch.Tensor, recurrent_kernel: torch.Tensor, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Differentiable torch-layout tensors from Keras-layout ones, for running the engine on Keras parameters.

    kernel (F, 4H) -> weight_ih (4H, F) and recurrent_kernel (H, 4H) -> weight_hh (4H, H) as contiguous
    transposes (autograd copies: gradients flow back to the Keras tensors; torch's oneDNN LSTM is about 30x
    slower on transposed views); bias (4H,) -> bias_ih = bias, bias_hh = zeros (a constant).
    """
    bias_hh = None if bias is None else torch.zeros_like(bias, requires_grad=False)
    return kernel.t().contiguous(), recurrent_kernel.t().contiguous(), bias, bias_hh


def to_onnx_peepholes(array: Blocks) -> Blocks:
    """Peephole weights (3H,) in unilstm's blocks [p_i, p_f, p_o] -> ONNX's ``P`` order [p_i, p_o, p_f]."""
    return _reorder_gates(array, PEEPHOLE_ORDER, ONNX_PEEPHOLE_ORDER)


def from_onnx_peepholes(array: Blocks) -> Blocks:
    """ONNX's ``P`` blocks [p_i, p_o, p_f] -> unilstm's weight_ph [p_i, p_f, p_o]."""
    return _reorder_gates(array, ONNX_PEEPHOLE_ORDER, PEEPHOLE_ORDER)
