"""The torch code of the Keras layers around the LSTMs (but attention), for :mod:`.model_code_torch`.

Each ``emit_<layer>`` function writes one :class:`~.model_program.Step` into a :class:`Writer`: the lines
of ``__init__`` that build the layer's torch module (once, also for a layer called several times), the
lines of ``forward`` that compute what the Keras layer computes (masks included, only where the program
says a variable carries one), and the layer's weights in torch's layout under the module's state-dict
names. What torch code cannot compute as Keras does is refused with a :class:`ConversionError` naming the
layer's class and name.
"""

from __future__ import annotations

import re
import string
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from .. import activations
from .file_kinds import ConversionError
from .model_program import INFERENCE_IDENTITY_LAYERS, Step

#: torch code of each Keras activation (by its name in :data:`unilstm.activations.REGISTRY`), ``{x}``
#: standing for a variable; linear is the identity.
ACTIVATION_CODE = {
    "tanh": "torch.tanh({x})",
    "sigmoid": "torch.sigmoid({x})",
    "relu": "torch.relu({x})",
    "hard_sigmoid": "F.hardsigmoid({x})",
    "hard_sigmoid_keras2": "torch.clamp(0.2 * {x} + 0.5, 0.0, 1.0)",
    "hard_silu": "F.hardswish({x})",
    "hard_swish": "F.hardswish({x})",
    "elu": "F.elu({x})",
    "selu": "F.selu({x})",
    "celu": "F.celu({x})",
    "gelu": "F.gelu({x})",
    "gelu_tanh": 'F.gelu({x}, approximate="tanh")',
    "sparse_sigmoid": "torch.clamp(0.5 * ({x} + 1.0), 0.0, 1.0)",
    "glu": "F.glu({x}, dim=-1)",
    "silu": "F.silu({x})",
    "swish": "F.silu({x})",
    "softplus": "F.softplus({x})",
    "softsign": "F.softsign({x})",
    "softmax": "torch.softmax({x}, dim=-1)",
    "log_softmax": "torch.log_softmax({x}, dim=-1)",
    "exponential": "torch.exp({x})",
    "relu6": "F.relu6({x})",
    "leaky_relu": "F.leaky_relu({x}, negative_slope=0.2)",
    "mish": "F.mish({x})",
    "squareplus": "({x} + torch.sqrt({x} * {x} + 4.0)) / 2.0",
    "sparse_plus": "torch.where({x} <= -1, 0.0, torch.where({x} >= 1, {x}, ({x} + 1) ** 2 / 4))",
    "tanh_shrink": "F.tanhshrink({x})",
    "soft_shrink": "F.softshrink({x}, 0.5)",
    "hard_shrink": "F.hardshrink({x}, 0.5)",
    "hard_tanh": "F.hardtanh({x})",
    "log_sigmoid": "F.logsigmoid({x})",
    "sparsemax": "sparsemax({x})",
}

#: module-level functions the activation code above calls
ACTIVATION_HELPERS = {
    "sparsemax": '''def sparsemax(x):
    """Keras 3's sparsemax over the last axis, as Keras computes it: with z sorted descending and cumulative
    sums s_j over the support (z_j - (s_j - 1) / j > 0, k elements), tau = (sum of the s_j - 1) / k."""
    z, _ = torch.sort(x, dim=-1, descending=True)
    k = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=x.device)
    cumulative = z.cumsum(dim=-1)
    support = z - (cumulative - 1.0) / k > 0
    count = support.sum(dim=-1, keepdim=True).to(x.dtype)
    tau = (torch.where(support, cumulative, 0.0).sum(dim=-1, keepdim=True) - 1.0) / count
    return torch.clamp(x - tau, min=0.0)
''',
}
_NAME_OF = {fn: name for name, fn in reversed(list(activations.REGISTRY.items()))}


def refuse(step: Step, message: str) -> ConversionError:
    """The error for a layer (or one of its arguments) torch code is not written for."""
    return ConversionError(f"torch code: {step.class_name} {step.layer!r}: {message}")


def module(step: Step) -> Any:
    """The loaded Keras layer of a step (its config as attributes, its weights)."""
    assert step.module is not None
    return step.module


def activation_name(step: Step, fn: Any) -> str:
    """The registry name of a layer's resolved activation (a name or a function); a custom one refused."""
    if fn is None:
        return "linear"
    name = fn if isinstance(fn, str) else _NAME_OF.get(fn)
    if name is None or (name != "linear" and name not in ACTIVATION_CODE):
        raise refuse(step, f"activation {getattr(fn, '__name__', fn)!r} has no torch code here")
    return name


def activation_code(step: Step, fn: Any, x: str) -> str:
    """torch code applying a layer's activation to the variable ``x`` (``x`` itself for linear)."""
    name = activation_name(step, fn)
    return x if name == "linear" else ACTIVATION_CODE[name].format(x=x)


@dataclass
class Line:
    """A line of ``forward``; ``mask`` names the mask variable it defines (dropped when nothing reads it)."""

    text: str
    mask: str | None = None


@dataclass
class Writer:
    """The code of one generated class: ``init`` lines, ``forward`` lines, the weights (state-dict names
    under ``prefix``), the attributes already built, and mask variables that are another's mask."""

    prefix: str = ""
    init: list[str] = field(default_factory=list)
    forward: list[Line] = field(default_factory=list)
    state: dict[str, Tensor] = field(default_factory=dict)
    built: set[str] = field(default_factory=set)
    aliases: dict[str, str] = field(default_factory=dict)
    taken: set[str] = field(default_factory=set)
    #: module-level helper functions the code calls (name -> source), shared by nested classes
    helpers: dict[str, str] = field(default_factory=dict)
    #: nested classes (source), written before the model's class
    classes: list[str] = field(default_factory=list)
    #: per nested model's attribute, the outputs whose masks its forward returns
    nested_masks: dict[str, list[int]] = field(default_factory=dict)

    def build(self, step: Step, lines: list[str], weights: dict[str, Tensor]) -> None:
        """``self.<attribute> = ...`` and its weights, the first time the layer is met."""
        if step.attribute in self.built:
            return
        self.built.add(step.attribute)
        self.init.append(f"        # {step.class_name} {step.layer!r}")
        self.init += [f"        {line}" for line in lines]
        for name, tensor in weights.items():
            value = tensor.detach().float() if tensor.is_floating_point() else tensor.detach()
            value = value.clone(memory_format=torch.contiguous_format)  # safetensors stores contiguous ones
            self.state[f"{self.prefix}{step.attribute}.{name}"] = value

    def line(self, text: str, mask: str | None = None) -> None:
        self.forward.append(Line(f"        {text}", mask))

    def mask(self, variable: str | None) -> str | None:
        """The variable that holds the mask ``variable`` names (following masks passed on unchanged)."""
        while variable is not None and variable in self.aliases:
            variable = self.aliases[variable]
        return variable

    def pass_mask(self, step: Step, source: str | None, output: int = 0) -> None:
        """The output's mask is ``source`` unchanged (no line: later reads use ``source``)."""
        target = step.output_masks[output]
        if target is None:
            return
        if source is None:
            raise refuse(step, "its output carries a mask that its input does not")
        self.aliases[target] = source

    def local(self, name: str) -> str:
        """A fresh local variable name (not a program variable)."""
        candidate, count = name, 2
        while candidate in self.taken:
            candidate, count = f"{name}_{count}", count + 1
        self.taken.add(candidate)
        return candidate


def wrap(text: str, width: int = 110) -> list[str]:
    """A generated line as lines of at most ``width`` characters where it can be broken: a trailing comment
    moved above, the arguments of the call that ends the line on lines of their own."""
    if len(text) <= width:
        return [text]
    if text.lstrip().startswith("#"):
        indent = " " * (len(text) - len(text.lstrip()))
        return textwrap.wrap(
            text.lstrip()[2:], width, initial_indent=indent + "# ", subsequent_indent=indent + "# "
        )
    code, _, comment = text.partition("  # ")
    indent = " " * (len(code) - len(code.lstrip()))
    lines = [f"{indent}# {comment}"] if comment else []
    if len(code) <= width or not code.endswith(")"):
        return lines + [code]
    depth, opening = 0, -1
    for index in range(len(code) - 1, -1, -1):
        depth += {")": 1, "]": 1, "(": -1, "[": -1}.get(code[index], 0)
        if depth == 0:
            opening = index
            break
    if opening + 1 > width - 10:
        return lines + [code]
    args, depth, start = [], 0, opening + 1
    for index in range(opening + 1, len(code) - 1):
        char = code[index]
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            args.append(code[start:index].strip())
            start = index + 1
    args.append(code[start:-1].strip())
    lines.append(code[: opening + 1])
    current = indent + "    "
    for arg in args:
        piece = arg + ","
        if current.strip() and len(current) + 1 + len(piece) > width:
            lines.append(current.rstrip())
            current = indent + "    "
        current += piece + " "
    lines.append(current.rstrip().rstrip(","))
    lines.append(indent + ")")
    return lines


def prune_masks(lines: list[Line], returned: str) -> list[Line]:
    """The lines without the mask computations nothing reads (Keras makes masks no later layer uses)."""
    kept = list(lines)
    while True:
        text = "\n".join(line.text for line in kept) + "\n" + returned
        unused = [
            line
            for line in kept
            if line.mask is not None and len(re.findall(rf"\b{re.escape(line.mask)}\b", text)) <= 1
        ]
        if not unused:
            return kept
        kept = [line for line in kept if line not in unused]


# -- single-input helpers -------------------------------------------------------------------------------


def one_input(step: Step) -> tuple[str, str | None]:
    if len(step.inputs) != 1 or step.kwargs:
        raise refuse(step, f"is called on {step.inputs} with {sorted(step.kwargs)}; one tensor expected")
    return step.inputs[0], step.input_masks[0]


def rank(step: Step, index: int = 0) -> int:
    assert step.module is not None
    return len(module(step).spec.input_shapes[index])


# -- Embedding, Masking, Dense, Activation --------------------------------------------------------------


def emit_embedding(w: Writer, step: Step) -> None:
    x, _ = one_input(step)
    m = module(step)
    w.build(
        step,
        [f"self.{step.attribute} = nn.Embedding({m.input_dim}, {m.output_dim})"],
        {"weight": m.embeddings},
    )
    out = step.outputs[0]
    if step.output_masks[0] is not None:
        w.line(f"{step.output_masks[0]} = {x} != 0  # Keras mask_zero: id 0 is padding", step.output_masks[0])
    w.line(f"{out} = self.{step.attribute}({x}.long())")


def emit_masking(w: Writer, step: Step) -> None:
    x, _ = one_input(step)
    value = module(step).mask_value
    mask = step.output_masks[0] or w.local(f"{step.outputs[0]}_mask")
    w.line(
        f"{mask} = ({x} != {value!r}).any(dim=-1)  # Keras Masking: a step whose features all equal "
        f"{value!r} is absent",
        step.output_masks[0],
    )
    if step.keras2:
        w.line(f"{step.outputs[0]} = {x} * {mask}.unsqueeze(-1)")
    else:
        w.line(f"{step.outputs[0]} = torch.where({mask}.unsqueeze(-1), {x}, 0.0)")


def emit_dense(w: Writer, step: Step, attribute_call: str | None = None) -> None:
    x, mask = one_input(step)
    m = module(step)
    if step.class_name == "TimeDistributed":
        m = m.layer
    w.build(
        step,
        [f"self.{step.attribute} = nn.Linear({m.in_features}, {m.units}, bias={m.use_bias})"],
        {"weight": m.kernel.t(), **({"bias": m.bias} if m.use_bias else {})},
    )
    out = step.outputs[0]
    w.line(f"{out} = " + activation_code(step, m.activation, f"self.{step.attribute}({x})"))
    w.pass_mask(step, w.mask(mask))


def emit_activation(w: Writer, step: Step) -> None:
    x, mask = one_input(step)
    w.line(f"{step.outputs[0]} = " + activation_code(step, module(step).activation, x))
    w.pass_mask(step, w.mask(mask))


def emit_time_distributed(w: Writer, step: Step) -> None:
    inner = module(step).layer
    name = inner.spec.class_name
    if name == "Dense":
        # nn.Linear acts on the last axis of (B, T, F): Keras's per-step Dense; the mask passes on.
        emit_dense(w, step)
        return
    if name == "Activation":
        emit_activation(w, _replace_module(step, inner))
        return
    if name == "Masking":
        # Masking acts on the last axis: on every step at once. Keras 3 passes the input's mask on, Keras 2
        # the inner layer's (B, T, ...) mask.
        target = step.output_masks[0]
        if step.keras2:
            emit_masking(w, _replace_module(step, inner))
        else:
            emit_masking(w, replace(_replace_module(step, inner), output_masks=[None]))
            w.pass_mask(step, w.mask(step.input_masks[0]))
            assert target is None or target in w.aliases
        return
    raise refuse(step, f"TimeDistributed({name}) has no torch code here (TimeDistributed(Dense) has)")


def _replace_module(step: Step, layer: Any) -> Step:
    return replace(step, module=layer)


# -- normalization --------------------------------------------------------------------------------------


def emit_batch_normalization(w: Writer, step: Step) -> None:
    x, mask = one_input(step)
    m = module(step)
    affine = m.center or m.scale
    momentum = round(1.0 - m.momentum, 10)
    lines = [
        f"self.{step.attribute} = nn.BatchNorm1d({m.channels}, eps={m.epsilon!r}, momentum={momentum!r}"
        + ("" if affine else ", affine=False")
        + ")"
    ]
    if m.trainable and not m.fused:
        lines.insert(0, "# training: torch's running_var takes the unbiased batch variance, Keras the biased")
    weights = {}
    if affine:  # nn.BatchNorm1d has gamma and beta or neither: the one Keras lacks is fixed at 1 or 0
        weights["weight"] = m.gamma if m.scale else torch.ones(m.channels)
        weights["bias"] = m.beta if m.center else torch.zeros(m.channels)
        for kept, name, value in ((m.scale, "weight", 1), (m.center, "bias", 0)):
            if not kept:
                lines.append(f"self.{step.attribute}.{name}.requires_grad_(False)  # Keras has none: {value}")
    weights.update(
        running_mean=m.moving_mean,
        running_var=m.moving_variance,
        num_batches_tracked=torch.zeros((), dtype=torch.long),
    )
    w.build(step, lines, weights)
    attr, out = step.attribute, step.outputs[0]
    r = rank(step)
    moved = x if m.axis == 1 else f"{x}.movedim({m.axis}, 1)"
    if not m.trainable:
        w.line(f"# Keras trainable=False: inference statistics in training too (channel axis {m.axis})")
        call = (
            f"F.batch_norm({moved}, self.{attr}.running_mean, self.{attr}.running_var, "
            f"self.{attr}.weight, self.{attr}.bias, False, 0.0, self.{attr}.eps)"
        )
    else:
        if mask is not None:
            w.line("# in training torch's batch statistics count masked steps too (Keras skips them)")
        call = f"self.{attr}({moved})"
    if m.axis == 1 or r == 2:
        w.line(f"{out} = {call}")
    else:
        w.line(f"{out} = {call}.movedim(1, {m.axis})  # Keras normalizes axis {m.axis}")
    w.pass_mask(step, w.mask(mask))


def emit_layer_normalization(w: Writer, step: Step) -> None:
    x, mask = one_input(step)
    m = module(step)
    r = rank(step)
    if m.axes != list(range(r - len(m.axes), r)) or m.rms_scaling or (m.center and not m.scale):
        _explicit_layer_normalization(w, step, x)
        w.pass_mask(step, w.mask(mask))
        return
    shape = tuple(m.param_shape)
    options = "" if m.scale and m.center else (", bias=False" if m.scale else ", elementwise_affine=False")
    weights = {}
    if m.scale:
        weights["weight"] = m.gamma
    if m.center:
        weights["bias"] = m.beta
    w.build(step, [f"self.{step.attribute} = nn.LayerNorm({shape!r}, eps={m.epsilon!r}{options})"], weights)
    w.line(f"{step.outputs[0]} = self.{step.attribute}({x})")
    w.pass_mask(step, w.mask(mask))


def build_parameter_dict(w: Writer, step: Step, m: Any) -> None:
    """The layer's weights (``m.weight_names``) as an ``nn.ParameterDict`` under the step's attribute, for
    layers whose tensor code reads them by name; nothing when it has none."""
    weights = {name: getattr(m, name) for name in m.weight_names}
    if weights:
        params = ", ".join(
            f'"{n}": nn.Parameter(torch.empty({tuple(t.shape)!r}))' for n, t in weights.items()
        )
        w.build(step, [f"self.{step.attribute} = nn.ParameterDict({{{params}}})"], weights)


def _explicit_layer_normalization(w: Writer, step: Step, x: str) -> None:
    """What nn.LayerNorm cannot say (axes that are not the trailing ones, Keras 3's rms_scaling, a beta
    without gamma) as tensor code, with gamma and beta in an nn.ParameterDict."""
    m = module(step)
    attr, out = step.attribute, step.outputs[0]
    build_parameter_dict(w, step, m)
    axes = tuple(m.axes)
    view = tuple(m.param_shape[axes.index(i)] if i in axes else 1 for i in range(rank(step)))
    mean, variance = w.local(f"{out}_mean"), w.local(f"{out}_variance")
    w.line(f"# Keras LayerNormalization over axes {list(axes)}: biased variance")
    w.line(f"{mean} = {x}.mean(dim={axes!r}, keepdim=True)")
    w.line(f"{variance} = ({x} - {mean}).square().mean(dim={axes!r}, keepdim=True)")
    if m.rms_scaling:  # Keras 3: x / sqrt(centred variance + epsilon) * gamma, no beta
        expr = f"{x} * torch.rsqrt({variance} + {m.epsilon!r})"
    else:
        expr = f"({x} - {mean}) * torch.rsqrt({variance} + {m.epsilon!r})"
    if m.scale:
        expr += f' * self.{attr}["gamma"].reshape{view!r}'
    if m.center:
        expr += f' + self.{attr}["beta"].reshape{view!r}'
    w.line(f"{out} = {expr}")


# -- dropout and noise ------------------------------------------------------------------------------------


def emit_noise(w: Writer, step: Step) -> None:
    x, mask = one_input(step)
    m = module(step)
    out, attr, cls = step.outputs[0], step.attribute, step.class_name
    rate = getattr(m, "rate", 0.0)
    if cls in ("Dropout", "SpatialDropout1D", "AlphaDropout") and getattr(m, "noise_shape", None):
        w.line(f"{out} = {x}  # Keras {cls} noise_shape={list(m.noise_shape)}: no torch module; identity")
    elif cls == "Dropout":
        w.build(step, [f"self.{attr} = nn.Dropout({rate!r})"], {})
        w.line(f"{out} = self.{attr}({x})")
    elif cls == "SpatialDropout1D":
        w.build(step, [f"self.{attr} = nn.Dropout1d({rate!r})  # drops whole feature channels"], {})
        w.line(f"{out} = self.{attr}({x}.transpose(1, 2)).transpose(1, 2)")
    elif cls == "AlphaDropout":
        w.build(step, [f"self.{attr} = nn.AlphaDropout({rate!r})"], {})
        w.line(f"{out} = self.{attr}({x})")
    elif cls == "GaussianNoise":
        w.line(f"{out} = {x}")
        w.line(f"if self.training:  # Keras GaussianNoise: x + N(0, {m.stddev!r}^2) in training")
        w.line(f"    {out} = {out} + torch.randn_like({out}) * {m.stddev!r}")
    elif cls == "GaussianDropout":
        stddev = (rate / (1.0 - rate)) ** 0.5 if 0 < rate < 1 else 0.0
        w.line(f"{out} = {x}")
        w.line(f"if self.training:  # Keras GaussianDropout({rate!r}): x * N(1, rate / (1 - rate))")
        w.line(f"    {out} = {out} * (1.0 + torch.randn_like({out}) * {stddev!r})")
    else:  # ActivityRegularization
        w.line(f"{out} = {x}  # Keras ActivityRegularization: identity (its penalty is a loss term)")
    w.pass_mask(step, w.mask(mask))


# -- shapes -------------------------------------------------------------------------------------------


def emit_shape(w: Writer, step: Step) -> None:
    x, _ = one_input(step)
    m = module(step)
    out, cls = step.outputs[0], step.class_name
    if cls == "Flatten":
        moved = f"{x}.movedim(1, -1)" if m.channels_first and rank(step) > 2 else x
        w.line(f"{out} = {moved}.reshape({x}.shape[0], -1)")
    elif cls == "Reshape":
        w.line(f"{out} = {x}.reshape({x}.shape[0], {', '.join(map(str, m.target))})")
    elif cls == "Permute":
        w.line(f"{out} = {x}.permute(0, {', '.join(map(str, m.dims))})")
    else:  # RepeatVector
        w.line(f"{out} = {x}.unsqueeze(1).repeat(1, {m.n}, 1)")


# -- pooling and convolution --------------------------------------------------------------------------


def _same_padding_lines(w: Writer, x: str, window: int, stride: int, fill: str) -> tuple[str, str]:
    """Lines padding ``x`` (B, C, T) as TensorFlow's "same" does; the padded variable and the padding."""
    total, padded = w.local("pad"), w.local(f"{x}_padded")
    w.line(
        f"{total} = max((-(-{x}.shape[2] // {stride}) - 1) * {stride} + {window} - {x}.shape[2], 0)"
        "  # TensorFlow's 'same': the smaller half on the left"
    )
    pads = f"({total} // 2, {total} - {total} // 2)"
    w.line(f"{padded} = F.pad({x}, {pads}{fill})")
    return padded, pads


def emit_global_pooling(w: Writer, step: Step) -> None:
    x, mask = one_input(step)
    m = module(step)
    axis = 1 if m.data_format == "channels_last" else 2
    keep = ", keepdim=True" if m.keepdims else ""
    out = step.outputs[0]
    if step.class_name == "GlobalMaxPooling1D":
        ignored = "  # Keras ignores the mask here" if mask is not None else ""
        w.line(f"{out} = {x}.amax(dim={axis}{keep}){ignored}")
        return
    mask = w.mask(mask)
    if mask is None:
        w.line(f"{out} = {x}.mean(dim={axis}{keep})")
        return
    present = w.local("present")
    w.line("# Keras averages the present steps only (a fully masked row gives NaN, as in Keras)")
    w.line(f"{present} = {mask}.unsqueeze({2 if axis == 1 else 1})")
    kept = f"({x} * {present})" if step.keras2 else f"torch.where({present}, {x}, 0.0)"
    total = w.local("total")
    w.line(f"{total} = {kept}.sum(dim={axis}{keep})")
    w.line(f"{out} = {total} / {present}.sum(dim={axis}{keep})")


def emit_pooling(w: Writer, step: Step) -> None:
    x, _ = one_input(step)
    m = module(step)
    attr, out = step.attribute, step.outputs[0]
    torch_class = "MaxPool1d" if step.class_name == "MaxPooling1D" else "AvgPool1d"
    w.build(step, [f"self.{attr} = nn.{torch_class}({m.pool_size}, stride={m.strides})"], {})
    channels_first = m.data_format == "channels_first"
    source = x if channels_first else w.local(f"{x}_channels")
    if not channels_first:
        w.line(f"{source} = {x}.transpose(1, 2)  # (B, C, T) for torch")
    result = f"self.{attr}({source})"
    if m.padding == "same" and torch_class == "MaxPool1d":
        source, _ = _same_padding_lines(w, source, m.pool_size, m.strides, ', value=float("-inf")')
        result = f"self.{attr}({source})"
    elif m.padding == "same":
        padded, pads = _same_padding_lines(w, source, m.pool_size, m.strides, "")
        counted = w.local("counted")
        w.line(f"{counted} = self.{attr}(F.pad(torch.ones_like({source}[:, :1]), {pads}))  # real steps")
        result = f"(self.{attr}({padded}) / {counted})"
        w.line("# Keras's mean leaves the padding out")
    w.line(f"{out} = {result}" + ("" if channels_first else ".transpose(1, 2)"))


def emit_conv1d(w: Writer, step: Step) -> None:
    x, _ = one_input(step)
    m = module(step)
    attr, out = step.attribute, step.outputs[0]
    options = f"stride={m.strides}, dilation={m.dilation_rate}, groups={m.groups}, bias={m.use_bias}"
    weights = {"weight": m.kernel.permute(2, 1, 0)}
    if m.use_bias:
        weights["bias"] = m.bias
    build = f"self.{attr} = nn.Conv1d({m.channels}, {m.filters}, {m.kernel_size}, {options})"
    w.build(step, [build], weights)
    channels_first = m.data_format == "channels_first"
    source = x if channels_first else w.local(f"{x}_channels")
    if not channels_first:
        w.line(f"{source} = {x}.transpose(1, 2)  # (B, C, T) for torch")
    window = (m.kernel_size - 1) * m.dilation_rate + 1
    if m.padding == "causal":
        padded = w.local(f"{source}_padded")
        w.line(f"{padded} = F.pad({source}, ({window - 1}, 0))  # Keras padding='causal'")
        source = padded
    elif m.padding == "same":
        source, _ = _same_padding_lines(w, source, window, m.strides, "")
    result = f"self.{attr}({source})" + ("" if channels_first else ".transpose(1, 2)")
    w.line(f"{out} = " + activation_code(step, m._activation, result))


# -- merges ---------------------------------------------------------------------------------------------


def _merge_inputs(w: Writer, step: Step) -> list[str]:
    """The inputs, those of lower rank lifted at axis 1 as Keras does."""
    if step.kwargs:
        raise refuse(step, f"call arguments {sorted(step.kwargs)} are not supported")
    ranks = [rank(step, i) for i in range(len(step.inputs))]
    top = max(ranks)
    return [x + ".unsqueeze(1)" * (top - r) for x, r in zip(step.inputs, ranks, strict=True)]


def emit_elementwise(w: Writer, step: Step) -> None:
    xs = _merge_inputs(w, step)
    masks = [w.mask(m) for m in step.input_masks]
    cls, out = step.class_name, step.outputs[0]
    # Keras 3 lets Multiply, Maximum and Minimum see the masks of the inputs it did not have to lift
    seen = [
        m if x == name and not step.keras2 else None
        for x, name, m in zip(xs, step.inputs, masks, strict=True)
    ]
    set_mask = None
    if cls in ("Multiply", "Maximum", "Minimum") and any(seen):
        set_mask = _masked_merge(w, step, xs, seen)
    elif cls == "Add":
        w.line(f"{out} = {' + '.join(xs)}")
    elif cls == "Subtract":
        w.line(f"{out} = {xs[0]} - {xs[1]}")
    elif cls == "Average":
        w.line(f"{out} = ({' + '.join(xs)}) / {len(xs)}")
    elif cls == "Multiply":
        w.line(f"{out} = {' * '.join(xs)}")
    else:
        fn = "torch.maximum" if cls == "Maximum" else "torch.minimum"
        expr = xs[0]
        for x in xs[1:]:
            expr = f"{fn}({expr}, {x})"
        w.line(f"{out} = {expr}")
    target = step.output_masks[0]
    if target is not None:
        present = [m for m in masks if m is not None]
        op, why = (" & ", "Keras 2: AND of the masks") if step.keras2 else (" | ", "Keras 3: OR of the masks")
        w.line(f"{target} = {set_mask or op.join(present)}" + ("" if set_mask else f"  # {why}"), target)


def _masked_merge(w: Writer, step: Step, xs: list[str], masks: list[str | None]) -> str | None:
    """Keras 3's Multiply (a masked element counts as 1; zero where every input is masked) and Maximum /
    Minimum (a masked element is taken from the other side); the mask they set, or None."""
    out = step.outputs[0]
    if step.class_name == "Multiply":
        w.line("# Keras 3: a masked element counts as 1")
        factors = [
            f"torch.where({m}.unsqueeze(-1), {x}, 1.0)" if m else x for x, m in zip(xs, masks, strict=True)
        ]
        w.line(f"{out} = {' * '.join(factors)}")
        if not all(masks):
            return None
        every = " | ".join(m for m in masks if m)
        w.line(f"{out} = torch.where(({every}).unsqueeze(-1), {out}, 0.0)  # 0 where every input is masked")
        return every
    fn = "torch.maximum" if step.class_name == "Maximum" else "torch.minimum"
    w.line("# Keras 3: a masked element of one side is taken from the other")
    w.line(f"{out} = {xs[0]}")
    first = masks[0]
    union: list[str] | None = [first] if first is not None else None
    for x, m in zip(xs[1:], masks[1:], strict=True):
        if m is not None:
            kept = w.local(f"{x}_kept")
            w.line(f"{kept} = torch.where({m}.unsqueeze(-1), {x}, {out})")
            x = kept
        if union is not None:
            joined = union[0] if len(union) == 1 else f"({' | '.join(union)})"
            w.line(f"{out} = torch.where({joined}.unsqueeze(-1), {out}, {x})")
        union = union + [m] if union is not None and m is not None else None
        w.line(f"{out} = {fn}({out}, {x})")
    return None if union is None else " | ".join(union)


def emit_concatenate(w: Writer, step: Step) -> None:
    if step.kwargs:
        raise refuse(step, f"call arguments {sorted(step.kwargs)} are not supported")
    r = rank(step)
    axis = module(step).axis % r
    out = step.outputs[0]
    w.line(f"{out} = torch.cat([{', '.join(step.inputs)}], dim={axis if axis != r - 1 else -1})")
    target = step.output_masks[0]
    if target is None:
        return
    masks = [w.mask(m) for m in step.input_masks]
    if r == 3 and axis == 2:
        present = [m for m in masks if m is not None]
        if step.keras2:
            w.line(
                f"{target} = {' & '.join(present)}  # Keras 2: a step is present where all masks say so",
                target,
            )
        elif len(present) < len(masks):
            w.line(
                f"{target} = torch.ones_like({present[0]})  # Keras 3: an unmasked input makes every "
                "step present",
                target,
            )
        else:
            w.line(f"{target} = {' | '.join(present)}  # Keras 3: present where any mask says so", target)
    elif r == 3 and axis == 1:
        pieces = [
            m if m is not None else f"torch.ones_like({x}[..., 0], dtype=torch.bool)"
            for x, m in zip(step.inputs, masks, strict=True)
        ]
        w.line(f"{target} = torch.cat([{', '.join(pieces)}], dim=1)", target)
    else:
        raise refuse(step, f"the mask of a concatenation along axis {axis} of rank-{r} inputs")


def emit_dot(w: Writer, step: Step) -> None:
    m = module(step)
    if len(step.inputs) != 2 or step.kwargs:
        raise refuse(step, "is called on two tensors without call arguments")
    ranks = [rank(step, 0), rank(step, 1)]
    a1, a2 = m._resolved(ranks)
    x1, x2 = step.inputs
    out = step.outputs[0]
    if m.normalize:
        eps = 1e-6 if step.keras2 else 1e-7
        n1, n2 = w.local(f"{x1}_unit"), w.local(f"{x2}_unit")
        w.line(f"{n1} = F.normalize({x1}, dim={a1}, eps={eps!r})  # Keras Dot(normalize=True)")
        w.line(f"{n2} = F.normalize({x2}, dim={a2}, eps={eps!r})")
        x1, x2 = n1, n2
    letters = string.ascii_lowercase
    left = list(letters[: ranks[0]])
    right = [left[0], *letters[ranks[0] : ranks[0] + ranks[1] - 1]]
    right[a2] = left[a1]
    axes = [c for i, c in enumerate(left) if i != a1] + [c for i, c in enumerate(right) if i not in (0, a2)]
    expr = f'torch.einsum("{"".join(left)},{"".join(right)}->{"".join(axes)}", {x1}, {x2})'
    if len(axes) == 1:
        expr += ".unsqueeze(1)"
    w.line(f"{out} = {expr}")


LAYER_EMITTERS: dict[str, Callable[[Writer, Step], None]] = {
    "Embedding": emit_embedding,
    "Masking": emit_masking,
    "Dense": emit_dense,
    "Activation": emit_activation,
    "TimeDistributed": emit_time_distributed,
    "BatchNormalization": emit_batch_normalization,
    "LayerNormalization": emit_layer_normalization,
    **{name: emit_noise for name in INFERENCE_IDENTITY_LAYERS},
    **{name: emit_shape for name in ("Flatten", "Reshape", "Permute", "RepeatVector")},
    "GlobalAveragePooling1D": emit_global_pooling,
    "GlobalMaxPooling1D": emit_global_pooling,
    "MaxPooling1D": emit_pooling,
    "AveragePooling1D": emit_pooling,
    "Conv1D": emit_conv1d,
    **{name: emit_elementwise for name in ("Add", "Subtract", "Average", "Multiply", "Maximum", "Minimum")},
    "Concatenate": emit_concatenate,
    "Dot": emit_dot,
}
