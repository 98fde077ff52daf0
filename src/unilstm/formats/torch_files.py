"""torch state dicts on disk: ``.pt`` / ``.pth`` (``torch.save``) and ``.safetensors``.

- ``.pt`` / ``.pth`` are read with ``torch.load(weights_only=True)``: no arbitrary pickled code runs. A
  checkpoint that nests the state dict (``{"model": {...}, "epoch": 3}``) is flattened to dotted names;
  entries that are not tensors are reported, not loaded. Metadata (str -> str, what safetensors keeps in
  its header) is a top-level ``"__metadata__"`` dict entry (unilstm writes one only for cell variants).
- ``.safetensors`` is read and written by this module with the standard library (``json`` + ``struct``):
  8 bytes little-endian header length N, N bytes of JSON ``{name: {"dtype", "shape", "data_offsets"},
  "__metadata__": {str: str}}`` (padded with spaces to a multiple of 8), then the raw little-endian C-order
  bytes of every tensor. The format is small and fully specified, so no extra dependency is needed, and
  every malformed file gets the same clear :class:`TorchFileError`; the tests check the files against the
  ``safetensors`` package when it is installed (they are byte-compatible both ways).

Every write is atomic: the bytes go to a temporary file in the target's folder, which is renamed over the
target only when complete; on any error the target is untouched.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .atomic import atomic_write_bytes

PathLike = str | os.PathLike

#: safetensors dtype name -> torch dtype
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "U16": torch.uint16,
    "I32": torch.int32,
    "U32": torch.uint32,
    "I64": torch.int64,
    "U64": torch.uint64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
_DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
#: torch indexes bytes with signed 64-bit integers: no shape may span more, even an empty one
_MAX_SPAN_BYTES = 2**63 - 1
#: the reference implementation refuses headers over 100 MB
MAX_HEADER_BYTES = 100_000_000
METADATA_KEY = "__metadata__"


class TorchFileError(ValueError):
    """A ``.pt`` / ``.pth`` / ``.safetensors`` file that cannot be read: truncated, corrupted, foreign, or
    holding pickled objects that ``weights_only`` loading refuses. The message names the file."""


# -- safetensors -------------------------------------------------------------------------------------------


def _tensor_bytes(tensor: Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    return flat.view(torch.uint8).numpy().tobytes()


def safetensors_bytes(tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """The bytes of a ``.safetensors`` file holding ``tensors`` (in the given order) and ``metadata``."""
    header: dict[str, Any] = {}
    if metadata:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(
                    f"metadata must map str to str, got {type(key).__name__} -> {type(value).__name__}"
                )
        header[METADATA_KEY] = dict(metadata)
    chunks: list[bytes] = []
    offset = 0
    for name, tensor in tensors.items():
        if not isinstance(name, str) or name == METADATA_KEY:
            raise ValueError(f"tensor names must be str other than {METADATA_KEY!r}, got {name!r}")
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dtype not in _DTYPE_NAMES:
            raise TypeError(f"{name}: dtype {tensor.dtype} has no safetensors name")
        data = _tensor_bytes(tensor)
        header[name] = {
            "dtype": _DTYPE_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def read_safetensors(path: PathLike) -> tuple[OrderedDict[str, Tensor], dict[str, str]]:
    """Read a ``.safetensors`` file: ``(tensors in file order, metadata)``.

    Raises:
        TorchFileError: the file is truncated, its header is not the format's JSON, offsets do not tile the
            data, or a dtype is unknown; the message names the file and the entry.
    """
    data = Path(path).read_bytes()
    return parse_safetensors(data, str(path))


def parse_safetensors(data: bytes, where: str = "<bytes>") -> tuple[OrderedDict[str, Tensor], dict[str, str]]:
    """:func:`read_safetensors` on bytes already in memory."""
    if len(data) < 8:
        raise TorchFileError(f"{where}: not a safetensors file: {len(data)} bytes, expected at least 8")
    (size,) = struct.unpack("<Q", data[:8])
    if size > MAX_HEADER_BYTES or size > len(data) - 8:
        raise TorchFileError(
            f"{where}: not a safetensors file or truncated: header length {size}, but the file has "
            f"{len(data) - 8} bytes after the length field"
        )
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TorchFileError(f"{where}: the safetensors header is not valid JSON ({error})") from None
    except RecursionError:
        raise TorchFileError(
            f"{where}: the safetensors header nests too deeply to be the format's JSON"
        ) from None
    if not isinstance(header, dict):
        raise TorchFileError(
            f"{where}: the safetensors header must be a JSON object, got {type(header).__name__}"
        )
    metadata = header.pop(METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise TorchFileError(f"{where}: {METADATA_KEY} must map strings to strings")
    body = memoryview(data)[8 + size :]
    spans = []
    tensors: OrderedDict[str, Tensor] = OrderedDict()
    for name, entry in header.items():
        info = _check_entry(where, name, entry)
        dtype, shape, (begin, end) = info
        itemsize = torch.empty((), dtype=dtype).element_size()
        expected = math.prod(shape) * itemsize
        if end - begin != expected:
            raise TorchFileError(
                f"{where}: tensor {name!r}: {dtype} {tuple(shape)} needs {expected} bytes, its data_offsets "
                f"[{begin}, {end}] hold {end - begin}"
            )
        if end > len(body):
            raise TorchFileError(
                f"{where}: truncated: tensor {name!r} ends at byte {end} of the data, which has {len(body)}"
            )
        spans.append((begin, end, name))
        if expected == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            raw = torch.frombuffer(bytearray(body[begin:end]), dtype=torch.uint8)
            tensors[name] = raw.view(dtype).reshape(shape)
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise TorchFileError(
                f"{where}: tensor {name!r} starts at byte {begin} of the data, expected {position} (offsets "
                "must tile the data without gaps or overlaps)"
            )
        position = end
    if position != len(body):
        raise TorchFileError(
            f"{where}: {len(body) - position} bytes after the last tensor (the data is {len(body)} bytes, "
            f"the tensors cover {position})"
        )
    return tensors, dict(metadata)


def _check_entry(where: str, name: str, entry: object) -> tuple[torch.dtype, list[int], tuple[int, int]]:
    if not isinstance(entry, dict):
        raise TorchFileError(f"{where}: header entry {name!r} must be an object, got {type(entry).__name__}")
    dtype_name, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype_name not in SAFETENSORS_DTYPES:
        raise TorchFileError(
            f"{where}: tensor {name!r} has dtype {dtype_name!r}, expected one of "
            f"{', '.join(SAFETENSORS_DTYPES)}"
        )
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise TorchFileError(f"{where}: tensor {name!r} has shape {shape!r}, expected a list of ints >= 0")
    span = SAFETENSORS_DTYPES[dtype_name].itemsize
    for d in shape:  # Python integers: no wrap-around; torch indexes bytes with signed 64-bit integers
        span *= max(d, 1)
        if span > _MAX_SPAN_BYTES:
            raise TorchFileError(
                f"{where}: tensor {name!r} has shape {shape!r}, too large to describe (over 2**63 bytes)"
            )
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(type(o) is int for o in offsets)
        and 0 <= offsets[0] <= offsets[1]
    ):
        raise TorchFileError(f"{where}: tensor {name!r} has data_offsets {offsets!r}, expected [begin, end]")
    return SAFETENSORS_DTYPES[dtype_name], shape, (offsets[0], offsets[1])


# -- .pt / .pth --------------------------------------------------------------------------------------------


def _flatten(value: object, prefix: str, tensors: OrderedDict[str, Tensor], skipped: list[str]) -> None:
    if isinstance(value, Tensor):
        tensors[prefix.rstrip(".")] = value
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(inner, f"{prefix}{key}.", tensors, skipped)
    else:
        skipped.append(f"{prefix.rstrip('.') or '<root>'} ({type(value).__name__})")


def read_torch_file(path: PathLike) -> tuple[OrderedDict[str, Tensor], list[str]]:
    """Read a ``torch.save`` file with ``weights_only=True``: ``(tensors by dotted name, what was skipped)``.

    A plain state dict comes back as it is; nested dicts (training checkpoints) are flattened to dotted names
    (``model.lstm.weight_ih_l0``); other values (epoch numbers, strings) are listed in the second item.

    Raises:
        TorchFileError: the file is not a torch file, is truncated or corrupted, or holds pickled objects
            that ``weights_only`` loading refuses (a whole ``nn.Module``: save its ``state_dict()`` instead).
    """
    tensors, skipped, _ = read_torch_payload(path)
    return tensors, skipped


def read_torch_payload(path: PathLike) -> tuple[OrderedDict[str, Tensor], list[str], dict[str, str]]:
    """:func:`read_torch_file`, plus the metadata a ``torch.save`` file may hold as safetensors does: a
    top-level ``"__metadata__"`` entry mapping str to str (what :func:`save_state_dict` writes). An entry of
    that name holding anything else is reported as skipped, like any other non-tensor value."""
    source = Path(path)
    data = source.read_bytes()
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for damaged files: all mean "cannot read"
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            raise TorchFileError(
                f"{source}: holds pickled objects that torch.load(weights_only=True) refuses (a whole "
                "module?); save model.state_dict() instead"
            ) from None
        raise TorchFileError(
            f"{source}: not a readable torch file (truncated, corrupted or foreign): "
            f"{type(error).__name__}: {message}"
        ) from None
    tensors: OrderedDict[str, Tensor] = OrderedDict()
    skipped: list[str] = []
    metadata: dict[str, str] = {}
    if isinstance(loaded, Mapping) and _is_metadata(loaded.get(METADATA_KEY)):
        metadata = dict(loaded[METADATA_KEY])
        loaded = {key: value for key, value in loaded.items() if key != METADATA_KEY}
    _flatten(loaded, "", tensors, skipped)
    if isinstance(loaded, Tensor):
        raise TorchFileError(f"{source}: holds a single tensor, expected a state dict (a dict of tensors)")
    return tensors, skipped, metadata


def _is_metadata(value: object) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(key, str) and isinstance(text, str) for key, text in value.items()
    )


def torch_file_bytes(tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """The bytes ``torch.save`` writes for an ordered state dict of ``tensors`` (cloned, contiguous, CPU),
    with ``metadata`` (str -> str) under a last ``"__metadata__"`` entry when given."""
    state: OrderedDict[str, Any] = OrderedDict(
        (name, t.detach().cpu().contiguous().clone()) for name, t in tensors.items()
    )
    if metadata:
        if METADATA_KEY in state or not _is_metadata(metadata):
            raise ValueError(f"metadata must map str to str, and no tensor may be named {METADATA_KEY!r}")
        state[METADATA_KEY] = dict(metadata)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


# -- the common entry points -------------------------------------------------------------------------------

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)


def file_kind(path: PathLike, kind: str | None = None) -> str:
    """``"torch"`` or ``"safetensors"``: ``kind`` when given, else from the extension."""
    if kind is not None:
        if kind not in ("torch", "safetensors"):
            raise ValueError(f"kind must be 'torch' or 'safetensors', got {kind!r}")
        return kind
    suffix = Path(path).suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    raise ValueError(
        f"path: cannot tell the format of {str(path)!r} from its extension; expected .pt, .pth or "
        ".safetensors"
    )


def strip_prefix(tensors: Mapping[str, Tensor], prefix: str | None, where: str) -> OrderedDict[str, Tensor]:
    """The tensors whose names start with ``prefix``, renamed without it (all of them when ``prefix`` is
    empty); :class:`TorchFileError` naming ``where`` when none does."""
    if not prefix:
        return OrderedDict(tensors)
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str or None, got {type(prefix).__name__}")
    kept = OrderedDict((name[len(prefix) :], t) for name, t in tensors.items() if name.startswith(prefix))
    if not kept:
        names = ", ".join(list(tensors)[:8]) + (" ..." if len(tensors) > 8 else "")
        raise TorchFileError(
            f"{where}: no tensor name starts with prefix {prefix!r}; names: {names or 'none'}"
        )
    return kept


def load_state_dict(
    path: PathLike, *, prefix: str | None = None, kind: str | None = None
) -> OrderedDict[str, Tensor]:
    """Read the tensors of a ``.pt`` / ``.pth`` / ``.safetensors`` file.

    Args:
        path: the file.
        prefix: keep only names that start with it, without it (``"encoder."``).
        kind: ``"torch"`` or ``"safetensors"``; from the extension when None.

    Example::

        >>> state = load_state_dict("model.safetensors", prefix="encoder.")
        >>> lstm.load_state_dict(state)

    Raises:
        TorchFileError: unreadable file (see :func:`read_torch_file`, :func:`read_safetensors`), or no name
            under ``prefix``.
    """
    if file_kind(path, kind) == "safetensors":
        tensors, _ = read_safetensors(path)
    else:
        tensors, _ = read_torch_file(path)
    return strip_prefix(tensors, prefix, str(path))


def save_state_dict(
    tensors: Mapping[str, Tensor] | torch.nn.Module,
    path: PathLike,
    *,
    prefix: str = "",
    kind: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a state dict (or a module's) as ``.pt`` / ``.pth`` (``torch.save``) or ``.safetensors``,
    atomically. ``prefix`` is put in front of every name; ``metadata`` (str -> str) is kept in a safetensors
    header, or in a torch file under a ``"__metadata__"`` entry (:func:`read_torch_payload` reads it back;
    ``torch.nn.Module.load_state_dict`` then refuses the file as having an unexpected key)."""
    if isinstance(tensors, torch.nn.Module):
        tensors = tensors.state_dict()
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    named = OrderedDict((prefix + name, t) for name, t in tensors.items())
    if file_kind(path, kind) == "safetensors":
        payload = safetensors_bytes(named, metadata)
    else:
        payload = torch_file_bytes(named, metadata)
    return atomic_write_bytes(path, payload)
