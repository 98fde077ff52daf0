"""The conversion API: :func:`convert` (write, then prove the numbers match), :func:`load` and :func:`save`
on front-door layers, and :func:`export_onnx` for a layer of any front door."""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..formats.atomic import DestinationError, atomic_path, atomic_write_bytes, check_destination
from ..formats.keras_files import read_keras_model_config
from ..formats.onnx_export import DEFAULT_OPSET, build_graph, write_model
from ..frontends.keras_files import load_layers, record_from_layer
from ..frontends.mindspore import LSTM as MindSporeLSTM  # noqa: N811
from ..frontends.torch import LSTM as TorchLSTM  # noqa: N811
from ..interchange import InterchangeLSTM
from ..keras_model.description import describe_model
from ..layer import LSTM
from ..parameter_names import parameter_names
from . import model_conversion
from .emitted_code import write_emitted_code
from .file_kinds import (
    FRAMEWORK_OF,
    WRITABLE,
    ConversionError,
    PathLike,
    VerificationError,
    detect_format,
)
from .model_conversion import is_whole_model
from .reading import from_keras_record, merge_stacks, read_units
from .semantics import canonical_layer, ignored_keras_arguments, target_problems
from .verification import max_difference, verify
from .writing import as_float32_for, write_units


@dataclass
class ConversionReport:
    """What :func:`convert` did."""

    source: str
    target: str
    source_format: str
    target_format: str
    layers: list[str]
    differences: dict[str, Any]
    max_difference: float
    tolerance: float
    verified: bool
    notes: list[str]
    emitted: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def convert(
    source: PathLike,
    target: PathLike,
    *,
    source_format: str | None = None,
    target_format: str | None = None,
    layer: str | None = None,
    prefix: str | None = None,
    source_prefix: str | None = None,
    weights_only: bool = False,
    tolerance: float = 1e-5,
    verify_numbers: bool = True,
    emit_code: PathLike | None = None,
    custom_objects: dict[str, Any] | None = None,
    opset: int | None = None,
    progress: Callable[[str], None] | None = None,
    require_crc: bool = False,
    crc: bool = False,
    batch_first: bool | None = None,
    lstm_only: bool = False,
) -> ConversionReport:
    """Convert ``source`` to ``target`` and prove the numbers match.

    Example::

        >>> report = unilstm.convert("model.keras", "model.ckpt", prefix="encoder.", emit_code="model_ms.py")
        >>> report.max_difference
        2.384185791015625e-07

    Args:
        source: the file to read; its format from the extension or ``source_format``.
        target: the file to write; its format from the extension or ``target_format``.
        layer: convert only this layer (Keras name or key, or parameter prefix).
        prefix: put this in front of every parameter name written (``"encoder."``); several layers get
            their own sub-prefix (``encoder.lstm_1.``). By default a state-dict source's own prefixes are
            kept (``lstm.weight_ih_l0`` stays, so MindSpore's and torch's loaders find it in the same
            network); Keras sources get none.
        source_prefix: read only parameters under this prefix from a .ckpt / .pt / .safetensors source.
        weights_only: write the weights even where the target cannot express the semantics (no check).
        tolerance: the largest accepted difference, each output's ``max |target - source|`` divided by
            ``max(1, max |source|)`` (absolute below 1, relative above).
        emit_code: also write a Python module rebuilding the model in the target framework (torch or
            MindSpore targets) with the glue Keras semantics need.
        require_crc: a .ckpt source must end with a matching CRC32 trailer (a cut file is then always
            refused, even one written by MindSpore).
        crc: end a .ckpt target with MindSpore's CRC32 trailer.
        batch_first: for sources that store no call configuration (a .ckpt, a plain .pt): the stacks took
            (B, T, F) inputs (True) or (T, B, F) ones (False, what is assumed otherwise).
        lstm_only: convert only the LSTMs of a Keras model that holds other layers too (the report names
            the others). By default such a model converts whole to torch, MindSpore and ONNX targets (see
            :mod:`.model_conversion`): code that rebuilds every layer, and the weights under its names.

    The target (and ``emit_code``) must be a new path or a regular file the user may write, other than the
    source; a link there is written through. The target is written to a temporary file beside it and
    replaces it (keeping its permissions) only once verified.

    Raises:
        ConversionError: unreadable source, inexpressible semantics, a target that is the source,
            read-only or not a regular file, a negative or NaN ``tolerance``, or any other failure while
            writing and verifying (the message names the target).
        VerificationError: the numbers differ by more than ``tolerance`` (the target is then not
            written).
        OSError: the system's own (a full disk). Existing files are never half-written.
    """
    say = progress or (lambda message: None)
    src_fmt = detect_format(source, source_format)
    dst_fmt = detect_format(target, target_format)
    if dst_fmt not in WRITABLE:
        raise ConversionError(f"{target}: writing {dst_fmt} files is not supported")
    if not tolerance >= 0:  # NaN too: no difference would ever pass
        raise ConversionError(f"tolerance: expected a number >= 0, got {tolerance!r}")
    _check_target_name(target, dst_fmt)
    if emit_code is not None and FRAMEWORK_OF[dst_fmt] not in ("torch", "mindspore"):
        raise ConversionError(
            f"--emit-code: writes torch or MindSpore code (torch for .pt / .safetensors targets, MindSpore "
            f"for .ckpt targets); the target {target} is a {dst_fmt} file, which has no code form"
        )
    destination = _checked_destination(target, source)
    if emit_code is not None:
        _checked_destination(emit_code, source, also_not=target, what="--emit-code")
    whole = (
        not (lstm_only or weights_only)
        and layer is None
        and FRAMEWORK_OF[dst_fmt] in ("torch", "mindspore", "onnx")
        and is_whole_model(source, src_fmt)
    )
    if whole:
        return _convert_whole_model(
            source,
            target,
            destination,
            (src_fmt, dst_fmt),
            emit_code,
            tolerance,
            verify_numbers,
            opset,
            crc,
            say,
        )
    say(f"reading {source} ({src_fmt})")
    units = read_units(
        source,
        fmt=src_fmt,
        layer=layer,
        prefix=source_prefix,
        custom_objects=custom_objects,
        require_crc=require_crc,
        batch_first=batch_first,
    )
    dropped = _dropped_keras_layers(source, src_fmt) if layer is None else []
    framework = FRAMEWORK_OF[dst_fmt]
    if framework in ("torch", "mindspore", "onnx"):
        units = merge_stacks(units)
    units = as_float32_for(units, framework)
    notes = [f"{u.name}: {n}" for u in units for n in u.notes if n != "follows the previous layer"]
    if dropped:
        notes.append(
            f"the source model's other layers are not in the target (only its LSTMs are converted): "
            f"{', '.join(dropped)}"
        )
    for unit in units:
        for config in unit.keras.configs if unit.keras else []:
            for key in ignored_keras_arguments(config):
                notes.append(
                    f"{unit.name}: Keras argument {key} has no effect on inference numbers and is not "
                    f"carried to {framework}"
                )
    report: dict[str, Any] = {}
    with _writing(destination, target) as temporary:
        say(f"writing {len(units)} LSTM(s) as {dst_fmt}")
        write_units(
            units,
            temporary,
            dst_fmt,
            prefix=prefix,
            weights_only=weights_only,
            opset=opset,
            display=target,
            crc=crc,
        )
        stored = dst_fmt in ("pt", "safetensors")  # unilstm's torch files record the cell variants
        checked = verify_numbers and not (
            weights_only and any(target_problems(u, framework, variants_stored=stored) for u in units)
        )
        if checked:
            say("verifying")
            report = verify(units, dst_fmt, temporary, display=target)
            _within_tolerance(report, tolerance, target)
        emitted = None
        if emit_code is not None:
            emitted = str(write_emitted_code(units, emit_code, dst_fmt, Path(target), prefix))
    return ConversionReport(
        str(source),
        str(target),
        src_fmt,
        dst_fmt,
        [u.describe() for u in units],
        report,
        max_difference(report),
        tolerance,
        bool(report),
        notes,
        emitted,
    )


@contextlib.contextmanager
def _writing(destination: Path, target: PathLike) -> Iterator[Path]:
    """The temporary path a conversion writes (:func:`atomic_path`: it replaces ``destination`` only when
    the block ends without error), with every failure inside said as a :class:`ConversionError` naming
    ``target`` as the user knows it (not its temporary); the system's own OSError (a full disk) stays one,
    renamed to ``target``."""
    temporary = destination  # until atomic_path names the temporary
    try:
        with atomic_path(destination) as temporary:
            yield temporary
    except (ConversionError, ImportError):
        raise
    except DestinationError as error:
        raise ConversionError(str(error)) from None
    except OSError as error:
        if error.errno is None or str(error.filename) != str(temporary):
            raise
        raise type(error)(error.errno, error.strerror, str(target)) from error
    except Exception as error:  # a writer's or the engine's own error type
        message = str(error).replace(str(temporary), str(target))
        raise ConversionError(f"{target}: converting failed ({type(error).__name__}: {message})") from error


def _deciding(report: dict[str, Any]) -> dict[str, Any]:
    """The part of a report that decides: a whole model's per-layer differences only inform."""
    return {key: value for key, value in report.items() if key != "layers"}


def _within_tolerance(report: dict[str, Any], tolerance: float, target: PathLike) -> None:
    """Refuse (:class:`VerificationError`) a target whose numbers differ by more than ``tolerance``."""
    worst = max_difference(_deciding(report))
    if not worst <= tolerance:
        raise VerificationError(
            f"{target}: the target's numbers differ from the source's by {worst:.3g} > tolerance "
            f"{tolerance:g}; nothing was written",
            report,
        )


def _convert_whole_model(
    source: PathLike,
    target: PathLike,
    destination: Path,
    formats: tuple[str, str],
    emit_code: PathLike | None,
    tolerance: float,
    verify_numbers: bool,
    opset: int | None,
    crc: bool,
    say: Callable[[str], None],
) -> ConversionReport:
    """A whole Keras model to torch, MindSpore or ONNX (:mod:`.model_conversion`), written atomically and
    checked before it replaces anything."""
    src_fmt, dst_fmt = formats
    framework = FRAMEWORK_OF[dst_fmt]
    say(f"reading the whole model in {source} ({src_fmt})")
    model, program = model_conversion.load_source(source)
    notes: list[str] = []
    report: dict[str, Any] = {}
    code: str | None = None
    with _writing(destination, target) as temporary:
        say(f"writing {len(program.steps)} layers as {dst_fmt}")
        if framework == "torch":
            code, _ = model_conversion.write_torch_target(program, temporary, dst_fmt, Path(target))
            if verify_numbers:
                say("verifying")
                report = model_conversion.verify_torch_target(model, program, code, temporary)
        elif framework == "mindspore":
            code, parameters = model_conversion.write_mindspore_target(
                program, temporary, Path(target), crc
            )
            if verify_numbers:
                report = model_conversion.verify_mindspore_target(parameters, temporary)
            notes.append(
                "MindSpore is not run here: the written parameters are read back and compared; the "
                "generated Cell's numbers are checked in real MindSpore by "
                "tools/live/check_emitted_mindspore_models.py"
            )
        else:
            model_conversion.write_onnx_target(program, temporary, opset)
            if verify_numbers:
                say("verifying with onnxruntime")
                report = model_conversion.verify_onnx_target(model, program, temporary)
        if verify_numbers:
            _within_tolerance(report, tolerance, target)
        emitted = None
        if emit_code is not None and code is not None:
            emitted = str(atomic_write_bytes(emit_code, code.encode("utf-8")))
    return ConversionReport(
        str(source),
        str(target),
        src_fmt,
        dst_fmt,
        [f"{step.layer!r} ({step.class_name})" for step in program.steps],
        report,
        max_difference(_deciding(report)),
        tolerance,
        bool(report),
        notes,
        emitted,
    )


def _dropped_keras_layers(source: PathLike, fmt: str) -> list[str]:
    """The layers of a Keras model file other than its LSTMs, ``'name' (Class)``: what an LSTM-only
    conversion leaves out, said in the report instead of silently."""
    if FRAMEWORK_OF[fmt] != "keras" or fmt == "weights.h5":
        return []
    try:
        info = describe_model(source)
    except (ValueError, OSError):
        return []
    return [
        f"{row['name']!r} ({row['class_name']})"
        for row in info["layers"]
        if row["kind"] != "input" and row["class_name"] not in ("LSTM", "Bidirectional", "CuDNNLSTM")
    ]


def _check_target_name(target: PathLike, fmt: str) -> None:
    """Keras decides a file's kind by its name: a Keras target's name must say which kind it is."""
    name = Path(target).name  # as the Keras writer sees it: .KERAS is not .keras
    if fmt == "keras" and not name.endswith(".keras"):
        raise ConversionError(
            f"{target}: a Keras model file's name must end in .keras (Keras opens it by its name); "
            "name it so, or write the weights alone with --to weights.h5 to a name ending in .weights.h5"
        )
    if fmt == "weights.h5" and not name.endswith(".weights.h5"):
        raise ConversionError(
            f"{target}: a Keras weights file's name must end in .weights.h5 (Keras opens it by its name)"
        )


def _same_file(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` are one file (links included) or, not existing yet, one path."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def _checked_destination(
    path: PathLike, source: PathLike, *, also_not: PathLike | None = None, what: str = "DST"
) -> Path:
    """The file that writing ``path`` replaces, once it is known to be neither the source (nor ``also_not``)
    but a writable regular file or a new path in an existing folder."""
    if _same_file(source, path):
        raise ConversionError(
            f"{path}: {what} is the source file itself; converting in place would replace it: write to "
            "another path"
        )
    if also_not is not None and _same_file(also_not, path):
        raise ConversionError(f"{path}: {what} is the conversion's target file; give another path")
    folder = Path(path).parent
    if not (folder if str(folder) else Path(".")).is_dir():
        raise ConversionError(f"{path}: the folder {str(folder)!r} does not exist")
    try:
        return check_destination(path, must_be_writable=True)
    except DestinationError as error:
        raise ConversionError(str(error)) from None


# -- the Python API: load / save ----------------------------------------------------------------------------


def _front_door_layer(unit: InterchangeLSTM) -> torch.nn.Module:
    s = unit.spec
    assert s.input_size is not None  # a unit's spec comes from its weights, which fix the input size
    if unit.framework == "mindspore" and s.is_standard_cell and not s.proj_size:
        layer: LSTM = MindSporeLSTM(
            s.input_size,
            s.hidden_size,
            s.num_layers,
            has_bias=s.bias,
            batch_first=s.batch_first,
            bidirectional=s.bidirectional,
            dtype=unit.dtype,
        )
    elif unit.framework == "torch" and s.is_standard_cell and not s.go_backwards:
        layer = TorchLSTM(
            s.input_size,
            s.hidden_size,
            s.num_layers,
            bias=s.bias,
            batch_first=s.batch_first,
            bidirectional=s.bidirectional,
            proj_size=s.proj_size,
            dtype=unit.dtype,
        )
    else:
        return canonical_layer(unit)
    with torch.no_grad():
        for name, tensor in unit.state.items():
            getattr(layer, name).copy_(tensor)
    return layer


def load(
    path: PathLike,
    *,
    format: str | None = None,
    layer: str | None = None,
    prefix: str | None = None,
    custom_objects: dict[str, Any] | None = None,
    require_crc: bool = False,
    batch_first: bool | None = None,
) -> list[torch.nn.Module]:
    """The LSTM layers of any supported file as ready front-door layers.

    Keras files (.keras, legacy .h5 with configs) give ``unilstm.keras`` layers; MindSpore .ckpt files give
    ``unilstm.mindspore.LSTM``; .pt / .pth / .safetensors give ``unilstm.torch.LSTM`` (a canonical
    ``unilstm.LSTM`` where a safetensors file written by unilstm records semantics torch lacks).

    Example::

        >>> [net] = unilstm.load("model.ckpt", prefix="encoder.")
        >>> output, (h_n, c_n) = net(x)

    ``.onnx`` files give one canonical ``unilstm.LSTM`` for the graph's LSTM nodes (batch_first for
    ``layout=1`` or a transposed input; see :mod:`unilstm.formats.onnx_import`).

    ``require_crc``: a .ckpt file must end with a matching CRC32 trailer. ``batch_first``: the layout of
    the calls, for files that do not store it (a MindSpore .ckpt, a plain .pt: time-major unless told).

    Raises:
        ConversionError, KerasFileError, CheckpointError, TorchFileError, OnnxFileError: unreadable files,
        no LSTM in them.
    """
    fmt = detect_format(path, format)
    if FRAMEWORK_OF[fmt] == "keras" and fmt != "weights.h5":
        with contextlib.suppress(ImportError):  # no h5py: read_units below says the file cannot be read
            # a file without configs (tf-keras save_weights .h5) goes to read_units, as .weights.h5 does
            if read_keras_model_config(path) is not None:
                layers = load_layers(path, custom_objects=custom_objects)
                if layer is not None:
                    layers = [m for m in layers if getattr(m, "name", None) == layer] or layers[:0]
                    if not layers:
                        raise ConversionError(f"{path}: no LSTM layer named {layer!r}")
                return layers
    units = read_units(
        path,
        fmt=fmt,
        layer=layer,
        prefix=prefix,
        custom_objects=custom_objects,
        require_crc=require_crc,
        batch_first=batch_first,
    )
    if fmt == "onnx":  # the graph's semantics (lengths=, parametric activations): the canonical layer
        return [canonical_layer(unit) for unit in units]
    return [_front_door_layer(unit) for unit in units]


def unit_from_layer(module: object, index: int = 0) -> InterchangeLSTM:
    """An :class:`~unilstm.interchange.InterchangeLSTM` for a unilstm layer: canonical, torch or MindSpore
    front door, or a Keras front-door LSTM / Bidirectional."""
    if isinstance(module, LSTM):
        framework = type(module).__module__.rsplit(".", 1)[-1]
        framework = framework if framework in ("torch", "mindspore") else "torch"
        state = OrderedDict((n, getattr(module, n).detach().clone()) for n in parameter_names(module.spec))
        return InterchangeLSTM(f"lstm_{index}" if index else "lstm", module.spec, state, framework)
    try:
        record = record_from_layer(module, index)
    except TypeError:
        raise TypeError(
            f"layers[{index}]: expected a unilstm LSTM (canonical or front door), got {type(module).__name__}"
        ) from None
    return from_keras_record(record, f"layers[{index}]", {})


def save(
    layers: object,
    path: PathLike,
    *,
    format: str | None = None,
    prefix: str = "",
    weights_only: bool = False,
    opset: int | None = None,
    crc: bool = False,
) -> Path:
    """Write unilstm layers (canonical or front-door, one or a list) to any writable format.

    Example::

        >>> net = unilstm.torch.LSTM(8, 16, num_layers=2)
        >>> unilstm.save(net, "lstm.ckpt", prefix="encoder.")     # MindSpore names encoder.weight_ih_l0 ...
        >>> unilstm.save(net, "lstm.onnx")

    Several layers are written under sub-prefixes (``lstm.``, ``lstm_1.``) in torch / MindSpore files, as
    consecutive layers in Keras files. The write is atomic. ``crc``: end a .ckpt file with MindSpore's
    CRC32 trailer.

    Raises:
        ConversionError: the target cannot express a layer's semantics (unless ``weights_only``); the path
            is not a regular file or a new path, or its name does not suit a Keras format.
    """
    modules = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    units = [unit_from_layer(m, i) for i, m in enumerate(modules)]
    units = as_float32_for(units, FRAMEWORK_OF[detect_format(path, format)])
    fmt = detect_format(path, format)
    _check_target_name(path, fmt)
    target = Path(path)
    try:
        with atomic_path(target) as temporary:
            write_units(
                units,
                temporary,
                fmt,
                prefix=prefix,
                weights_only=weights_only,
                opset=opset,
                display=path,
                crc=crc,
            )
    except DestinationError as error:
        raise ConversionError(str(error)) from None
    return target


def export_onnx(
    layer: object,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    lengths: bool = False,
    initial_states: bool = False,
    return_sequences: bool | None = None,
    merge_mode: str | None = None,
) -> Path:
    """Write ``layer`` as an ONNX model built on the standard ``LSTM`` operator.

    Graph inputs: ``input`` (T, B, F), or (B, T, F) with ``batch_first``; with ``lengths=True`` also
    ``lengths`` (B,) int64 (right-padded sequences, each length in [0, T]); with ``initial_states=True`` also
    ``h0`` and ``c0`` (L*D, B, H) (zeros otherwise). Graph outputs: ``output`` (T, B, D*H) (or (B, T, D*H)),
    ``h_n`` and ``c_n`` (L*D, B, H), the same numbers as ``layer(input, lengths=...)`` in eval mode.

    ``layer`` is a :class:`unilstm.LSTM` (or the torch / MindSpore front door, which are ones) or a
    ``unilstm.keras`` LSTM / Bidirectional, whose ``return_sequences`` and ``merge_mode`` are then used.
    ``return_sequences=False`` and ``merge_mode`` ("concat", "sum", "mul", "ave") add Keras's output glue:
    ``output`` becomes each direction's last output in its processing order (B, D*H), and a bidirectional
    layer's two halves are merged. Feed ``lengths`` = T for unpadded sequences.

    Example::

        >>> layer = unilstm.LSTM(8, 16, num_layers=2, bidirectional=True)
        >>> unilstm.export_onnx(layer, "lstm.onnx", lengths=True)

    Raises:
        OnnxExportError: the spec uses a feature ONNX's LSTM lacks (proj_size, layer_norm, cell_clip,
            proj_clip, zoneout, an activation it lacks, a callable activation); the message names each.
        ImportError: onnx is not installed (``pip install 'unilstm[onnx]'``).
    """
    if isinstance(layer, LSTM):
        canonical = layer
    else:  # a Keras front-door layer: its own output conventions unless given
        try:
            unit = unit_from_layer(layer)
        except TypeError:
            raise TypeError(
                f"layer must be a unilstm.LSTM or a unilstm front-door LSTM, got {type(layer).__name__}"
            ) from None
        canonical = canonical_layer(unit)
        if unit.keras is not None:
            return_sequences = unit.keras.return_sequences if return_sequences is None else return_sequences
            if merge_mode is None and unit.spec.bidirectional:
                merge_mode = unit.keras.merge_mode
    model = build_graph(
        canonical,
        opset=opset,
        lengths=lengths,
        initial_states=initial_states,
        return_sequences=True if return_sequences is None else return_sequences,
        merge_mode=merge_mode or "concat",
    )
    return write_model(model, path)
