"""MindSpore code for the Keras layers around the LSTMs (see :mod:`.model_code_mindspore`): what each
writes in ``__init__`` and ``construct``, the parameters it fills and the masks it hands on, following
``unilstm.keras_model``'s layers at inference (``load_model``'s eval mode)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..keras_names import stored_activation_name
from .model_code_mindspore_writer import StepWriter, emitter
from .model_program import INFERENCE_IDENTITY_LAYERS, PER_STEP_LAYERS

# -- activations ---------------------------------------------------------------------------------------------

#: Keras activation name -> MindSpore expression of ``{x}`` (Keras 3's hard_sigmoid; Keras 2's is below).
_ACTIVATIONS = {
    "linear": "{x}",
    "relu": "ops.relu({x})",
    "relu6": "ops.relu6({x})",
    "sigmoid": "ops.sigmoid({x})",
    "tanh": "tanh({x})",
    "softmax": "ops.softmax({x}, axis=-1)",
    "log_softmax": "log_softmax({x})",
    "softplus": "ops.softplus({x})",
    "softsign": "ops.softsign({x})",
    "elu": "ops.elu({x})",
    "selu": "ops.selu({x})",
    "exponential": "ops.exp({x})",
    "swish": "ops.silu({x})",
    "silu": "ops.silu({x})",
    "gelu": "ops.gelu({x}, approximate='none')",
    "mish": "{x} * tanh(ops.softplus({x}))",
    "hard_sigmoid": "ops.relu6({x} + 3) / 6",
}


#: activations written with a function of the module (MindSpore's own is off by more than 1e-5 on CPU).
_HELPER_OF = {"tanh": "tanh", "mish": "tanh", "log_softmax": "log_softmax"}


def activation(w: StepWriter, x: str, key: str = "activation") -> str:
    """The MindSpore expression of the layer's Keras activation applied to ``x``."""
    value = stored_activation_name(w.step.config.get(key))
    if isinstance(value, dict) and isinstance(value.get("class_name"), str):
        value = value["class_name"]  # Keras 2's legacy {"class_name": name, "config": {...}}
    name = "linear" if value is None else str(value).rsplit(".", 1)[-1]
    if name == "hard_sigmoid" and w.keras2:
        return f"ops.clamp(0.2 * {x} + 0.5, 0.0, 1.0)"  # Keras 2's hard_sigmoid
    if name not in _ACTIVATIONS:
        w.refuse(f"{key}={value!r} has no MindSpore counterpart here (supported: {', '.join(_ACTIVATIONS)})")
    if name in _HELPER_OF:
        w.helper(_HELPER_OF[name])
    return _ACTIVATIONS[name].format(x=x)


def _weight(module: Any, name: str) -> np.ndarray:
    return getattr(module, name).detach().cpu().numpy()


# -- Embedding, Masking, Dense, Activation -------------------------------------------------------------------


@emitter("Embedding")
def _embedding(w: StepWriter) -> None:
    """``nn.Embedding(input_dim, output_dim)`` (table ``embedding_table``); mask ``ids != 0`` with
    mask_zero. Ids must lie in [0, input_dim)."""
    module = w.layer
    w.build(f"nn.Embedding({module.input_dim}, {module.output_dim})")
    w.param("embedding_table", _weight(module, "embeddings"))
    ids = w.x
    program = w.cell.program
    if ids in program.inputs and not program.input_dtypes[program.inputs.index(ids)].startswith(
        ("int", "uint")
    ):
        ids = f"{ids}.astype(mindspore.int32)"  # Keras casts float ids to int32
    w.line(f"{w.out()} = self.{w.attr}({ids})")
    w.set_mask(0, f"{w.x} != 0" if module.mask_zero else None)


@emitter("Masking")
def _masking(w: StepWriter) -> None:
    """Steps whose features all equal mask_value are masked, their values zeroed."""
    value = w.layer.mask_value
    mask = w.step.output_masks[0] or w.temp(f"{w.attr}_mask")
    w.mask_line(
        mask, f"{mask} = ops.any({w.x} != {value!r}, -1)  # present unless every feature is {value!r}"
    )
    if w.keras2:
        w.line(f"{w.out()} = {w.x} * {mask}.expand_dims(-1).astype({w.x}.dtype)")
    else:
        w.line(f"{w.out()} = ops.where({mask}.expand_dims(-1), {w.x}, ops.zeros_like({w.x}))")
    w.masks_set.add(0)


@emitter("Dense")
def _dense(w: StepWriter) -> None:
    """``nn.Dense(in, units)`` on the last axis, then the activation; the mask passes on."""
    module = w.layer
    no_bias = "" if module.use_bias else ", has_bias=False"
    w.build(f"nn.Dense({module.in_features}, {module.units}{no_bias})")
    w.param("weight", _weight(module, "kernel").T)
    if module.use_bias:
        w.param("bias", _weight(module, "bias"))
    w.line(f"{w.out()} = {activation(w, f'self.{w.attr}({w.x})')}")
    w.pass_mask()


@emitter("Activation")
def _activation(w: StepWriter) -> None:
    w.line(f"{w.out()} = {activation(w, w.x)}")
    w.pass_mask()


@emitter(*INFERENCE_IDENTITY_LAYERS)
def _identity(w: StepWriter) -> None:
    """Regularization layers act in training only: the identity at inference."""
    w.line(f"{w.out()} = {w.x}  # {w.step.class_name}: training only, the identity at inference")
    w.pass_mask()


# -- normalization -------------------------------------------------------------------------------------------


@emitter("BatchNormalization")
def _batch_norm(w: StepWriter) -> None:
    """``nn.BatchNorm1d(C)`` with Keras's moving statistics; channels last are moved to axis 1 for it."""
    module = w.layer
    rank = len(module.spec.input_shape)
    if rank not in (2, 3) or (rank == 3 and module.axis not in (1, 2)) or (rank == 2 and module.axis != 1):
        w.refuse(f"axis {module.axis} of rank-{rank} inputs: nn.BatchNorm1d normalizes axis 1 of 2-D/3-D")
    w.build(f"nn.BatchNorm1d({module.channels}, eps={module.epsilon!r}, momentum={module.momentum!r})")
    channels = module.channels
    w.param("gamma", _weight(module, "gamma") if module.scale else np.ones(channels))
    w.param("beta", _weight(module, "beta") if module.center else np.zeros(channels))
    w.param("moving_mean", _weight(module, "moving_mean"))
    w.param("moving_variance", _weight(module, "moving_variance"))
    if not (module.scale and module.center):
        w.line(
            f"# {w.where}: Keras has no {'gamma' if not module.scale else 'beta'}; the checkpoint holds "
            f"{'ones' if not module.scale else 'zeros'}"
        )
    if rank == 3 and module.axis == 2:
        w.line(f"{w.out()} = self.{w.attr}({w.x}.swapaxes(1, 2)).swapaxes(1, 2)  # channels last")
    else:
        w.line(f"{w.out()} = self.{w.attr}({w.x})")
    w.pass_mask()


@emitter("LayerNormalization")
def _layer_norm(w: StepWriter) -> None:
    """``nn.LayerNorm`` over the trailing axes Keras normalizes."""
    module = w.layer
    rank = len(module.spec.input_shape)
    axes = list(module.axes)
    if axes != list(range(axes[0], rank)):
        w.refuse(f"axis {axes}: nn.LayerNorm normalizes the trailing axes only")
    if module.rms_scaling:
        w.refuse("rms_scaling=True has no nn.LayerNorm counterpart")
    shape = tuple(module.param_shape)
    w.build(
        f"nn.LayerNorm({shape!r}, begin_norm_axis={axes[0]}, begin_params_axis={axes[0]}, "
        f"epsilon={module.epsilon!r})"
    )
    w.param("gamma", _weight(module, "gamma") if module.scale else np.ones(shape))
    w.param("beta", _weight(module, "beta") if module.center else np.zeros(shape))
    w.line(f"{w.out()} = self.{w.attr}({w.x})")
    w.pass_mask()


# -- TimeDistributed -----------------------------------------------------------------------------------------

@emitter("TimeDistributed")
def _time_distributed(w: StepWriter) -> None:
    """The inner layer on every step: a layer of the last axis (Dense, Activation ...) directly on
    (B, T, ...), others on (B * T, ...) reshaped back. The mask passes on."""
    from .model_code_mindspore_writer import EMITTERS
    from .model_program import Step

    inner = w.layer.layer
    class_name = inner.spec.class_name
    write = EMITTERS.get(class_name)
    if write is None or class_name in (
        "LSTM",
        "CuDNNLSTM",
        "Bidirectional",
        "Masking",
        "Embedding",
        "TimeDistributed",
        "GlobalAveragePooling1D",
    ):
        w.refuse(f"its inner layer {class_name} is not supported")
    direct = class_name in PER_STEP_LAYERS
    flat = w.x if direct else w.temp(f"{w.attr}_samples")
    flat_out = w.out() if direct else w.temp(f"{w.attr}_samples_out")
    if not direct:
        w.line(f"{flat} = {w.x}.reshape((-1,) + {w.x}.shape[2:])  # TimeDistributed: every step as a sample")
    inner_step = Step(
        w.step.layer,
        w.attr,
        class_name,
        dict(inner.spec.config),
        inner,
        [flat],
        False,
        [None],
        {},
        [flat_out],
        [None],
        [],
        None,
    )
    inner_writer = StepWriter(inner_step, w.cell)
    inner_writer.first_call = w.first_call
    write(inner_writer)
    if not direct:
        w.line(f"{w.out()} = {flat_out}.reshape({w.x}.shape[:2] + {flat_out}.shape[1:])")
    w.pass_mask()


# -- operations Keras 3 records ------------------------------------------------------------------------------

_COMPARISONS = {"NotEqual": "!=", "Equal": "=="}
_LOGICAL = {"LogicalAnd": "ops.logical_and", "LogicalOr": "ops.logical_or"}


@emitter("NotEqual", "Equal", "LogicalAnd", "LogicalOr", "LogicalNot", "ConvertToTensor", "Any", "All")
def _operation(w: StepWriter) -> None:
    """``keras.ops`` calls recorded between layers (most often the mask ``NotEqual(ids, 0)``)."""
    step = w.step
    name = step.class_name
    arguments = [*step.inputs, *(repr(a) if not isinstance(a, str) else a for a in step.args)]
    if name in _COMPARISONS or name in _LOGICAL:
        if len(arguments) != 2:
            w.refuse(f"expects two arguments, got {len(arguments)}")
        first, second = arguments
        text = (
            f"{first} {_COMPARISONS[name]} {second}"
            if name in _COMPARISONS
            else f"{_LOGICAL[name]}({first}, {second})"
        )
    elif name == "LogicalNot":
        text = f"ops.logical_not({w.x})"
    elif name == "ConvertToTensor":
        dtype = step.kwargs.get("dtype", step.config.get("dtype"))
        if step.args or step.kwargs.get("sparse") or step.kwargs.get("ragged"):
            w.refuse("only convert_to_tensor(x[, dtype]) is supported")
        text = w.x if dtype is None else f"{w.x}.astype(mindspore.{dtype})"
    else:
        axis = step.kwargs.get("axis", step.args[0] if step.args else None)
        keepdims = bool(step.kwargs.get("keepdims", False))
        text = f"ops.{name.lower()}({w.x}.astype(mindspore.bool_), {axis!r}, keep_dims={keepdims})"
    w.line(f"{w.out()} = {text}")
    w.set_mask(0, None)


# -- shapes --------------------------------------------------------------------------------------------------


@emitter("Flatten", "Reshape", "Permute", "RepeatVector")
def _shape(w: StepWriter) -> None:
    """Reshaping layers; none of them carries a mask on."""
    module, x = w.layer, w.x
    name = w.step.class_name
    if name == "Flatten":
        if module.channels_first and len(module.spec.input_shape) > 2:
            rank = len(module.spec.input_shape)
            x = f"ops.transpose({x}, {(0, *range(2, rank), 1)!r})"
        text = f"{x}.reshape({x}.shape[0], -1)"
    elif name == "Reshape":
        text = f"{x}.reshape(({x}.shape[0], {', '.join(map(str, module.target))}))"
    elif name == "Permute":
        text = f"ops.transpose({x}, {(0, *module.dims)!r})"
    else:
        text = f"ops.tile({x}.expand_dims(1), (1, {module.n}, 1))"
    w.line(f"{w.out()} = {text}")
    w.set_mask(0, None)


