"""What a conversion target can express, and the semantics conversion runs to compare source and target:
the source's own (Keras conventions included) and a torch / MindSpore LSTM plus the glue emitted code uses."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ..formats.onnx_export import export_problems
from ..interchange import InterchangeLSTM, activation_text
from ..layer import LSTM
from ..parameter_names import parameter_names
from ..spec import LSTMSpec

# Keras arguments that act only while training (losses and weight projections after optimizer steps).
_KERAS_TRAINING_PENALTIES = (
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
)


def canonical_layer(
    unit: InterchangeLSTM, *, batch_first: bool | None = None, dtype: torch.dtype | None = None
) -> LSTM:
    """A canonical :class:`unilstm.LSTM` computing ``unit`` (eval mode)."""
    spec = unit.spec if batch_first is None else replace(unit.spec, batch_first=batch_first)
    module = LSTM.from_spec(spec, dtype=dtype or unit.dtype)
    with torch.no_grad():
        for name in parameter_names(spec):
            getattr(module, name).copy_(unit.state[name].to(dtype or unit.dtype))
    return module.eval()


# -- what a target can express ----------------------------------------------------------------------------


#: The spec fields of the cell variants (:attr:`LSTMSpec.cell_variants` names the ones a spec uses).
CELL_VARIANT_FIELDS = (
    "layer_norm", "layer_norm_eps", "peepholes", "gate_clip", "cell_clip", "proj_clip", "coupled_gates",
    "zoneout_hidden", "zoneout_cell", "forget_bias", "output_activation",
)

#: what a framework's plain LSTM lacks, per cell variant
_LACKS = {
    "layer_norm": "has no layer normalisation",
    "peepholes": "has no peephole weights",
    "gate_clip": "does not clip the gate pre-activations",
    "cell_clip": "does not clip the cell state",
    "proj_clip": "does not clip the projection",
    "coupled_gates": "has no coupled input and forget gates (f = 1 - i)",
    "zoneout_hidden": "has no zoneout",
    "zoneout_cell": "has no zoneout",
    "forget_bias": "adds no forget bias at run time",
    "output_activation": "applies its activation to the cell state (no separate output activation)",
}


def _variant_value(spec: LSTMSpec, field: str) -> str:
    if field == "output_activation":
        return activation_text(spec.cell_output_activation)
    return repr(getattr(spec, field))


def variant_problems(spec: LSTMSpec, name: str, *, folds_forget_bias: bool = False) -> list[str]:
    """The cell variants of ``spec`` a framework's plain LSTM (``name``) cannot express, each naming its spec
    field. ``folds_forget_bias``: the writer adds ``forget_bias`` to the forget block of the stored bias
    (exact: the engine adds it to the same sum), which needs a bias to add it to."""
    problems = []
    for field in spec.cell_variants:
        if field == "forget_bias" and folds_forget_bias:
            if not spec.bias:
                problems.append(
                    f"forget_bias={spec.forget_bias!r} with bias=False: {name} has no bias to fold it into "
                    "(build the layer with bias=True and zero biases to convert it)"
                )
            continue
        problems.append(f"{field}={_variant_value(spec, field)}: {name} {_LACKS[field]}")
    return problems


def target_problems(unit: InterchangeLSTM, target: str, *, variants_stored: bool = False) -> list[str]:
    """Every feature of ``unit`` that framework ``target`` cannot express (empty when it can).

    ``variants_stored``: the target file records the cell variants itself (unilstm's .pt / .safetensors,
    which :func:`unilstm.load` reads back as a canonical unilstm.LSTM), so they are no problem; without it a
    torch target means ``torch.nn.LSTM``, which has none of them. MindSpore and Keras targets take
    ``forget_bias`` folded into the bias and refuse every other variant."""
    s = unit.spec
    problems = []
    name = {"torch": "torch.nn.LSTM", "mindspore": "mindspore.nn.LSTM"}.get(target, target)
    if target == "torch" and not variants_stored:
        problems += variant_problems(s, name)
    elif target in ("mindspore", "keras"):
        lstm = name if target == "mindspore" else "Keras's LSTM"
        problems += variant_problems(s, lstm, folds_forget_bias=True)
    # a torch file that stores variants stores unilstm's description too, activations included
    described = target == "torch" and variants_stored and bool(s.cell_variants)
    if target in ("torch", "mindspore"):
        if s.activation != "tanh" and not described:
            problems.append(f"activation={activation_text(s.activation)}: {name} computes tanh only")
        if s.recurrent_activation != "sigmoid" and not described:
            problems.append(
                f"recurrent_activation={activation_text(s.recurrent_activation)}: {name} gates with "
                "sigmoid only"
            )
        if target == "mindspore" and s.proj_size:
            problems.append(f"proj_size={s.proj_size}: mindspore.nn.LSTM has no projection")
        if s.go_backwards and s.bidirectional:
            problems.append("go_backwards on a Bidirectional: no glue for it")
    elif target == "keras":
        if s.proj_size:
            problems.append(f"proj_size={s.proj_size}: Keras's LSTM has no projection")
        for key in ("activation", "recurrent_activation"):
            value = getattr(s, key)
            if value == "hard_sigmoid_keras2":
                problems.append(
                    f"{key}=Keras 2's hard_sigmoid (clip(0.2x+0.5)): Keras 3 files cannot name it"
                )
            elif not (value is None or isinstance(value, str)):
                problems.append(f"{key}={activation_text(value)}: Keras files can only name built-ins")
        if unit.framework != "keras" and s.num_layers > 1 and s.dropout:
            problems.append(f"dropout={s.dropout} between layers: Keras LSTMs have none (training only)")
    elif target == "onnx":
        problems += export_problems(s)
        if unit.keras is not None and unit.keras.merge_mode is None:
            problems.append("merge_mode=None (two outputs): the ONNX graph returns one output")
    return problems


# -- running semantics --------------------------------------------------------------------------------------


def _merge(out: Tensor, merge_mode: str | None, hidden: int) -> Tensor:
    if merge_mode in (None, "concat"):
        return out
    forward, backward = out[..., :hidden], out[..., hidden:]
    if merge_mode == "sum":
        return forward + backward
    if merge_mode == "mul":
        return forward * backward
    return (forward + backward) / 2


def keras_outputs(unit: InterchangeLSTM, out: Tensor, h_n: Tensor, c_n: Tensor) -> dict[str, Tensor]:
    """Keras's outputs from a canonical run (batch-major out (B, T, D*H), h_n, c_n (L*D, B, H)) of a unit read
    from a Keras file."""
    glue = unit.keras
    if glue is None:
        raise ValueError(f"keras_outputs: unit {unit.name!r} has no Keras conventions (not read from Keras)")
    hidden = unit.spec.hidden_size
    if glue.return_sequences:
        output = out
    elif unit.spec.bidirectional:
        # forward: last step of its processing order; backward: its processing order ends at time 0
        first, last = (0, -1) if not unit.spec.go_backwards else (-1, 0)
        output = torch.cat([out[:, last, :hidden], out[:, first, hidden:]], dim=-1)
    else:
        output = out[:, -1]
    return {"output": _merge(output, glue.merge_mode, hidden), "h_n": h_n, "c_n": c_n}


def run_source(unit: InterchangeLSTM, x: Tensor, lengths: Tensor | None) -> dict[str, Tensor]:
    """The unit's own semantics on batch-major ``x`` (B, T, F): output batch-major, h_n, c_n."""
    with torch.no_grad():
        out, (h_n, c_n) = canonical_layer(unit, batch_first=True, dtype=x.dtype)(x, lengths=lengths)
    if unit.keras is not None:
        return keras_outputs(unit, out, h_n, c_n)
    return {"output": out, "h_n": h_n, "c_n": c_n}


def torch_glue_run(
    unit: InterchangeLSTM, target_layer: LSTM, x: Tensor, lengths: Tensor | None
) -> dict[str, Tensor]:
    """torch / MindSpore semantics (tanh, sigmoid, packed lengths, zeros past a length) of ``target_layer``
    plus the glue the emitted code applies for the source's conventions that torch's LSTM lacks
    (go_backwards, "previous" masked outputs: the spec's, whichever framework wrote the source) and, for a
    Keras source, Keras's outputs (last step, merges, states)."""
    spec = unit.spec
    if spec.go_backwards:
        x = x.flip(1) if lengths is None else gather_steps(x, reversed_prefix_index(lengths, x.shape[1]))
    with torch.no_grad():
        out, (h_n, c_n) = target_layer(x, lengths=lengths)
    if spec.go_backwards and lengths is not None:
        # go_backwards's processing order: the padded steps first (zeros; the state stays initial), then the
        # valid prefix reversed, which the packed run left at the front; so "previous output" needs no fix
        out = gather_steps(out, processing_order_index(lengths, out.shape[1]))
    elif lengths is not None and spec.masked_output == "previous":
        out = previous_output_fix(out, h_n[-spec.num_directions], lengths, spec.hidden_size)
    if unit.keras is None:
        return {"output": out, "h_n": h_n, "c_n": c_n}
    return keras_outputs(unit, out, h_n, c_n)


def reversed_prefix_index(lengths: Tensor, steps: int) -> Tensor:
    """(B, T) time indices that reverse each row's valid prefix: step t < len reads step len-1-t (steps past
    the length read padding, which a run with lengths ignores). Keras's go_backwards with a right-padded mask
    processes exactly these valid steps, after the padded ones (which leave the state alone)."""
    t = torch.arange(steps, device=lengths.device).unsqueeze(0)
    return (lengths.long().unsqueeze(1) - 1 - t + steps) % steps


def processing_order_index(lengths: Tensor, steps: int) -> Tensor:
    """(B, T) time indices taking a run on :func:`reversed_prefix_index` input (valid outputs at the front,
    zeros past the length) to Keras's go_backwards output order: T-len zeros, then the len valid outputs."""
    t = torch.arange(steps, device=lengths.device).unsqueeze(0)
    return (t + lengths.long().unsqueeze(1)) % steps


def gather_steps(values: Tensor, index: Tensor) -> Tensor:
    """values (B, T, F) gathered along time with a (B, T) index."""
    return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


def previous_output_fix(out: Tensor, last_h: Tensor, lengths: Tensor, hidden: int) -> Tensor:
    """Keras's default masked output: past each length the forward direction repeats its last valid output
    (its final h; zeros for an empty sequence) instead of zeros. out (B, T, D*H), last_h (B, H)."""
    steps = out.shape[1]
    padded = torch.arange(steps).unsqueeze(0) >= lengths.unsqueeze(1)  # (B, T)
    fill = torch.where((lengths > 0).unsqueeze(1), last_h, torch.zeros_like(last_h)).unsqueeze(1)
    forward = torch.where(padded.unsqueeze(-1), fill, out[..., :hidden])
    return torch.cat([forward, out[..., hidden:]], dim=-1)


def stored_torch_spec(spec: LSTMSpec) -> LSTMSpec:
    """What the LSTM of a torch file computes, batch-major: :func:`plain_torch_spec` plus the cell variants
    the file records (unilstm's .pt / .safetensors) and, with variants, the activations its description
    records with them."""
    if not spec.cell_variants:
        return plain_torch_spec(spec)
    fields = (*CELL_VARIANT_FIELDS, "activation", "recurrent_activation")
    recorded = {field: getattr(spec, field) for field in fields}
    return replace(plain_torch_spec(spec), **recorded)


def plain_torch_spec(spec: LSTMSpec) -> LSTMSpec:
    """What a torch / MindSpore LSTM with ``spec``'s sizes computes (tanh, sigmoid, batch-major)."""
    return LSTMSpec(
        spec.input_size,
        spec.hidden_size,
        spec.num_layers,
        bias=spec.bias,
        batch_first=True,
        bidirectional=spec.bidirectional,
        proj_size=spec.proj_size,
    )


def ignored_keras_arguments(config: dict | None) -> list[str]:
    """The training-only Keras arguments a layer config sets (regularizers, constraints, dropout,
    stateful), as ``key=value`` texts for notes: no target file carries them."""
    if not isinstance(config, dict):
        return []
    inner = config.get("layer", {}).get("config", config) if "layer" in config else config
    found = []
    for key in _KERAS_TRAINING_PENALTIES:
        if inner.get(key) is not None:
            found.append(f"{key}={_short(inner[key])}")
    for key in ("dropout", "recurrent_dropout"):
        if inner.get(key):
            found.append(f"{key}={inner[key]}")
    if inner.get("stateful"):
        found.append("stateful=True (carry h_n, c_n between calls yourself)")
    return found


def _short(value: object) -> str:
    if isinstance(value, dict):
        return str(value.get("class_name", value))
    return repr(value)

