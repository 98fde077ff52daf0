"""One LSTM step through the engine: what every door's ``LSTMCell`` computes.

The cells translate their framework's arguments, then call :func:`one_step`, which runs a one-step stack
through the canonical layer's one entry to the kernels, :func:`unilstm.layer.compute_stack` (dispatch picks
the kernel as for any call: on the CPU a step of a few rows goes to the native kernel)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from .. import layer as _layer
from ..spec import LSTMSpec

__all__ = ["one_step"]


def one_step(
    spec: LSTMSpec,
    x: Tensor,
    h: Tensor,
    c: Tensor,
    weights: _layer.DirectionWeights,
    *,
    training: bool,
    generator: torch.Generator | None = None,
    native_training: bool = True,
) -> tuple[Tensor, Tensor]:
    r"""One step of the one-layer, one-direction cell ``spec`` describes.

    Per row (gate blocks [i, f, g, o] along 4H; ``sigma`` = ``spec.recurrent_activation``, ``act`` =
    ``spec.activation``; m_x, m_h Keras's dropout masks while training, ones otherwise)::

        z = (x * m_x) W_ih^T + b_ih + (h * m_h) W_hh^T + b_hh           (B, 4H)
        c' = sigma(z_f) * c + sigma(z_i) * act(z_g)                      (B, H)
        h' = sigma(z_o) * act(c')                                        (B, H)

    Shapes: x (B, F), h and c (B, H); ``weights`` W_ih (4H, F), W_hh (4H, H), b_ih and b_hh (4H,) or None
    (``spec.bias`` is set from them). Returns (h', c'), each (B, H). A batch of no rows returns two (0, H)
    tensors without calling the engine (there is nothing to compute)."""
    hidden = int(weights.w_hh.shape[1])
    if x.shape[0] == 0:
        empty = x.new_zeros((0, hidden))
        return empty, empty.clone()
    sizes = (int(x.shape[1]), hidden, weights.b_ih is not None)
    if (spec.input_size, spec.hidden_size, spec.bias) != sizes:  # a cell's own spec matches: no new one
        spec = replace(spec, input_size=sizes[0], hidden_size=sizes[1], bias=sizes[2])
    _, h_n, c_n = _layer.compute_stack(
        spec, x.unsqueeze(0), h.unsqueeze(0), c.unsqueeze(0), [[weights]],
        training=training, generator=generator, native_training=native_training,
    )
    return h_n[0], c_n[0]
