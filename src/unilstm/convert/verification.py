"""Proving a written file computes what its source does: both run on random inputs, with and without
right-padded lengths, through the engine (or onnxruntime for ONNX), compared output by output."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..formats.keras_files import KerasLayerRecord, read_keras_lstm_layers, store_keys
from ..formats.onnx_export import run_onnx
from ..interchange import InterchangeLSTM
from ..layer import LSTM
from ..parameter_names import parameter_names
from .file_kinds import FRAMEWORK_OF, ConversionError, PathLike
from .reading import from_keras_record, read_units
from .semantics import plain_torch_spec, run_source, stored_torch_spec, torch_glue_run
from .writing import keras_records


def _inputs(
    unit: InterchangeLSTM, seed: int, batch: int = 3, steps: int = 7
) -> list[tuple[Tensor, Tensor | None]]:
    assert unit.spec.input_size is not None  # a unit's spec comes from its weights, which fix the input size
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, unit.spec.input_size, generator=generator, dtype=torch.float32)
    return [(x, None), (x, torch.tensor([steps, max(1, steps - 3), 1][:batch]))]


def _target_runner(
    target_units: list[InterchangeLSTM], target_fmt: str, path: Path, source: list[InterchangeLSTM]
) -> list[Callable[[Tensor, Tensor | None], dict[str, Tensor]]]:
    """Per source unit: a function running the written target (read back from ``path``) with the glue."""
    framework = FRAMEWORK_OF[target_fmt]
    runners: list[Callable[[Tensor, Tensor | None], dict[str, Tensor]]] = []
    if framework == "onnx" and len(source) > 1:
        def run_chain(x: Tensor, lengths: Tensor | None) -> dict[str, Tensor]:
            use = lengths if lengths is not None else torch.full((x.shape[0],), x.shape[1])
            values = run_onnx(path, x.numpy(), lengths=use.numpy(), all_outputs=True)
            result = {"output": torch.from_numpy(values["output"])}
            for index, unit in enumerate(source):
                result[f"h_n[{unit.name}]"] = torch.from_numpy(values[f"h_n_{index}"])
                result[f"c_n[{unit.name}]"] = torch.from_numpy(values[f"c_n_{index}"])
            return result

        return [run_chain]
    if framework == "onnx":
        unit = source[0]

        def run(x: Tensor, lengths: Tensor | None) -> dict[str, Tensor]:
            feed = x if unit.spec.batch_first else x.transpose(0, 1)
            use = lengths if lengths is not None else torch.full((x.shape[0],), x.shape[1])
            out, h, c = run_onnx(path, feed.numpy(), lengths=use.numpy())
            out_t = torch.from_numpy(out)
            if not unit.spec.batch_first and out_t.dim() == 3:
                out_t = out_t.transpose(0, 1)
            return {"output": out_t, "h_n": torch.from_numpy(h), "c_n": torch.from_numpy(c)}

        return [run]
    if framework == "keras":
        by_layer = [u for u in target_units]
        index = 0
        for unit in source:
            chain = by_layer[index : index + unit.spec.num_layers]
            index += unit.spec.num_layers
            runners.append(_keras_chain_runner(unit, chain))
        return runners
    for unit, target in zip(source, target_units, strict=False):
        # a torch file's cell variants are recorded in it and run by unilstm.LSTM; MindSpore has none
        spec = stored_torch_spec(target.spec) if framework == "torch" else plain_torch_spec(target.spec)
        layer = LSTM.from_spec(spec, dtype=torch.float32)
        with torch.no_grad():
            for name in parameter_names(layer.spec):
                getattr(layer, name).copy_(target.state[name].float())
        layer.eval()
        runners.append(partial(torch_glue_run, unit, layer))
    return runners


def _keras_chain_runner(
    unit: InterchangeLSTM, chain: list[InterchangeLSTM]
) -> Callable[[Tensor, Tensor | None], dict[str, Tensor]]:
    def run(x: Tensor, lengths: Tensor | None) -> dict[str, Tensor]:
        hs, cs = [], []
        value = x
        result: dict[str, Tensor] = {}
        for link in chain:
            result = run_source(link, value, lengths)
            hs.append(result["h_n"])
            cs.append(result["c_n"])
            value = result["output"]
        return {"output": result["output"], "h_n": torch.cat(hs), "c_n": torch.cat(cs)}

    return run


def _with_written_configs(
    source: list[InterchangeLSTM], path: Path, shown: PathLike
) -> list[InterchangeLSTM]:
    """A weights-only Keras file read back with the configs of the model it was written for (the weights go
    into that architecture), matched by storage key."""
    written = keras_records(source)
    stored = {r.key: r for r in read_keras_lstm_layers(path)}
    units = []
    for key, record in zip(store_keys(written), written, strict=True):
        if key not in stored:
            raise ConversionError(f"{shown}: the weights of layer {record.name!r} (key {key!r}) are missing")
        again = KerasLayerRecord(key, record.name, record.class_name, record.config, stored[key].weights)
        units.append(from_keras_record(again, shown, {}))
    return units


def _read_back(
    source: list[InterchangeLSTM], target_fmt: str, path: Path, shown: PathLike
) -> list[InterchangeLSTM]:
    """The units of the written file; a failure names the file as the user knows it, not ``path``."""
    try:
        target_units = read_units(path, fmt=target_fmt)
        if target_fmt == "weights.h5":
            target_units = _with_written_configs(source, path, shown)
    except ValueError as error:  # every reader's error type is one
        message = str(error).replace(str(path), str(shown)).removeprefix(f"{shown}: ")
        raise ConversionError(
            f"{shown}: verification: reading the written file back failed: {message}"
        ) from None
    return target_units


#: How the differences of a :func:`verify` report are measured (shown with every report).
DIFFERENCE = "max |target - source| / max(1, max |source|), per output"


def verify(
    source: list[InterchangeLSTM],
    target_fmt: str,
    path: Path,
    *,
    seed: int = 0,
    display: PathLike | None = None,
) -> dict[str, Any]:
    """Run source and written target on random inputs; ``{layer: {case: {output: difference}}}``, each
    difference ``max |target - source| / max(1, max |source|)`` (:data:`DIFFERENCE`).

    ``display``: the name messages give the written file (:func:`convert` writes ``path``, a temporary,
    for the target the user named)."""
    framework = FRAMEWORK_OF[target_fmt]
    shown = path if display is None else display
    if framework == "onnx":
        target_units: list[InterchangeLSTM] = []
    else:
        target_units = _read_back(source, target_fmt, path, shown)
        if framework != "keras" and len(target_units) != len(source):
            raise ConversionError(f"{shown}: read back {len(target_units)} LSTMs, wrote {len(source)}")
    runners = _target_runner(target_units, target_fmt, path, source)
    if framework == "onnx" and len(source) > 1:
        chain = _compare(_source_chain(source), runners[0], source[0], seed, (path, shown))
        return {"+".join(u.name for u in source): chain}
    report: dict[str, Any] = {}
    for index, (unit, runner) in enumerate(zip(source, runners, strict=False)):
        report[unit.name] = _compare(partial(run_source, unit), runner, unit, seed + index, (path, shown))
    return report


def _source_chain(units: list[InterchangeLSTM]) -> Callable[[Tensor, Tensor | None], dict[str, Tensor]]:
    """The source semantics of Keras layers feeding each other: final output and every layer's states."""

    def run(x: Tensor, lengths: Tensor | None) -> dict[str, Tensor]:
        result: dict[str, Tensor] = {}
        value = x
        for unit in units:
            step = run_source(unit, value, lengths)
            value = step["output"]
            result[f"h_n[{unit.name}]"], result[f"c_n[{unit.name}]"] = step["h_n"], step["c_n"]
        return {"output": value, **result}

    return run


def _compare(
    expected_run: Callable[[Tensor, Tensor | None], dict[str, Tensor]],
    runner: Callable[[Tensor, Tensor | None], dict[str, Tensor]],
    unit: InterchangeLSTM,
    seed: int,
    written: tuple[Path, PathLike],
) -> dict[str, Any]:
    """``written``: the path read and the name messages give it."""
    path, shown = written
    diffs: dict[str, Any] = {}
    for x, lengths in _inputs(unit, seed):
        expected = expected_run(x, lengths)
        try:
            got = runner(x, lengths)
        except ConversionError:
            raise
        except Exception as error:  # the target could not be run (onnxruntime refusing it ...)
            message = str(error).replace(str(path), str(shown))
            raise ConversionError(
                f"{shown}: verification: running the written target failed ({type(error).__name__}: "
                f"{message})"
            ) from None
        case = "no mask" if lengths is None else f"lengths {lengths.tolist()}"
        diffs[case] = {}
        for key, value in expected.items():
            if key not in got:
                continue
            other = got[key].to(value.dtype)
            if other.shape != value.shape:
                raise ConversionError(
                    f"{shown}: verification: {unit.name!r} {key} has shape {tuple(other.shape)} in "
                    f"the target, {tuple(value.shape)} in the source"
                )
            diffs[case][key] = _max_abs_difference(other, value) / _scale(value)
    return diffs


def _scale(reference: Tensor) -> float:
    """max(1, max |reference|) over its finite values: differences are judged relative to the output's
    magnitude (a cell state reaching 4 differs by 4 times float32's rounding), absolutely below 1."""
    finite = reference[torch.isfinite(reference)]
    return max(1.0, float(finite.abs().max())) if finite.numel() else 1.0


def _max_abs_difference(a: Tensor, b: Tensor) -> float:
    """max |a - b|, where equal values (infinities included) and NaN in both count as 0 and a NaN in one
    only as infinity."""
    if a.numel() == 0:
        return 0.0
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))
    diff = torch.where(same, torch.zeros_like(a), (a - b).abs())
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    return float(diff.max())


def max_difference(report: dict[str, Any]) -> float:
    """The largest difference in a :func:`verify` report (0.0 for an empty one)."""
    return max(
        (d for cases in report.values() for outs in cases.values() for d in outs.values()), default=0.0
    )

