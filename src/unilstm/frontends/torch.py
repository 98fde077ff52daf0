"""``unilstm.torch.LSTM``: a drop-in replacement for ``torch.nn.LSTM`` on the unilstm engine.

Same constructor (positional arguments included), same parameter names, order, shapes and initialisation
(``torch.manual_seed(s)`` gives identical weights), ``state_dict`` interchangeable both ways, the same
``forward(input, hx=None)`` with Tensor or :class:`~torch.nn.utils.rnn.PackedSequence` input, unbatched 2-D
input, and the same error types and messages as torch 2.13 for bad arguments. The class only translates:
every number is computed by the canonical :class:`unilstm.LSTM` and its kernels.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .. import layer as _layer
from ..spec import LSTMSpec
from ..steps import CountedSteps

__all__ = ["LSTM"]

State = tuple[Tensor, Tensor]


def _validate_torch_arguments(
    input_size: object,
    hidden_size: object,
    num_layers: object,
    bias: object,
    batch_first: object,
    dropout: object,
    proj_size: object,
) -> float:
    """torch.nn.RNNBase's checks, in its order and with its messages; returns ``float(dropout)``."""
    dropout_value = float(dropout)  # type: ignore[arg-type]  # torch converts first (ValueError for 'a')
    if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:  # type: ignore[operator]
        raise ValueError(
            "dropout should be a number in range [0, 1] "
            "representing the probability of an element being zeroed"
        )
    if dropout > 0 and num_layers == 1:  # type: ignore[operator]
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
            f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
            stacklevel=3,
        )
    if not isinstance(bias, bool):
        raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
    if not isinstance(batch_first, bool):
        raise TypeError(f"batch_first should be of type bool, got: {type(batch_first).__name__}")
    if not isinstance(input_size, int):
        raise TypeError(f"input_size should be of type int, got: {type(input_size).__name__}")
    if input_size <= 0:
        raise ValueError("input_size must be greater than zero")
    if not isinstance(hidden_size, int):
        raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
    if hidden_size <= 0:
        raise ValueError("hidden_size must be greater than zero")
    if num_layers <= 0:  # type: ignore[operator]
        raise ValueError("num_layers must be greater than zero")
    if not isinstance(num_layers, int):
        raise TypeError(f"'{type(num_layers).__name__}' object cannot be interpreted as an integer")
    if proj_size < 0:  # type: ignore[operator]
        raise ValueError("proj_size should be a positive integer or zero to disable projections")
    if proj_size >= hidden_size:  # type: ignore[operator]
        raise ValueError("proj_size has to be smaller than hidden_size")
    if not isinstance(proj_size, int):
        raise TypeError(f"proj_size should be of type int, got: {type(proj_size).__name__}")
    return dropout_value


class LSTM(_layer.LSTM):
    r"""torch.nn.LSTM's interface on the unilstm engine.

    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0, device=None, dtype=None)``

    For each layer and direction, per step t (gate blocks [i, f, g, o] along 4H)::

        i_t = sigma(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)      f_t, o_t alike
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t),  then h_t = W_hr h_t when proj_size > 0

    Layer k > 0 reads layer k - 1's output, with dropout (probability ``dropout``) in training mode.

    Shapes (N batch, L steps, D = 2 if bidirectional else 1, H_out = proj_size or hidden_size):
        input: (L, N, input_size), (N, L, input_size) with batch_first, (L, input_size) unbatched, or a
            PackedSequence.
        hx: optional ``(h_0, c_0)``: (D*num_layers, N, H_out) and (D*num_layers, N, hidden_size)
            ((D*num_layers, H_out) and (D*num_layers, hidden_size) unbatched); zeros when omitted.
        output: (L, N, D*H_out) (or (N, L, D*H_out), (L, D*H_out), or a PackedSequence with the input's
            batch_sizes and indices); h_n, c_n shaped like h_0, c_0, at each sequence's last step.

    Parameters: ``weight_ih_l{k}[_reverse]`` (4H, in), ``weight_hh_l{k}[_reverse]`` (4H, H_out),
    ``bias_ih_l{k}[_reverse]``, ``bias_hh_l{k}[_reverse]`` (4H,), ``weight_hr_l{k}[_reverse]``
    (proj_size, H), all U(-1/sqrt(H), 1/sqrt(H)) drawn in that order, exactly as torch does.

    Where torch 2.13 checks in Python, the errors are its own (type and message). Where it fails inside its
    C++ kernel with an implementation message (h_0/c_0 of another dtype than the input; a PackedSequence with
    the wrong feature size, dtype or state shapes), this class raises the same type, RuntimeError, with a
    message naming the argument, the expected and the received value. Not supported: ``torch.jit.script``.
    """

    _native_training = False  # a drop-in computes what torch.nn.LSTM computes, bit for bit where it can

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        dropout_value = _validate_torch_arguments(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size
        )
        spec = LSTMSpec(
            input_size=int(input_size),
            hidden_size=int(hidden_size),
            num_layers=int(num_layers),
            bias=bias,
            batch_first=batch_first,
            dropout=dropout_value,
            bidirectional=bool(bidirectional),
            proj_size=int(proj_size),
        )
        nn.Module.__init__(self)
        self._init_from_spec(spec, device=device, dtype=dtype)

    # -- torch.nn.RNNBase conventions --------------------------------------------------------------------
    @property
    def dropout(self) -> float:
        """Inter-layer dropout probability; assignable after construction, as on torch.nn.LSTM."""
        return self.spec.dropout

    @dropout.setter
    def dropout(self, value: float) -> None:
        self.spec = replace(self.spec, dropout=float(value))

    @property
    def _all_weights(self) -> list[list[str]]:
        """Parameter names per (layer, direction), as torch.nn.LSTM's ``_all_weights``."""
        per_direction = len(self._flat_weights_names) // (self.spec.num_layers * self.spec.num_directions)
        names = self._flat_weights_names
        return [names[i : i + per_direction] for i in range(0, len(names), per_direction)]

    def extra_repr(self) -> str:
        """torch.nn.LSTM's repr: ``LSTM(10, 20, proj_size=5, num_layers=2, ...)``, defaults omitted."""
        spec = self.spec
        s = f"{spec.input_size}, {spec.hidden_size}"
        if spec.proj_size != 0:
            s += f", proj_size={spec.proj_size}"
        if spec.num_layers != 1:
            s += f", num_layers={spec.num_layers}"
        if spec.bias is not True:
            s += f", bias={spec.bias}"
        if spec.batch_first is not False:
            s += f", batch_first={spec.batch_first}"
        if spec.dropout != 0:
            s += f", dropout={spec.dropout}"
        if spec.bidirectional is not False:
            s += f", bidirectional={spec.bidirectional}"
        return s

    def permute_hidden(self, hx: State, permutation: Tensor | None) -> State:
        """Reorder the batch dimension (dim 1) of both states; identity when ``permutation`` is None."""
        if permutation is None:
            return hx
        return hx[0].index_select(1, permutation), hx[1].index_select(1, permutation)

    # -- torch's checks ----------------------------------------------------------------------------------
    def _expected_sizes(self, mini_batch: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        spec = self.spec
        layers = spec.num_layers * spec.num_directions
        return (layers, mini_batch, spec.output_size), (layers, mini_batch, spec.hidden_size)

    def _check_input(self, input: Tensor, packed: bool) -> None:
        weight_dtype = self._parameter_dtype()
        if input.dtype != weight_dtype and not torch.is_autocast_enabled(input.device.type):
            message = (
                f"RNN input dtype ({input.dtype}) does not match weight dtype ({weight_dtype}). "
                f"Convert input: input.to({weight_dtype}), or convert model: model.to({input.dtype})"
            )
            # torch's packed path fails inside its C++ kernel with a RuntimeError; keep the type.
            raise RuntimeError(message) if packed else ValueError(message)
        expected_dim = 2 if packed else 3
        if input.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {input.dim()}")
        if self.spec.input_size != input.size(-1):
            raise RuntimeError(
                "input.size(-1) must be equal to input_size. "
                f"Expected {self.spec.input_size}, got {input.size(-1)}"
            )

    def _check_hidden(self, hx: State, mini_batch: int, input: Tensor) -> None:
        h_size, c_size = self._expected_sizes(mini_batch)
        for index, (value, size) in enumerate(zip(hx, (h_size, c_size), strict=True)):
            if tuple(value.size()) != size:
                raise RuntimeError(f"Expected hidden[{index}] size {size}, got {list(value.size())}")
        for index, value in enumerate(hx):
            if value.dtype != input.dtype and not torch.is_autocast_enabled(input.device.type):
                # torch 2.13 fails here inside its kernel ("get_mkldnn_dtype: unsupported data type").
                raise RuntimeError(
                    f"Expected hidden[{index}] dtype {input.dtype} (the input's dtype), got {value.dtype}"
                )

    def _autocast_inputs(self, input: Tensor, hx: State) -> tuple[Tensor, State]:
        """Under autocast torch accepts inputs in any float dtype (its kernel casts them): cast them to the
        parameters' dtype, exactly, and let autocast lower the precision inside the kernel as torch does."""
        dtype = self._parameter_dtype()
        if not torch.is_autocast_enabled(input.device.type):
            return input, hx
        return input.to(dtype), (hx[0].to(dtype), hx[1].to(dtype))

    @staticmethod
    def _check_pair(hx: object) -> None:
        if isinstance(hx, (tuple, list)) and len(hx) > 2:
            raise RuntimeError("lstm expects two hidden states")
        if isinstance(hx, (tuple, list)) and len(hx) < 2:
            raise IndexError(f"{type(hx).__name__} index out of range")

    # -- the call ----------------------------------------------------------------------------------------
    def forward(  # type: ignore[override]
        self, input: Tensor | PackedSequence, hx: State | None = None
    ) -> tuple[Tensor | PackedSequence, State]:
        """Run the LSTM exactly like ``torch.nn.LSTM.forward``; shapes are in the class docstring.

        A PackedSequence's data and ``batch_sizes`` go to the engine as they are (dispatch chooses torch's
        packed kernel or pads them for another kernel); the result has the input's ``batch_sizes``,
        ``sorted_indices`` and ``unsorted_indices``."""
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        is_batched = input.dim() == 3
        batch_dim = 0 if self.spec.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        mini_batch = input.size(0) if self.spec.batch_first else input.size(1)
        if hx is None:
            self._check_input(input, packed=False)
            h_size, c_size = self._expected_sizes(mini_batch)
            hx = (input.new_zeros(h_size), input.new_zeros(c_size))
        else:
            self._check_pair(hx)
            if is_batched:
                if hx[0].dim() != 3 or hx[1].dim() != 3:
                    raise RuntimeError(
                        "For batched 3-D input, hx and cx should also be 3-D but got "
                        f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                    )
            else:
                if hx[0].dim() != 2 or hx[1].dim() != 2:
                    raise RuntimeError(
                        "For unbatched 2-D input, hx and cx should also be 2-D but got "
                        f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                    )
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
            self._check_input(input, packed=False)
            self._check_hidden(hx, mini_batch, input)
        if input.size(1 if self.spec.batch_first else 0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        input, hx = self._autocast_inputs(input, hx)
        output, (h_n, c_n) = super().forward(input, (hx[0], hx[1]))
        if not is_batched:
            output = output.squeeze(batch_dim)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)

    def _forward_packed(self, packed: PackedSequence, hx: State | None) -> tuple[PackedSequence, State]:
        data, batch_sizes, sorted_indices, unsorted_indices = packed
        mini_batch = int(batch_sizes[0])
        self._check_input(data, packed=True)
        if hx is None:
            h_size, c_size = self._expected_sizes(mini_batch)
            hx = (data.new_zeros(h_size), data.new_zeros(c_size))
        else:
            self._check_pair(hx)
            hx = self.permute_hidden((hx[0], hx[1]), sorted_indices)
            self._check_hidden(hx, mini_batch, data)
        data, hx = self._autocast_inputs(data, hx)
        out_data, h_n, c_n = self._run(
            data, hx[0], hx[1], CountedSteps(batch_sizes=batch_sizes), training=self.training
        )
        output = PackedSequence(out_data, batch_sizes, sorted_indices, unsorted_indices)
        return output, self.permute_hidden((h_n, c_n), unsorted_indices)
