"""The interchange model: an LSTM stack as conversion moves it between file formats, independent of any
framework's classes.

An :class:`InterchangeLSTM` is what it computes (an :class:`~unilstm.spec.LSTMSpec`, Keras semantics
included), its parameters in torch layout under canonical names (``weight_ih_l0`` ...,
:mod:`unilstm.parameter_names`), whose conventions the source follows, and, for layers read from Keras
files, :class:`KerasConventions`: what a Keras layer does beyond the LSTM stack (which outputs it returns,
how a Bidirectional merges its halves).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .spec import LSTMSpec


@dataclass
class KerasConventions:
    """What a Keras layer does beyond the LSTM stack: its output conventions and its stored config.

    Attributes:
        class_name: ``"LSTM"`` or ``"Bidirectional"``.
        return_sequences: all outputs (True) or only the last one in processing order.
        return_state: the layer also returns its final states.
        merge_mode: a Bidirectional's ``concat`` / ``sum`` / ``mul`` / ``ave`` / ``None``.
        configs: the stored config of every Keras layer in the stack (one per layer).
        names: the Keras layer names (one per layer of the stack).
        keras2: written by Keras 2 (tf-keras): ``hard_sigmoid`` is Keras 2's.
        time_major: tf-keras's time_major=True.
    """

    class_name: str = "LSTM"
    return_sequences: bool = False
    return_state: bool = False
    merge_mode: str | None = "concat"
    configs: list[dict[str, Any] | None] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    keras2: bool = False
    time_major: bool = False


@dataclass
class InterchangeLSTM:
    """One LSTM stack as conversion sees it.

    Attributes:
        name: the layer's name (or key) in the source file, or the prefix of its parameters.
        spec: what it computes (Keras semantics included: activations, go_backwards, masked outputs).
        state: its parameters in torch layout under canonical names (``weight_ih_l0`` ...).
        framework: ``"keras"``, ``"mindspore"`` or ``"torch"``: whose conventions the source follows.
        keras: Keras's output conventions, for stacks read from Keras files.
        notes: what was not interpreted or is assumed (shown by ``inspect``).
        config_stored: False when the file holds weights only and the configuration is assumed.
        blocking: why no target can express this stack (its backward layer differs from the forward one,
            an activation is unreadable), None when nothing blocks it.
    """

    name: str
    spec: LSTMSpec
    state: OrderedDict[str, Tensor]
    framework: str
    keras: KerasConventions | None = None
    notes: list[str] = field(default_factory=list)
    config_stored: bool = True
    blocking: str | None = None
    #: the stack's parameter prefix in a state-dict source (``"lstm."``, ``"encoder.rnn."``), which a
    #: state-dict target keeps by default; "" for Keras sources and parameters at the root.
    source_prefix: str = ""

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.state.values())).dtype

    def describe(self) -> str:
        s = self.spec
        parts = [f"input_size={s.input_size}", f"hidden_size={s.hidden_size}"]
        if s.num_layers > 1:
            parts.append(f"num_layers={s.num_layers}")
        if s.bidirectional:
            parts.append("bidirectional")
        if not s.bias:
            parts.append("bias=False")
        if s.proj_size:
            parts.append(f"proj_size={s.proj_size}")
        if s.activation != "tanh":
            parts.append(f"activation={activation_text(s.activation)}")
        if s.recurrent_activation != "sigmoid":
            parts.append(f"recurrent_activation={activation_text(s.recurrent_activation)}")
        if s.go_backwards:
            parts.append("go_backwards")
        for name in s.cell_variants:  # each variant as its spec field says it
            value = s.cell_output_activation if name == "output_activation" else getattr(s, name)
            parts.append(name if value is True else f"{name}={activation_text(value)}")
        if self.keras is not None:
            parts.append(f"return_sequences={self.keras.return_sequences}")
            if self.keras.class_name == "Bidirectional":
                parts.append(f"merge_mode={self.keras.merge_mode}")
        return f"{self.name!r}: {', '.join(parts)}, {str(self.dtype).replace('torch.', '')}"


def activation_text(value: object) -> str:
    """An activation for messages: a name quoted, a callable by its ``__name__``."""
    if value is None or isinstance(value, str):
        return repr(value)
    return getattr(value, "__name__", repr(value))
