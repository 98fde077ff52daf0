"""MindSpore code for Keras's merges, Dot, attention, pooling and Conv1D (see :mod:`.model_code_mindspore`),
following ``unilstm.keras_model``'s layers at inference."""

from __future__ import annotations

import numpy as np

from .model_code_mindspore_layers import _weight, activation
from .model_code_mindspore_writer import StepWriter, emitter

# -- elementwise merges, Concatenate, Dot --------------------------------------------------------------------

_OPERATORS = {"Add": " + ", "Subtract": " - ", "Multiply": " * "}


def _lifted(w: StepWriter) -> list[str]:
    """The inputs, those of lower rank given size-1 axes at axis 1 as Keras does."""
    shapes = w.layer.spec.input_shapes
    top = max(len(s) for s in shapes)
    out = []
    for name, shape in zip(w.step.inputs, shapes, strict=True):
        for _ in range(top - len(shape)):
            name = f"{name}.expand_dims(1)"
        out.append(name)
    return out


def _merged_mask(w: StepWriter, masks: list[str | None]) -> str | None:
    """Keras 3: the OR of the masks when every input has one; Keras 2: the AND of those there are."""
    present = [m for m in masks if m is not None]
    if not present or (not w.keras2 and len(present) < len(masks)):
        return None
    function = "ops.logical_and" if w.keras2 else "ops.logical_or"
    text = present[0]
    for mask in present[1:]:
        text = f"{function}({text}, {mask})"
    return text


@emitter("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
def _merge(w: StepWriter) -> None:
    """Elementwise merges (inputs of lower rank lifted as Keras does); Keras 3's value rules where masks
    reach a Multiply, Maximum or Minimum in :func:`_masked_merge`."""
    name = w.step.class_name
    masks = [w.mask(i) for i in range(len(w.step.inputs))]
    if w.step.kwargs:
        w.refuse(f"unsupported call arguments: {', '.join(sorted(w.step.kwargs))}")
    inputs = _lifted(w)
    shapes = w.layer.spec.input_shapes
    top = max(len(s) for s in shapes)
    # Keras 3 reads the masks off the tensors: a lifted input is a new tensor, without one
    seen = [m if len(s) == top else None for m, s in zip(masks, shapes, strict=True)]
    if name in ("Multiply", "Maximum", "Minimum") and not w.keras2 and any(seen):
        w.set_mask(0, _masked_merge(w, inputs, seen) or _merged_mask(w, masks))
        return
    if name in _OPERATORS:
        text = _OPERATORS[name].join(inputs)
    elif name == "Average":
        text = f"({' + '.join(inputs)}) / {len(inputs)}"
    else:
        function = "ops.maximum" if name == "Maximum" else "ops.minimum"
        text = inputs[0]
        for other in inputs[1:]:
            text = f"{function}({text}, {other})"
    w.line(f"{w.out()} = {text}")
    w.set_mask(0, _merged_mask(w, masks))


def _masked_merge(w: StepWriter, inputs: list[str], masks: list[str | None]) -> str | None:
    """Keras 3's Multiply (a masked element counts as 1; where every input has a mask, zeros where all are
    masked) and Maximum / Minimum (left to right, a masked element of either side is taken from the other);
    returns the output mask the merge sets (the OR, where every input has a mask), else None."""
    out = w.out()
    if w.step.class_name == "Multiply":
        w.line("# Keras 3's Multiply: a masked element counts as 1")
        factors = [
            x if m is None else f"ops.where({m}.expand_dims(-1), {x}, ops.ones_like({x}))"
            for x, m in zip(inputs, masks, strict=True)
        ]
        w.line(f"{out} = {' * '.join(factors)}")
        if any(m is None for m in masks):
            return None
        either = w.step.output_masks[0] or w.temp(f"{out}_mask")
        w.mask_line(either, f"{either} = {_merged_mask(w, masks)}")
        w.line(f"{out} = ops.where({either}.expand_dims(-1), {out}, ops.zeros_like({out}))")
        return either
    function = "ops.maximum" if w.step.class_name == "Maximum" else "ops.minimum"
    w.line(f"# Keras 3's {w.step.class_name}: a masked element of either side is taken from the other")
    w.line(f"{out} = {inputs[0]}")
    so_far = masks[0]
    for x, m in zip(inputs[1:], masks[1:], strict=True):
        if m is not None:
            kept = w.temp(f"{out}_input")
            w.line(f"{kept} = ops.where({m}.expand_dims(-1), {x}, {out})")
            x = kept
        if so_far is not None:
            w.line(f"{out} = ops.where({so_far}.expand_dims(-1), {out}, {x})")
        w.line(f"{out} = {function}({out}, {x})")
        if so_far is not None and m is not None:
            union = w.temp(f"{out}_mask_so_far")
            w.mask_line(union, f"{union} = ops.logical_or({so_far}, {m})")
            so_far = union
        else:
            so_far = None
    return so_far


@emitter("Concatenate")
def _concatenate(w: StepWriter) -> None:
    """``ops.cat`` along the axis; the output mask as Keras builds it (masks widened to the inputs',
    all True for an input without one, joined along the axis, reduced over the last axis)."""
    module = w.layer
    rank = len(module.spec.input_shapes[0])
    axis = module.axis % rank
    w.line(f"{w.out()} = ops.cat(({', '.join(w.step.inputs)}), {axis})")
    masks = [w.mask(i) for i in range(len(w.step.inputs))]
    if w.step.output_masks[0] is None or not any(masks):
        w.set_mask(0, None)
        return
    pieces = []
    for x, m in zip(w.step.inputs, masks, strict=True):
        if m is None:
            pieces.append(f"ops.ones_like({x}, dtype=mindspore.bool_)")
        elif w.keras2:
            pieces.append(f"{m}.expand_dims(-1)")
        else:
            pieces.append(f"{m}.expand_dims(-1).broadcast_to({x}.shape)")
    reduce = "all" if w.keras2 else "any"
    w.set_mask(0, f"ops.{reduce}(ops.cat(({', '.join(pieces)}), {axis}), -1)")


@emitter("Dot")
def _dot(w: StepWriter) -> None:
    """Keras's batch_dot for rank-2 and rank-3 inputs: a sum of products, or ``ops.bmm`` with the summed
    axes put in place; ``normalize`` as each Keras generation normalizes. No output mask."""
    module = w.layer
    first, second = w.step.inputs
    ranks = [len(s) for s in module.spec.input_shapes]
    axes = [a % r for a, r in zip(module.axes, ranks, strict=True)]
    if module.normalize:
        w.line("# Dot(normalize=True): each input L2-normalized along its summed axis")
        normed = []
        for x, axis in zip((first, second), axes, strict=True):
            squares = f"({x} * {x}).sum({axis}, keepdims=True)"
            factor = (
                f"ops.rsqrt(ops.maximum({squares}, 1e-12))"
                if w.keras2
                else f"ops.minimum(ops.rsqrt({squares}), 1e7)"
            )
            name = w.temp(f"{x}_normalized")
            w.line(f"{name} = {x} * {factor}")
            normed.append(name)
        first, second = normed
    if ranks == [2, 2]:
        text = f"({first} * {second}).sum(1, keepdims=True)"
    elif ranks == [3, 3]:
        left = first if axes[0] == 2 else f"{first}.swapaxes(1, 2)"
        right = second if axes[1] == 1 else f"{second}.swapaxes(1, 2)"
        text = f"ops.bmm({left}, {right})"
    else:
        w.refuse(f"inputs of ranks {ranks}: only 2-D . 2-D and 3-D . 3-D are written")
    w.line(f"{w.out()} = {text}")
    w.set_mask(0, None)


# -- attention -----------------------------------------------------------------------------------------------


@emitter("Attention", "AdditiveAttention")
def _attention(w: StepWriter) -> None:
    """``DotAttention`` / ``ConcatAttention`` / ``AdditiveAttention`` (Cells written into the module): their
    ``scale`` / ``concat_score_weight`` are the Keras weights. The output carries the query's mask."""
    module = w.layer
    unknown = set(w.step.kwargs) - {"return_attention_scores", "use_causal_mask"}
    if unknown:
        w.refuse(f"unsupported call arguments: {', '.join(sorted(unknown))}")
    causal = bool(w.step.kwargs.get("use_causal_mask", False) or module.causal)
    if w.step.class_name == "AdditiveAttention":
        cell = "AdditiveAttention"
        arguments = [f"scale_shape={tuple(module.weight_shapes()[0])!r}"] if module.use_scale else []
    else:
        cell = "ConcatAttention" if module.score_mode == "concat" else "DotAttention"
        arguments = ["use_scale=True"] if module.use_scale else []
    if causal:
        arguments.append("causal=True")
    if w.keras2:
        arguments.append("keras2=True")
    w.build(f"{w.helper(cell)}({', '.join(arguments)})")
    for name, shape in zip(module.weight_names, module.weight_shapes(), strict=True):
        w.param(name, np.reshape(_weight(module, name), shape))
    inputs = list(w.step.inputs)
    query_mask, value_mask = w.mask(0), w.mask(1)
    call = inputs[:2] + ([f"key={inputs[2]}"] if len(inputs) > 2 else [])
    call += [f"query_mask={query_mask}"] if query_mask else []
    call += [f"value_mask={value_mask}"] if value_mask else []
    scores = bool(w.step.kwargs.get("return_attention_scores", False))
    targets = f"{w.out(0)}, {w.out(1)}" if scores else f"{w.out(0)}, _"
    w.line(f"{targets} = self.{w.attr}({', '.join(call)})")
    w.set_mask(0, query_mask)
    if scores:
        w.set_mask(1, None)


# -- pooling, Conv1D -----------------------------------------------------------------------------------------


@emitter("GlobalAveragePooling1D", "GlobalMaxPooling1D")
def _global_pooling(w: StepWriter) -> None:
    """The mean (over the present steps where a mask comes) or the maximum over the steps."""
    module = w.layer
    axis = 1 if module.data_format == "channels_last" else 2
    keep = ", keepdims=True" if module.keepdims else ""
    keep_dims = ", keep_dims=True" if module.keepdims else ""
    x, mask = w.x, w.mask(0)
    if w.step.class_name == "GlobalMaxPooling1D":
        text = f"ops.amax({x}, {axis}{keep})"
    elif mask is None:
        text = f"ops.mean({x}, {axis}{keep_dims})"
    else:
        present = w.temp(f"{w.attr}_present")
        w.line(f"{present} = {mask}.expand_dims({2 if axis == 1 else 1})  # the mean over the present steps")
        kept = (
            f"{x} * {present}.astype({x}.dtype)"
            if w.keras2
            else f"ops.where({present}, {x}, ops.zeros_like({x}))"
        )
        w.line(f"{w.out()} = ({kept}).sum({axis}{keep})")
        text = f"{w.out()} / {present}.astype({x}.dtype).sum({axis}{keep})"
    w.line(f"{w.out()} = {text}")
    w.set_mask(0, None)


def _same_padding(steps: int, window: int, stride: int) -> tuple[int, int]:
    total = max((-(-steps // stride) - 1) * stride + window - steps, 0)
    return total // 2, total - total // 2


def _time_steps(w: StepWriter) -> int | None:
    module = w.layer
    shape = module.spec.input_shape
    return shape[1] if module.data_format == "channels_last" else shape[2]


def _channels_first(w: StepWriter, x: str) -> str:
    return f"{x}.swapaxes(1, 2)" if w.layer.data_format == "channels_last" else x


@emitter("MaxPooling1D", "AveragePooling1D")
def _pooling(w: StepWriter) -> None:
    """``nn.MaxPool1d`` / ``nn.AvgPool1d`` on (B, C, T); "same" padding as TensorFlow's for the maximum
    (padding never wins), refused for the average (Keras does not count the padding)."""
    module = w.layer
    maximum = w.step.class_name == "MaxPooling1D"
    cell = "nn.MaxPool1d" if maximum else "nn.AvgPool1d"
    w.build(f"{cell}(kernel_size={module.pool_size}, stride={module.strides})")
    x = _channels_first(w, w.x)
    if module.padding == "same":
        steps = _time_steps(w)
        if not maximum or steps is None:
            w.refuse("padding='same' is written for MaxPooling1D over a known number of steps only")
        left, right = _same_padding(steps, module.pool_size, module.strides)
        if left or right:
            x = f"ops.pad({x}, ({left}, {right}), value=float('-inf'))"
    text = f"self.{w.attr}({x})"
    w.line(f"{w.out()} = {_channels_first(w, text)}")
    w.set_mask(0, None)


@emitter("Conv1D")
def _conv1d(w: StepWriter) -> None:
    """``nn.Conv1d`` (weight (filters, C / groups, 1, k)) on (B, C, T) with TensorFlow's padding written
    out (causal: on the left), then the activation."""
    module = w.layer
    window = (module.kernel_size - 1) * module.dilation_rate + 1
    options = [
        f"{key}={value}"
        for key, value in (
            ("stride", module.strides),
            ("dilation", module.dilation_rate),
            ("group", module.groups),
        )
        if value != 1
    ]
    options += ["pad_mode='valid'", f"has_bias={module.use_bias}"]  # MindSpore's defaults: 'same', False
    w.build(f"nn.Conv1d({module.channels}, {module.filters}, {module.kernel_size}, {', '.join(options)})")
    kernel = _weight(module, "kernel")  # (k, C / groups, filters)
    w.param("weight", kernel.transpose(2, 1, 0)[:, :, None, :])
    if module.use_bias:
        w.param("bias", _weight(module, "bias"))
    x = _channels_first(w, w.x)
    if module.padding == "causal":
        x = f"ops.pad({x}, ({window - 1}, 0))"
    elif module.padding == "same":
        steps = _time_steps(w)
        if steps is None:
            w.refuse("padding='same' over an unknown number of steps is not written")
        left, right = _same_padding(steps, window, module.strides)
        if left or right:
            x = f"ops.pad({x}, ({left}, {right}))"
    text = _channels_first(w, f"self.{w.attr}({x})")
    w.line(f"{w.out()} = {activation(w, text)}")
    w.set_mask(0, None)
