"""Move trained LSTMs between Keras files, MindSpore checkpoints, torch state dicts, safetensors and ONNX.

Python API::

    layers = unilstm.load("model.keras")                 # front-door layers, ready to call
    unilstm.save(layers, "model.ckpt", prefix="encoder.")
    report = unilstm.convert("model.keras", "model.onnx")  # write, then prove the numbers match

How it works. Every file is read into :class:`~unilstm.interchange.InterchangeLSTM` s: one LSTM stack each,
described by an :class:`~unilstm.spec.LSTMSpec` (what it computes), its parameters in torch layout
(canonical names ``weight_ih_l0`` ...), and for Keras layers the Keras-only output conventions
(:class:`~unilstm.interchange.KerasConventions`: return_sequences, Bidirectional merge mode ...). A Keras
stack of LSTMs that feed each other (adjacent in a Sequential model, returning sequences, same cell) becomes
one multi-layer LSTM when the target is torch, MindSpore or ONNX. Writing checks that the target framework
can express each stack's semantics and refuses with :class:`ConversionError` naming every feature it cannot
(``weights_only=True`` writes the weights anyway). :func:`convert` then verifies: it reads the written file
back, runs the source semantics and the target semantics (plus the glue the emitted code uses) through the
engine, or through onnxruntime for ONNX, on random inputs with and without right-padded masks, and reports
the largest difference per output. The target is written to a temporary file next to it and renamed over
the destination only when the check passes, so a failed conversion leaves the user's files untouched.

Formats (``--from`` / ``--to`` names): ``keras`` (.keras), ``weights.h5`` (Keras 3 weights store), ``h5``
(legacy Keras .h5, read only), ``ckpt`` (MindSpore), ``pt`` (.pt / .pth torch state dict), ``safetensors``,
``onnx`` (write only).

The modules, each importing only those before it: :mod:`~unilstm.convert.file_kinds` (format names,
errors), :mod:`~unilstm.convert.reading`, :mod:`~unilstm.convert.semantics` (what a target can express,
running source and target semantics), :mod:`~unilstm.convert.writing`,
:mod:`~unilstm.convert.verification`, :mod:`~unilstm.convert.inspection`,
:mod:`~unilstm.convert.emitted_code`, and :mod:`~unilstm.convert.api` (convert, load, save, export_onnx).
"""

from ..interchange import InterchangeLSTM, KerasConventions
from .api import ConversionReport, convert, export_onnx, load, save, unit_from_layer
from .emitted_code import emit_code, write_emitted_code
from .file_kinds import (
    FORMATS,
    FRAMEWORK_OF,
    METADATA_KEY,
    READABLE,
    WRITABLE,
    ConversionError,
    VerificationError,
    detect_format,
)
from .inspection import format_inspection, inspect_file
from .reading import merge_stacks, read_units
from .semantics import (
    canonical_layer,
    gather_steps,
    keras_outputs,
    plain_torch_spec,
    previous_output_fix,
    processing_order_index,
    reversed_prefix_index,
    run_source,
    target_problems,
    torch_glue_run,
)
from .verification import max_difference, verify
from .writing import as_float32_for, keras_layer_config, keras_records, write_units

__all__ = [
    "FORMATS",
    "FRAMEWORK_OF",
    "METADATA_KEY",
    "READABLE",
    "WRITABLE",
    "ConversionError",
    "ConversionReport",
    "InterchangeLSTM",
    "KerasConventions",
    "VerificationError",
    "as_float32_for",
    "canonical_layer",
    "convert",
    "detect_format",
    "emit_code",
    "export_onnx",
    "format_inspection",
    "gather_steps",
    "inspect_file",
    "keras_layer_config",
    "keras_outputs",
    "keras_records",
    "load",
    "max_difference",
    "merge_stacks",
    "plain_torch_spec",
    "previous_output_fix",
    "processing_order_index",
    "read_units",
    "reversed_prefix_index",
    "run_source",
    "save",
    "target_problems",
    "torch_glue_run",
    "unit_from_layer",
    "verify",
    "write_emitted_code",
    "write_units",
]
