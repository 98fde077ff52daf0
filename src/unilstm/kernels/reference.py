"""The reference kernel: one direction of one layer, one plain step at a time.

This loop is the oracle for every other kernel. It is written to be read, not to be fast: each step computes
the equations of :mod:`unilstm.spec` literally, and autograd differentiates it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..activations import Activation

GATES = 4


@dataclass(frozen=True)
class DirectionWeights:
    """The parameters of one direction of one layer, in torch layout (gate blocks [i, f, g, o]).

    Attributes:
        w_ih: (4H, F) input weights.
        w_hh: (4H, P) recurrent weights, P = proj_size or H.
        b_ih: (4H,) input bias, or None.
        b_hh: (4H,) recurrent bias, or None.
        w_hr: (P, H) projection weights, or None.
    """

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor | None = None
    b_hh: Tensor | None = None
    w_hr: Tensor | None = None


@dataclass(frozen=True)
class DirectionRun:
    """How one direction is run, beyond its weights.

    Attributes:
        activation: g, applied to the candidate block and to the cell state.
        recurrent_activation: applied to the i, f and o blocks.
        step_mask: (T, B) bool, True where a step counts; None means every step counts.
        reverse: process t = T-1 .. 0; outputs stay at their own time index.
        zero_masked_output: a masked step outputs zeros (True) or the last unmasked output, zeros before
            the first one (False, Keras's default).
        input_dropout_mask: (B, F) or per gate (4, B, F) multiplier on x_t, the same at every step.
        recurrent_dropout_mask: (B, P) or per gate (4, B, P) multiplier on h_{t-1}, the same at every step.
    """

    activation: Activation
    recurrent_activation: Activation
    step_mask: Tensor | None = None
    reverse: bool = False
    zero_masked_output: bool = True
    input_dropout_mask: Tensor | None = None
    recurrent_dropout_mask: Tensor | None = None


def gate_projection(values: Tensor, weight: Tensor, dropout_mask: Tensor | None) -> Tensor:
    """values @ weight^T with an optional dropout mask, shared or one per gate block.

    values: (..., B, F); weight: (4H, F); dropout_mask: None, (B, F) or (4, B, F). Returns (..., B, 4H).
    """
    if dropout_mask is None:
        return values @ weight.t()
    if dropout_mask.dim() == 2:
        return (values * dropout_mask) @ weight.t()
    blocks = weight.chunk(GATES, dim=0)
    return torch.cat([(values * dropout_mask[k]) @ blocks[k].t() for k in range(GATES)], dim=-1)


def run_direction_reference(
    x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun
) -> tuple[Tensor, Tensor, Tensor]:
    """Run one direction of one layer over a whole sequence.

    Args:
        x: (T, B, F) time-major input.
        h0: (B, P) initial hidden state (P = proj_size or H).
        c0: (B, H) initial cell state.
        weights: the direction's parameters.
        run: activations, mask, direction and dropout masks.

    Returns:
        output (T, B, P), h_T (B, P), c_T (B, H): outputs at their own time index, and the states after the
        last counted step (the initial states where no step counts).
    """
    steps = range(x.shape[0] - 1, -1, -1) if run.reverse else range(x.shape[0])
    g, sigma = run.activation, run.recurrent_activation
    h, c = h0, c0
    previous_output = torch.zeros_like(h0)
    outputs: list[Tensor] = []  # in processing order; put back in time order after the loop
    for t in steps:
        z = gate_projection(x[t], weights.w_ih, run.input_dropout_mask)
        z = z + gate_projection(h, weights.w_hh, run.recurrent_dropout_mask)
        if weights.b_ih is not None:
            z = z + weights.b_ih
        if weights.b_hh is not None:
            z = z + weights.b_hh
        i, f, cand, o = z.chunk(GATES, dim=-1)
        c_new = sigma(f) * c + sigma(i) * g(cand)
        h_new = sigma(o) * g(c_new)
        if weights.w_hr is not None:
            h_new = h_new @ weights.w_hr.t()
        if run.step_mask is None:
            h, c, out = h_new, c_new, h_new
        else:
            keep = run.step_mask[t].unsqueeze(-1)
            h = torch.where(keep, h_new, h)
            c = torch.where(keep, c_new, c)
            fallback = torch.zeros_like(h_new) if run.zero_masked_output else previous_output
            out = torch.where(keep, h_new, fallback)
            previous_output = out
        outputs.append(out)
    if run.reverse:
        outputs.reverse()
    if not outputs:
        return x.new_zeros(0, *h0.shape), h, c
    return torch.stack(outputs), h, c


def differentiable_gradients(
    x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun,
    grads: tuple[Tensor, Tensor, Tensor],
) -> tuple[Tensor | None, ...]:
    """The gradients that ``grads`` (of output, h_T and c_T) give x, h0, c0, w_ih, w_hh, b_ih, b_hh and
    w_hr through this loop, themselves differentiable (autograd records them): what a kernel's backward
    returns when autograd records the backward (``create_graph=True``), so that second derivatives are
    right. None for the tensors that do not require grad."""
    inputs = (x, h0, c0, weights.w_ih, weights.w_hh, weights.b_ih, weights.b_hh, weights.w_hr)
    result: list[Tensor | None] = [None] * len(inputs)
    with torch.enable_grad():
        # one alias per place: a tensor given in two places (h0 as c0) gets each place's share alone, as the
        # caller's Function returns a gradient per argument and autograd adds them up
        aliases = [t.view_as(t) if t is not None and t.requires_grad else t for t in inputs]
        x_a, h0_a, c0_a, w_ih_a, w_hh_a = aliases[:5]
        assert x_a is not None and h0_a is not None and c0_a is not None
        assert w_ih_a is not None and w_hh_a is not None
        aliased = DirectionWeights(w_ih_a, w_hh_a, *aliases[5:])
        outputs = run_direction_reference(x_a, h0_a, c0_a, aliased, run)
        pairs = [(out, grad) for out, grad in zip(outputs, grads, strict=True) if out.requires_grad]
        wanted = [(i, t) for i, t in enumerate(aliases) if t is not None and t.requires_grad]
        if pairs and wanted:
            found = torch.autograd.grad(
                [out for out, _ in pairs], [t for _, t in wanted], [grad for _, grad in pairs],
                create_graph=True, allow_unused=True,
            )
            for (i, _), grad in zip(wanted, found, strict=True):
                result[i] = grad
    return tuple(result)
