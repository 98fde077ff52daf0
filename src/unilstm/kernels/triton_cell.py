"""Fused cell steps for the fast kernel on CUDA: one Triton kernel per step forward and one backward.

Between its GEMMs the fast kernel's time loop does the LSTM cell's elementwise work,

    i, f, o = rσ(z_i), rσ(z_f), rσ(z_o);  g = act(z_g);  c' = f c + i g;  h' = o act(c')

and, going back, the gate gradients. As torch ops that is six to ten small kernels a step forward and
fifteen to twenty backward, each a few microseconds of launch on a GPU even inside a CUDA graph. Here each
direction of each step is one kernel, for the activations with a code in ``ACTIVATION_CODES`` and for every
step mask, dropout-mask layout, reverse direction and masked-output mode. With a projection (proj_size) the
step is the cell kernel and the projection's GEMM forward (plus two selections with a step mask), and a
(B, P) prelude kernel, the GEMM back to (B, H) and the cell kernel backward. Values are computed in
float32 (float64 for float64 tensors) and rounded where torch's ops store theirs, so results agree with
the torch-op loop to a few units in the last place.

Used only where Triton imports and the tensors are on CUDA, and while ``enabled`` (``UNILSTM_TRITON=0``
switches it off); ``run_on_cpu`` lets the tests run the kernels through Triton's interpreter
(TRITON_INTERPRET=1) on a machine without a GPU. tools/gpu/compile_triton_cell.py compiles every variant for
sm_90 on a machine without a GPU.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from types import ModuleType

import torch
from torch import Tensor

from .. import activations as A
from .activation_ids import ACTIVATION_IDS

__all__ = [
    "ACTIVATION_CODES", "accepts", "backward_step", "combine_gate_products", "enabled", "forward_step",
    "projected_backward_prelude", "run_on_cpu",
]

#: the activations the kernels compute, by their code (unilstm/kernels/activation_ids.py); celu (alpha 1)
#: is elu
ACTIVATION_CODES: dict[Callable, int] = {**A.kernel_ids(ACTIVATION_IDS), A.celu: ACTIVATION_IDS["elu"]}

#: switch for the fused steps; ``UNILSTM_TRITON=0`` in the environment sets it False at import
enabled: bool = os.environ.get("UNILSTM_TRITON", "1") != "0"
#: tests set this to run the kernels on CPU tensors (needs TRITON_INTERPRET=1 before the first use)
run_on_cpu = False
_BLOCK = 256


@functools.cache
def _importable_kernels() -> ModuleType | None:
    try:
        from . import _triton_cell_kernels
    except ImportError:  # no Triton (the CPU wheels of torch do not bring it)
        return None
    return _triton_cell_kernels


@functools.cache
def _kernels() -> ModuleType:
    """The kernels' module, for the steps of runs that :func:`accepts` (cached: called once per step)."""
    kernels = _importable_kernels()
    if kernels is None:
        raise ImportError("unilstm: the Triton cell kernels need Triton (see triton_cell.accepts)")
    return kernels


def _code(fn: Callable) -> int | None:
    return A.kernel_entry(ACTIVATION_CODES, fn)


def accepts(x: Tensor, activation: Callable, recurrent_activation: Callable) -> bool:
    """Whether the fused steps serve this run: both activations have a code, and the tensors are on CUDA
    with Triton importable (or on the CPU under ``run_on_cpu``)."""
    if not enabled or _code(activation) is None or _code(recurrent_activation) is None:
        return False
    if x.device.type != "cuda" and not (run_on_cpu and x.device.type == "cpu"):
        return False
    return _importable_kernels() is not None and _works_on(x.device)


@functools.cache
def _works_on(device: torch.device) -> bool:
    """One tiny forward and backward step on ``device``, checked against the same step in torch ops: a
    Triton that imports but cannot build or run kernels here (driver, toolchain) warns once and leaves the
    fast kernel on its torch ops instead of failing the call."""
    try:
        generator = torch.Generator().manual_seed(0)
        z = torch.randn(2, 8, generator=generator, dtype=torch.float64).to(device)
        c_prev = torch.randn(2, 2, generator=generator, dtype=torch.float64).to(device)
        h_prev, c_new, h_new = torch.zeros_like(c_prev), torch.empty_like(c_prev), torch.empty_like(c_prev)
        i, f, o = torch.sigmoid(z[:, :2]), torch.sigmoid(z[:, 2:4]), torch.sigmoid(z[:, 4:6])
        want_c = f * c_prev + i * torch.tanh(z[:, 6:])
        gates = z.clone()
        codes = (ACTIVATION_IDS["tanh"], ACTIVATION_IDS["sigmoid"])
        forward_step(gates, False, codes, True, c_prev, c_new, h_prev, h_new, None, None, None, False)
        dc, zero = torch.ones_like(c_prev), torch.zeros_like(c_prev)
        backward_step(gates, False, codes, True, c_new, c_prev, zero, zero, dc, None, None, None, False)
        # with no gradient through h, dc_{t-1} = dc_t * f
        ok = all(torch.allclose(got, want) for got, want in (
            (c_new, want_c), (h_new, o * torch.tanh(want_c)), (dc, f)
        ))
    except Exception as error:  # noqa: BLE001 - any failure: the torch ops compute these runs
        warnings.warn(
            f"unilstm: Triton cell kernels unusable on {device} ({type(error).__name__}: {error}); "
            "the fast kernel runs its torch ops", RuntimeWarning, stacklevel=2,
        )
        return False
    if not ok:
        warnings.warn(
            f"unilstm: Triton cell kernels disagree with torch on {device}; the fast kernel runs its "
            "torch ops", RuntimeWarning, stacklevel=2,
        )
    return ok


def _grid(n: int) -> tuple[int]:
    return ((n + _BLOCK - 1) // _BLOCK,)


def _gate_strides(z: Tensor, gatewise: bool) -> tuple[int, int]:
    """(gate stride, row stride) of step t's gate block: z is (B, 4H) for the shared layout or (4, B, H)."""
    if gatewise:
        return z.stride(0), z.stride(1)
    return z.shape[-1] // 4, z.stride(0)


def forward_step(
    z: Tensor, gatewise: bool, codes: tuple[int, int], store_activations: bool, c_prev: Tensor,
    c_new: Tensor, h_prev: Tensor, h_new: Tensor, keep: Tensor | None, out: Tensor | None,
    out_prev: Tensor | None, zero_out: bool, projected: bool = False, h_masks: Tensor | None = None,
    h_masked: Tensor | None = None,
) -> None:
    """One forward step (see the module docstring). z: step t's gate pre-activations, (B, 4H) or (4, B, H),
    in the order [i, f, o, g], overwritten by the activations when ``store_activations``; c_prev, h_prev,
    c_new, h_new, out, out_prev: (B, H) contiguous; keep: (B,) uint8 step mask or None (then out and
    out_prev are unused). With ``projected``, h_new receives r = o act(c') instead (0 in rows not kept),
    and h_prev, out, out_prev are unused: the caller projects r and selects the rows. ``h_masks``, a
    recurrent dropout mask (B, H) or per-gate masks (4, B, H), makes the step also write
    ``h_masked[k] = h' * h_masks[k]`` (same shape as the masks), the next step's GEMM operand (not with
    ``projected``)."""
    act, ract = codes
    gate_stride, row_stride = _gate_strides(z, gatewise)
    n = c_new.numel()
    _kernels().forward_step[_grid(n)](
        z, gate_stride, row_stride, c_prev, c_new, h_prev, h_new,
        h_new if out is None else out, h_new if out_prev is None else out_prev,
        c_new if keep is None else keep, c_new if h_masks is None else h_masks,
        c_new if h_masked is None else h_masked, n, c_new.shape[-1],
        ACT=act, RACT=ract, STORE_ACTIVATIONS=store_activations, MASKED=keep is not None,
        ZERO_OUT=zero_out, PROJECTED=projected, H_MASKS=0 if h_masks is None else h_masks.numel() // n,
        FLOAT64=z.dtype == torch.float64, BLOCK=_BLOCK,
    )


def backward_step(
    z: Tensor, gatewise: bool, codes: tuple[int, int], stored_activations: bool, c_new: Tensor,
    c_prev: Tensor, dout: Tensor, dh: Tensor | None, dc: Tensor, dh_pass: Tensor | None,
    carry: Tensor | None, keep: Tensor | None, zero_out: bool, projected: bool = False,
) -> None:
    """One backward step (see the module docstring): reads dout (step t's output gradient), dh and dc
    (those of h_t and c_t from later steps), writes the gate gradients over z, dc_{t-1} over dc, and with a
    step mask the gradient that passes masked rows into dh_pass and (unless ``zero_out``) the output
    gradient carried to the previous step into carry. All (B, H) contiguous; keep (B,) uint8 or None.
    With ``projected``, dout is the gradient of r = o act(c') (see :func:`projected_backward_prelude`), and
    dh, dh_pass and carry are unused."""
    act, ract = codes
    gate_stride, row_stride = _gate_strides(z, gatewise)
    n = dc.numel()
    _kernels().backward_step[_grid(n)](
        z, gate_stride, row_stride, c_new, c_prev, dout, dc if dh is None else dh, dc,
        dc if dh_pass is None else dh_pass, dc if carry is None else carry, dc if keep is None else keep,
        n, dc.shape[-1],
        ACT=act, RACT=ract, STORED_ACTIVATIONS=stored_activations, MASKED=keep is not None,
        ZERO_OUT=zero_out, PROJECTED=projected, FLOAT64=z.dtype == torch.float64, BLOCK=_BLOCK,
    )


def projected_backward_prelude(
    dout: Tensor, dh: Tensor, dh_new: Tensor, dh_pass: Tensor | None, carry: Tensor | None,
    keep: Tensor | None, zero_out: bool,
) -> None:
    """The (B, P) part of a backward step with a projection: dh_new = dout + dh, and with a step mask 0 in
    rows not kept, whose dh goes to dh_pass and (unless ``zero_out``) whose output gradient is carried back
    in carry (read and written). All (B, P) contiguous; keep (B,) uint8 or None."""
    n = dh_new.numel()
    _kernels().projected_backward_prelude[_grid(n)](
        dout, dh, dh_new, dh_new if dh_pass is None else dh_pass, dh_new if carry is None else carry,
        dh_new if keep is None else keep, n, dh_new.shape[-1],
        MASKED=keep is not None, ZERO_OUT=zero_out, FLOAT64=dh_new.dtype == torch.float64, BLOCK=_BLOCK,
    )


def codes(activation: Callable, recurrent_activation: Callable) -> tuple[int, int]:
    """(activation code, recurrent activation code) for runs that :func:`accepts`."""
    act, ract = _code(activation), _code(recurrent_activation)
    assert act is not None and ract is not None
    return act, ract


def combine_gate_products(dh4: Tensor, mask: Tensor | None, dh_pass: Tensor | None, out: Tensor) -> Tensor:
    """out = sum_k dh4[k] * mask[k] (per-gate mask (4, B, P)), or (sum_k dh4[k]) * mask (shared (B, P)), or
    the plain sum, plus dh_pass when given: the per-gate products of the backward step's dh_{t-1} in one
    kernel. All contiguous."""
    n = out.numel()
    mask_kind = 0 if mask is None else (2 if mask.dim() == 3 else 1)
    _kernels().combine_gate_products[_grid(n)](
        dh4, dh4.stride(0), dh4 if mask is None else mask, out if dh_pass is None else dh_pass, out, n,
        MASK=mask_kind, PASS=dh_pass is not None, FLOAT64=out.dtype == torch.float64, BLOCK=_BLOCK,
    )
    return out
