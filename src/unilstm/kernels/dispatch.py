"""The one place that decides which kernel computes a call.

``run_stack`` hands the whole stack to torch's fused kernel when the spec and inputs allow it and that kernel
is the faster one (CUDA; CPU inference of more than a few steps; see ``native_trains_faster`` and
``short_for_fused`` for where the native kernel wins), and otherwise runs layer by layer and direction by
direction with the fastest direction kernel that accepts the run. Each rule is a function here, written
once; the thresholds they read live in :mod:`unilstm.kernels.policy`.
Every kernel computes the same function as :func:`~unilstm.kernels.reference.run_direction_reference`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..activations import resolve
from ..spec import LSTMSpec
from ..steps import EVERY_STEP, CountedSteps
from . import first_use, policy
from .fast import accepts as fast_accepts
from .fast import run_direction_fast
from .fused import run_packed_fused, run_stack_fused
from .native import accepts as native_accepts
from .native import available as native_available
from .native import halves_accept as native_halves_accept
from .native import pair_accepts as native_pair_accepts
from .native import run_bidirectional_native, run_direction_native, run_direction_native_halves
from .native._variants import zoneout_keep
from .reference import GATES, DirectionRun, DirectionWeights, run_direction_reference

DirectionKernel = Callable[
    [Tensor, Tensor, Tensor, DirectionWeights, DirectionRun], tuple[Tensor, Tensor, Tensor]
]

#: Direction kernels tried in order: (name, accepts(x, weights, run) -> bool, kernel). The reference loop,
#: last, accepts everything; a new kernel goes in front of it, fastest first.
DIRECTION_KERNELS: list[tuple[str, Callable[..., bool], DirectionKernel]] = [
    ("native", native_accepts, run_direction_native),
    ("fast", fast_accepts, run_direction_fast),
    ("reference", lambda x, weights, run: True, run_direction_reference),
]

_Item = TypeVar("_Item")


def _pair(items: Sequence[_Item]) -> tuple[_Item, _Item]:
    """The two per-direction items of a bidirectional layer as a pair."""
    forward, backward = items
    return forward, backward


#: When set (to a name in DIRECTION_KERNELS or "reference"), every call uses that kernel: for tests that
#: compare kernels and for benchmarks.
_forced_kernel: str | None = None


def force_kernel(name: str | None) -> None:
    """Make every call use the direction kernel ``name`` ("reference", ...) or undo it with ``None``.

    A forced kernel also bypasses torch's fused path, so that the chosen kernel computes every spec."""
    global _forced_kernel
    known = [entry[0] for entry in DIRECTION_KERNELS]
    if name is not None and name not in known:
        raise ValueError(f"force_kernel: unknown kernel {name!r}, expected one of {known} or None")
    _forced_kernel = name


def short_for_fused(x: Tensor) -> bool:
    """A few steps of a few sequences on the CPU (streaming, up to ``policy.STREAMING_MAX_STEPS`` steps and
    ``policy.STREAMING_MAX_ROWS`` step rows): torch's kernel sets up a oneDNN primitive on every call, a
    fixed cost the native kernel does not pay."""
    return (
        native_available() and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
        and x.shape[0] <= policy.STREAMING_MAX_STEPS and x.shape[0] * x.shape[1] <= policy.STREAMING_MAX_ROWS
    )


def native_trains_faster(spec: LSTMSpec, x: Tensor, training: bool) -> bool:
    """Whether a CPU training call (one that autograd records; the caller checks that) goes to the native
    kernel, standard cells included (``policy.NATIVE_TRAINS_STANDARD_CELLS``). Not under autocast (torch's
    kernel computes in the lower precision there, as torch.nn.LSTM does) and not with inter-layer dropout
    in training (torch's kernel draws those masks itself: the same seed then gives torch.nn.LSTM's masks)."""
    if not policy.NATIVE_TRAINS_STANDARD_CELLS:
        return False
    if not native_available() or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return False
    return not (torch.is_autocast_enabled("cpu") or (training and spec.dropout > 0.0 and spec.num_layers > 1))


def lengths_from_right_padded(step_mask: Tensor) -> Tensor | None:
    """Lengths (B,) when the (T, B) mask is a valid prefix per row (right padding), else None."""
    lengths = step_mask.sum(dim=0)
    prefix = torch.arange(step_mask.shape[0], device=step_mask.device).unsqueeze(1) < lengths.unsqueeze(0)
    return lengths if bool(torch.equal(prefix, step_mask)) else None


def packed_fused_can_run(spec: LSTMSpec) -> bool:
    """torch's packed kernel computes the standard cell over packed data (outputs only at counted steps),
    unless a kernel is forced or the spec processes the input reversed."""
    return _forced_kernel is None and spec.is_standard_cell and not spec.go_backwards


def carry_last_valid_output(out: Tensor, lengths: Tensor, forward_features: int) -> Tensor:
    """Turn a packed run's zero padding into Keras's "previous" outputs: for t >= length, the first
    ``forward_features`` features (the forward direction) repeat the output at step length - 1 (zeros when
    the length is 0); the reverse direction meets its padding before any valid step, so zeros stay."""
    steps = out.shape[0]
    lengths = lengths.to(out.device)
    last = (lengths - 1).clamp(min=0)
    index = torch.minimum(torch.arange(steps, device=out.device).unsqueeze(1), last.unsqueeze(0))
    forward = out[..., :forward_features]
    carried = forward.gather(0, index.unsqueeze(-1).expand_as(forward))
    carried = carried.masked_fill((lengths == 0).view(1, -1, 1), 0.0)
    if forward_features == out.shape[-1]:
        return carried
    return torch.cat([carried, out[..., forward_features:]], dim=-1)


def draw_dropout_mask(
    rate: float, like: Tensor, per_gate: bool, generator: torch.Generator | None
) -> Tensor | None:
    """An inverted-dropout mask with the dtype, device and shape of ``like`` (B, F), or (4, B, F) per gate:
    0 with probability ``rate``, else 1 / (1 - rate). None when ``rate`` drops nothing or everything
    (Keras applies dropout only for 0 < rate < 1)."""
    if not 0.0 < rate < 1.0:
        return None
    shape = (GATES, *like.shape) if per_gate else tuple(like.shape)
    keep = torch.empty(shape, dtype=like.dtype, device=like.device)
    keep.bernoulli_(1.0 - rate, generator=generator)
    return keep / (1.0 - rate)


def zoneout_weights(
    rate: float, steps: int, state: Tensor, training: bool, generator: torch.Generator | None
) -> Tensor | float:
    """The weight of the previous state in zoneout: in training a (T, B, N) tensor of Bernoulli(rate) draws
    (1 keeps the previous value), one per step and unit of the (B, N) ``state``; otherwise the rate itself,
    the draws' expectation (Krueger et al. 2016)."""
    if not training or rate == 0.0:
        return rate
    # counter-based draws from two keys of the generator (native._variants.zoneout_keep: in C on the CPU,
    # 0.07 against 0.6 ms for torch's uniform_ and lt_ at (50, 32, 128); torch ops elsewhere, the same bits)
    return zoneout_keep(rate, steps, state, generator)


def _training_run(
    spec: LSTMSpec, common: dict, direction: int, layer_input: Tensor, h0: Tensor, c0: Tensor,
    generator: torch.Generator | None,
) -> DirectionRun:
    """One direction's run in training: its dropout masks (input, recurrent) and zoneout draws, in that
    order from ``generator``."""
    return DirectionRun(
        reverse=direction == 1,
        input_dropout_mask=draw_dropout_mask(
            spec.input_dropout, layer_input.new_empty(layer_input.shape[1:]), spec.per_gate_dropout, generator
        ),
        recurrent_dropout_mask=draw_dropout_mask(
            spec.recurrent_dropout, h0, spec.per_gate_dropout, generator
        ),
        # the zoneout draws replace the rates (the inference weights) that ``common`` holds
        **{
            **common,
            **(_zoneout_draws(spec, layer_input.shape[0], h0, c0, generator) if spec.cell_variants else {}),
        },
    )


def _zoneout_draws(
    spec: LSTMSpec, steps: int, h0: Tensor, c0: Tensor, generator: torch.Generator | None
) -> dict:
    """One direction's zoneout draws of h and c in training (:func:`zoneout_weights`), as DirectionRun
    fields."""
    return {
        "zoneout_hidden": zoneout_weights(spec.zoneout_hidden, steps, h0, True, generator),
        "zoneout_cell": zoneout_weights(spec.zoneout_cell, steps, c0, True, generator),
    }


def _run_variants(spec: LSTMSpec, activation: Callable) -> dict:
    """The DirectionRun fields of the spec's cell variants that are the same for every direction, zoneout's
    inference weights (the rates, the draws' expectation) included (``activation``: the resolved cell
    activation)."""
    output_activation = resolve(spec.cell_output_activation, "output_activation")
    return {
        "output_activation": None if output_activation is activation else output_activation,
        "forget_bias": float(spec.forget_bias),
        "gate_clip": None if spec.gate_clip is None else float(spec.gate_clip),
        "cell_clip": None if spec.cell_clip is None else float(spec.cell_clip),
        "proj_clip": None if spec.proj_clip is None else float(spec.proj_clip),
        "coupled_gates": spec.coupled_gates,
        "layer_norm_eps": float(spec.layer_norm_eps),
        "zoneout_hidden": float(spec.zoneout_hidden),
        "zoneout_cell": float(spec.zoneout_cell),
    }


def select_direction_kernel(x: Tensor, weights: DirectionWeights, run: DirectionRun) -> DirectionKernel:
    for name, accepts, kernel in DIRECTION_KERNELS:
        if _forced_kernel is not None:
            if name == _forced_kernel:
                return kernel
            continue
        if accepts(x, weights, run):
            return kernel
    return run_direction_reference


def needs_grad(x: Tensor, h0: Tensor, c0: Tensor, layers: list[list[DirectionWeights]]) -> bool:
    """Whether autograd will record this call (grad mode on and an input or weight requires grad)."""
    if not torch.is_grad_enabled():
        return False
    if x.requires_grad or h0.requires_grad or c0.requires_grad:
        return True
    return any(
        w is not None and w.requires_grad
        for directions in layers for d in directions for w in (d.w_ih, d.w_hh, d.b_ih, d.b_hh, d.w_hr)
    )


def _right_padded_lengths(steps: CountedSteps, step_mask: Tensor, flipped: bool) -> Tensor | None:
    """Lengths (B,) when the counted steps of the (possibly time-flipped) input are a prefix per row: given
    lengths as they are, a mask only after looking (one host sync); None otherwise. ``step_mask`` is the
    (T, B) mask of ``steps``, flipped with the input."""
    if steps.lengths is not None and not flipped:
        return steps.lengths
    return lengths_from_right_padded(step_mask)


def _run_fused_standard(
    spec: LSTMSpec, x: Tensor, h0: Tensor, c0: Tensor, layers: list[list[DirectionWeights]],
    steps: CountedSteps, step_mask: Tensor | None, training: bool,
) -> tuple[Tensor, Tensor, Tensor] | None:
    """A standard cell on torch's fused kernel: over the input flipped in time for go_backwards (Keras's
    output stays in processing order), packed by the lengths of right-padded counted steps, with a gather
    that carries the last valid output forward for masked_output "previous". None when the counted steps
    (after the flip) are not right-padded."""
    if spec.go_backwards:
        x = x.flip(0)
        step_mask = None if step_mask is None else step_mask.flip(0)
    if step_mask is None:
        return run_stack_fused(spec, x, h0, c0, layers, lengths=None, training=training)
    lengths = _right_padded_lengths(steps, step_mask, flipped=spec.go_backwards)
    if lengths is None:
        return None
    out, h_n, c_n = run_stack_fused(spec, x, h0, c0, layers, lengths=lengths, training=training)
    if spec.masked_output == "previous":
        out = carry_last_valid_output(out, lengths, spec.output_size)
    return out, h_n, c_n


def run_stack(
    spec: LSTMSpec,
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    layers: list[list[DirectionWeights]],
    steps: CountedSteps = EVERY_STEP,
    *,
    training: bool = False,
    generator: torch.Generator | None = None,
    native_training: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the stack: the one function that chooses a kernel.

    Args:
        spec: what to compute.
        x: (T, B, F) time-major input, or (N, F) packed data when ``steps.packed``.
        h0: (L*D, B, P) and c0: (L*D, B, H) initial states, index layer * D + direction (sorted batch
            order for packed data).
        layers: L lists of D :class:`DirectionWeights`.
        steps: which steps count (:class:`~unilstm.steps.CountedSteps`), as the front door said it.
        training: enables dropout, input dropout and recurrent dropout.
        generator: random source for the dropout masks.
        native_training: let CPU training of standard cells run the native kernel (see
            :func:`native_trains_faster`) and CPU inference choose it where it measures faster (see
            :func:`inference_is_measured`); False keeps torch's own kernel there, bit for bit torch.nn.LSTM.

    Returns:
        output (T, B, D*P) (in processing order when ``spec.go_backwards``; packed (N, D*P) for packed
        data), h_n (L*D, B, P), c_n (L*D, B, H).
    """
    # without anything to draw, training mode computes the inference numbers: the same kernel choices
    training = training and spec.draws_in_training
    every_step = steps is EVERY_STEP or steps.every_step
    if not every_step and steps.packed:
        return _run_packed(spec, x, steps, h0, c0, layers, training, generator)
    cpu_training = x.device.type == "cpu" and needs_grad(x, h0, c0, layers)
    fused_ok = not (
        short_for_fused(x)
        or torch_backward_too_slow(cpu_training, steps)
        or (cpu_training and native_training and native_trains_faster(spec, x, training))
    )
    step_mask = None if every_step else steps.step_mask(x.shape[0], x.device)
    if fused_ok and _forced_kernel is None and spec.is_standard_cell:
        if native_training and inference_is_measured(x, training, cpu_training):
            return _fastest_inference(spec, x, h0, c0, layers, steps, step_mask, generator)
        fused = _run_fused_standard(spec, x, h0, c0, layers, steps, step_mask, training)
        if fused is not None:
            return fused
    return _run_layer_by_layer(spec, x, h0, c0, layers, step_mask, training, generator)


def inference_is_measured(x: Tensor, training: bool, cpu_training: bool) -> bool:
    """CPU inference of a standard cell (no autograd, no dropout) chooses between torch's fused kernel and
    the native kernel by measuring both at first use (:mod:`.first_use`): which is faster depends on the
    processor."""
    return (
        first_use.measuring()
        and not (training or cpu_training)
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and native_available()
        and not torch.is_autocast_enabled("cpu")
    )


def _fastest_inference(
    spec: LSTMSpec, x: Tensor, h0: Tensor, c0: Tensor, layers: list[list[DirectionWeights]],
    steps: CountedSteps, step_mask: Tensor | None, generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor]:
    kind = first_use.inference_kind(spec, x, step_mask is not None)
    return first_use.fastest(
        kind,
        {
            "torch_fused": lambda: _run_fused_standard(spec, x, h0, c0, layers, steps, step_mask, False),
            "native": lambda: _run_layer_by_layer(spec, x, h0, c0, layers, step_mask, False, generator),
        },
    )


def torch_backward_too_slow(cpu_training: bool, steps: CountedSteps) -> bool:
    """A CPU call that autograd records with counted steps never takes torch's kernel, even where it is asked
    for (the torch door, autocast, inter-layer dropout in training): its packed CPU backward is many times
    slower than the native kernel's (``policy.TORCH_PACKED_CPU_BACKWARD``)."""
    return cpu_training and not steps.every_step and not policy.TORCH_PACKED_CPU_BACKWARD


def _run_packed(
    spec: LSTMSpec, data: Tensor, steps: CountedSteps, h0: Tensor, c0: Tensor,
    layers: list[list[DirectionWeights]], training: bool, generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Packed data: torch's packed kernel, or padded (in sorted order), run with its lengths, packed again."""
    assert steps.batch_sizes is not None
    cpu_training = data.device.type == "cpu" and needs_grad(data, h0, c0, layers)
    if packed_fused_can_run(spec) and not torch_backward_too_slow(cpu_training, steps):
        return run_packed_fused(spec, data, steps.batch_sizes, h0, c0, layers, training)
    padded, lengths = pad_packed_sequence(PackedSequence(data, steps.batch_sizes, None, None))
    out, h_n, c_n = run_stack(
        spec, padded, h0, c0, layers, CountedSteps(lengths=lengths.to(data.device)),
        training=training, generator=generator,
    )
    return pack_padded_sequence(out, lengths, enforce_sorted=True).data, h_n, c_n


def _run_layer_by_layer(
    spec: LSTMSpec, x: Tensor, h0: Tensor, c0: Tensor, layers: list[list[DirectionWeights]],
    step_mask: Tensor | None, training: bool, generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Layer by layer, direction by direction, with the fastest direction kernel that accepts each run
    (both directions of a layer at once, or a direction's batch halves at once, where the native kernel
    can)."""
    if spec.go_backwards:
        x = x.flip(0)
        step_mask = None if step_mask is None else step_mask.flip(0)
    activation = resolve(spec.activation, "activation")
    recurrent_activation = resolve(spec.recurrent_activation, "recurrent_activation")
    common = {
        "activation": activation,
        "recurrent_activation": recurrent_activation,
        "step_mask": step_mask,
        "zero_masked_output": spec.masked_output == "zero",
        **(_run_variants(spec, activation) if spec.cell_variants else {}),
    }
    directions = spec.num_directions
    # without training nothing is drawn: one run per direction serves every layer
    inference_runs = None if training else [
        DirectionRun(reverse=direction == 1, **common)
        for direction in range(directions)
    ]
    h_n: list[Tensor] = []
    c_n: list[Tensor] = []
    layer_input = x
    for layer, layer_weights in enumerate(layers):
        outputs = []
        first = layer * directions
        runs = inference_runs if inference_runs is not None else [
            _training_run(spec, common, direction, layer_input, h0[first + direction], c0[first + direction],
                          generator)
            for direction in range(directions)
        ]
        results: list[tuple[Tensor, Tensor, Tensor]]
        if directions == 2 and _forced_kernel in (None, "native") and native_pair_accepts(
            layer_input, h0[first : first + 2], c0[first : first + 2], _pair(layer_weights), _pair(runs)
        ):  # both directions at once, one per core
            results = list(run_bidirectional_native(
                layer_input, h0[first : first + 2], c0[first : first + 2], _pair(layer_weights), _pair(runs)
            ))
        else:
            results = []
            for direction, (weights, run) in enumerate(zip(layer_weights, runs, strict=True)):
                h_start, c_start = h0[first + direction], c0[first + direction]
                kernel = select_direction_kernel(layer_input, weights, run)
                if kernel is run_direction_native and native_halves_accept(
                    layer_input, h_start, c_start, weights, run
                ):  # the batch's two halves at once, one per core
                    kernel = run_direction_native_halves
                results.append(kernel(layer_input, h_start, c_start, weights, run))
        for out, h, c in results:
            outputs.append(out)
            h_n.append(h)
            c_n.append(c)
        layer_output = outputs[0] if directions == 1 else torch.cat(outputs, dim=-1)
        if training and spec.dropout > 0.0 and layer < len(layers) - 1:
            layer_output = F.dropout(layer_output, p=spec.dropout, training=True)
        layer_input = layer_output
    # stacked copies: a kernel's h_T may share memory with its output sequence
    return layer_input, torch.stack(h_n), torch.stack(c_n)
