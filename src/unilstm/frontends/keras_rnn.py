"""``keras.layers.RNN`` and ``keras.layers.StackedRNNCells`` over Keras-style cells, on unilstm's engine.

``RNN(cell)`` runs a cell (``unilstm.keras.LSTMCell``, a :class:`StackedRNNCells`, or any Keras-style cell:
``output, new_states = cell(inputs, states[, training=...])`` with a ``state_size``) over a sequence with
Keras's conventions: masks, ``go_backwards``, ``initial_state``, ``return_sequences``, ``return_state``,
``stateful``, ``zero_output_for_mask``. A list of cells is wrapped in :class:`StackedRNNCells`, as Keras does.

Two roads compute the same numbers (``tests/frontends/test_keras_rnn.py`` checks them equal):

- fast: when every cell is a plain ``unilstm.keras.LSTMCell`` and no dropout is drawn (inference, or rates
  0), each cell runs over the whole sequence in one :func:`unilstm.layer.compute_stack` call, the function
  that also computes each step of the cell, so dispatch picks the fused, native or fast kernel for the
  whole sequence;
- step by step: otherwise the cell is called once per step (Keras's loop), its dropout masks drawn at the
  first step and kept for the sequence, then reset.

Per step t (in processing order: reversed input with ``go_backwards``), with m_t the mask (1 = counts)::

    y_t, s'_t = cell(x_t, s_{t-1})
    s_t = m_t * s'_t + (1 - m_t) * s_{t-1}                        a masked step keeps every state
    o_t = m_t * y_t + (1 - m_t) * o_{t-1}   (o_0 = 0)              Keras's "repeat the previous output"
    o_t = m_t * y_t                          with zero_output_for_mask

A stacked step feeds each cell's output to the next cell; masking applies to the whole stack at once, so the
fast road may run the cells one after another over the whole sequence (a masked step's value reaching the
next cell is never used by it: that cell keeps its states and its output is replaced).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..layer import compute_stack
from ..steps import EVERY_STEP, CountedSteps
from .keras import auto_name, unwrap_config
from .keras_cell import LSTMCell

__all__ = ["RNN", "StackedRNNCells"]

#: Keyword arguments of Keras's base Layer the RNN accepts (``dtype`` is the cells'; shapes only build).
_LAYER_KWARGS = (
    "name", "trainable", "dtype", "input_shape", "batch_input_shape", "input_dim", "input_length",
)

#: A state structure as Keras's ``state_size``: an int per state tensor, a list per cell with several.
StateSize = int | Sequence[Any]


def _call_cell(cell: Any, inputs: Tensor, states: list[Any], training: bool) -> tuple[Tensor, Any]:
    """``cell(inputs, states, training=training)``, without ``training`` for cells whose call lacks it
    (Keras passes it only where the call has the argument)."""
    if isinstance(cell, (LSTMCell, StackedRNNCells)):
        return cell(inputs, states, training=training)
    function = cell.forward if isinstance(cell, nn.Module) else getattr(cell, "call", cell)
    try:
        takes_training = "training" in inspect.signature(function).parameters
    except (TypeError, ValueError):  # builtins without a signature: do not pass it
        takes_training = False
    return cell(inputs, states, training=training) if takes_training else cell(inputs, states)


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [item for entry in value for item in _flatten(entry)]
    return [value]


def _count(size: StateSize) -> int:
    return 1 if isinstance(size, int) else sum(_count(entry) for entry in size)


def _pack(size: StateSize, flat: list[Any]) -> Any:
    """``flat`` tensors in the nesting of ``size`` (consumed from the front)."""
    if isinstance(size, int):
        return flat.pop(0)
    return [_pack(entry, flat) for entry in size]


def _pack_all(sizes: Sequence[Any], flat: Sequence[Any]) -> list[Any]:
    """``flat`` tensors as one entry per entry of ``sizes`` (a tensor for an int, a list for a list)."""
    remaining = list(flat)
    return [_pack(size, remaining) for size in sizes]


def _output_size(cell: Any) -> int:
    size = getattr(cell, "output_size", None)
    if size is not None:
        return int(size)
    state_size = cell.state_size
    return int(state_size if isinstance(state_size, int) else _flatten(state_size)[0])


def _check_cell(cell: Any) -> None:
    if not callable(cell):
        raise ValueError(f"Argument `cell` should have a `call` method. Received: cell={cell}")
    if getattr(cell, "state_size", None) is None:
        raise ValueError(
            "The RNN cell should have a `state_size` attribute (single integer or list of integers, one "
            f"integer per RNN state). Received: cell={cell}"
        )


def _keras2(cell: Any) -> bool:
    """Whether a cell (the first of a stack) came from a tf-keras config: its configs are written as
    tf-keras writes them."""
    if isinstance(cell, StackedRNNCells):
        cell = cell.cells[0]
    return bool(getattr(cell, "_keras2", False))


def _serialize(cell: Any) -> dict[str, Any]:
    """Keras's serialized form of a cell: ``{"module", "class_name", "config", "registered_name"}``."""
    if not isinstance(cell, (LSTMCell, StackedRNNCells)):
        raise NotImplementedError(f"get_config: cells of type {type(cell).__name__} cannot be serialized")
    class_name = "StackedRNNCells" if isinstance(cell, StackedRNNCells) else "LSTMCell"
    return {"module": "keras.layers", "class_name": class_name, "config": cell.get_config(),
            "registered_name": None}


def _deserialize(config: Mapping[str, Any], keras2: bool | None) -> Any:
    """A cell from its serialized form (``LSTMCell`` or ``StackedRNNCells`` of them)."""
    class_name = config.get("class_name") if isinstance(config, Mapping) else None
    if class_name == "StackedRNNCells":
        return StackedRNNCells.from_config(config, keras2=keras2)
    if class_name == "LSTMCell":
        return LSTMCell.from_config(config, keras2=keras2)
    raise ValueError(f"from_config: unsupported cell {class_name!r} (LSTMCell and StackedRNNCells are)")


def _zero_state(cell: Any, size: StateSize, batch: int, dtype: torch.dtype, device: torch.device) -> Any:
    if isinstance(size, int):
        return torch.zeros(batch, size, dtype=dtype, device=device)
    return [_zero_state(cell, entry, batch, dtype, device) for entry in size]


def _cell_dtype_device(cell: Any) -> tuple[torch.dtype, torch.device]:
    """The dtype and device a cell computes in (the first LSTMCell's; float32 on the CPU otherwise)."""
    if isinstance(cell, StackedRNNCells):
        cell = cell.cells[0]
    if isinstance(cell, LSTMCell):
        return cell.dtype, cell._device()
    return torch.float32, torch.device("cpu")


class StackedRNNCells(nn.Module):
    r"""``keras.layers.StackedRNNCells(cells)``: a list of cells as one cell.

    One step feeds each cell's output to the next: ``y^0 = x``, ``y^j, s^j' = cell_j(y^{j-1}, s^j)``; the
    step's output is the last cell's, y^n (B, output_size of the last cell).

    ``state_size`` is ``[cell.state_size for cell in cells]`` (``[[H_1, H_1], [H_2, H_2]]`` for two LSTM
    cells); ``call`` takes the states in that nesting (each (B, size); tf-keras's flat list
    ``[h_1, c_1, h_2, c_2]`` is accepted too) and returns ``output, new_states`` in it (Keras 3: with a
    single cell, that cell's states alone).
    """

    def __init__(self, cells: Sequence[Any], **kwargs: Any) -> None:
        unknown = [key for key in kwargs if key not in _LAYER_KWARGS]
        if unknown:
            raise ValueError(f"Unrecognized keyword arguments passed to StackedRNNCells: {unknown}")
        super().__init__()
        cells = list(cells)
        if not cells:
            raise ValueError("StackedRNNCells: `cells` must be a non-empty list of RNN cells")
        for cell in cells:
            _check_cell(cell)
        # module cells are registered (parameters(), state_dict() as "cells.<j>.kernel", to(), train())
        self.cells: Any = nn.ModuleList(cells) if all(isinstance(c, nn.Module) for c in cells) else cells
        for j, cell in enumerate(cells):
            if isinstance(cell, nn.Module) and not isinstance(self.cells, nn.ModuleList):
                self.add_module(f"cell_{j}", cell)
        self.name: str = kwargs.get("name") or auto_name("stacked_rnn_cells")
        self._trainable = bool(kwargs.get("trainable", True))
        self.eval()  # as the door's layers: training is opted into with train() or training=True

    @property
    def state_size(self) -> list[Any]:
        return [cell.state_size for cell in self.cells]

    @property
    def output_size(self) -> int:
        return _output_size(self.cells[-1])

    @property
    def built(self) -> bool:
        return all(getattr(cell, "built", True) for cell in self.cells)

    @property
    def weights(self) -> list[nn.Parameter]:
        return [w for cell in self.cells for w in getattr(cell, "weights", [])]

    @property
    def trainable_weights(self) -> list[nn.Parameter]:
        return [w for cell in self.cells for w in getattr(cell, "trainable_weights", [])]

    @property
    def losses(self) -> list[Tensor]:
        return [loss for cell in self.cells for loss in getattr(cell, "losses", [])]

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Build each cell for the previous one's output: (B, F), then (B, output_size of cell j-1)."""
        shape = tuple(input_shape)
        for cell in self.cells:
            if not getattr(cell, "built", True):
                cell.build(shape)
            shape = (shape[0], _output_size(cell))

    def get_initial_state(self, batch_size: int) -> list[Any]:
        """Zero states in ``state_size``'s nesting, each (batch_size, size)."""
        dtype, device = _cell_dtype_device(self)
        return [
            cell.get_initial_state(batch_size) if hasattr(cell, "get_initial_state")
            else _zero_state(cell, cell.state_size, batch_size, dtype, device)
            for cell in self.cells
        ]

    def reset_dropout_mask(self) -> None:
        for cell in self.cells:
            if hasattr(cell, "reset_dropout_mask"):
                cell.reset_dropout_mask()

    def reset_recurrent_dropout_mask(self) -> None:
        for cell in self.cells:
            if hasattr(cell, "reset_recurrent_dropout_mask"):
                cell.reset_recurrent_dropout_mask()

    def _per_cell(self, states: Sequence[Any]) -> list[Any]:
        """The states as one entry per cell (tf-keras's flat list regrouped)."""
        states = list(states)
        sizes = self.state_size
        if len(states) == len(sizes) and all(
            _count(size) == len(_flatten(entry)) for size, entry in zip(sizes, states, strict=True)
        ):
            return states
        flat = _flatten(states)
        if len(flat) != _count(sizes):
            raise ValueError(
                f"StackedRNNCells {self.name!r}: expected {_count(sizes)} state tensors "
                f"(state_size {sizes}), got {len(flat)}"
            )
        return _pack_all(sizes, flat)

    def get_config(self) -> dict[str, Any]:
        """Keras's StackedRNNCells config: name, trainable, dtype (the first cell's form) and the cells."""
        first = self.cells[0].get_config() if hasattr(self.cells[0], "get_config") else {}
        return {"name": self.name, "trainable": self._trainable, "dtype": first.get("dtype", "float32"),
                "cells": [_serialize(cell) for cell in self.cells]}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], keras2: bool | None = None) -> StackedRNNCells:
        """Cells from a Keras 3 or tf-keras StackedRNNCells config (or its serialized form)."""
        config = dict(unwrap_config(config, ("StackedRNNCells",)))
        cells = [_deserialize(cell, keras2) for cell in config.pop("cells")]
        return cls(cells, **{k: v for k, v in config.items() if k in ("name", "trainable")})

    def step(self, inputs: Tensor, states: Sequence[Any], training: bool) -> tuple[Tensor, list[Any]]:
        """One step; returns the output and the new states, always one entry per cell."""
        new_states = []
        for cell, cell_states in zip(self.cells, self._per_cell(states), strict=True):
            nested = isinstance(cell_states, (list, tuple))
            inputs, out_states = _call_cell(cell, inputs, list(cell_states) if nested else [cell_states],
                                            training)
            out_states = list(out_states) if isinstance(out_states, (list, tuple)) else [out_states]
            new_states.append(out_states if nested else out_states[0])
        return inputs, new_states

    def forward(  # type: ignore[override]
        self, inputs: Any, states: Sequence[Any], training: bool | None = None
    ) -> tuple[Tensor, Any]:
        """``output, new_states = cells(inputs, states, training)``: inputs (B, F), output (B, H_last)."""
        training = self.training if training is None else bool(training)
        output, new_states = self.step(inputs, states, training)
        return output, (new_states[0] if len(new_states) == 1 else new_states)


class RNN(nn.Module):
    r"""``keras.layers.RNN(cell, return_sequences=False, return_state=False, go_backwards=False,
    stateful=False, unroll=False, zero_output_for_mask=False, **kwargs)`` on unilstm's engine (tf-keras's
    ``time_major`` too; ``unroll`` is accepted and has no numerical effect).

    ``cell``: an ``unilstm.keras.LSTMCell``, a list of cells (wrapped in :class:`StackedRNNCells`), or any
    Keras-style cell. The recurrence and the masking rules are in the module docstring.

    Call ``layer(inputs, initial_state=None, mask=None, training=None)`` (Keras's positional order):

    - inputs (B, T, F) ((T, B, F) with time_major), numpy or torch, cast to the (first) cell's dtype;
    - mask (B, T) booleans (Keras's nested masks: the first one; (T, B) with time_major), True = counts;
    - initial_state: one entry per ``state_size`` entry (``[h0, c0]`` for an LSTMCell, ``[[h0_1, c0_1],
      [h0_2, c0_2]]`` for two stacked ones; a flat list is accepted), each (B, size);
    - returns the output, (B, T, H) with return_sequences (processing order, as Keras) else (B, H) (the
      last processed step's), H the last cell's output size; with return_state the tuple
      ``(output, *states)``: ``(output, h, c)`` for an LSTMCell, ``(output, [h_1, c_1], [h_2, c_2])``
      for two stacked ones (Keras 3 and tf-keras alike).

    ``training=None`` means ``self.training``; the layer is created in eval mode (``train()`` plays
    Keras's ``fit``). ``stateful`` keeps the final states (detached) for the next call, with a fixed batch
    size; ``reset_states(states=None)`` / ``reset_state()`` zero or set them.
    """

    def __init__(
        self,
        cell: Any,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        zero_output_for_mask: bool = False,
        time_major: bool = False,
        **kwargs: Any,
    ) -> None:
        unknown = [key for key in kwargs if key not in _LAYER_KWARGS]
        if unknown:
            raise ValueError(
                f"Unrecognized keyword arguments passed to RNN: { {k: kwargs[k] for k in unknown} }"
            )
        super().__init__()
        if isinstance(cell, (list, tuple)):
            cell = StackedRNNCells(cell)
        _check_cell(cell)
        state_size = cell.state_size
        if not isinstance(state_size, (list, tuple, int)):
            raise ValueError(
                "state_size must be an integer, or a list/tuple of integers (one for each state tensor)."
            )
        self.cell = cell  # a module cell is registered as a submodule by this assignment
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.time_major = bool(time_major)
        self.name: str = kwargs.get("name") or auto_name("rnn")
        self._trainable = bool(kwargs.get("trainable", True))
        self._states: list[Tensor] | None = None  # flat
        self._expected_batch_size: int | None = None
        self.eval()

    # -- Keras's layer API ----------------------------------------------------------------------------
    @property
    def state_size(self) -> list[Any]:
        """The cell's ``state_size`` as a list (an int becomes ``[int]``)."""
        size = self.cell.state_size
        return [size] if isinstance(size, int) else list(size)

    @property
    def built(self) -> bool:
        return bool(getattr(self.cell, "built", True))

    @property
    def states(self) -> list[Any] | None:
        """A stateful layer's kept states in ``state_size``'s nesting; None before its first call."""
        return None if self._states is None else _pack_all(self.state_size, self._states)

    @property
    def weights(self) -> list[nn.Parameter]:
        return list(getattr(self.cell, "weights", []))

    @property
    def trainable_weights(self) -> list[nn.Parameter]:
        return list(getattr(self.cell, "trainable_weights", []))

    @property
    def losses(self) -> list[Tensor]:
        """The cell's weight-regularizer losses (Keras's ``layer.losses``)."""
        return list(getattr(self.cell, "losses", []))

    def get_weights(self) -> list[np.ndarray]:
        """Every cell's ``get_weights()`` in order (Keras layout)."""
        return [w.detach().cpu().numpy().copy() for w in self.weights]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Set every cell's weights from one list, in :meth:`get_weights`'s order."""
        weights = list(weights)
        cells = self.cell.cells if isinstance(self.cell, StackedRNNCells) else [self.cell]
        expected = sum(len(getattr(c, "weights", [])) for c in cells)
        if len(weights) != expected:
            raise ValueError(
                f"set_weights: layer {self.name!r} expects {expected} weights, got {len(weights)}"
            )
        for cell in cells:
            count = len(getattr(cell, "weights", []))
            if count:
                cell.set_weights(weights[:count])
                weights = weights[count:]

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Build the cell for steps of (B, F) from inputs of ``input_shape`` (B, T, F)."""
        shape = tuple(input_shape)
        batch = shape[1] if self.time_major else shape[0]
        if not self.built:
            self.cell.build((batch, shape[-1]))

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> Any:
        """Keras 3's shapes: the output's, then with return_state one per ``state_size`` entry."""
        shape = tuple(input_shape)
        batch, steps = (shape[1], shape[0]) if self.time_major else (shape[0], shape[1])
        units = _output_size(self.cell)
        output: tuple[int | None, ...]
        if self.return_sequences:
            output = (steps, batch, units) if self.time_major else (batch, steps, units)
        else:
            output = (batch, units)
        if not self.return_state:
            return output
        states = [
            (batch, s) if isinstance(s, int) else [(batch, int(x)) for x in _flatten(s)]
            for s in self.state_size
        ]
        return (output, *states)

    def get_initial_state(self, batch_size: int) -> list[Any]:
        """Zero states, one entry per ``state_size`` entry, each (batch_size, size)."""
        if hasattr(self.cell, "get_initial_state"):
            state = self.cell.get_initial_state(batch_size)
            return list(state) if isinstance(state, (list, tuple)) else [state]
        dtype, device = _cell_dtype_device(self.cell)
        return [_zero_state(self.cell, s, batch_size, dtype, device) for s in self.state_size]

    def reset_states(self, states: Sequence[Any] | None = None) -> None:
        """Zero the kept states of a stateful layer, or set them (``states`` nested as ``state_size`` or
        flat, each (B, size))."""
        if not self.stateful:
            raise AttributeError(
                f"Layer must be stateful. reset_states: layer {self.name!r} has stateful=False"
            )
        if states is None:
            if self._states is not None:
                self._states = [torch.zeros_like(s) for s in self._states]
            return
        dtype, device = _cell_dtype_device(self.cell)
        flat = [self._tensor(s, dtype, device, "states") for s in _flatten(list(states))]
        self._check_state_shapes(flat, int(flat[0].shape[0]) if flat else 0)
        self._expected_batch_size = int(flat[0].shape[0])
        self._states = [s.detach().clone() for s in flat]

    def reset_state(self) -> None:
        """Keras 3's ``reset_state()``: zero the kept states."""
        self.reset_states()

    # -- config -----------------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Keras 3's RNN config (tf-keras's, with ``time_major`` and no ``zero_output_for_mask``, for cells
        that came from tf-keras configs); the cell serialized as Keras does (without ``build_config``)."""
        cell = _serialize(self.cell)
        config: dict[str, Any] = {
            "name": self.name, "trainable": self._trainable, "dtype": cell["config"].get("dtype", "float32"),
            "return_sequences": self.return_sequences, "return_state": self.return_state,
            "go_backwards": self.go_backwards, "stateful": self.stateful, "unroll": self.unroll,
        }
        if _keras2(self.cell):
            config["time_major"] = self.time_major
        else:
            config["zero_output_for_mask"] = self.zero_output_for_mask
        config["cell"] = cell
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any], keras2: bool | None = None) -> RNN:
        """A layer from a Keras 3 or tf-keras RNN config (or its serialized form). ``keras2`` None: a config
        with ``time_major`` is tf-keras's (its cells keep Keras 2's hard_sigmoid)."""
        config = dict(unwrap_config(config, ("RNN",)))
        if keras2 is None:
            keras2 = "time_major" in config
        cell = _deserialize(config.pop("cell"), keras2)
        config.pop("dtype", None)  # the cells' dtype governs
        return cls(cell, **config)

    # -- the call ---------------------------------------------------------------------------------------
    @staticmethod
    def _tensor(value: Any, dtype: torch.dtype, device: torch.device, argument: str) -> Tensor:
        if isinstance(value, Tensor):
            return value.to(dtype=dtype, device=device)
        array = np.asarray(value)
        if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise TypeError(f"{argument}: expected numeric values, got {type(value).__name__}")
        return torch.as_tensor(array).to(dtype=dtype, device=device)

    def _check_state_shapes(self, flat: list[Tensor], batch: int) -> None:
        sizes = [int(s) for s in _flatten(self.state_size)]
        if len(flat) != len(sizes):
            raise ValueError(
                f"Layer {self.name!r} has {len(self.state_size)} states (state_size {self.state_size}, "
                f"{len(sizes)} tensors) but was passed {len(flat)} initial state tensors"
            )
        for i, (state, size) in enumerate(zip(flat, sizes, strict=True)):
            if tuple(state.shape) != (batch, size):
                raise ValueError(
                    f"initial_state: tensor {i} of layer {self.name!r} must have shape ({batch}, {size}), "
                    f"got {tuple(state.shape)}"
                )

    def _step_mask(self, mask: Any, steps: int, batch: int, device: torch.device) -> Tensor | None:
        """The (T, B) boolean mask, or None."""
        if mask is None:
            return None
        if isinstance(mask, (list, tuple)) and mask and not np.isscalar(mask[0]) and len(mask) != batch:
            mask = mask[0]  # Keras's nested masks: the input's is the first
        m = mask.to(device) if isinstance(mask, Tensor) else torch.as_tensor(np.asarray(mask), device=device)
        if m.dim() == 3 and m.shape[-1] == 1:
            m = m[..., 0]
        expected = (steps, batch) if self.time_major else (batch, steps)
        if tuple(m.shape) != expected:
            raise ValueError(f"mask: layer {self.name!r} expected shape {expected}, got {tuple(m.shape)}")
        m = m.to(torch.bool)
        return m if self.time_major else m.t()

    def _lstm_cells(self) -> list[LSTMCell]:
        """The cells in order when every one is a plain unilstm LSTMCell (the fast road), else []."""
        cells = self.cell.cells if isinstance(self.cell, StackedRNNCells) else [self.cell]
        plain = all(isinstance(c, LSTMCell) and type(c).forward is LSTMCell.forward for c in cells)
        return list(cells) if plain else []

    def uses_whole_sequence(self, training: bool | None = None) -> bool:
        """Whether a call computes each cell over the whole sequence in one engine call (every cell a plain
        ``LSTMCell`` and no dropout mask drawn) rather than step by step."""
        training = self.training if training is None else bool(training)
        cells = self._lstm_cells()
        return bool(cells) and not (
            training and any(0.0 < c.dropout < 1.0 or 0.0 < c.recurrent_dropout < 1.0 for c in cells)
        )

    def forward(
        self,
        inputs: Any,
        initial_state: Sequence[Any] | None = None,
        mask: Any = None,
        training: bool | None = None,
    ) -> Any:
        """Run the layer (shapes in the class docstring)."""
        training = self.training if training is None else bool(training)
        dtype, device = _cell_dtype_device(self.cell)
        x = self._tensor(inputs, dtype, device, "inputs")
        if x.dim() != 3:
            raise ValueError(
                f'Input 0 of layer "{self.name}" is incompatible with the layer: expected ndim=3, found '
                f"ndim={x.dim()}. Full shape received: {tuple(x.shape)}"
            )
        if not self.built:
            self.build(tuple(x.shape))
            dtype, device = _cell_dtype_device(self.cell)
            x = x.to(device)
        x_tm = x if self.time_major else x.transpose(0, 1)  # (T, B, F)
        steps, batch = int(x_tm.shape[0]), int(x_tm.shape[1])
        if steps == 0:
            raise ValueError(
                f"inputs: layer {self.name!r} needs at least one time step, got {tuple(x.shape)}"
            )
        step_mask = self._step_mask(mask, steps, batch, device)
        flat = self._initial_flat(initial_state, batch, dtype, device)
        if self.go_backwards:  # Keras reverses the input and the mask; outputs stay in processing order
            x_tm = x_tm.flip(0)
            step_mask = None if step_mask is None else step_mask.flip(0)
        if self.uses_whole_sequence(training):
            out, new_flat = self._whole_sequence(x_tm.contiguous(), flat, step_mask, training)
        else:
            out, new_flat = self._step_by_step(x_tm, flat, step_mask, training)
        if self.stateful:
            self._states = [s.detach() for s in new_flat]
        sequence = out if self.time_major else out.transpose(0, 1)
        output = sequence if self.return_sequences else out[-1]
        if not self.return_state:
            return output
        return (output, *_pack_all(self.state_size, new_flat))

    def _initial_flat(
        self, initial_state: Sequence[Any] | None, batch: int, dtype: torch.dtype, device: torch.device
    ) -> list[Tensor]:
        """The initial states as a flat list of (B, size) tensors (given, kept, or zeros)."""
        if self.stateful:
            if self._expected_batch_size is None:
                self._expected_batch_size = batch
            elif batch != self._expected_batch_size:
                raise ValueError(
                    "If an RNN is stateful, the batch size of the input sequences must be the same as the "
                    f"batch size of the initial state. \n- Expected batch size: {self._expected_batch_size}\n"
                    f"- Received batch size: {batch}"
                )
        if initial_state is None:
            if self.stateful and self._states is not None:
                return list(self._states)
            sizes = [int(s) for s in _flatten(self.state_size)]
            return [torch.zeros(batch, size, dtype=dtype, device=device) for size in sizes]
        if isinstance(initial_state, (Tensor, np.ndarray)):
            initial_state = [initial_state]
        flat = [self._tensor(s, dtype, device, "initial_state") for s in _flatten(list(initial_state))]
        self._check_state_shapes(flat, batch)
        return flat

    def _whole_sequence(
        self, x: Tensor, flat: list[Tensor], mask: Tensor | None, training: bool
    ) -> tuple[Tensor, list[Tensor]]:
        """Each LSTMCell over the whole (T, B, F) sequence in one ``compute_stack`` call (already in
        processing order); returns the last cell's outputs (T, B, H) and the flat final states."""
        counted = EVERY_STEP if mask is None else CountedSteps(mask=mask)
        cells = self._lstm_cells()
        new_flat: list[Tensor] = []
        for j, cell in enumerate(cells):
            last = j == len(cells) - 1
            # A masked step's output reaching the next cell is never used by it (it keeps its states), so
            # only the last cell's masked output rule matters.
            spec = replace(
                cell.spec(training), go_backwards=False,
                masked_output="zero" if last and self.zero_output_for_mask else "previous",
            )
            h0, c0 = flat[2 * j].to(cell.dtype), flat[2 * j + 1].to(cell.dtype)
            x, h_n, c_n = compute_stack(
                spec, x.to(cell.dtype), h0.unsqueeze(0), c0.unsqueeze(0), [[cell._direction_weights()]],
                counted, training=training,
            )
            new_flat += [h_n[0], c_n[0]]
        return x, new_flat

    def _step_by_step(
        self, x: Tensor, flat: list[Tensor], mask: Tensor | None, training: bool
    ) -> tuple[Tensor, list[Tensor]]:
        """Keras's loop: the cell once per step of the (T, B, F) sequence (processing order), the masking
        rules of the module docstring; the cell's dropout masks are kept for the sequence, then reset."""
        self._reset_dropout()
        step: Callable[[Tensor, list[Any]], tuple[Tensor, Any]]
        if isinstance(self.cell, StackedRNNCells):
            cell = self.cell

            def step(inputs: Tensor, states: list[Any]) -> tuple[Tensor, Any]:
                return cell.step(inputs, states, training)
        else:
            def step(inputs: Tensor, states: list[Any]) -> tuple[Tensor, Any]:
                return _call_cell(self.cell, inputs, states, training)

        sizes = self.state_size
        states = _pack_all(sizes, flat)
        outputs: list[Tensor] = []
        previous: Tensor | None = None
        for t in range(int(x.shape[0])):
            output, new_states = step(x[t], states)
            new_flat = _flatten(new_states)
            if mask is not None:
                keep = mask[t].unsqueeze(-1)
                new_flat = [torch.where(keep, new, old) for new, old in zip(new_flat, flat, strict=True)]
                if previous is None or self.zero_output_for_mask:
                    previous = torch.zeros_like(output)
                output = torch.where(keep, output, previous)
            flat, previous = new_flat, output
            states = _pack_all(sizes, flat)
            outputs.append(output)
        self._reset_dropout()
        return torch.stack(outputs), flat

    def _reset_dropout(self) -> None:
        for name in ("reset_dropout_mask", "reset_recurrent_dropout_mask"):
            reset = getattr(self.cell, name, None)
            if reset is not None:
                reset()

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, return_sequences={self.return_sequences}, "
            f"return_state={self.return_state}, go_backwards={self.go_backwards}, stateful={self.stateful}"
        )
