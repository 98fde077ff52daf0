"""The description unilstm writes next to the weights (a ``.ckpt`` str entry, a safetensors metadata value,
both named ``unilstm.units``): a JSON list with one entry per LSTM stack, holding what the weights alone do
not say (activations, dropouts, Keras's output conventions), and in a ``.ckpt`` the file's own facts: how
many entries it holds and whether a CRC32 trailer follows (``"checkpoint": {"entries": N, "crc": bool}``),
so that a file cut at an entry boundary is refused instead of read as a smaller model.

Reading trusts nothing in it: every field's type and value is checked, every size it states must equal the
one the stored tensors' shapes give, and every stack it lists must be in the file (and the other way round)
before anything is built. A bad description is the format's error (``CheckpointError``, ``TorchFileError``)
naming the file and the entry.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

from ..activations import PARAMETRIC_DEFAULTS, REGISTRY, ParametricActivation
from ..interchange import InterchangeLSTM, KerasConventions
from ..spec import SAME_AS_ACTIVATION, LSTMSpec

#: What an activation the writer could not name (a Python callable) is stored as.
CALLABLE = "<callable>"
#: Spec fields the stored tensors' shapes decide: a description may repeat them, never change them.
FROM_WEIGHTS = ("input_size", "hidden_size", "num_layers", "bias", "bidirectional", "proj_size")
_FLAGS = ("batch_first", "per_gate_dropout", "go_backwards", "stateful")
_RATES = ("dropout", "input_dropout", "recurrent_dropout")
_ENTRY_KEYS = {"name", "framework", "spec", "keras", "prefix", "checkpoint"}
_KERAS_KEYS = {"class_name", "return_sequences", "return_state", "merge_mode", "names", "keras2"}
_FRAMEWORKS = ("keras", "mindspore", "torch")
_ACTIVATION_FIELDS = ("activation", "recurrent_activation", "output_activation")
#: the spec fields of the cell variants: written only when they differ from the default
_VARIANT_FIELDS = (
    "layer_norm", "layer_norm_eps", "peepholes", "gate_clip", "cell_clip", "proj_clip", "coupled_gates",
    "zoneout_hidden", "zoneout_cell", "forget_bias", "output_activation",
)
_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def spec_json(unit: InterchangeLSTM) -> dict[str, Any]:
    """The semantics unilstm records next to the weights (and ``inspect`` shows): spec and Keras conventions
    as JSON values (callable activations as ``"<callable>"``)."""
    defaults = LSTMSpec(input_size=None, hidden_size=1)
    spec = {
        k: getattr(unit.spec, k) for k in LSTMSpec.__dataclass_fields__
        # a cell variant's field only when it is used: files of the shared cell stay readable by older
        # readers, which refuse fields they do not know
        if k not in _VARIANT_FIELDS or getattr(unit.spec, k) != getattr(defaults, k)
    }
    for key in _ACTIVATION_FIELDS:
        if key in spec:
            spec[key] = _activation_json(spec[key])
    keras = None
    if unit.keras is not None:
        keras = {
            "class_name": unit.keras.class_name,
            "return_sequences": unit.keras.return_sequences,
            "return_state": unit.keras.return_state,
            "merge_mode": unit.keras.merge_mode,
            "names": unit.keras.names,
            "keras2": unit.keras.keras2,
        }
    return {"name": unit.name, "framework": unit.framework, "spec": spec, "keras": keras}


def _activation_json(value: object) -> object:
    """An activation as JSON: its name, null (linear), ``{"kind", "alpha", "beta"}`` for ONNX's parametric
    ones, or ``"<callable>"`` for a Python callable."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, ParametricActivation):
        return {"kind": value.kind, "alpha": value.alpha, "beta": value.beta}
    return CALLABLE


def _activation_ok(value: object, key: str) -> bool:
    if value is None or value == CALLABLE or (isinstance(value, str) and value in REGISTRY):
        return True
    if key == "output_activation" and value == SAME_AS_ACTIVATION:
        return True
    return (
        isinstance(value, dict) and set(value) == {"kind", "alpha", "beta"}
        and value["kind"] in PARAMETRIC_DEFAULTS
        and all(_is_finite_number(value[k]) for k in ("alpha", "beta"))
    )


def _is_finite_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)  # type: ignore[arg-type]


def describe(
    units: list[InterchangeLSTM], prefixes: list[str], checkpoint: dict[str, Any] | None = None
) -> str:
    """The description of ``units`` stored under ``prefixes``; ``checkpoint`` (a .ckpt's entry count and
    CRC flag) goes into every stack's entry, where readers that predate it ignore it."""
    entries = []
    for unit, prefix in zip(units, prefixes, strict=True):
        entry = spec_json(unit)
        entry["prefix"] = prefix
        if checkpoint is not None:
            entry["checkpoint"] = dict(checkpoint)
        entries.append(entry)
    return json.dumps(entries)


# -- reading ------------------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse(text: object, where: str, error: type[ValueError]) -> list[dict[str, Any]]:
    """The stack entries of a stored description, each checked for its fields' types and values (sizes are
    checked against the tensors by :func:`apply`). ``where`` names the file and the entry."""
    if not isinstance(text, str):
        raise error(f"{where}: expected JSON text, got {type(text).__name__}")
    try:
        entries = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as problem:
        raise error(f"{where}: not valid JSON ({type(problem).__name__}: {problem})") from None
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise error(f"{where}: expected a JSON list of objects, one per LSTM")
    prefixes: set[str] = set()
    for index, entry in enumerate(entries):
        _check_entry(entry, f"{where}: LSTM {index}", error)
        if entry["prefix"] in prefixes:
            raise error(f"{where}: two LSTMs are described under prefix {entry['prefix']!r}")
        prefixes.add(entry["prefix"])
    return entries


def _check_entry(entry: dict[str, Any], where: str, error: type[ValueError]) -> None:
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise error(f"{where}: unknown field(s) {unknown}; this unilstm cannot tell what they change")
    if not isinstance(entry.get("prefix"), str):
        raise error(f"{where}: 'prefix' must be a string, got {entry.get('prefix')!r}")
    if "name" in entry and not isinstance(entry["name"], str):
        raise error(f"{where}: 'name' must be a string, got {entry['name']!r}")
    if entry.get("framework", "torch") not in _FRAMEWORKS:
        raise error(f"{where}: 'framework' must be one of {list(_FRAMEWORKS)}, got {entry['framework']!r}")
    spec = entry.get("spec", {})
    if not isinstance(spec, dict):
        raise error(f"{where}: 'spec' must be an object, got {type(spec).__name__}")
    _check_spec(spec, where, error)
    keras = entry.get("keras")
    if keras is not None:
        _check_keras(keras, where, error)
    facts = entry.get("checkpoint")
    if facts is not None and not (
        isinstance(facts, dict)
        and set(facts) == {"entries", "crc"}
        and _is_int(facts["entries"])
        and facts["entries"] >= 1
        and isinstance(facts["crc"], bool)
    ):
        raise error(f"{where}: 'checkpoint' must be {{'entries': int >= 1, 'crc': bool}}, got {facts!r}")


def _check_spec(spec: dict[str, Any], where: str, error: type[ValueError]) -> None:
    unknown = sorted(set(spec) - set(LSTMSpec.__dataclass_fields__))
    if unknown:
        raise error(f"{where}: unknown spec field(s) {unknown}")
    for key, value in spec.items():
        if key in ("input_size", "hidden_size", "num_layers", "proj_size"):
            ok = _is_int(value)
        elif key in ("bias", "bidirectional", *_FLAGS):
            ok = isinstance(value, bool)
        elif key in _RATES:
            ok = _is_int(value) or isinstance(value, float)
            ok = ok and math.isfinite(value) and 0.0 <= value <= 1.0
        elif key in _ACTIVATION_FIELDS:
            ok = _activation_ok(value, key)
        elif key in ("layer_norm", "peepholes", "coupled_gates"):
            ok = isinstance(value, bool)
        elif key in ("zoneout_hidden", "zoneout_cell"):
            ok = _is_finite_number(value) and 0.0 <= value <= 1.0
        elif key in ("gate_clip", "cell_clip", "proj_clip"):
            ok = value is None or (_is_finite_number(value) and value > 0.0)
        elif key == "forget_bias":
            ok = _is_finite_number(value)
        elif key == "layer_norm_eps":
            ok = _is_finite_number(value) and value > 0.0
        else:  # masked_output, the only other field
            ok = value in ("zero", "previous")
        if not ok:
            raise error(f"{where}: spec field {key!r} has an invalid value {value!r}")


def _check_keras(keras: object, where: str, error: type[ValueError]) -> None:
    if not isinstance(keras, dict):
        raise error(f"{where}: 'keras' must be an object or null, got {type(keras).__name__}")
    unknown = sorted(set(keras) - _KERAS_KEYS)
    if unknown:
        raise error(f"{where}: unknown keras field(s) {unknown}")
    checks = {
        "class_name": lambda v: v in ("LSTM", "Bidirectional"),
        "return_sequences": lambda v: isinstance(v, bool),
        "return_state": lambda v: isinstance(v, bool),
        "merge_mode": lambda v: v in _MERGE_MODES,
        "names": lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
        "keras2": lambda v: isinstance(v, bool),
    }
    for key, value in keras.items():
        if not checks[key](value):
            raise error(f"{where}: keras field {key!r} has an invalid value {value!r}")


def checkpoint_facts(
    entries: list[dict[str, Any]], found_entries: int, found_crc: bool, where: str, error: type[ValueError]
) -> None:
    """Refuse a .ckpt whose entry count or CRC trailer is not what its description says (a cut file)."""
    stated = [entry["checkpoint"] for entry in entries if entry.get("checkpoint") is not None]
    if not stated:
        return  # written before unilstm recorded these facts: the structure checks are all there is
    if len(stated) != len(entries) or any(facts != stated[0] for facts in stated):
        raise error(f"{where}: its LSTMs state different file facts {stated}; the description was edited")
    if stated[0]["entries"] != found_entries:
        raise error(
            f"{where}: the file should hold {stated[0]['entries']} entries, it holds {found_entries}; it is "
            "truncated or was edited"
        )
    if stated[0]["crc"] and not found_crc:
        raise error(
            f"{where}: the file was written with a CRC32 trailer, which is missing; its end is cut off"
        )


def by_prefix(entries: list[dict[str, Any]], source_prefix: str | None) -> dict[str, dict[str, Any]]:
    """The entries by the prefix their parameters have once ``source_prefix`` is stripped from the names
    (entries outside ``source_prefix`` are not read, so not described)."""
    if not source_prefix:
        return {entry["prefix"]: entry for entry in entries}
    return {
        entry["prefix"][len(source_prefix) :]: entry
        for entry in entries
        if entry["prefix"].startswith(source_prefix)
    }


def apply(unit: InterchangeLSTM, entry: dict[str, Any], where: str, error: type[ValueError]) -> None:
    """Give ``unit`` (built from its tensors' names and shapes) the semantics ``entry`` stores, after
    checking that every size ``entry`` states is the one the tensors have."""
    stored = dict(entry.get("spec") or {})
    for key in FROM_WEIGHTS:
        if key in stored and stored[key] != getattr(unit.spec, key):
            raise error(
                f"{where}: spec field {key!r} says {stored[key]!r}, the stored tensors give "
                f"{getattr(unit.spec, key)!r}"
            )
        stored.pop(key, None)
    for key in _ACTIVATION_FIELDS:
        if stored.get(key) == CALLABLE:
            stored.pop(key)
            unit.notes.append(f"{key} was a Python callable; the default ({getattr(unit.spec, key)}) assumed")
        elif isinstance(stored.get(key), dict):
            stored[key] = ParametricActivation(**stored[key])
    for key in ("layer_norm", "peepholes"):
        if stored.get(key, getattr(unit.spec, key)) != getattr(unit.spec, key):
            raise error(
                f"{where}: spec field {key!r} says {stored[key]!r}, the stored tensors give "
                f"{getattr(unit.spec, key)!r}"
            )
    try:
        unit.spec = replace(unit.spec, **stored)
    except (TypeError, ValueError) as problem:  # checked above; LSTMSpec's own rules have the last word
        raise error(f"{where}: {problem}") from None
    unit.framework = entry.get("framework", unit.framework)
    unit.name = entry.get("name", unit.name)
    keras = entry.get("keras")
    if keras is not None:
        bidirectional = keras.get("class_name", "LSTM") == "Bidirectional"
        if bidirectional != unit.spec.bidirectional:
            raise error(
                f"{where}: keras class_name {keras.get('class_name', 'LSTM')!r} does not fit "
                f"bidirectional={unit.spec.bidirectional} of the stored tensors"
            )
        unit.keras = KerasConventions(
            class_name=keras.get("class_name", "LSTM"),
            return_sequences=bool(keras.get("return_sequences")),
            return_state=bool(keras.get("return_state")),
            merge_mode=keras.get("merge_mode", "concat"),
            configs=[None],
            names=list(keras.get("names") or [unit.name]),
            keras2=bool(keras.get("keras2")),
        )
