"""The reference kernel: one direction of one layer, one plain step at a time.

This loop is the oracle for every other kernel. It is written to be read, not to be fast: each step computes
the equations of :mod:`unilstm.spec` literally, and autograd differentiates it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
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
        peephole: (3H,) peephole weights, blocks [p_i, p_f, p_o], or None (no peepholes).
        ln_weight_ih, ln_bias_ih: (4H,) gain and bias of the input pre-activations' layer normalisation.
        ln_weight_hh, ln_bias_hh: (4H,) the same for the recurrent pre-activations.
        ln_weight_c, ln_bias_c: (H,) the same for the cell state before the output activation.
            The six are all given (layer normalisation) or all None.
    """

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor | None = None
    b_hh: Tensor | None = None
    w_hr: Tensor | None = None
    peephole: Tensor | None = None
    ln_weight_ih: Tensor | None = None
    ln_bias_ih: Tensor | None = None
    ln_weight_hh: Tensor | None = None
    ln_bias_hh: Tensor | None = None
    ln_weight_c: Tensor | None = None
    ln_bias_c: Tensor | None = None

    def tensors(self) -> tuple[Tensor | None, ...]:
        """Every field in declaration order: w_ih, w_hh, b_ih, b_hh, w_hr, then the variants' tensors
        (:data:`VARIANT_WEIGHTS`)."""
        return tuple(getattr(self, name) for name in WEIGHT_FIELDS)

    @property
    def layer_norm(self) -> bool:
        """Whether the direction normalises its pre-activations and cell state."""
        return self.ln_weight_ih is not None

    @property
    def has_variant(self) -> bool:
        """Whether any variant tensor (peepholes, layer normalisation) is present."""
        return self.peephole is not None or self.ln_weight_ih is not None

    def __post_init__(self) -> None:
        given = [getattr(self, name) is not None for name in VARIANT_WEIGHTS[1:]]
        if any(given) and not all(given):
            missing = [name for name, present in zip(VARIANT_WEIGHTS[1:], given, strict=True) if not present]
            raise ValueError(
                f"DirectionWeights: layer normalisation needs all six tensors, missing {missing}"
            )


#: the DirectionWeights fields that only cell variants have, in declaration order
VARIANT_WEIGHTS = (
    "peephole", "ln_weight_ih", "ln_bias_ih", "ln_weight_hh", "ln_bias_hh", "ln_weight_c", "ln_bias_c",
)
#: every DirectionWeights field, in declaration order
WEIGHT_FIELDS = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr", *VARIANT_WEIGHTS)


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

    The cell variants (equations in :mod:`unilstm.spec`; all off by default):

    Attributes:
        output_activation: the activation of the cell state in h; None means ``activation``.
        forget_bias: added to z_f.
        gate_clip: bound of every gate pre-activation (after biases and peepholes), or None.
        cell_clip: bound of the new cell state, or None.
        proj_clip: bound of the projected h, or None.
        coupled_gates: f = 1 - i.
        zoneout_hidden: the weight d_h of h_{t-1} in h_t: a float (inference: the rate), or a (T, B, P)
            tensor of 0/1 draws per step (training), indexed by time like ``x``.
        zoneout_cell: the same for c, (T, B, H).
        layer_norm_eps: epsilon of the layer normalisations (used when the weights have them).
    """

    activation: Activation
    recurrent_activation: Activation
    step_mask: Tensor | None = None
    reverse: bool = False
    zero_masked_output: bool = True
    input_dropout_mask: Tensor | None = None
    recurrent_dropout_mask: Tensor | None = None
    output_activation: Activation | None = None
    forget_bias: float = 0.0
    gate_clip: float | None = None
    cell_clip: float | None = None
    proj_clip: float | None = None
    coupled_gates: bool = False
    zoneout_hidden: Tensor | float = 0.0
    zoneout_cell: Tensor | float = 0.0
    layer_norm_eps: float = 1e-5

    @property
    def has_variant(self) -> bool:
        """Whether the run uses any cell variant beyond the cell the three frameworks share."""
        return (
            self.output_activation is not None
            or self.forget_bias != 0.0
            or self.gate_clip is not None
            or self.cell_clip is not None
            or self.proj_clip is not None
            or self.coupled_gates
            or isinstance(self.zoneout_hidden, Tensor) or self.zoneout_hidden != 0.0
            or isinstance(self.zoneout_cell, Tensor) or self.zoneout_cell != 0.0
        )


def is_variant(weights: DirectionWeights, run: DirectionRun) -> bool:
    """Whether a direction computes a cell variant (a kernel without them must decline it)."""
    return weights.has_variant or run.has_variant


def layer_normalised(values: Tensor, gain: Tensor, bias: Tensor, eps: float) -> Tensor:
    """(values - mean) / sqrt(var + eps) * gain + bias over the last axis, biased variance."""
    return F.layer_norm(values, values.shape[-1:], gain, bias, eps)


def _clipped(values: Tensor, bound: float | None) -> Tensor:
    return values if bound is None else values.clamp(-bound, bound)


def _zoned(previous: Tensor, new: Tensor, keep: Tensor | float, t: int) -> Tensor:
    """keep * previous + (1 - keep) * new, keep being a float or step t of a (T, ...) tensor."""
    if isinstance(keep, Tensor):
        weight = keep[t]
        return weight * previous + (1.0 - weight) * new
    if keep == 0.0:
        return new
    return keep * previous + (1.0 - keep) * new


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
    h, c = h0, c0
    previous_output = torch.zeros_like(h0)
    outputs: list[Tensor] = []  # in processing order; put back in time order after the loop
    for t in steps:
        h_new, c_new = _cell_step(x[t], h, c, weights, run, t)
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


def _cell_step(
    x_t: Tensor, h: Tensor, c: Tensor, weights: DirectionWeights, run: DirectionRun, t: int
) -> tuple[Tensor, Tensor]:
    """One step of the cell, every variant included (the equations of :mod:`unilstm.spec`): x_t (B, F), h
    (B, P), c (B, H) -> h_t (B, P), c_t (B, H)."""
    g, sigma = run.activation, run.recurrent_activation
    g_out = g if run.output_activation is None else run.output_activation
    a = gate_projection(x_t, weights.w_ih, run.input_dropout_mask)
    r = gate_projection(h, weights.w_hh, run.recurrent_dropout_mask)
    if weights.layer_norm:
        assert weights.ln_weight_ih is not None and weights.ln_bias_ih is not None
        assert weights.ln_weight_hh is not None and weights.ln_bias_hh is not None
        a = layer_normalised(a, weights.ln_weight_ih, weights.ln_bias_ih, run.layer_norm_eps)
        r = layer_normalised(r, weights.ln_weight_hh, weights.ln_bias_hh, run.layer_norm_eps)
    z = a + r
    if weights.b_ih is not None:
        z = z + weights.b_ih
    if weights.b_hh is not None:
        z = z + weights.b_hh
    z_i, z_f, z_g, z_o = z.chunk(GATES, dim=-1)
    if run.forget_bias != 0.0:
        z_f = z_f + run.forget_bias
    if weights.peephole is not None:
        p_i, p_f, p_o = weights.peephole.chunk(3)
        z_i = z_i + p_i * c
        z_f = z_f + p_f * c
    z_i, z_f, z_g = (_clipped(v, run.gate_clip) for v in (z_i, z_f, z_g))
    i = sigma(z_i)
    f = 1.0 - i if run.coupled_gates else sigma(z_f)
    c_cand = _clipped(f * c + i * g(z_g), run.cell_clip)
    if weights.peephole is not None:
        z_o = z_o + p_o * c_cand
    o = sigma(_clipped(z_o, run.gate_clip))
    if weights.layer_norm:
        assert weights.ln_weight_c is not None and weights.ln_bias_c is not None
        c_normalised = layer_normalised(c_cand, weights.ln_weight_c, weights.ln_bias_c, run.layer_norm_eps)
        h_cand = o * g_out(c_normalised)
    else:
        h_cand = o * g_out(c_cand)
    if weights.w_hr is not None:
        h_cand = _clipped(h_cand @ weights.w_hr.t(), run.proj_clip)
    return _zoned(h, h_cand, run.zoneout_hidden, t), _zoned(c, c_cand, run.zoneout_cell, t)


def differentiable_gradients(
    x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun,
    grads: tuple[Tensor, Tensor, Tensor],
) -> tuple[Tensor | None, ...]:
    """The gradients that ``grads`` (of output, h_T and c_T) give x, h0, c0 and every weight field
    (:data:`WEIGHT_FIELDS`: w_ih, w_hh, b_ih, b_hh, w_hr, then the variants' tensors) through this loop,
    themselves differentiable (autograd records them): what a kernel's backward returns when autograd
    records the backward (``create_graph=True``), so that second derivatives are right. None for the
    tensors that do not require grad."""
    inputs = (x, h0, c0, *weights.tensors())
    result: list[Tensor | None] = [None] * len(inputs)
    with torch.enable_grad():
        # one alias per place: a tensor given in two places (h0 as c0) gets each place's share alone, as the
        # caller's Function returns a gradient per argument and autograd adds them up
        aliases = [t.view_as(t) if t is not None and t.requires_grad else t for t in inputs]
        x_a, h0_a, c0_a = aliases[:3]
        assert x_a is not None and h0_a is not None and c0_a is not None
        aliased = DirectionWeights(*aliases[3:])  # type: ignore[arg-type]  # w_ih, w_hh are tensors
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
