"""The file formats conversion reads and writes, by name, and conversion's errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike

FORMATS = ("keras", "weights.h5", "h5", "ckpt", "pt", "safetensors", "onnx")
READABLE = ("keras", "weights.h5", "h5", "ckpt", "pt", "safetensors", "onnx")
WRITABLE = ("keras", "weights.h5", "ckpt", "pt", "safetensors", "onnx")
FRAMEWORK_OF = {
    "keras": "keras",
    "weights.h5": "keras",
    "h5": "keras",
    "ckpt": "mindspore",
    "pt": "torch",
    "safetensors": "torch",
    "onnx": "onnx",
}
#: The entry (safetensors metadata, a .ckpt string) where unilstm records the semantics next to the weights.
METADATA_KEY = "unilstm.units"


class ConversionError(ValueError):
    """A conversion that cannot be done as asked: an unreadable file, a format that cannot hold the layers,
    or semantics the target framework cannot express. The message names the file, layer and feature."""


class VerificationError(ConversionError):
    """The target's numbers differ from the source's by more than the tolerance (see ``report``)."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


# -- formats -----------------------------------------------------------------------------------------------


def detect_format(path: PathLike, given: str | None = None) -> str:
    """The format name of ``path`` (see :data:`FORMATS`): ``given`` when set, else from the extension."""
    if given is not None:
        if given not in FORMATS:
            raise ConversionError(f"format: unknown format {given!r}; expected one of {', '.join(FORMATS)}")
        return given
    name = Path(path).name.lower()
    if name.endswith(".weights.h5"):
        return "weights.h5"
    suffix = Path(name).suffix
    table = {
        ".keras": "keras",
        ".h5": "h5",
        ".hdf5": "h5",
        ".ckpt": "ckpt",
        ".pt": "pt",
        ".pth": "pt",
        ".bin": "pt",
        ".safetensors": "safetensors",
        ".onnx": "onnx",
    }
    if suffix in table:
        return table[suffix]
    raise ConversionError(
        f"{path}: cannot tell the format from the extension {suffix or '(none)'!r}; expected .keras, "
        ".weights.h5, .h5, .ckpt, .pt, .pth, .safetensors or .onnx, or give it with --from / --to"
    )
