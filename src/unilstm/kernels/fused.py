"""torch's own fused LSTM (oneDNN on CPU, cuDNN on GPU) for the specs it can compute.

It computes the standard cell (tanh, sigmoid, no recurrent dropout) over whole stacks, with torch's
inter-layer dropout, projections, and right-padded lengths through packed sequences.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..spec import LSTMSpec
from .opaque import opaque_to_compile
from .reference import DirectionWeights


def flat_weights(layers: list[list[DirectionWeights]]) -> list[Tensor]:
    """torch's ``_flat_weights`` order: per (layer, direction) w_ih, w_hh[, b_ih, b_hh][, w_hr]."""
    flat: list[Tensor] = []
    for directions in layers:
        for w in directions:
            flat += [w.w_ih, w.w_hh]
            if w.b_ih is not None:
                assert w.b_hh is not None  # layers run here carry both biases or neither (spec.bias)
                flat += [w.b_ih, w.b_hh]
            if w.w_hr is not None:
                flat.append(w.w_hr)
    return flat


# cuDNN's warning when the weights are not views into one flattened buffer (torch 2.x, cudnn/RNN.cpp)
_NOT_ONE_CHUNK = "RNN module weights are not part of single contiguous chunk of memory"


@contextlib.contextmanager
def _quiet_about_derived_weights(weights: list[Tensor]) -> Iterator[None]:
    """cuDNN copies weights that are not one flattened buffer on every call and warns, advising
    ``flatten_parameters()``. That advice holds for a layer's own Parameters (the canonical layer and the
    torch door flatten them, as torch.nn.LSTM does), not for weights made per call from them (the Keras
    door's transposed kernels, the MindSpore door's dtype casts): for those the copy is the price of the
    layout, and the warning is silenced."""
    if all(isinstance(w, nn.Parameter) or not w.is_cuda for w in weights):
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NOT_ONE_CHUNK)
        yield


@opaque_to_compile  # torch.compile cannot trace the oneDNN/cuDNN LSTM op: run it as an opaque call
def run_packed_fused(
    spec: LSTMSpec,
    data: Tensor,
    batch_sizes: Tensor,
    h0: Tensor,
    c0: Tensor,
    layers: list[list[DirectionWeights]],
    training: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """torch's packed LSTM. data: (N, F) packed rows; h0, c0 in sorted batch order. Returns packed output
    (N, D*P) and h_n (L*D, B, P), c_n (L*D, B, H) in sorted order."""
    weights = flat_weights(layers)
    with _quiet_about_derived_weights(weights):
        out, h_n, c_n = torch._VF.lstm(
            data, batch_sizes, (h0, c0), weights, spec.bias, spec.num_layers,
            float(spec.dropout), training, spec.bidirectional,
        )
    return out, h_n, c_n


@opaque_to_compile  # torch.compile cannot trace the oneDNN/cuDNN LSTM op: run it as an opaque call
def run_stack_fused(
    spec: LSTMSpec,
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    layers: list[list[DirectionWeights]],
    *,
    lengths: Tensor | None,
    training: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """The whole stack on time-major x (T, B, F). lengths (B,) gives right-padded sequences: outputs past a
    length are zeros, states are taken at the last valid step, and a length of 0 returns h0, c0."""
    if x.shape[0] == 0:
        # torch's kernel rejects zero steps; no step runs, so the states stay h0, c0 (as the reference loop).
        return x.new_zeros(0, x.shape[1], spec.num_directions * spec.output_size), h0, c0
    if lengths is None or x.shape[1] == 0:  # an empty batch cannot be packed and has nothing to mask
        weights = flat_weights(layers)
        with _quiet_about_derived_weights(weights):
            out, h_n, c_n = torch._VF.lstm(
                x, (h0, c0), weights, spec.bias, spec.num_layers,
                float(spec.dropout), training, spec.bidirectional, False,
            )
        return out, h_n, c_n
    steps = x.shape[0]
    empty = lengths == 0
    # pack_padded_sequence rejects empty rows: run them as length 1, then restore their zeros and h0/c0.
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), enforce_sorted=False)
    # enforce_sorted=False always gives the permutation and its inverse
    assert packed.sorted_indices is not None and packed.unsorted_indices is not None
    sorted_h0 = h0.index_select(1, packed.sorted_indices)
    sorted_c0 = c0.index_select(1, packed.sorted_indices)
    data, h_n, c_n = run_packed_fused(
        spec, packed.data, packed.batch_sizes, sorted_h0, sorted_c0, layers, training
    )
    out, _ = pad_packed_sequence(
        PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices),
        total_length=steps,
    )
    h_n = h_n.index_select(1, packed.unsorted_indices)
    c_n = c_n.index_select(1, packed.unsorted_indices)
    if bool(empty.any()):
        rows = empty.to(x.device).view(1, -1, 1)
        out = out.masked_fill(rows, 0.0)
        h_n = torch.where(rows, h0, h_n)
        c_n = torch.where(rows, c0, c_n)
    return out, h_n, c_n
