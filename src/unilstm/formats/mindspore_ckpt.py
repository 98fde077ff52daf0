"""MindSpore ``.ckpt`` checkpoints, read and written with the ``protobuf`` package (no MindSpore needed).

The file format, as MindSpore 2.10 writes it (``mindspore/train/serialization.py``), is the proto2 message::

    message Checkpoint {
      message Value {
        required string tag = 1;
        oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3; }
      }
      repeated Value value = 1;
    }
    message TensorProto {
      repeated int64 dims = 1; required string tensor_type = 2; required bytes tensor_content = 3;
    }
    message MapTensorProto { repeated TensorProto tensor = 1; }

- Each parameter is serialised as its own one-``Value`` ``Checkpoint`` and the pieces are appended, so the
  whole file parses as one message. ``tag`` is the parameter name, ``tensor_type`` MindSpore's dtype name
  (``Float32``, ``BFloat16``, ``Int64``, ``Bool``, ``str``, ...), ``tensor_content`` the raw little-endian
  C-order bytes, ``dims`` the full shape. Tensors over 512 MiB are split in chunks that repeat the tag.
- ``append_dict`` values: int -> 0-d ``Int64``, float -> 0-d ``Float32``, bool -> 0-d ``Bool``,
  str -> dims ``[0]``, type ``str``, UTF-32LE content.
- Optional integrity trailer: the 7 bytes ``crc_num`` and then the CRC32 of everything before it as a 10-byte
  big-endian integer.
- Encrypted files start with a 4-byte little-endian magic number (0x7F3A5ED8 AES-GCM, 0x7F3A5ED9 AES-CBC,
  0x7F3A5EDA SM4-CBC); they are refused here.
- MindSpore writes ``<name>.tmp``, renames it over the target and sets mode 0400.

Names: an LSTM's parameters use torch's names (``weight_ih_l0``, ``bias_hh_l1_reverse``), but MindSpore lists
and saves them grouped by kind: every ``weight_ih``, then every ``weight_hh``, every ``bias_ih``, every
``bias_hh``. Inside a bigger network a name carries the attribute path (``encoder.weight_ih_l0``).
"""

from __future__ import annotations

import binascii
import os
import pathlib
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..parameter_names import PARAMETER_KINDS, VARIANT_KINDS, parameter_names, parse_parameter_name
from ..spec import LSTMSpec
from .atomic import atomic_file

PathLike = Union[str, "os.PathLike[str]"]
#: What a checkpoint entry reads as: a tensor, a Python scalar (0-d Int64, Float32 and Bool entries, which
#: is what ``append_dict`` writes for int, float and bool) or a string.
CheckpointValue = Union[Tensor, int, float, bool, str]  # noqa: UP007 - a runtime alias

#: MindSpore splits tensors larger than this into chunks that repeat the tag (SLICE_SIZE = 512 MiB).
CHUNK_BYTES = 512 * 1024 * 1024
_CRC_MARK = b"crc_num"
_CRC_TRAILER_BYTES = len(_CRC_MARK) + 10
_ENCRYPTION_MAGIC = {0x7F3A5ED8: "AES-GCM", 0x7F3A5ED9: "AES-CBC", 0x7F3A5EDA: "SM4-CBC"}
_VALUE_FIELD_TAG = 0x0A  # field 1 (Checkpoint.value), wire type 2 (length-delimited)

# MindSpore tensor_type name -> (numpy dtype of the little-endian content, torch dtype)
_TYPES: dict[str, tuple[np.dtype, torch.dtype]] = {
    "Bool": (np.dtype("bool"), torch.bool),
    "Int8": (np.dtype("int8"), torch.int8),
    "UInt8": (np.dtype("uint8"), torch.uint8),
    "Int16": (np.dtype("<i2"), torch.int16),
    "UInt16": (np.dtype("<u2"), torch.uint16),
    "Int32": (np.dtype("<i4"), torch.int32),
    "UInt32": (np.dtype("<u4"), torch.uint32),
    "Int64": (np.dtype("<i8"), torch.int64),
    "UInt64": (np.dtype("<u8"), torch.uint64),
    "Float16": (np.dtype("<f2"), torch.float16),
    "BFloat16": (np.dtype("<u2"), torch.bfloat16),  # numpy has no bfloat16: read the bits, view in torch
    "Float32": (np.dtype("<f4"), torch.float32),
    "Float64": (np.dtype("<f8"), torch.float64),
}
_TYPE_NAMES = {torch_dtype: name for name, (_, torch_dtype) in _TYPES.items()}
_PYTHON_SCALAR_TYPES = ("Int64", "Float32", "Bool")


class CheckpointError(ValueError):
    """A file that is not a readable MindSpore checkpoint: truncated, corrupted, encrypted or foreign."""


# -- protobuf message classes, built at run time from the schema (no generated code to keep in sync) --------
@lru_cache(maxsize=1)
def _messages() -> tuple[type, type]:
    """The ``Checkpoint`` and ``Checkpoint.Value`` message classes."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    label = descriptor_pb2.FieldDescriptorProto
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="unilstm_mindspore_checkpoint.proto", syntax="proto2"
    )

    def add_field(message, name, number, kind, rule, type_name=None, oneof=None):
        field = message.field.add(name=name, number=number, type=kind, label=rule)
        if type_name:
            field.type_name = type_name
        if oneof is not None:
            field.oneof_index = oneof

    tensor = file_proto.message_type.add(name="TensorProto")
    add_field(tensor, "dims", 1, label.TYPE_INT64, label.LABEL_REPEATED)
    add_field(tensor, "tensor_type", 2, label.TYPE_STRING, label.LABEL_REQUIRED)
    add_field(tensor, "tensor_content", 3, label.TYPE_BYTES, label.LABEL_REQUIRED)
    map_tensor = file_proto.message_type.add(name="MapTensorProto")
    add_field(map_tensor, "tensor", 1, label.TYPE_MESSAGE, label.LABEL_REPEATED, ".TensorProto")
    checkpoint = file_proto.message_type.add(name="Checkpoint")
    value = checkpoint.nested_type.add(name="Value")
    value.oneof_decl.add(name="value")
    add_field(value, "tag", 1, label.TYPE_STRING, label.LABEL_REQUIRED)
    add_field(value, "tensor", 2, label.TYPE_MESSAGE, label.LABEL_OPTIONAL, ".TensorProto", oneof=0)
    add_field(value, "maptensor", 3, label.TYPE_MESSAGE, label.LABEL_OPTIONAL, ".MapTensorProto", oneof=0)
    add_field(checkpoint, "value", 1, label.TYPE_MESSAGE, label.LABEL_REPEATED, ".Checkpoint.Value")

    pool = descriptor_pool.DescriptorPool()  # a private pool: no clash with MindSpore's own checkpoint.proto
    pool.Add(file_proto)
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is None:  # protobuf < 4.22
        factory = message_factory.MessageFactory(pool)
        get_class = factory.GetPrototype
    checkpoint_class = get_class(pool.FindMessageTypeByName("Checkpoint"))
    value_class = get_class(pool.FindMessageTypeByName("Checkpoint.Value"))
    return checkpoint_class, value_class


# -- reading ----------------------------------------------------------------------------------------------
def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    """A protobuf varint at ``position``: (value, position after it). Raises IndexError past the end."""
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _split_body(
    path: PathLike, data: bytes, crc_check: bool, require_crc: bool = False
) -> tuple[bytes, bool]:
    """The protobuf body of a checkpoint file and whether a CRC trailer followed it: refuses encrypted files,
    checks the CRC (when asked, and always when it is required) and drops the trailer."""
    if not data:
        raise CheckpointError(f"{os.fspath(path)}: the file is empty, not a MindSpore checkpoint")
    if len(data) >= 4 and int.from_bytes(data[:4], "little") in _ENCRYPTION_MAGIC:
        mode = _ENCRYPTION_MAGIC[int.from_bytes(data[:4], "little")]
        raise CheckpointError(
            f"{os.fspath(path)}: the checkpoint is encrypted ({mode}); unilstm cannot decrypt it. Decrypt it "
            "with MindSpore (mindspore.load_checkpoint(path, dec_key=..., dec_mode=...) and save_checkpoint "
            "without enc_key) and load the plain file"
        )
    if data[-_CRC_TRAILER_BYTES:-10] == _CRC_MARK:
        body = data[:-_CRC_TRAILER_BYTES]
        if crc_check or require_crc:
            stored = int.from_bytes(data[-10:], "big")
            computed = binascii.crc32(body)
            if stored != computed:
                raise CheckpointError(
                    f"{os.fspath(path)}: CRC32 check failed: the trailer says {stored}, the content gives "
                    f"{computed}; the file is damaged"
                )
        return body, True
    if require_crc:
        raise CheckpointError(
            f"{os.fspath(path)}: no CRC32 trailer, and require_crc=True asks for one: the file was saved "
            "without crc=True, or its end is cut off"
        )
    return data, False


def _read_values(path: PathLike, data: bytes) -> Iterable[tuple[int, Any]]:
    """Walk the appended one-Value messages: yields (byte offset, Checkpoint.Value)."""
    from google.protobuf.message import DecodeError

    _, value_class = _messages()
    position = 0
    while position < len(data):
        start = position
        if data[position] != _VALUE_FIELD_TAG:
            raise CheckpointError(
                f"{os.fspath(path)}: not a MindSpore checkpoint: byte {start} is "
                f"0x{data[position]:02x} where "
                "an entry (protobuf field 1) must start"
            )
        try:
            length, position = _read_varint(data, position + 1)
        except (IndexError, ValueError):
            raise CheckpointError(
                f"{os.fspath(path)}: truncated or corrupted: the entry at byte {start} has no valid length"
            ) from None
        if position + length > len(data):
            raise CheckpointError(
                f"{os.fspath(path)}: truncated: the entry at byte {start} needs {length} bytes, only "
                f"{len(data) - position} remain"
            )
        value = value_class()
        try:
            value.ParseFromString(data[position : position + length])
        except DecodeError as error:
            raise CheckpointError(
                f"{os.fspath(path)}: corrupted: the entry at byte {start} is not a checkpoint value ({error})"
            ) from None
        position += length
        if not isinstance(value.tag, str):  # upb hands proto2 strings that are not UTF-8 back as bytes
            raise CheckpointError(
                f"{os.fspath(path)}: corrupted: the entry at byte {start} has a name that is not UTF-8 text "
                f"({bytes(value.tag)[:40]!r})"
            )
        yield start, value


#: numpy and torch index bytes with signed 64-bit integers: no shape may span more, even an empty one
_MAX_SPAN_BYTES = 2**63 - 1


def _element_count(dims: list[int], itemsize: int, where: str) -> int:
    """The elements of a ``dims`` shape, after checking that numpy and torch can describe the shape at all:
    the product of its nonzero dimensions times ``itemsize`` (the largest stride plus one element) must fit
    their 64-bit byte offsets. Python integers, so no arithmetic wraps."""
    span = itemsize
    count = 1
    for d in dims:
        span *= max(d, 1)
        count *= d
        if span > _MAX_SPAN_BYTES:
            raise CheckpointError(
                f"{where}: shape {dims} is too large to describe (over 2**63 bytes); the file is corrupted"
            )
    return count


def _decode(path: PathLike, name: str, type_name: str, dims: list[int], content: bytes) -> CheckpointValue:
    where = f"{os.fspath(path)}: entry {name!r}"
    if type_name == "str":
        if len(content) % 4:
            raise CheckpointError(f"{where}: a str entry holds UTF-32 text, got {len(content)} bytes")
        # numpy's fixed-width unicode, which MindSpore writes, pads with NULs and drops them on reading
        return content.decode("utf-32-le", errors="replace").rstrip("\x00")
    if type_name not in _TYPES:
        raise CheckpointError(
            f"{where}: unsupported tensor type {type_name!r}; supported: {', '.join(_TYPES)}"
        )
    numpy_dtype, torch_dtype = _TYPES[type_name]
    if any(d < 0 for d in dims):
        raise CheckpointError(f"{where}: negative dimension in shape {dims}")
    if dims == [0] and len(content) == numpy_dtype.itemsize:
        dims = []  # MindSpore reads dims [0] as a scalar
    count = _element_count(dims, numpy_dtype.itemsize, where)
    if count * numpy_dtype.itemsize != len(content):
        raise CheckpointError(
            f"{where}: {type_name} with shape {dims} needs {count * numpy_dtype.itemsize} bytes, "
            f"the file holds {len(content)}; the file is corrupted"
        )
    array = np.frombuffer(content, dtype=numpy_dtype).reshape(dims)
    tensor = torch.from_numpy(array.astype(numpy_dtype.newbyteorder("="), copy=True))
    if torch_dtype == torch.bfloat16:
        tensor = tensor.view(torch.bfloat16)
    if not dims and type_name in _PYTHON_SCALAR_TYPES:
        return tensor.item()
    return tensor


@dataclass(frozen=True)
class CheckpointContents:
    """What :func:`read_checkpoint` found in a file.

    Attributes:
        values: ``{name: value}`` in file order (see :func:`load_checkpoint`), under ``prefix`` when given.
        entries: how many named entries the whole file holds (a tensor split in chunks counts once, every
            name counts whatever ``prefix`` keeps).
        crc: whether a CRC32 trailer followed them (checked when ``crc_check`` or ``require_crc``).
    """

    values: dict[str, CheckpointValue]
    entries: int
    crc: bool


def read_checkpoint(
    path: PathLike,
    *,
    prefix: str | None = None,
    crc_check: bool = True,
    require_crc: bool = False,
) -> CheckpointContents:
    """:func:`load_checkpoint` with the file's facts: how many entries it holds and whether a CRC followed
    them (what a reader needs to tell a whole file from a cut one when the file states them)."""
    if prefix is not None and not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str or None, got {type(prefix).__name__} {prefix!r}")
    for flag, value in (("crc_check", crc_check), ("require_crc", require_crc)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be a bool, got {type(value).__name__} {value!r}")
    data = pathlib.Path(path).read_bytes()
    body, has_crc = _split_body(path, data, crc_check, require_crc)
    result: dict[str, CheckpointValue] = {}
    pending: tuple[str, str, list[int], list[bytes]] | None = None  # chunks of the entry being read

    def finish(entry: tuple[str, str, list[int], list[bytes]] | None) -> None:
        if entry is None:
            return
        name, type_name, dims, chunks = entry
        if prefix is not None:
            if not name.startswith(prefix):
                return
            name = name[len(prefix) :]
        result[name] = _decode(path, name, type_name, dims, b"".join(chunks))

    all_names: list[str] = []
    seen: dict[str, int] = {}
    for start, value in _read_values(path, body):
        kind = value.WhichOneof("value")
        if pending is not None and pending[0] == value.tag and kind == "tensor":
            pending[3].append(value.tensor.tensor_content)  # a chunk of a tensor split by MindSpore
            continue
        if value.tag in seen:  # not a chunk: a second entry of that name would replace the first unseen
            raise CheckpointError(
                f"{os.fspath(path)}: corrupted: entry {value.tag!r} at byte {start} repeats the name of the "
                f"entry at byte {seen[value.tag]}"
            )
        seen[value.tag] = start
        all_names.append(value.tag)
        finish(pending)
        pending = None
        if kind == "maptensor":
            warnings.warn(
                f"{os.fspath(path)}: skipping map parameter {value.tag!r} (MindSpore MapParameter)",
                stacklevel=3,
            )
            continue
        if kind != "tensor":
            raise CheckpointError(f"{os.fspath(path)}: entry {value.tag!r} holds no tensor")
        tensor = value.tensor
        pending = (value.tag, tensor.tensor_type, list(tensor.dims), [tensor.tensor_content])
    finish(pending)
    if not all_names:
        raise CheckpointError(f"{os.fspath(path)}: the checkpoint holds no entries")
    if prefix is not None and not result:
        shown = ", ".join(repr(n) for n in all_names[:8]) + (", ..." if len(all_names) > 8 else "")
        raise CheckpointError(f"{os.fspath(path)}: no entry starts with prefix {prefix!r}; names: {shown}")
    return CheckpointContents(result, len(all_names), has_crc)


def load_checkpoint(
    path: PathLike, *, prefix: str | None = None, crc_check: bool = True, require_crc: bool = False
) -> dict[str, CheckpointValue]:
    """Read a MindSpore ``.ckpt`` file (written by MindSpore or by :func:`save_checkpoint`).

    Args:
        path: the checkpoint file.
        prefix: keep only names that start with it and strip it, e.g. ``"encoder."`` turns
            ``encoder.weight_ih_l0`` into ``weight_ih_l0`` so that an LSTM saved inside a bigger MindSpore
            network loads into a bare LSTM.
        crc_check: verify the CRC32 trailer when the file has one (a mismatch raises). MindSpore checks it
            only when asked (``crc_check=False`` by default there).
        require_crc: refuse a file without a CRC32 trailer, and verify it. A file cut at an entry boundary is
            a shorter valid checkpoint; only its lost trailer tells, so ask for it where files are saved with
            ``crc=True``.

    Returns:
        ``{name: value}`` in file order: tensors (float16, bfloat16, float32, float64, integer and bool types,
        their shapes as stored), Python ``int``/``float``/``bool`` for 0-d Int64/Float32/Bool entries (what
        ``append_dict`` writes) and ``str`` for string entries.

    Raises:
        CheckpointError: encrypted, truncated, corrupted (CRC mismatch, sizes that do not add up, a name that
            is not UTF-8 or appears twice) or foreign files, no CRC where ``require_crc``, or nothing left
            under ``prefix``; the message names the file.
        FileNotFoundError, PermissionError: as ``open`` raises them.
    """
    return read_checkpoint(path, prefix=prefix, crc_check=crc_check, require_crc=require_crc).values


# -- names in MindSpore's order -----------------------------------------------------------------------------
def mindspore_parameter_order(names: Iterable[str]) -> list[str]:
    """An LSTM's parameter names (torch order) in MindSpore's order: grouped by kind (every weight_ih, then
    weight_hh, bias_ih, bias_hh, and weight_hr, which MindSpore lacks, then the cell variants' kinds, which
    it lacks too: a checkpoint unilstm writes with ``weights_only``), torch order inside a kind."""
    names = list(names)
    kinds = PARAMETER_KINDS + VARIANT_KINDS

    def kind(name: str) -> int:
        parsed = parse_parameter_name(name)
        return kinds.index(parsed.kind) if parsed and not parsed.prefix else len(kinds)

    return sorted(names, key=lambda name: (kind(name), names.index(name)))


def _is_lstm(module: nn.Module) -> bool:
    """A unilstm LSTM (canonical or front door): its own parameters are the ones its spec names."""
    spec = getattr(module, "spec", None)
    if not isinstance(spec, LSTMSpec):
        return False
    own = [name for name, _ in module.named_parameters(recurse=False)]
    return sorted(own) == sorted(parameter_names(spec))


def mindspore_named_parameters(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Parameter]]:
    """``module.named_parameters()`` in the order MindSpore lists a network's parameters: the parameters of
    every unilstm LSTM inside it grouped by kind (see :func:`mindspore_parameter_order`), the rest in torch's
    order. ``prefix`` is joined to every name with a dot, like MindSpore's ``name_prefix``."""
    lstm_paths = {path for path, sub in module.named_modules() if _is_lstm(sub)}
    parameters = dict(module.named_parameters())
    ordered: list[tuple[str, nn.Parameter]] = []
    emitted: set[str] = set()
    for name in parameters:
        if name in emitted:
            continue
        owner = name.rpartition(".")[0]
        if owner in lstm_paths:
            head = owner + "." if owner else ""
            block = [n for n in parameters if n.rpartition(".")[0] == owner]
            names = [head + local for local in mindspore_parameter_order(n[len(head) :] for n in block)]
        else:
            names = [name]
        for full in names:
            emitted.add(full)
            ordered.append(((prefix + "." if prefix else "") + full, parameters[full]))
    return ordered


# -- writing ----------------------------------------------------------------------------------------------
def _as_entry_value(name: str, value: object) -> Tensor | str:
    """A value to store: tensors as they are, numpy arrays as tensors, Python scalars as MindSpore stores
    them (bool -> Bool, int -> Int64, float -> Float32, all 0-d) and strings as strings."""
    if isinstance(value, str):
        return value
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, (np.ndarray, np.generic)):  # before float: numpy.float64 is a float subclass
        array = np.asarray(value)
        if array.dtype.kind in "US":
            return str(array)
        return torch.from_numpy(np.ascontiguousarray(array))
    if isinstance(value, bool):
        return torch.tensor(value)
    if isinstance(value, int):
        return torch.tensor(value, dtype=torch.int64)
    if isinstance(value, float):
        return torch.tensor(value, dtype=torch.float32)
    raise TypeError(
        f"save_checkpoint: the value of {name!r} must be a tensor, numpy array, int, float, bool or str, "
        f"got {type(value).__name__}"
    )


def _entries(net_or_params: object, append_dict: Mapping[str, object] | None) -> dict[str, Tensor | str]:
    entries: dict[str, Tensor | str] = {}
    items: list[tuple[object, object]]  # names and values are checked below, whatever their source
    if isinstance(net_or_params, nn.Module):
        items = list(mindspore_named_parameters(net_or_params))
    elif isinstance(net_or_params, Mapping):
        items = list(net_or_params.items())
    elif isinstance(net_or_params, (list, tuple)):
        items = []
        for element in net_or_params:
            if not (isinstance(element, Mapping) and set(element) >= {"name", "data"}):
                raise TypeError(
                    "save_checkpoint: a list must hold {'name': str, 'data': tensor} dicts (MindSpore's list "
                    f"form), got an element of type {type(element).__name__}"
                )
            items.append((element["name"], element["data"]))
    else:
        raise TypeError(
            "save_checkpoint: net_or_params must be an nn.Module, a dict {name: value} or a list of "
            f"{{'name': ..., 'data': ...}} dicts, got {type(net_or_params).__name__}"
        )
    if append_dict is not None:
        if not isinstance(append_dict, Mapping):
            raise TypeError(f"save_checkpoint: append_dict must be a dict, got {type(append_dict).__name__}")
        items += list(append_dict.items())
    for name, value in items:
        if not isinstance(name, str):
            raise TypeError(f"save_checkpoint: names must be str, got {type(name).__name__} {name!r}")
        entries[name] = _as_entry_value(name, value)
    return entries


def _serialise(name: str, value: Tensor | str, chunk_bytes: int) -> Iterable[bytes]:
    """The one-Value ``Checkpoint`` messages for one entry (several when split in chunks)."""
    checkpoint_class, _ = _messages()
    if isinstance(value, str):
        dims, type_name = [0], "str"
        # numpy's fixed-width unicode (what MindSpore writes): UTF-32LE, at least one character wide
        content = value.encode("utf-32-le") or b"\0\0\0\0"
    else:
        if value.dtype not in _TYPE_NAMES:
            raise TypeError(
                f"save_checkpoint: {name!r} has dtype {value.dtype}, which MindSpore checkpoints "
                f"cannot hold; supported: {', '.join(str(d) for d in _TYPE_NAMES)}"
            )
        dims, type_name = list(value.shape), _TYPE_NAMES[value.dtype]
        tensor = value.detach().cpu().contiguous()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.view(torch.int16)
        array = tensor.numpy()
        content = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    for start in range(0, max(len(content), 1), chunk_bytes):
        message = checkpoint_class()
        entry = message.value.add()
        entry.tag = name
        entry.tensor.dims.extend(dims)
        entry.tensor.tensor_type = type_name
        entry.tensor.tensor_content = content[start : start + chunk_bytes]
        yield message.SerializeToString()


def save_checkpoint(
    net_or_params: nn.Module | Mapping[str, object] | list,
    path: PathLike,
    append_dict: Mapping[str, object] | None = None,
    crc: bool = False,
    *,
    file_mode: int | None = 0o400,
    chunk_bytes: int = CHUNK_BYTES,
) -> None:
    """Write a MindSpore ``.ckpt`` file that ``mindspore.load_checkpoint`` reads.

    Args:
        net_or_params: a module (any ``nn.Module``: every unilstm LSTM in it is listed in MindSpore's order,
            under torch's parameter names, which are MindSpore's), a dict ``{name: value}`` (e.g. from
            :func:`load_checkpoint` or a ``state_dict``) or MindSpore's list form
            ``[{"name": ..., "data": ...}, ...]``.
        path: the file to write. It is written to a temporary file in the same folder and renamed over
            ``path`` (atomic: readers see the old file or the new one, never half of one).
        append_dict: extra entries: int (saved as 0-d Int64), float (0-d Float32), bool, str, tensors.
        crc: append MindSpore's CRC32 trailer (``crc_check=True`` in MindSpore).
        file_mode: permission bits set on the finished file; MindSpore's 0400 (read-only) by default, ``None``
            keeps the replaced file's permissions (a new file gets the process's default).
        chunk_bytes: split tensors larger than this into chunks, as MindSpore does above 512 MiB.
    """
    if not isinstance(crc, bool):
        raise TypeError(f"save_checkpoint: crc must be a bool, got {type(crc).__name__} {crc!r}")
    if chunk_bytes <= 0:
        raise ValueError(f"save_checkpoint: chunk_bytes must be positive, got {chunk_bytes}")
    entries = _entries(net_or_params, append_dict)
    target = pathlib.Path(path)
    with atomic_file(target) as handle:
        checksum = 0
        for name, value in entries.items():
            for piece in _serialise(name, value, chunk_bytes):
                checksum = binascii.crc32(piece, checksum)
                handle.write(piece)
        if crc:
            handle.write(_CRC_MARK + checksum.to_bytes(10, "big"))
    if file_mode is not None:
        os.chmod(target, file_mode)


# -- loading into a module ------------------------------------------------------------------------------
def _float_or_int_family(dtype: torch.dtype) -> str | None:
    if dtype.is_floating_point:
        return "float"
    if dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        return "int"
    return None


def _update_parameter(parameter: nn.Parameter, name: str, value: object, strict_load: bool) -> None:
    """Copy ``value`` into ``parameter`` with MindSpore's rules: equal shapes (or extra trailing 1s in the
    checkpoint); a different dtype only between two float or two int types and only when not strict."""
    new = _as_entry_value(name, value)
    assert isinstance(new, Tensor)
    if tuple(new.shape) != tuple(parameter.shape):
        extra = tuple(new.shape[parameter.dim() :])
        if new.dim() > parameter.dim() and all(d == 1 for d in extra) and new.numel() == parameter.numel():
            new = new.reshape(parameter.shape)
        else:
            raise RuntimeError(
                f"load_param_into_net: {name} has shape {tuple(parameter.shape)} in the net and "
                f"{tuple(new.shape)} in the checkpoint"
            )
    if new.dtype != parameter.dtype:
        family = _float_or_int_family(parameter.dtype)
        if strict_load or family is None or family != _float_or_int_family(new.dtype):
            raise RuntimeError(
                f"load_param_into_net: {name} has dtype {parameter.dtype} in the net and {new.dtype} in the "
                "checkpoint" + ("; strict_load=True allows no conversion" if strict_load else "")
            )
    with torch.no_grad():
        parameter.copy_(new.to(device=parameter.device, dtype=parameter.dtype))


def load_param_into_net(
    net: nn.Module, params: Mapping[str, object], strict_load: bool = False
) -> tuple[list[str], list[str]]:
    """Copy checkpoint values into ``net``'s parameters by name, by ``mindspore.load_param_into_net``'s rules.

    - Names are matched exactly (MindSpore's order and names, see :func:`mindspore_named_parameters`).
    - ``strict_load=False``: a float (or int) value of another dtype is converted to the parameter's dtype;
      and when some parameters found no exact name, MindSpore's prefix fallback runs: a checkpoint name that
      ends with a missing parameter's name gives a prefix (e.g. ``encoder.``) and every missing parameter is
      loaded from ``prefix + name`` when that exists.
    - ``strict_load=True``: exact names only, no dtype conversion (a mismatch raises). Unknown checkpoint
      names are not an error, in either mode: they are returned in ``ckpt_not_loaded``.
    - A shape mismatch raises RuntimeError (as in MindSpore). String values are skipped.

    Returns:
        ``(params_not_loaded, ckpt_not_loaded)``: the net's parameter names that got no value, and the
        checkpoint names that were not loaded by exact name. As in MindSpore, names loaded through the prefix
        fallback stay in ``ckpt_not_loaded``.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"load_param_into_net: net must be an nn.Module, got {type(net).__name__}")
    if not isinstance(params, Mapping):
        raise TypeError(f"load_param_into_net: params must be a dict, got {type(params).__name__}")
    if not isinstance(strict_load, bool):
        raise TypeError(f"load_param_into_net: strict_load must be a bool, got {type(strict_load).__name__}")
    for key, value in params.items():
        if not isinstance(key, str) or not isinstance(
            value, (Tensor, np.ndarray, np.generic, int, float, str)
        ):
            raise TypeError(
                "load_param_into_net: params must map str names to tensors, arrays, numbers or str, got "
                f"{type(key).__name__} -> {type(value).__name__}"
            )
    named = mindspore_named_parameters(net)
    params_not_loaded: list[str] = []
    ckpt_not_loaded = list(params)
    for name, parameter in named:
        if name not in params:
            params_not_loaded.append(name)
            continue
        if isinstance(params[name], str):
            continue  # MindSpore skips values without data and keeps them in neither list
        _update_parameter(parameter, name, params[name], strict_load)
        ckpt_not_loaded.remove(name)
    if params_not_loaded and not strict_load:
        _load_with_prefix(named, params, params_not_loaded, strict_load)
    if params_not_loaded:
        warnings.warn(
            f"load_param_into_net: {len(params_not_loaded)} parameters of the net are not loaded: "
            f"{params_not_loaded}",
            stacklevel=2,
        )
    return params_not_loaded, ckpt_not_loaded


def _load_with_prefix(
    named: list[tuple[str, nn.Parameter]],
    params: Mapping[str, object],
    not_loaded: list[str],
    strict_load: bool,
) -> None:
    """MindSpore's ``_load_dismatch_prefix_params``: find a prefix that a checkpoint name adds to a missing
    parameter's name, load every missing parameter under that prefix, and repeat while that finds more."""
    tensor_names = [key for key, value in params.items() if not isinstance(value, str)]
    while not_loaded:
        prefix = None
        for missing in not_loaded:
            prefix = next((key[: -len(missing)] for key in tensor_names if key.endswith(missing)), None)
            if prefix is not None:
                break
        if prefix is None:
            return
        loaded_any = False
        for name, parameter in named:
            if name in not_loaded and prefix + name in params and not isinstance(params[prefix + name], str):
                _update_parameter(parameter, name, params[prefix + name], strict_load)
                not_loaded.remove(name)
                loaded_any = True
        if not loaded_any:
            return
