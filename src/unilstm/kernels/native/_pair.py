"""Two C loops at once, one on each of two threads of torch's OpenMP team (each with its cell unsplit and
its BLAS calls on its own thread inside the parallel region): the two directions of a bidirectional layer
(:func:`run_bidirectional_native`) or the two halves of one direction's batch
(:func:`run_direction_native_halves`). :func:`pair_accepts` and :func:`halves_accept` say where that is
faster than one loop after the other: measured at first use per kind of call (:func:`_split_kind`), both
ways, forward only, on the call's own tensors (:func:`..first_use.route`); with measuring off
(``UNILSTM_KERNEL_CHOICE=policy``) the fixed rules ``policy.PAIR_*`` and ``policy.HALVES_*`` decide.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from .. import first_use, policy
from ..fast import function_arguments
from ..opaque import opaque_to_compile
from ..reference import DirectionRun, DirectionWeights
from . import _blas
from . import _extension as C
from ._loops import (
    RECORD_SIZE,
    Config,
    Deferred,
    Record,
    RunTensors,
    accepts,
    backward_pass,
    buffers_agree,
    call_arguments,
    cell_threads,
    differentiable_backward,
    forward_pass,
    kept_arguments,
    needs_graph,
    record_for_backward,
    run_config,
    run_direction_native,
    uses_variant_loops,
)
from ._variants import run_direction_variant_halves, run_directions_variant, variant_buffers_agree


def _forward_both(
    halves: bool, cfgs: tuple[Config, Config], xs: tuple[Tensor, Tensor],
    run_args: tuple[RunTensors, RunTensors], step_masks: tuple[Tensor | None, Tensor | None], save: bool,
) -> tuple[tuple[Tensor, ...], tuple[Record, Record]]:
    """_forward_pass of two runs (each its cfg, x, arguments between x and step_mask, and step_mask), the
    two C loops run at once. Returns the results, (out, h_T, c_T) of each run or, for the ``halves`` of a
    batch, (out, h_T_a, c_T_a, h_T_b, c_T_b) with both runs' outputs written in place into one (T, B, P)
    tensor; and the (meta, saved) of each run."""
    out = None
    outputs: tuple[Tensor | None, Tensor | None] = (None, None)
    if halves:
        rows = xs[0].shape[1]
        out = xs[0].new_empty(xs[0].shape[0], rows + xs[1].shape[1], run_args[0][0].shape[-1])  # P from h0
        outputs = (out[:, :rows], out[:, rows:])
    defer: list[Deferred] = []
    runs = zip(cfgs, xs, run_args, step_masks, outputs, strict=True)
    (results_a, saved_a), (results_b, saved_b) = [
        forward_pass(cfg, x, *args, step_mask, save=save, defer=defer, output=output)
        for cfg, x, args, step_mask, output in runs
    ]
    if defer:  # (without the C loops, the per-step loops ran already)
        C.forward_loop_pair(defer[0][0], defer[1][0])
    results = (*results_a, *results_b) if out is None else (out, *results_a[1:], *results_b[1:])
    return results, (saved_a, saved_b)



class _NativeLSTMPair(torch.autograd.Function):
    """Two independent runs, their C loops at once on two threads: the two directions of a bidirectional
    layer (both given the same x and step mask), or the two halves of a batch (each its rows). Arguments
    (halves, cfg_a, cfg_b, x_a, x_b, run a's h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mx, mh, the same for run
    b, step_mask_a, step_mask_b). Results: (out, h_T, c_T) of each run; with ``halves`` their outputs come
    as one (T, B, P) tensor instead, written in place by both loops: (out, h_T_a, c_T_a, h_T_b, c_T_b). A
    tensor given to both runs (x, weights) gets the sum of their gradients."""

    @staticmethod
    def forward(ctx, halves, cfg_a, cfg_b, x_a, x_b, *rest):  # noqa: N805
        args_a, args_b, step_masks = rest[:9], rest[9:18], rest[18:20]
        results, ((meta_a, saved_a), (meta_b, saved_b)) = _forward_both(
            halves, (cfg_a, cfg_b), (x_a, x_b), (args_a, args_b), step_masks, save=True
        )
        ctx.halves, ctx.cfgs, ctx.metas = halves, (cfg_a, cfg_b), (meta_a, meta_b)
        ctx.split = x_a.shape[1] if halves else None
        # the two records, then what each lacks of its call (for a backward that reruns the forward)
        kept_a = kept_arguments((cfg_a, x_a, *args_a, step_masks[0]))
        kept_b = kept_arguments((cfg_b, x_b, *args_b, step_masks[1]))
        ctx.save_for_backward(*saved_a, *saved_b, *kept_a, *kept_b)
        ctx.has_bias = (args_a[4] is not None, args_a[5] is not None)
        return results

    @staticmethod
    def backward(ctx, *grads):  # noqa: N805
        if ctx.split is None:
            dout_a, dh_a, dc_a, dout_b, dh_b, dc_b = grads
        else:  # the halves read their rows of the one output gradient in place
            dout, dh_a, dc_a, dh_b, dc_b = grads
            dout_a, dout_b = dout[:, : ctx.split], dout[:, ctx.split :]
        saved, needs = ctx.saved_tensors, ctx.needs_input_grad
        records = saved[:RECORD_SIZE], saved[RECORD_SIZE : 2 * RECORD_SIZE]
        kept = saved[2 * RECORD_SIZE :]
        args_a = call_arguments(ctx.cfgs[0], records[0], kept[: len(kept) // 2])
        args_b = call_arguments(ctx.cfgs[1], records[1], kept[len(kept) // 2 :])
        if torch.is_grad_enabled():  # create_graph=True: each run through the reference loop
            grads_a = differentiable_backward(args_a, (dout_a, dh_a, dc_a))
            grads_b = differentiable_backward(args_b, (dout_b, dh_b, dc_b))
        else:
            def rerun() -> tuple:
                _, (run_a, run_b) = _forward_both(
                    ctx.halves, ctx.cfgs, (args_a[1], args_b[1]), (args_a[2:11], args_b[2:11]),
                    (args_a[11], args_b[11]), save=True,
                )
                return (*run_a[1], *run_b[1])

            both = record_for_backward(ctx, (*records[0], *records[1]), rerun)
            # each run's needs in _NativeLSTM's argument order (cfg, x, h0, ..., mh, step_mask)
            needs_a = (False, needs[3], *needs[5:14], False)
            needs_b = (False, needs[4], *needs[14:23], False)
            defer: list = []
            finish_a = backward_pass(ctx.cfgs[0], ctx.metas[0], both[:RECORD_SIZE], needs_a, ctx.has_bias,
                                     dout_a, dh_a, dc_a, defer)
            finish_b = backward_pass(ctx.cfgs[1], ctx.metas[1], both[RECORD_SIZE:], needs_b, ctx.has_bias,
                                     dout_b, dh_b, dc_b, defer)
            if defer:
                C.backward_loop_pair(defer[0][0], defer[1][0])
            grads_a, grads_b = finish_a(), finish_b()
        return (None, None, None, grads_a[1], grads_b[1], *grads_a[2:11], *grads_b[2:11], None, None)



def _two_loops_at_once(dtype: torch.dtype) -> bool:
    """Two C loops can run at once, one per thread: the C loops for ``dtype`` and the OpenMP runtime are
    there with ``policy.TWO_LOOPS_THREADS`` threads."""
    return (
        C.available() and cell_threads() == policy.TWO_LOOPS_THREADS
        and bool(_blas.blas_functions(dtype)[0])
    )


def pair_accepts(x: Tensor, h0: Tensor, c0: Tensor, weights: tuple[DirectionWeights, DirectionWeights],
                 runs: tuple[DirectionRun, DirectionRun]) -> bool:
    """Whether run_bidirectional_native computes both directions of this layer at once: two loops can run
    at once (_two_loops_at_once), both directions are native runs and running them at once is faster:
    measured at first use per kind of call; with measuring off, from policy.PAIR_MIN_BATCH sequences or up
    to policy.PAIR_MAX_HIDDEN hidden units."""
    if not _two_loops_at_once(x.dtype):
        return False
    variants = [uses_variant_loops(w, r) for w, r in zip(weights, runs, strict=True)]
    if variants[0] != variants[1]:  # one loop of each kind: one after the other
        return False
    if not all(accepts(x, w, r) and buffers_agree(x, h, c, w, r)
               and (not variants[0] or variant_buffers_agree(x, h, c, w, r))
               for w, r, h, c in zip(weights, runs, h0, c0, strict=True)):
        return False
    rule = x.shape[1] >= policy.PAIR_MIN_BATCH or c0.shape[-1] <= policy.PAIR_MAX_HIDDEN
    if not first_use.measuring():
        return rule

    def candidates() -> dict[str, Callable[[], object]]:
        def apart() -> None:
            for d in range(2):
                run_direction_native(x, h0[d], c0[d], weights[d], runs[d])

        return {"at_once": lambda: run_bidirectional_native(x, h0, c0, weights, runs), "apart": apart}

    kind = _split_kind("pair", x, h0, c0, weights[0], variants[0])
    return _measured(kind, candidates, rule)


@opaque_to_compile
def run_bidirectional_native(
    x: Tensor, h0: Tensor, c0: Tensor, weights: tuple[DirectionWeights, DirectionWeights],
    runs: tuple[DirectionRun, DirectionRun],
) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
    """Both directions of one layer (h0, c0: (2, B, .)), each as :func:`run_direction_native` computes it,
    their loops at once on two threads. The caller checks :func:`pair_accepts` first."""
    x = x.contiguous()
    if uses_variant_loops(weights[0], runs[0]):
        return run_directions_variant(x, h0, c0, weights, runs)
    direction_args = [
        function_arguments(run_config(run), x, h.contiguous(), c.contiguous(), weights_d, run)
        for weights_d, run, h, c in zip(weights, runs, h0, c0, strict=True)
    ]
    out = _run_pair(direction_args, halves=False)
    return out[:3], out[3:]


def _run_pair(run_args: list, halves: bool) -> tuple:
    """Two runs given as function_arguments tuples, their loops at once: the (out, h_T, c_T) of each, or for
    the halves of a batch (out, h_T_a, c_T_a, h_T_b, c_T_b) with one output tensor."""
    (cfg_a, x_a, *args_a, step_mask_a), (cfg_b, x_b, *args_b, step_mask_b) = run_args
    with torch.autocast(device_type="cpu", enabled=False):  # products must stay in x's dtype
        if not (needs_graph(run_args[0]) or needs_graph(run_args[1])):
            return _forward_both(halves, (cfg_a, cfg_b), (x_a, x_b), (args_a, args_b),
                                 (step_mask_a, step_mask_b), save=False)[0]
        return _NativeLSTMPair.apply(
            halves, cfg_a, cfg_b, x_a, x_b, *args_a, *args_b, step_mask_a, step_mask_b
        )




def halves_accept(x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun) -> bool:
    """Whether run_direction_native_halves computes this run: two loops can run at once
    (_two_loops_at_once), a native run of at least two sequences, and faster so: measured at first use per
    kind of call; with measuring off, at least policy.HALVES_MIN_BATCH sequences and recurrent weights
    small enough (policy.HALVES_MAX_WEIGHT_BYTES, or HALVES_MAX_WEIGHT_BYTES_INFERENCE when autograd does
    not record the call): each thread reads all of them every step, where two-thread GEMMs read half each."""
    measuring = first_use.measuring()
    smallest = 2 if measuring else policy.HALVES_MIN_BATCH
    if x.shape[1] < smallest or not _two_loops_at_once(x.dtype):  # batch first: streaming
        return False
    if not measuring:
        records = _records(x, h0, c0, weights)
        limit = policy.HALVES_MAX_WEIGHT_BYTES if records else policy.HALVES_MAX_WEIGHT_BYTES_INFERENCE
        if weights.w_hh.numel() * x.element_size() > limit:
            return False
    if not (accepts(x, weights, run) and buffers_agree(x, h0, c0, weights, run)):
        return False
    variant = uses_variant_loops(weights, run)
    if variant and not variant_buffers_agree(x, h0, c0, weights, run):
        return False
    if not measuring:
        return True

    def candidates() -> dict[str, Callable[[], object]]:
        return {
            "at_once": lambda: run_direction_native_halves(x, h0, c0, weights, run),
            "apart": lambda: run_direction_native(x, h0, c0, weights, run),
        }

    return _measured(_split_kind("halves", x, h0, c0, weights, variant), candidates, True)


def _records(x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights) -> bool:
    """Whether autograd records a run of these tensors."""
    return needs_graph((x, h0, c0, weights.w_ih, weights.w_hh, weights.b_ih, weights.b_hh, weights.w_hr))


def _split_kind(
    name: str, x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, variant: bool
) -> tuple:
    """What decides running two loops at once (``name``: "pair" or "halves"): dtype, each size's power-of-two
    bucket (steps, sequences, features, H, P), whether autograd records the call, a variant loop or not, and
    the thread count."""
    steps, batch, features = x.shape
    return (name, x.dtype, steps.bit_length(), batch.bit_length(), features.bit_length(),
            c0.shape[-1].bit_length(), h0.shape[-1].bit_length(), _records(x, h0, c0, weights), variant,
            torch.get_num_threads())


def _measured(kind: tuple, candidates: Callable[[], dict[str, Callable[[], object]]], rule: bool) -> bool:
    """Whether the two loops run at once for ``kind``: measured at first use, both ways, on the call's own
    tensors (forward only, outside autograd: a training call's backward pairs its loops as its forward
    does), ``rule`` until then where nothing can be measured."""
    chosen = first_use.measured_route(kind)
    if chosen is None:
        def timed() -> dict[str, Callable[[], object]]:
            runs = candidates()
            return {name: _without_autograd(run) for name, run in runs.items()}

        chosen = first_use.route(kind, timed, "at_once" if rule else "apart")
    return chosen == "at_once"


def _without_autograd(run: Callable[[], object]) -> Callable[[], object]:
    def timed() -> object:
        with torch.no_grad():
            return run()

    return timed


def _batch_rows(run: DirectionRun, rows: slice) -> DirectionRun:
    """The run restricted to the sequences ``rows``: its step mask (T, B) and dropout masks (B, .) or
    (4, B, .) cut along the batch."""
    def cut(mask: Tensor | None, batch_dim: int) -> Tensor | None:
        return None if mask is None else mask[(slice(None),) * batch_dim + (rows,)]

    dropout_x, dropout_h = run.input_dropout_mask, run.recurrent_dropout_mask
    return dataclasses.replace(
        run,
        step_mask=cut(run.step_mask, 1),
        input_dropout_mask=cut(dropout_x, 0 if dropout_x is None else dropout_x.dim() - 2),
        recurrent_dropout_mask=cut(dropout_h, 0 if dropout_h is None else dropout_h.dim() - 2),
    )


@opaque_to_compile
def run_direction_native_halves(
    x: Tensor, h0: Tensor, c0: Tensor, weights: DirectionWeights, run: DirectionRun
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`run_direction_native` on the two halves of the batch, their C loops at once on two threads
    (the rows of an LSTM are independent): each loop's per-step products run on one thread with no fork,
    and the cell is not split. The caller checks :func:`halves_accept` first. The weight gradients are the
    sums of the halves' (another summation order than one run's, within float rounding)."""
    if uses_variant_loops(weights, run):
        return run_direction_variant_halves(x, h0, c0, weights, run)
    cfg = run_config(run)
    middle = x.shape[1] // 2
    runs = [
        function_arguments(cfg, x[:, rows].contiguous(), h0[rows].contiguous(), c0[rows].contiguous(),
                           weights, _batch_rows(run, rows))
        for rows in (slice(0, middle), slice(middle, None))
    ]
    out, h_a, c_a, h_b, c_b = _run_pair(runs, halves=True)
    return out, torch.cat((h_a, h_b)), torch.cat((c_a, c_b))

