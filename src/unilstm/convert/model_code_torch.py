"""A whole Keras model as torch code and a torch state dict (issue 15: whole-model conversion).

:func:`emit_torch_model` walks the :class:`~.model_program.Program` of a model loaded by
:func:`unilstm.keras.load_model` and writes a module that needs only torch (and ``safetensors`` for
``.safetensors`` weights): ``WEIGHTS``, a class named after the model whose ``__init__`` builds one plain
torch module per Keras layer (``nn.Embedding``, ``nn.Linear``, ``nn.LSTM``, ``nn.BatchNorm1d``,
``nn.LayerNorm``, ``nn.Conv1d``, pooling and dropout modules, an ``nn.ParameterDict`` for attention
weights) and whose ``forward`` takes the Keras model's inputs (batch-major, integer ids where Keras takes
ids) and returns what Keras returns (a tensor, or a list for several outputs), with the Keras variable
names; and ``load(path=None)``, the model with the weights of ``path`` (by default the file WEIGHTS next to
the module) in eval mode.

LSTMs (LSTM, Bidirectional(LSTM), Keras 2's CuDNNLSTM) are ``nn.LSTM`` modules (Keras's kernel (F, 4H)
transposed to torch's (4H, F), gate order i, f, g, o in both; Keras's one bias is ``bias_ih``,
``bias_hh`` is zero). Without a mask and with tanh / sigmoid, ``nn.LSTM`` runs them. Where torch's LSTM
cannot compute Keras's (a mask, which Keras applies per step anywhere in the sequence: the state is kept
and the output repeats the previous one, or is zero in a Bidirectional with return_sequences; other
activations such as Keras 2's ``hard_sigmoid``), the generated code runs the same weights step by step in
an explicit loop (the module-level function ``keras_lstm``).

This module writes the LSTMs, Attention / AdditiveAttention, Keras 3's recorded operations and nested
models, and assembles the module; :mod:`.model_code_torch_layers` writes the other layers.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import replace
from typing import Any

from torch import Tensor

from .file_kinds import ConversionError
from .model_code_torch_layers import (
    ACTIVATION_CODE,
    ACTIVATION_HELPERS,
    LAYER_EMITTERS,
    Writer,
    activation_name,
    build_parameter_dict,
    module,
    prune_masks,
    refuse,
    wrap,
)
from .model_program import Program, Step

_STANDARD = ("tanh", "sigmoid")  # activation, recurrent_activation of torch's nn.LSTM

_KERAS_LSTM = '''def keras_lstm(lstm, x, mask, state, activation, recurrent_activation, go_backwards=False,
               zero_masked=False, direction=""):
    """Keras's LSTM over x (B, T, F) with the weights of one direction of `lstm` (an nn.LSTM; direction ""
    or "_reverse"), step by step: Keras's gates z = x W_ih^T + h W_hh^T + b split as i, f, g, o;
    c = f c + i g; h = o activation(c). Where the mask (B, T) is False the step is skipped: h and c stay and
    the output repeats the previous one (zeros with zero_masked, as Keras's Bidirectional). go_backwards
    runs the steps last to first. Returns the outputs (B, T, H) in processing order, h and c (B, H)."""
    w_ih = getattr(lstm, "weight_ih_l0" + direction)
    w_hh = getattr(lstm, "weight_hh_l0" + direction)
    gates_x = x @ w_ih.t()
    if lstm.bias:
        gates_x = gates_x + getattr(lstm, "bias_ih_l0" + direction) + getattr(lstm, "bias_hh_l0" + direction)
    if state is None:
        zeros = x.new_zeros(x.shape[0], lstm.hidden_size)
        state = (zeros, zeros)
    h, c = state
    output = torch.zeros_like(h)
    outputs = []
    steps = range(x.shape[1] - 1, -1, -1) if go_backwards else range(x.shape[1])
    for t in steps:
        i, f, g, o = (gates_x[:, t] + h @ w_hh.t()).chunk(4, dim=-1)
        c_t = recurrent_activation(f) * c + recurrent_activation(i) * activation(g)
        h_t = recurrent_activation(o) * activation(c_t)
        if mask is None:
            h, c, output = h_t, c_t, h_t
        else:
            present = mask[:, t, None]
            h, c = torch.where(present, h_t, h), torch.where(present, c_t, c)
            output = torch.where(present, h_t, 0.0 if zero_masked else output)
        outputs.append(output)
    return torch.stack(outputs, dim=1), h, c
'''


def _activation_arg(w: Writer, step: Step, fn: Any) -> str:
    """A callable for keras_lstm: ``torch.tanh`` and the like, else a module-level function."""
    name = activation_name(step, fn)
    if name == "linear":
        code, name = "{x}", "linear"
    else:
        code = ACTIVATION_CODE[name]
    plain = re.fullmatch(r"([\w.]+)\(\{x\}\)", code)
    if plain:
        return plain.group(1)
    doc = {"hard_sigmoid_keras2": "Keras 2's hard_sigmoid"}.get(name, f"Keras's {name}")
    w.helpers[name] = f'def {name}(x):\n    """{doc}."""\n    return {code.format(x="x")}\n'
    return name


def _lstm_weights(cell: Any, suffix: str = "") -> dict[str, Tensor]:
    """torch's names and layout for a Keras LSTM's weights (read from the loaded layer: CuDNNLSTM's are
    already the equivalent LSTM's)."""
    weights = {f"weight_ih_l0{suffix}": cell.kernel.t(), f"weight_hh_l0{suffix}": cell.recurrent_kernel.t()}
    if cell.use_bias:
        weights[f"bias_ih_l0{suffix}"] = cell.bias
        weights[f"bias_hh_l0{suffix}"] = cell.bias.new_zeros(cell.bias.shape)
    return weights


def _check_lstm(step: Step, cell: Any) -> None:
    if cell.stateful:
        raise refuse(step, "stateful=True (the generated module keeps no states between calls)")
    if cell.time_major:
        raise refuse(step, "time_major=True is not written here")


def _sequence_inputs(step: Step) -> tuple[str, str | None, list[str]]:
    """The sequence, its mask and the initial-state variables (``initial_state=`` or Keras 2's list)."""
    unknown = set(step.kwargs) - {"initial_state"}
    if unknown:
        raise refuse(step, f"call arguments {sorted(unknown)} are not supported")
    states = list(step.kwargs.get("initial_state") or step.inputs[1:])
    return step.inputs[0], step.input_masks[0], states


def _why_loop(mask: str | None, names: tuple[str, str]) -> str:
    """The comment over an explicit loop: what nn.LSTM cannot do."""
    if mask is not None:
        return "# nn.LSTM cannot skip Keras's masked steps (anywhere in a sequence): step by step"
    odd = [n for n, standard in zip(names, _STANDARD, strict=True) if n != standard]
    what = "Keras 2's hard_sigmoid" if odd == ["hard_sigmoid_keras2"] else f"the activations {names}"
    return f"# nn.LSTM cannot run {what}: step by step"


def emit_lstm(w: Writer, step: Step) -> None:
    """LSTM and CuDNNLSTM: ``nn.LSTM`` (batch_first); Keras's outputs from its output and final states."""
    cell = module(step).cell
    _check_lstm(step, cell)
    x, mask, states = _sequence_inputs(step)
    mask = w.mask(mask)
    attr = step.attribute
    build = f"self.{attr} = nn.LSTM({cell.input_size}, {cell.units}, bias={cell.use_bias}, batch_first=True)"
    lines = [build]
    if cell.dropout or cell.recurrent_dropout:
        lines.insert(
            0,
            f"# Keras dropout={cell.dropout}, recurrent_dropout={cell.recurrent_dropout}: "
            "not applied in training here (nn.LSTM has no per-step dropout masks)",
        )
    w.build(step, lines, _lstm_weights(cell))
    out = step.outputs[0]
    sequences, with_states = cell.return_sequences, cell.return_state
    seq = out if sequences else w.local(f"{out}_seq")
    names = (activation_name(step, cell.activation), activation_name(step, cell.recurrent_activation))
    if mask is None and names == _STANDARD:
        source = x
        if cell.go_backwards:
            source = f"{x}.flip(1)"
            w.line("# Keras go_backwards: the steps last to first; outputs stay in processing order")
        state = f", ({states[0]}.unsqueeze(0), {states[1]}.unsqueeze(0))" if states else ""
        h = w.local(f"{out}_h") if not sequences or with_states else "_"
        c = w.local(f"{out}_c") if with_states else "_"
        held = "_" if h == c == "_" else f"({h}, {c})"
        w.line(f"{seq if sequences else '_'}, {held} = self.{attr}({source}{state})")
        if not sequences:
            w.line(f"{out} = {h}[0]  # return_sequences=False: the last output")
        if with_states:
            w.line(f"{step.outputs[1]}, {step.outputs[2]} = {h}[0], {c}[0]")
    else:
        w.line(_why_loop(mask, names))
        state = f"({states[0]}, {states[1]})" if states else "None"
        act = _activation_arg(w, step, cell.activation)
        ract = _activation_arg(w, step, cell.recurrent_activation)
        options = ", go_backwards=True" if cell.go_backwards else ""
        if cell.zero_output_for_mask and mask is not None:
            options += ", zero_masked=True"
        h, c = (step.outputs[1], step.outputs[2]) if with_states else ("_", "_")
        w.line(f"{seq}, {h}, {c} = keras_lstm(self.{attr}, {x}, {mask}, {state}, {act}, {ract}{options})")
        w.helpers["keras_lstm"] = _KERAS_LSTM
        if not sequences:
            w.line(f"{out} = {seq}[:, -1]  # return_sequences=False: the last output")
    if len(step.outputs) != (3 if with_states else 1):
        raise refuse(step, f"returns {len(step.outputs)} tensors")
    w.pass_mask(step, mask if sequences else None)


def emit_bidirectional(w: Writer, step: Step) -> None:
    """Bidirectional(LSTM): one ``nn.LSTM(bidirectional=True)``; Keras's backward layer is its reverse
    direction (Keras returns its sequence flipped back to the input's order, as torch does)."""
    door = module(step).door
    forward, backward = door.forward_layer, door.backward_layer
    for cell in (forward, backward):
        _check_lstm(step, cell)
    same = all(
        getattr(forward, key) == getattr(backward, key)
        for key in ("units", "use_bias", "activation", "recurrent_activation", "input_size")
    )
    if not same or forward.go_backwards or not backward.go_backwards:
        raise refuse(step, "a backward_layer that differs from the forward one has no nn.LSTM counterpart")
    x, mask, states = _sequence_inputs(step)
    mask = w.mask(mask)
    attr, units = step.attribute, forward.units
    build = f"self.{attr} = nn.LSTM({forward.input_size}, {units}, bias={forward.use_bias}, batch_first=True"
    lines = [build + ", bidirectional=True)"]
    if forward.dropout or forward.recurrent_dropout:
        lines.insert(
            0,
            f"# Keras dropout={forward.dropout}, recurrent_dropout={forward.recurrent_dropout}: "
            "not applied in training here (nn.LSTM has no per-step dropout masks)",
        )
    w.build(step, lines, {**_lstm_weights(forward), **_lstm_weights(backward, "_reverse")})
    out = step.outputs[0]
    names = (activation_name(step, forward.activation), activation_name(step, forward.recurrent_activation))
    sequences, with_states, merge = door.return_sequences, door.return_state, door.merge_mode
    outputs = 2 if merge is None else 1
    if len(step.outputs) != outputs + (4 if with_states else 0):
        raise refuse(step, f"returns {len(step.outputs)} tensors")
    finals = step.outputs[outputs:]
    y: str | None
    if mask is None and names == _STANDARD:
        state = ""
        if states:
            state = f", (torch.stack([{states[0]}, {states[2]}]), torch.stack([{states[1]}, {states[3]}]))"
        h = w.local(f"{out}_h") if not sequences or with_states else "_"
        c = w.local(f"{out}_c") if with_states else "_"
        held = "_" if h == c == "_" else f"({h}, {c})"
        if sequences and merge == "concat":
            w.line(f"{out}, {held} = self.{attr}({x}{state})")
            y = y_rev = None
        else:
            seq = w.local(f"{out}_seq") if sequences else "_"
            w.line(f"{seq}, {held} = self.{attr}({x}{state})")
            halves = (f"{seq}[..., :{units}]", f"{seq}[..., {units}:]")
            y, y_rev = halves if sequences else (f"{h}[0]", f"{h}[1]")
        if with_states:
            w.line(f"{', '.join(finals)} = {h}[0], {c}[0], {h}[1], {c}[1]")
    else:
        w.line(_why_loop(mask, names))
        act = _activation_arg(w, step, forward.activation)
        ract = _activation_arg(w, step, forward.recurrent_activation)
        zero = ", zero_masked=True" if sequences and mask is not None else ""
        f_state = f"({states[0]}, {states[1]})" if states else "None"
        b_state = f"({states[2]}, {states[3]})" if states else "None"
        fwd, bwd = w.local(f"{out}_forward"), w.local(f"{out}_backward")
        f_h, f_c, b_h, b_c = finals if with_states else ("_",) * 4
        w.line(f"{fwd}, {f_h}, {f_c} = keras_lstm(self.{attr}, {x}, {mask}, {f_state}, {act}, {ract}{zero})")
        w.line(
            f"{bwd}, {b_h}, {b_c} = keras_lstm(self.{attr}, {x}, {mask}, {b_state}, {act}, {ract}, "
            f'go_backwards=True{zero}, direction="_reverse")'
        )
        w.helpers["keras_lstm"] = _KERAS_LSTM
        if sequences:
            y, y_rev = fwd, f"{bwd}.flip(1)"
            w.line("# Keras flips the backward sequence back to the input's order")
        else:
            y, y_rev = f"{fwd}[:, -1]", f"{bwd}[:, -1]"
    if y is not None:
        assert y_rev is not None
        merged = {
            "concat": f"torch.cat([{y}, {y_rev}], dim=-1)",
            "sum": f"{y} + {y_rev}",
            "ave": f"({y} + {y_rev}) / 2",
            "mul": f"{y} * {y_rev}",
        }
        if merge is None:
            w.line(f"{step.outputs[0]}, {step.outputs[1]} = {y}, {y_rev}  # merge_mode=None")
        else:
            w.line(f"{out} = {merged[merge]}" + ("" if merge == "concat" else f"  # merge_mode={merge!r}"))
    for index in range(outputs):
        w.pass_mask(step, mask if sequences else None, index)


# -- attention ------------------------------------------------------------------------------------------


def emit_attention(w: Writer, step: Step) -> None:
    m = module(step)
    unknown = set(step.kwargs) - {"return_attention_scores", "use_causal_mask"}
    if unknown or not 2 <= len(step.inputs) <= 3:
        raise refuse(step, f"call {step.inputs} with {sorted(step.kwargs)} is not supported")
    query, value = step.inputs[0], step.inputs[1]
    key = step.inputs[2] if len(step.inputs) > 2 else value
    q_mask, v_mask = (w.mask(x) for x in step.input_masks[:2])
    attr, out = step.attribute, step.outputs[0]
    build_parameter_dict(w, step, m)
    scores = w.local(f"{out}_scores")
    if m.score_mode == "dot":
        scale = f' * self.{attr}["scale"]' if m.use_scale else ""
        w.line(f"{scores} = torch.matmul({query}, {key}.transpose(-2, -1)){scale}")
    else:
        summed = w.local("summed")
        w.line(f"{summed} = {query}.unsqueeze(-2) + {key}.unsqueeze(-3)  # (B, Tq, Tv, D)")
        if m.score_mode == "concat":
            inner = f'self.{attr}["scale"] * {summed}' if m.use_scale else summed
            w.line(f'{scores} = self.{attr}["concat_score_weight"] * torch.tanh({inner}).sum(dim=-1)')
        else:  # additive
            scale = f'self.{attr}["scale"] * ' if m.use_scale else ""
            w.line(f"{scores} = ({scale}torch.tanh({summed})).sum(dim=-1)")
    allowed = []
    if v_mask is not None:
        allowed.append(f"{v_mask}.unsqueeze(1)")
    if step.kwargs.get("use_causal_mask") or m.causal:
        causal = w.local(f"{out}_causal")
        w.line(f"{causal} = torch.ones_like({scores}[0], dtype=torch.bool).tril()  # i sees values <= i")
        allowed.append(causal)
    if allowed:
        w.line("# Keras subtracts 1e9 from the scores of the values a query may not see")
        w.line(f"{scores} = torch.where({' & '.join(allowed)}, {scores}, {scores} - 1e9)")
    probs = w.local(f"{out}_weights") if len(step.outputs) == 1 else step.outputs[1]
    w.line(f"{probs} = torch.softmax({scores}, dim=-1)")
    if m.dropout:
        w.line(f"{probs} = F.dropout({probs}, {m.dropout!r}, self.training)")
    w.line(f"{out} = torch.matmul({probs}, {value})")
    if q_mask is not None:
        present = f"{q_mask}.unsqueeze(-1)"
        zeroed = f"{out} * {present}" if step.keras2 else f"torch.where({present}, {out}, 0.0)"
        w.line(f"{out} = {zeroed}  # zero at masked queries")
    w.pass_mask(step, q_mask)


# -- Keras 3 operations ----------------------------------------------------------------------------------

_BINARY = {"NotEqual": "!=", "Equal": "==", "LogicalAnd": "&", "LogicalOr": "|"}
_DTYPES = {"bool": "torch.bool", "float32": "torch.float32", "int32": "torch.int32", "int64": "torch.int64"}


def emit_operation(w: Writer, step: Step) -> None:
    cls, out = step.class_name, step.outputs[0]
    operands = [w.mask(x) or x for x in step.inputs] + [
        repr(a) if not isinstance(a, str) else a for a in step.args
    ]
    options = {k: v for k, v in {**step.config, **step.kwargs}.items() if k != "name"}
    if cls in _BINARY and len(operands) == 2:
        w.line(f"{out} = {operands[0]} {_BINARY[cls]} {operands[1]}")
    elif cls == "LogicalNot":
        w.line(f"{out} = ~{operands[0]}")
    elif cls == "ConvertToTensor":
        dtype = options.get("dtype")
        if dtype is None:
            w.aliases[out] = operands[0]
            return
        if dtype not in _DTYPES:
            raise refuse(step, f"dtype {dtype!r}")
        w.line(f"{out} = {operands[0]}.to({_DTYPES[dtype]})")
    elif cls in ("Any", "All"):
        axis = options.get("axis")
        keep = bool(options.get("keepdims", False))
        fn = cls.lower()
        if axis is None:
            shaped = f".reshape((1,) * {operands[0]}.dim())" if keep else ""
            w.line(f"{out} = {operands[0]}.bool().{fn}(){shaped}")
        else:
            w.line(f"{out} = {operands[0]}.bool().{fn}(dim={axis!r}, keepdim={keep})")
    else:
        raise refuse(step, "this Keras operation has no torch code here")


_RECURRENT = {"LSTM": emit_lstm, "CuDNNLSTM": emit_lstm, "Bidirectional": emit_bidirectional}


def emit_time_distributed_recurrent(w: Writer, step: Step) -> None:
    """TimeDistributed(LSTM or Bidirectional): the inner layer on (B * T, T2, F) (with the mask (B, T, T2)
    as (B * T, T2)), reshaped back. The output mask: Keras 3 passes the input's on; Keras 2 the inner
    layer's (the same, with return_sequences), else the input's reduced to (B, T) with any."""
    x, mask = step.inputs[0], w.mask(step.input_masks[0])
    if len(step.inputs) != 1 or step.kwargs:
        raise refuse(step, "a TimeDistributed LSTM with call arguments is not written here")
    inner = module(step).layer
    flat, result = w.local(f"{x}_steps"), w.local(f"{step.outputs[0]}_steps")
    w.line(
        f"{flat} = {x}.reshape(-1, *{x}.shape[2:])  # TimeDistributed: every step as a sequence of its own"
    )
    flat_mask = None
    if mask is not None:
        flat_mask = w.local(f"{mask}_steps")
        w.line(f"{flat_mask} = {mask}.reshape(-1, *{mask}.shape[2:])")
    inner_step = replace(
        step,
        class_name=inner.spec.class_name,
        module=inner,
        inputs=[flat],
        input_masks=[flat_mask],
        outputs=[result],
        output_masks=[None],
    )
    _RECURRENT[inner.spec.class_name](w, inner_step)
    w.line(f"{step.outputs[0]} = {result}.reshape({x}.shape[0], {x}.shape[1], *{result}.shape[1:])")
    target = step.output_masks[0]
    if target is None:
        return
    cell = inner.door if inner.spec.class_name == "Bidirectional" else inner.cell
    if not step.keras2 or cell.return_sequences:
        w.pass_mask(step, mask)
    else:
        w.line(f"{target} = {mask}.reshape({x}.shape[0], {x}.shape[1], -1).any(dim=-1)  # Keras 2", target)


def _camel(name: str) -> str:
    words = re.split(r"[^0-9A-Za-z]+", name)
    camel = "".join(word[:1].upper() + word[1:] for word in words if word)
    return camel if camel and not camel[0].isdigit() else f"Model{camel}"


def _program_variables(program: Program) -> set[str]:
    names = set(program.inputs)
    for step in program.steps:
        names.update(step.outputs)
        names.update(m for m in step.output_masks if m is not None)
    return names


def _emit_nested(w: Writer, step: Step, class_names: set[str]) -> None:
    """A nested model: a class of its own, built once (also when called several times); its forward returns
    the masks of its outputs after the outputs where the outer model reads them."""
    nested = step.nested
    assert nested is not None
    if any(step.input_masks) or step.kwargs:
        raise refuse(step, "a nested model called with a mask or call arguments is not written here")
    masked = [i for i, mask in enumerate(step.output_masks) if mask is not None]
    if step.attribute not in w.built:
        name = _unique_class(_camel(nested.name), class_names)
        inner = Writer(prefix=f"{w.prefix}{step.attribute}.", helpers=w.helpers, classes=w.classes)
        doc = f"The nested Keras model {nested.name!r}" + (
            "; forward returns its outputs, then the masks of outputs " + str(masked) + "." if masked else "."
        )
        w.classes.append(_class_source(inner, nested, name, doc, class_names, masked))
        w.state.update(inner.state)
        w.built.add(step.attribute)
        w.nested_masks[step.attribute] = masked
        w.init.append(f"        # {step.class_name} {step.layer!r}")
        w.init.append(f"        self.{step.attribute} = {name}()")
    elif w.nested_masks[step.attribute] != masked:
        raise refuse(step, "calls of a shared nested model that differ in the masks they hand on")
    targets = step.outputs + [m for m in step.output_masks if m is not None]
    w.line(f"{', '.join(targets)} = self.{step.attribute}({', '.join(step.inputs)})")


def _output_mask(w: Writer, program: Program, variable: str) -> str:
    """The variable holding the mask of the program's output ``variable``."""
    for step in program.steps:
        if variable in step.outputs:
            mask = w.mask(step.output_masks[step.outputs.index(variable)])
            if mask is not None:
                return mask
    raise ConversionError(f"torch code: model {program.name!r}: its output {variable!r} carries no mask")


def _unique_class(name: str, taken: set[str]) -> str:
    candidate, count = name, 2
    while candidate in taken:
        candidate, count = f"{name}{count}", count + 1
    taken.add(candidate)
    return candidate


def _walk(w: Writer, program: Program, class_names: set[str]) -> None:
    for step in program.steps:
        if step.nested is not None:
            _emit_nested(w, step, class_names)
            continue
        if step.module is None:
            emit_operation(w, step)
            continue
        if step.class_name in ("LSTM", "CuDNNLSTM"):
            emit_lstm(w, step)
        elif step.class_name == "Bidirectional":
            emit_bidirectional(w, step)
        elif step.class_name == "TimeDistributed" and module(step).layer.spec.class_name in _RECURRENT:
            emit_time_distributed_recurrent(w, step)
        elif step.class_name in ("Attention", "AdditiveAttention"):
            emit_attention(w, step)
        elif step.class_name in LAYER_EMITTERS:
            LAYER_EMITTERS[step.class_name](w, step)
        else:
            raise refuse(step, "this layer has no torch code here")
        defined = {line.mask for line in w.forward}
        for mask in step.output_masks:
            if mask is not None and mask not in w.aliases and mask not in defined:
                raise refuse(step, "its output mask is not written here")


def _docstring(text: str, indent: str) -> list[str]:
    lines = textwrap.wrap(f'"""{text}"""', 110 - len(indent))
    return [indent + line for line in lines]


def _class_source(
    w: Writer, program: Program, name: str, doc: str, class_names: set[str], masked: list[int] | None = None
) -> str:
    w.taken |= _program_variables(program) | {"self"}
    _walk(w, program, class_names)
    results = [w.mask(variable) or variable for variable in program.outputs]  # a mask passed on: its source
    results += [_output_mask(w, program, program.outputs[i]) for i in masked or []]
    returned = results[0] if len(results) == 1 else f"[{', '.join(results)}]"
    forward = [text for line in prune_masks(w.forward, returned) for text in wrap(line.text)]
    lines = [
        f"class {name}(nn.Module):",
        *_docstring(doc, "    "),
        "",
        "    def __init__(self):",
        "        super().__init__()",
        *(text for line in w.init for text in wrap(line)),
        "",
        f"    def forward(self, {', '.join(program.inputs)}):",
        *forward,
        f"        return {returned}",
    ]
    return "\n".join(lines) + "\n"


def emit_torch_model(program: Program, weights_name: str) -> tuple[str, dict[str, Tensor]]:
    """The source of a torch module for ``program`` (see the module docstring) and the state dict its
    model loads. ``weights_name`` is the weights file's name (``.pt`` or ``.safetensors``) next to the
    module. Raises :class:`ConversionError` naming the first layer torch code is not written for."""
    class_names: set[str] = set()
    name = _unique_class(_camel(program.name), class_names)
    w = Writer()
    inputs = ", ".join(program.inputs)
    outputs = "a list of its outputs" if len(program.outputs) > 1 else "its output"
    doc = (
        f"The Keras model {program.name!r} in torch: forward({inputs}) returns {outputs} as the Keras "
        "model does at inference, masks included."
    )
    main = _class_source(w, program, name, doc, class_names)
    safetensors = weights_name.endswith(".safetensors")
    for helper, source in ACTIVATION_HELPERS.items():
        if re.search(rf"\b{helper}\b", main + "".join(w.classes)):
            w.helpers[helper] = source
    code = main + "".join(w.helpers.values()) + "".join(w.classes)
    head = [
        *_docstring(
            f"The Keras model {program.name!r} as torch code, written by `unilstm convert`. `load()` returns "
            f"{name} with the weights of WEIGHTS (next to this file) in eval mode; call it on the Keras "
            f"model's inputs ({inputs}): batch-major tensors, integer ids where Keras takes ids.",
            "",
        ),
        "",
        "from pathlib import Path",
        "",
        "import torch",
        *(["import torch.nn.functional as F"] if re.search(r"\bF\.", code) else []),
        *(["from safetensors.torch import load_file"] if safetensors else []),
        "from torch import nn",
        "",
        f"WEIGHTS = {_quoted(weights_name)}",
    ]
    load = "load_file(str(path))" if safetensors else "torch.load(path, weights_only=True)"
    tail = [
        "def load(path=None):",
        f'    """{name} with the weights of `path` (default: WEIGHTS next to this file), in eval mode."""',
        "    path = Path(__file__).with_name(WEIGHTS) if path is None else path",
        f"    model = {name}()",
        f"    model.load_state_dict({load})",
        "    return model.eval()",
    ]
    parts = ["\n".join(head) + "\n", *w.helpers.values(), *w.classes, main, "\n".join(tail) + "\n"]
    return "\n\n".join(parts), dict(w.state)


def _quoted(text: str) -> str:
    return f'"{text}"' if '"' not in text and "\\" not in text else repr(text)


def torch_state_names(program: Program) -> list[str]:
    """The state-dict names of the torch model :func:`emit_torch_model` writes for ``program``."""
    return list(emit_torch_model(program, "weights.pt")[1])


__all__ = ["ConversionError", "emit_torch_model", "torch_state_names"]
