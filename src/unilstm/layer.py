"""The canonical layer: every option of Keras, MindSpore and torch LSTMs in one ``nn.Module``.

Parameters use torch's names and layout (``weight_ih_l0``, ``weight_hh_l0_reverse``, ``bias_ih_l1``,
``weight_hr_l0`` ...), so a ``state_dict`` moves to and from ``torch.nn.LSTM`` and MindSpore unchanged.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from .activations import resolve
from .kernels import DirectionWeights, run_stack
from .kernels.reference import WEIGHT_FIELDS
from .parameter_names import (
    LAYER_NORM_KINDS,
    parameter_kind,
    parameter_names,
    parameter_shape,
    parameter_suffix,
)
from .spec import SAME_AS_ACTIVATION, ActivationLike, LSTMSpec, MaskedOutput
from .steps import EVERY_STEP, CountedSteps

State = tuple[Tensor, Tensor]

__all__ = ["LSTM", "DirectionWeights", "compute_stack", "parameter_names", "parameter_shape"]


def compute_stack(
    spec: LSTMSpec,
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: list[list[DirectionWeights]],
    steps: CountedSteps = EVERY_STEP,
    *,
    training: bool,
    generator: torch.Generator | None = None,
    native_training: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Where every layer's call meets the kernels, after its front door's checks: the canonical layer's
    :meth:`LSTM._run`, and the Keras door, whose weights live in Keras's layout and reach here as torch
    views. ``steps`` travels unchanged to :func:`~unilstm.kernels.dispatch.run_stack`, which picks the
    kernel.

    Shapes: x (T, B, F) time-major, or packed data (N, F) when ``steps.packed``; h0 (L*D, B, P); c0
    (L*D, B, H); ``weights`` L lists of D :class:`DirectionWeights`. Returns output (T, B, D*P) (packed:
    (N, D*P)), h_n (L*D, B, P), c_n (L*D, B, H). ``native_training=False`` keeps torch's own kernel for CPU
    training of standard cells (the torch door: bit for bit torch.nn.LSTM)."""
    return run_stack(
        spec, x, h0, c0, weights, steps,
        training=training, generator=generator, native_training=native_training,
    )


def _cast_weights(weights: DirectionWeights, dtype: torch.dtype) -> DirectionWeights:
    """One direction's weights cast (differentiably) to ``dtype``."""
    def cast(w: Tensor | None) -> Tensor | None:
        return None if w is None else w.to(dtype)

    w_ih, w_hh, *rest = (cast(w) for w in weights.tensors())
    assert w_ih is not None and w_hh is not None
    return DirectionWeights(w_ih, w_hh, *rest)


#: the parameter kind of each DirectionWeights field
_FIELD_KINDS = {
    "w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh", "w_hr": "weight_hr",
    "peephole": "weight_ph", **{kind: kind for kind in LAYER_NORM_KINDS},
}


def _shape_text(shape: tuple[int, ...] | torch.Size) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


_PARAMETER_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_parameter_dtype(dtype: object) -> None:
    """The kernels compute in these four dtypes only: refuse any other before parameters are made."""
    if dtype is not None and dtype not in _PARAMETER_DTYPES:
        raise TypeError(
            "dtype: expected a floating-point dtype (torch.float16, torch.bfloat16, torch.float32 or "
            f"torch.float64), got {dtype!r}"
        )


class LSTM(nn.Module):
    r"""A multi-layer LSTM with the union of the Keras, MindSpore and torch feature sets.

    For each layer and direction, per step t (gate blocks [i, f, g, o] along 4H)::

        z_t = (x_t * m_x) W_ih^T + b_ih + (h_{t-1} * m_h) W_hh^T + b_hh
        i, f, o = sigma(z_i), sigma(z_f), sigma(z_o);   c_t = f * c_{t-1} + i * g(z_g)
        h_t = o * g(c_t),   then h_t = h_t W_hr^T when proj_size > 0

    with ``g = activation`` (tanh), ``sigma = recurrent_activation`` (sigmoid) and ``m_x``, ``m_h`` Keras's
    variational dropout masks while training. The cell variants (layer normalisation, peepholes, clips,
    coupled gates, zoneout, forget bias, a separate output activation) extend these equations as
    :mod:`unilstm.spec` writes them.

    Args:
        input_size: F, features of the input; ``None`` infers it from the first call (or :meth:`build`).
        hidden_size: H.
        num_layers: L, stacked layers.
        bias: keep ``bias_ih`` and ``bias_hh``.
        batch_first: tensors are (B, T, F) instead of (T, B, F).
        dropout: dropout on every layer's output but the last, while training (torch, MindSpore).
        bidirectional: D = 2 directions, outputs concatenated [forward, backward].
        proj_size: P > 0 adds ``weight_hr`` (P, H) and makes h and outputs P wide (torch).
        activation: g, the cell and output activation: a name (Keras 3 names), ``None`` (linear) or a
            callable on tensors.
        recurrent_activation: sigma, the gates' activation, in the same forms.
        input_dropout: Keras ``dropout``: a mask on each layer's input, drawn once per call.
        recurrent_dropout: Keras ``recurrent_dropout``: a mask on h_{t-1}, drawn once per call.
        per_gate_dropout: one independent mask per gate block; defaults to ``recurrent_dropout > 0`` like
            Keras.
        go_backwards: process the sequence reversed and return outputs in processing order (Keras).
        masked_output: ``"zero"`` or ``"previous"``: what masked steps output (see :class:`LSTMSpec`).
        stateful: the final states of a call become the initial states of the next one.
        layer_norm: layer-normalise the input and recurrent pre-activations and the cell state (adds
            ``ln_weight_ih``, ``ln_bias_ih``, ``ln_weight_hh``, ``ln_bias_hh`` (4H,) and ``ln_weight_c``,
            ``ln_bias_c`` (H,) per layer and direction; gains start at 1, biases at 0).
        layer_norm_eps: epsilon of the layer normalisations.
        peepholes: peephole connections (adds ``weight_ph`` (3H,), blocks [p_i, p_f, p_o]).
        gate_clip: ONNX's ``clip``: bound on every gate pre-activation.
        cell_clip: TF1's ``cell_clip``: bound on the cell state.
        proj_clip: TF1's ``proj_clip``: bound on the projected h.
        coupled_gates: ONNX's ``input_forget``: f = 1 - i.
        zoneout_hidden: zoneout rate of h (Krueger et al. 2016).
        zoneout_cell: zoneout rate of c.
        forget_bias: TF1's ``forget_bias``, added to the forget gate's pre-activation.
        output_activation: the activation of the cell state in h (ONNX's ``h``); ``"same"``: ``activation``.
        device: where parameters are created.
        dtype: the parameters' dtype: float16, bfloat16, float32 or float64 (another one is a TypeError).

    Shapes (N = batch, T = steps, P = proj_size or H):
        input: (T, N, F), or (N, T, F) with batch_first, or (T, F) unbatched.
        state: optional ``(h_0, c_0)``, (L*D, N, P) and (L*D, N, H), index ``layer * D + direction``
            ((L*D, P) and (L*D, H) unbatched); zeros when omitted.
        lengths: optional (N,) integers in [0, T]: steps at and past a length are padding.
        mask: optional (N, T) bool (Keras layout), True where a step counts; any pattern.
        output: (T, N, D*P) or (N, T, D*P); h_n (L*D, N, P), c_n (L*D, N, H): states after each
            sequence's last counted step.
    """

    #: CPU training runs the native kernel for every cell, standard ones included (faster than torch's
    #: kernel, float32 results within rounding of it); the torch door keeps torch's kernel, bit for bit.
    _native_training: bool = True

    def __init__(
        self,
        input_size: int | None,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        activation: ActivationLike = "tanh",
        recurrent_activation: ActivationLike = "sigmoid",
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        per_gate_dropout: bool | None = None,
        go_backwards: bool = False,
        masked_output: MaskedOutput = "zero",
        stateful: bool = False,
        layer_norm: bool = False,
        layer_norm_eps: float = 1e-5,
        peepholes: bool = False,
        gate_clip: float | None = None,
        cell_clip: float | None = None,
        proj_clip: float | None = None,
        coupled_gates: bool = False,
        zoneout_hidden: float = 0.0,
        zoneout_cell: float = 0.0,
        forget_bias: float = 0.0,
        output_activation: ActivationLike = SAME_AS_ACTIVATION,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        spec = LSTMSpec(
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            proj_size=proj_size,
            activation=activation,
            recurrent_activation=recurrent_activation,
            input_dropout=input_dropout,
            recurrent_dropout=recurrent_dropout,
            per_gate_dropout=recurrent_dropout > 0 if per_gate_dropout is None else per_gate_dropout,
            go_backwards=go_backwards,
            masked_output=masked_output,
            stateful=stateful,
            layer_norm=layer_norm,
            layer_norm_eps=layer_norm_eps,
            peepholes=peepholes,
            gate_clip=gate_clip,
            cell_clip=cell_clip,
            proj_clip=proj_clip,
            coupled_gates=coupled_gates,
            zoneout_hidden=zoneout_hidden,
            zoneout_cell=zoneout_cell,
            forget_bias=forget_bias,
            output_activation=output_activation,
        )
        _check_parameter_dtype(dtype)
        super().__init__()
        self._init_from_spec(spec, device=device, dtype=dtype)

    @classmethod
    def from_spec(
        cls, spec: LSTMSpec, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> LSTM:
        """A layer computing ``spec``, with torch's default initialisation."""
        _check_parameter_dtype(dtype)
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._init_from_spec(spec, device=device, dtype=dtype)
        return layer

    def _init_from_spec(self, spec: LSTMSpec, *, device, dtype) -> None:
        resolve(spec.activation, "activation")
        resolve(spec.recurrent_activation, "recurrent_activation")
        resolve(spec.cell_output_activation, "output_activation")
        self.spec = spec
        self.states: State | None = None
        factory = {"device": device, "dtype": dtype}
        self._flat_weights_names = parameter_names(spec)
        for name in self._flat_weights_names:
            if spec.input_size is None and name.startswith("weight_ih_l0"):
                # torch's stub types UninitializedParameter as a plain Tensor; it is a Parameter subclass
                self.register_parameter(name, cast(nn.Parameter, UninitializedParameter(**factory)))
            else:
                shape = parameter_shape(spec, name)
                self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
        self.reset_parameters()
        self.flatten_parameters()  # as torch.nn.LSTM's constructor: a layer made on CUDA starts flattened

    # -- attributes users of torch.nn.LSTM expect -------------------------------------------------------
    input_size = property(lambda self: self.spec.input_size)
    hidden_size = property(lambda self: self.spec.hidden_size)
    num_layers = property(lambda self: self.spec.num_layers)
    bias = property(lambda self: self.spec.bias)
    batch_first = property(lambda self: self.spec.batch_first)
    dropout = property(lambda self: self.spec.dropout)
    bidirectional = property(lambda self: self.spec.bidirectional)
    proj_size = property(lambda self: self.spec.proj_size)

    @property
    def is_built(self) -> bool:
        return self.spec.input_size is not None

    def reset_parameters(self) -> None:
        """torch's initialisation: every parameter U(-1/sqrt(H), 1/sqrt(H)), in parameter order (peephole
        weights too); then layer-normalisation gains 1 and biases 0."""
        bound = 1.0 / math.sqrt(self.spec.hidden_size)
        with torch.no_grad():
            for parameter in self.parameters():
                if not isinstance(parameter, UninitializedParameter):
                    parameter.uniform_(-bound, bound)
            for name in self._flat_weights_names:
                kind = parameter_kind(name)
                if kind is not None and kind.startswith("ln_"):
                    getattr(self, name).fill_(1.0 if kind.startswith("ln_weight") else 0.0)

    def build(self, input_size: int) -> None:
        """Fix the input size of a layer created with ``input_size=None`` and initialise its input weights
        (U(-1/sqrt(H), 1/sqrt(H))). Does nothing when the layer already has that size."""
        if self.spec.input_size is not None:
            if input_size != self.spec.input_size:
                raise ValueError(
                    f"input_size: the layer was built for {self.spec.input_size}, got {input_size}"
                )
            return
        self.spec = self.spec.with_input_size(input_size)
        bound = 1.0 / math.sqrt(self.spec.hidden_size)
        for name in self._flat_weights_names:
            parameter = getattr(self, name)
            if isinstance(parameter, UninitializedParameter):
                parameter.materialize(parameter_shape(self.spec, name))
                with torch.no_grad():
                    parameter.uniform_(-bound, bound)
        self.flatten_parameters()

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[override]
        """As torch's lazy modules: an unbuilt layer saves its uninitialized input weights as they are."""
        for name, parameter in self._parameters.items():
            if parameter is not None:
                lazy = isinstance(parameter, UninitializedParameter)
                destination[prefix + name] = parameter if keep_vars or lazy else parameter.detach()
        for name, buffer in self._buffers.items():
            if buffer is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = buffer if keep_vars else buffer.detach()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        """An unbuilt layer takes its input size from the loaded ``weight_ih_l0`` (4H, F) and builds."""
        loaded = state_dict.get(prefix + "weight_ih_l0")
        if (
            not self.is_built
            and isinstance(loaded, Tensor)
            and not isinstance(loaded, UninitializedParameter)
            and loaded.dim() == 2
        ):
            self.build(int(loaded.shape[1]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- cuDNN weight layout ------------------------------------------------------------------------------
    mode = "LSTM"  # read by torch.nn.RNNBase.flatten_parameters (the cuDNN mode)

    @property
    def _flat_weights(self) -> list[Tensor]:
        """The parameters in torch's flat order (always current: read from the attributes on each access)."""
        return [getattr(self, name) for name in self._flat_weights_names]

    def flatten_parameters(self) -> None:
        """Make the parameters views into one contiguous cuDNN weight buffer, as ``torch.nn.LSTM`` does
        after ``.cuda()``. Without it cuDNN copies every weight into such a buffer on each call (and warns
        that the weights are "not part of single contiguous chunk of memory"). A no-op off CUDA and on an
        unbuilt layer."""
        weights = self._flat_weights
        if not self.is_built or not all(isinstance(w, Tensor) and w.is_cuda for w in weights):
            return
        if self.spec.cell_variants:  # cuDNN computes none of them, and its buffer has no place for theirs
            return
        nn.RNNBase.flatten_parameters(self)  # type: ignore[arg-type]  # reads only attributes this class has

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        result = super()._apply(fn, recurse)
        self.flatten_parameters()
        return result

    def direction_weights(self, dtype: torch.dtype | None = None) -> list[list[DirectionWeights]]:
        """The parameters grouped for the kernels: L lists of D :class:`DirectionWeights`; cast
        (differentiably) to ``dtype`` when it is given and differs from theirs."""
        names = self._weight_field_names()
        current = tuple(getattr(self, name) for name in self._flat_weights_names)
        cached = self.__dict__.get("_direction_weights")
        # the same parameter objects give the same groups (in-place updates are seen through them); a
        # replaced parameter (assignment, torch.func.functional_call) makes new ones
        if cached is not None and len(cached[0]) == len(current) and all(
            a is b for a, b in zip(cached[0], current, strict=True)
        ):
            layers = cached[1]
        else:
            layers = [
                [DirectionWeights(*(None if name is None else getattr(self, name) for name in fields))  # type: ignore[arg-type]
                 for fields in directions]
                for directions in names
            ]
            self.__dict__["_direction_weights"] = (current, layers)
        if dtype is None or dtype == self._parameter_dtype():
            return layers
        return [[_cast_weights(weights, dtype) for weights in directions] for directions in layers]

    def _weight_field_names(self) -> list[list[tuple[str | None, ...]]]:
        """Per layer and direction, the parameter name of each DirectionWeights field (``WEIGHT_FIELDS``
        order; None where the spec has no such parameter), computed once per spec."""
        cached = self.__dict__.get("_weight_names")
        if cached is not None and cached[0] is self.spec:
            return cached[1]
        present = set(self._flat_weights_names)
        names = [
            [
                tuple(
                    name if (name := _FIELD_KINDS[field] + parameter_suffix(layer, direction)) in present
                    else None
                    for field in WEIGHT_FIELDS
                )
                for direction in range(self.spec.num_directions)
            ]
            for layer in range(self.spec.num_layers)
        ]
        self.__dict__["_weight_names"] = (self.spec, names)
        return names

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """torch.nn.LSTM's ``all_weights``: per (layer, direction) the list of its parameters."""
        per_direction = len(self._flat_weights_names) // (self.spec.num_layers * self.spec.num_directions)
        flat = [getattr(self, name) for name in self._flat_weights_names]
        return [flat[i : i + per_direction] for i in range(0, len(flat), per_direction)]

    # -- states ---------------------------------------------------------------------------------------
    def reset_states(self, states: State | None = None) -> None:
        """Forget (or set) the stored states of a stateful layer: ``states`` is ``(h, c)`` shaped like
        ``(h_n, c_n)`` of a call."""
        if states is None:
            self.states = None
            return
        if not (isinstance(states, (tuple, list)) and len(states) == 2):
            raise TypeError(f"states must be a pair (h, c), got {type(states).__name__}")
        dtype, device = self._parameter_dtype(), self._parameter_device()
        h, c = (torch.as_tensor(s, dtype=dtype, device=device) for s in states)
        self.states = (h.detach(), c.detach())

    def _parameter_dtype(self) -> torch.dtype:
        return getattr(self, self._flat_weights_names[1]).dtype

    def _parameter_device(self) -> torch.device:
        return getattr(self, self._flat_weights_names[1]).device

    # -- the call -------------------------------------------------------------------------------------
    def forward(
        self,
        input: Tensor,
        state: State | None = None,
        *,
        lengths: Tensor | None = None,
        mask: Tensor | None = None,
        training: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, State]:
        """Run the stack. Shapes are in the class docstring. ``training`` defaults to ``self.training``;
        ``generator`` draws the dropout masks. The input (and states) must be on the parameters' device (a
        RuntimeError otherwise, as torch.nn.LSTM); meta tensors are refused (NotImplementedError)."""
        return self._checked_call(
            input, state, lengths=lengths, mask=mask, training=training, generator=generator
        )

    def _checked_call(
        self,
        input: Tensor,
        state: object,  # State | None when the caller is right; checked by _initial_state
        *,
        lengths: Tensor | None = None,
        mask: Tensor | None = None,
        training: bool | None = None,
        generator: torch.Generator | None = None,
        compute_dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, State]:
        """:meth:`forward` with the dtype the step is computed in: the parameters' (``None``), or another
        one they are cast to for the call (MindSpore computes in its input's dtype)."""
        spec = self.spec
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(
                f"input must be 3-D (batched) or 2-D (unbatched), got {input.dim()}-D with shape "
                f"{_shape_text(input.shape)}"
            )
        if not input.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got dtype {input.dtype}")
        if training is not None and not isinstance(training, bool):
            raise TypeError(f"training must be a bool or None, got {type(training).__name__} {training!r}")
        parameter_device = self._parameter_device()
        if input.device != parameter_device:
            raise RuntimeError(
                "Input and parameter tensors are not at the same device, found input tensor at "
                f"{input.device} and parameter tensor at {parameter_device}"
            )
        if input.is_meta:
            raise NotImplementedError(
                "input: unilstm computes values and meta tensors hold none; run the layer on cpu or cuda (a "
                "layer made on the meta device: move it with to_empty(device=...) and load its weights)"
            )
        batched = input.dim() == 3
        if not self.is_built:
            self.build(input.shape[-1])
        spec = self.spec
        if input.shape[-1] != spec.input_size:
            raise ValueError(
                f"input: expected {spec.input_size} features in the last dimension, got "
                f"{input.shape[-1]} (input shape {_shape_text(input.shape)})"
            )
        dtype = compute_dtype or self._parameter_dtype()
        if input.dtype != dtype:
            if not torch.is_autocast_enabled(input.device.type):
                raise TypeError(f"input: expected dtype {dtype} (the parameters' dtype), got {input.dtype}")
            # Like torch.nn.LSTM under autocast: take any float input; the kernels lower the precision.
            input = input.to(dtype)
            if state is not None and isinstance(state, (tuple, list)):
                state = tuple(s.to(dtype) if isinstance(s, Tensor) else s for s in state)
        x = input if batched else input.unsqueeze(1)
        if batched and spec.batch_first:
            x = x.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]

        h0, c0 = self._initial_state(state, batch, batched, x)
        counted = (
            EVERY_STEP if lengths is None and mask is None
            else self._counted_steps(lengths, mask, steps, batch, batched, x.device)
        )
        out, h_n, c_n = self._run(
            x, h0, c0, counted,
            training=self.training if training is None else bool(training),
            generator=generator,
            weights=self.direction_weights(compute_dtype),
        )
        if spec.stateful:
            self.states = (h_n.detach(), c_n.detach())
        if batched and spec.batch_first:
            out = out.transpose(0, 1)
        if not batched:
            out, h_n, c_n = out.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
        return out, (h_n, c_n)

    def _run(
        self,
        x: Tensor,
        h0: Tensor,
        c0: Tensor,
        steps: CountedSteps = EVERY_STEP,
        *,
        training: bool,
        generator: torch.Generator | None = None,
        weights: list[list[DirectionWeights]] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The canonical layer's one internal entry, after every check: x (T, B, F) time-major, or packed
        data (N, F) when ``steps.packed``; h0 (L*D, B, P), c0 (L*D, B, H); ``weights`` default to this
        layer's parameters. Returns output (T, B, D*P) (packed: (N, D*P)), h_n, c_n."""
        return compute_stack(
            self.spec, x, h0, c0, self.direction_weights() if weights is None else weights, steps,
            training=training, generator=generator, native_training=self._native_training,
        )

    def _initial_state(self, state: object, batch: int, batched: bool, x: Tensor) -> State:
        spec = self.spec
        layers = spec.num_layers * spec.num_directions
        h_shape = (layers, batch, spec.output_size)
        c_shape = (layers, batch, spec.hidden_size)
        if state is None and spec.stateful and self.states is not None:
            if self.states[0].shape[1] != batch:
                raise ValueError(
                    f"input: this stateful layer holds states for batch size {self.states[0].shape[1]}, got "
                    f"batch size {batch}; call reset_states() to start over with a new batch size"
                )
            return self.states
        if state is None:
            return x.new_zeros(h_shape), x.new_zeros(c_shape)
        if not (isinstance(state, (tuple, list)) and len(state) == 2):
            raise TypeError(f"state must be a pair (h_0, c_0), got {type(state).__name__}")
        expected = {"h_0": h_shape, "c_0": c_shape}
        checked = []
        for (name, shape), value in zip(expected.items(), state, strict=True):
            if not isinstance(value, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
            want = shape if batched else (shape[0], shape[2])
            if tuple(value.shape) != want:
                raise ValueError(
                    f"{name}: expected shape {_shape_text(want)}, got {_shape_text(value.shape)}"
                )
            if value.dtype != x.dtype:
                raise TypeError(f"{name}: expected dtype {x.dtype} (the input's dtype), got {value.dtype}")
            if value.device != x.device:
                raise RuntimeError(
                    "Input and hidden tensors are not at the same device, found input tensor at "
                    f"{x.device} and hidden tensor at {value.device}"
                )
            checked.append(value if batched else value.unsqueeze(1))
        return checked[0], checked[1]

    def _counted_steps(
        self, lengths: Tensor | None, mask: Tensor | None, steps: int, batch: int, batched: bool, device
    ) -> CountedSteps:
        """The checked ``lengths`` or ``mask`` as :class:`CountedSteps`: lengths alone stay lengths, a mask
        (alone or with lengths) becomes one (T, B) mask."""
        if lengths is not None:
            lengths = torch.as_tensor(lengths)
            if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
                raise TypeError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
            if not batched and lengths.dim() == 0:
                lengths = lengths.reshape(1)
            if tuple(lengths.shape) != (batch,):
                raise ValueError(
                    f"lengths: expected shape ({batch},) (one length per sequence), "
                    f"got {_shape_text(lengths.shape)}"
                )
            if batch and (int(lengths.min()) < 0 or int(lengths.max()) > steps):
                raise ValueError(
                    f"lengths must lie in [0, {steps}] (the number of steps), got min {int(lengths.min())} "
                    f"and max {int(lengths.max())}"
                )
            lengths = lengths.to(device=device, dtype=torch.int64)
        if mask is None:
            return EVERY_STEP if lengths is None else CountedSteps(lengths=lengths)
        mask = torch.as_tensor(mask, device=device)
        if not batched and mask.dim() == 1:
            mask = mask.unsqueeze(0)
        if tuple(mask.shape) != (batch, steps):
            raise ValueError(
                f"mask: expected shape ({batch}, {steps}) (batch, steps), got {_shape_text(mask.shape)}"
            )
        time_major = mask.to(torch.bool).t()
        if lengths is not None:
            length_mask = CountedSteps(lengths=lengths).step_mask(steps, device)
            assert length_mask is not None  # CountedSteps with lengths always has a mask
            time_major = time_major & length_mask
        return CountedSteps(mask=time_major)

    def extra_repr(self) -> str:
        spec = self.spec
        parts = [f"{spec.input_size}, {spec.hidden_size}"]
        defaults = LSTMSpec(input_size=spec.input_size, hidden_size=spec.hidden_size)
        for name in (
            "num_layers", "bias", "batch_first", "dropout", "bidirectional", "proj_size", "activation",
            "recurrent_activation", "input_dropout", "recurrent_dropout", "go_backwards", "masked_output",
            "stateful", "layer_norm", "layer_norm_eps", "peepholes", "gate_clip", "cell_clip", "proj_clip",
            "coupled_gates", "zoneout_hidden", "zoneout_cell", "forget_bias", "output_activation",
        ):
            value = getattr(spec, name)
            if value != getattr(defaults, name):
                parts.append(f"{name}={value!r}")
        return ", ".join(parts)
