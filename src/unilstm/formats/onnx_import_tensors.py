"""The error, the result type and the tensor checks of the ONNX reader (:mod:`.onnx_import`): every
initializer's dtype, dims and data are checked against the size limit before a byte is converted."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from ..spec import LSTMSpec
from .keras_files.limits import MAX_FILE_BYTES_ENV

_WEIGHT_DTYPES = (np.float16, np.float32, np.float64)


class OnnxFileError(ValueError):
    """An ONNX file that cannot be read as an LSTM stack: not ONNX, cut, hostile (external data, declared
    sizes past the limit), or computing something else than LSTM nodes and their glue. The message names the
    file and the node, initializer or input."""


@dataclass
class OnnxStack:
    """One LSTM stack read from an ONNX graph.

    Attributes:
        name: the first LSTM node's name (or ``"lstm"``).
        spec: what it computes.
        state: its parameters in torch layout under canonical names (``weight_ih_l0`` ...).
        inputs: graph input names by role: ``"input"``, and where the graph takes them ``"lengths"``,
            ``"h0"``, ``"c0"``.
        notes: how the graph's inputs and outputs relate to the layer's call and results.
        lengths, initial_state: constants of the graph the layer takes per call (read only with
            ``read_onnx_lstms(..., constants=True)``: ``unilstm.load`` returns layers, which cannot hold
            them).
    """

    name: str
    spec: LSTMSpec
    state: OrderedDict[str, Tensor]
    inputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: a constant ``sequence_lens`` (B,) int64: the call's ``lengths=`` (None: per call or none)
    lengths: np.ndarray | None = None
    #: constant non-zero initial states (h0, c0), each (L*D, B, H) in the layer's state order: the call's
    #: ``state=`` (None: zeros or per call)
    initial_state: tuple[np.ndarray, np.ndarray] | None = None


def _node_name(node: Any) -> str:
    return f"{node.name!r} ({node.op_type})" if node.name else f"{node.op_type} -> {list(node.output)}"


def _numpy_dtype(tensor: Any) -> np.dtype | None:
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(int(tensor.data_type)))
    except (KeyError, TypeError, ValueError):
        return None


def _dtype_name(tensor: Any) -> str:
    from onnx import TensorProto

    try:
        return str(TensorProto.DataType.Name(int(tensor.data_type)))
    except ValueError:
        return f"data_type {tensor.data_type}"


_TYPED_FIELDS = {
    np.dtype(np.float32): "float_data",
    np.dtype(np.float64): "double_data",
    np.dtype(np.int64): "int64_data",
    np.dtype(np.int32): "int32_data",
    np.dtype(np.float16): "int32_data",
    np.dtype(np.int8): "int32_data",
    np.dtype(np.uint8): "int32_data",
    np.dtype(np.int16): "int32_data",
    np.dtype(np.bool_): "int32_data",
}


def _check_tensor(tensor: Any, what: str, limit: int) -> int:
    """Refuse external data, unknown dtypes, negative dims, a declared size past ``limit`` and data that
    does not fill the declared dims; returns the declared bytes (nothing is converted here)."""
    from onnx import TensorProto

    if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
        raise OnnxFileError(f"{what}: its data lies in an external file, which is never read")
    dtype = _numpy_dtype(tensor)
    if dtype is None or dtype not in _TYPED_FIELDS:
        raise OnnxFileError(f"{what}: dtype {_dtype_name(tensor)} is not read")
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise OnnxFileError(f"{what}: negative dims {dims}")
    count = 1
    for d in dims:
        count *= d
    nbytes = count * dtype.itemsize
    if nbytes > limit:
        raise OnnxFileError(
            f"{what}: dims {dims} declare {nbytes} bytes, more than the limit of {limit}; pass max_bytes= or "
            f"set {MAX_FILE_BYTES_ENV} to allow more"
        )
    if tensor.raw_data:
        have, need, unit = len(tensor.raw_data), nbytes, "bytes"
    else:
        have, need, unit = len(getattr(tensor, _TYPED_FIELDS[dtype])), count, "values"
    if have != need:
        raise OnnxFileError(
            f"{what}: holds {have} {unit} where its dims {dims} declare {need} (a cut or edited file)"
        )
    return nbytes


def _array(tensor: Any, what: str, limit: int) -> np.ndarray:
    from onnx import numpy_helper

    _check_tensor(tensor, what, limit)
    return np.asarray(numpy_helper.to_array(tensor))
