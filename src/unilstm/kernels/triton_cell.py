"""Fused cell steps for the fast kernel on CUDA: one Triton kernel per step forward and one backward.

Between its GEMMs the fast kernel's time loop does the LSTM cell's elementwise work,

    i, f, o = rσ(z_i), rσ(z_f), rσ(z_o);  g = act(z_g);  c' = f c + i g;  h' = o act(c')

and, going back, the gate gradients. As torch ops that is six to ten small kernels a step forward and
fifteen to twenty backward, each a few microseconds of launch on a GPU even inside a CUDA graph. Here each
direction of each step is one kernel, for the activations with a code in ``ACTIVATION_CODES`` or
``PARAMETRIC_CODES`` (ONNX's, their alpha and beta compile-time constants) and for every step mask,
dropout-mask layout, reverse direction and masked-output mode. With a projection (proj_size) the step is
the cell kernel and the projection's GEMM forward (plus two selections with a step mask), and a (B, P)
prelude kernel, the GEMM back to (B, H) and the cell kernel backward. Values are computed in float32
(float64 for float64 tensors) and rounded where torch's ops store theirs, so results agree with
the torch-op loop to a few units in the last place.

The cell variants (kernels/fast_variants.py: layer normalisation, peepholes, gate, cell and projection
clips, coupled gates, forget bias, zoneout, an output activation, ONNX's parametric activations) have
kernels of their own (_triton_variant_kernels.py, :class:`VariantSteps`): forward, one kernel from the
pre-activations to c' and h' (with a projection: to r, then its GEMM, then a (B, P) kernel for proj_clip,
zoneout and the mask); backward, one kernel from the incoming gradients to the gate gradients and dc_{t-1}
(with a projection a (B, P) prelude and the GEMM before it). They write the record that fast_variants'
torch-op steps write, so the sums over all steps after the loop (weight, peephole and gain gradients) are
shared. Layer normalisation fits a per-row block: a
program holds a row's 4H recurrent pre-activations and H cell values, so both normalisations and their
backward are reductions inside the step's kernel (LN_ih over all steps stays one torch call before the
loop); :func:`variant_declines` names what is not fused.

Used only where Triton imports and the tensors are on CUDA, and while ``enabled`` (``UNILSTM_TRITON=0``
switches it off); ``run_on_cpu`` lets the tests run the kernels through Triton's interpreter
(TRITON_INTERPRET=1) on a machine without a GPU. tools/gpu/compile_triton_cell.py and
compile_triton_variants.py compile the kernels for sm_90 on a machine without a GPU.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from .. import activations as A
from .activation_ids import ACTIVATION_IDS
from .triton_codes import PARAMETRIC_CODES

__all__ = [
    "ACTIVATION_CODES", "PARAMETRIC_CODES", "VariantSteps", "accepts", "accepts_variants", "backward_step",
    "combine_gate_products", "enabled", "forward_step", "projected_backward_prelude", "run_on_cpu",
    "variant_declines",
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
    """Whether the fused steps serve this run: both activations have a code (ONNX's parametric ones
    included), and the tensors are on CUDA with Triton importable (or on the CPU under ``run_on_cpu``)."""
    if not enabled or _variant_code(activation) is None or _variant_code(recurrent_activation) is None:
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
        codes = ((ACTIVATION_IDS["tanh"], 0.0, 0.0), (ACTIVATION_IDS["sigmoid"], 0.0, 0.0))
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


#: (code, alpha, beta) of an activation in the kernels (:func:`codes`)
ActivationCode = tuple[int, float, float]


def forward_step(
    z: Tensor, gatewise: bool, codes: tuple[ActivationCode, ActivationCode], store_activations: bool,
    c_prev: Tensor, c_new: Tensor, h_prev: Tensor, h_new: Tensor, keep: Tensor | None, out: Tensor | None,
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
        ACT=act[0], ACT_A=act[1], ACT_B=act[2], RACT=ract[0], RACT_A=ract[1], RACT_B=ract[2],
        STORE_ACTIVATIONS=store_activations, MASKED=keep is not None,
        ZERO_OUT=zero_out, PROJECTED=projected, H_MASKS=0 if h_masks is None else h_masks.numel() // n,
        FLOAT64=z.dtype == torch.float64, BLOCK=_BLOCK,
    )


def backward_step(
    z: Tensor, gatewise: bool, codes: tuple[ActivationCode, ActivationCode], stored_activations: bool,
    c_new: Tensor, c_prev: Tensor, dout: Tensor, dh: Tensor | None, dc: Tensor, dh_pass: Tensor | None,
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
        ACT=act[0], ACT_A=act[1], ACT_B=act[2], RACT=ract[0], RACT_A=ract[1], RACT_B=ract[2],
        STORED_ACTIVATIONS=stored_activations, MASKED=keep is not None,
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


def codes(activation: Callable, recurrent_activation: Callable) -> tuple[ActivationCode, ActivationCode]:
    """(code, alpha, beta) of the activation and of the recurrent activation, for runs that
    :func:`accepts`."""
    act, ract = _variant_code(activation), _variant_code(recurrent_activation)
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


# ---------------------------------------------------------------------------------------------------------
# The cell variants (kernels/fast_variants.py): one kernel per step forward and one backward (two and two
# with a projection, around its GEMM)
# ---------------------------------------------------------------------------------------------------------

#: layer normalisation is fused while a row's 4H pre-activations fit one program's block (bytes)
LAYER_NORM_MAX_ROW_BYTES = 64 * 1024


@functools.cache
def _importable_variant_kernels() -> ModuleType | None:
    try:
        from . import _triton_variant_kernels
    except ImportError:
        return None
    return _triton_variant_kernels


def _variant_code(fn: Callable) -> tuple[int, float, float] | None:
    """(code, alpha, beta) of an activation in the variant kernels, None where they lack it."""
    if isinstance(fn, A.ParametricActivation):
        return PARAMETRIC_CODES[fn.kind], fn.alpha, fn.beta
    code = _code(fn)
    return None if code is None else (code, 0.0, 0.0)


def variant_declines(x: Tensor, cfg: Any, layer_norm: bool, hidden: int) -> list[str]:
    """Why the fused variant steps do not serve a variant run (``cfg`` a fast_variants.VariantConfig), by
    name; [] where they do. Every variant is fused, in every float dtype; declined are activations without a
    code (by role: "activation", "recurrent_activation", "output_activation"), and "layer_norm" where a
    row's 4H pre-activations in the compute dtype exceed LAYER_NORM_MAX_ROW_BYTES (H > 4096, > 2048 in
    float64): one program normalises a whole row."""
    reasons = [
        role for role, entry in (("activation", cfg.act), ("recurrent_activation", cfg.ract),
                                 ("output_activation", cfg.out_act))
        if _variant_code(entry.fn) is None
    ]
    # (the half types compute in float32)
    if layer_norm and 4 * hidden * max(4, x.element_size()) > LAYER_NORM_MAX_ROW_BYTES:
        reasons.append("layer_norm")
    return reasons


def accepts_variants(x: Tensor, cfg: Any, layer_norm: bool, hidden: int) -> bool:
    """Whether the fused variant steps (:class:`VariantSteps`) serve this variant run: nothing declined
    (:func:`variant_declines`), the tensors on CUDA (or the CPU under ``run_on_cpu``), the kernels usable."""
    if not enabled or variant_declines(x, cfg, layer_norm, hidden):
        return False
    if x.device.type != "cuda" and not (run_on_cpu and x.device.type == "cpu"):
        return False
    if _importable_variant_kernels() is None:
        return False
    return _works_on(x.device) and _variants_work_on(x.device)


@dataclass(frozen=True)
class _CheckEntry:
    fn: Callable


@dataclass(frozen=True)
class _CheckConfig:
    """The fields of fast_variants.VariantConfig that the kernels read (fast_variants imports this module)."""

    act: _CheckEntry
    ract: _CheckEntry
    out_act: _CheckEntry
    zero_out: bool = True
    gate_clip: float | None = None
    cell_clip: float | None = None
    proj_clip: float | None = None
    coupled: bool = False
    zoneout_hidden: float = 0.0
    zoneout_cell: float = 0.0
    eps: float = 1e-5


@functools.cache
def _variants_work_on(device: torch.device) -> bool:
    """One tiny variant step (peepholes) forward and backward on ``device`` against the same step in torch
    ops, as :func:`_works_on` for the standard steps: a failure warns once and leaves the torch ops."""
    try:
        tanh, sigmoid = _CheckEntry(torch.tanh), _CheckEntry(torch.sigmoid)
        cfg = _CheckConfig(tanh, sigmoid, tanh)
        generator = torch.Generator().manual_seed(0)
        z, c, peep = (torch.randn(*shape, generator=generator, dtype=torch.float64).to(device)
                      for shape in ((2, 8), (2, 2), (6,)))
        steps = VariantSteps(cfg, z.new_zeros(1, 2, 1), 2, 2, peep, None, None, None, None, None, False)
        record, k, c_new, h_new = z.clone(), torch.empty_like(c), torch.empty_like(c), torch.empty_like(c)
        steps.forward(0, record, c, k, c_new, torch.zeros_like(c), h_new)
        i, f = torch.sigmoid(z[:, :2] + peep[:2] * c), torch.sigmoid(z[:, 2:4] + peep[2:4] * c)
        g = torch.tanh(z[:, 4:6])
        want_k = f * c + i * g
        o = torch.sigmoid(z[:, 6:] + peep[4:] * want_k)
        dc, dz, rest = torch.ones_like(c), torch.empty_like(z), torch.empty_like(c)
        steps.backward(0, record, k, c, dc, dz, torch.zeros_like(c), torch.zeros_like(c), None, rest)
        # with a gradient through c alone: dk = 1, dz_i = g i (1 - i), dz_f = c f (1 - f), dz_o = 0
        dz_i, dz_f = g * i * (1 - i), c * f * (1 - f)
        ok = all(torch.allclose(got, want) for got, want in (
            (k, want_k), (c_new, want_k), (h_new, o * torch.tanh(want_k)),
            (dz[:, :4], torch.cat((dz_i, dz_f), 1)), (dc, f + peep[:2] * dz_i + peep[2:4] * dz_f),
        ))
    except Exception as error:  # noqa: BLE001 - any failure: the torch ops compute these runs
        warnings.warn(
            f"unilstm: Triton cell-variant kernels unusable on {device} ({type(error).__name__}: {error}); "
            "the fast kernel runs its torch ops for variants", RuntimeWarning, stacklevel=2,
        )
        return False
    if not ok:
        warnings.warn(
            f"unilstm: Triton cell-variant kernels disagree with torch on {device}; the fast kernel runs its "
            "torch ops for variants", RuntimeWarning, stacklevel=2,
        )
    return ok


@functools.lru_cache(maxsize=256)
def _variant_constants(cfg: Any, peephole: bool, layer_norm: bool, masked: bool, projected: bool,
                       float64: bool, draws: tuple[bool, bool]) -> dict[str, Any]:
    """The constexpr arguments of the variant cell kernels for one kind of call."""
    act, ract, out = (_variant_code(entry.fn) for entry in (cfg.act, cfg.ract, cfg.out_act))
    assert act is not None and ract is not None and out is not None

    def zone(has_draws: bool, weight: float) -> int:
        return 2 if has_draws else int(weight != 0.0)

    return dict(
        ACT=act[0], ACT_A=act[1], ACT_B=act[2], RACT=ract[0], RACT_A=ract[1], RACT_B=ract[2],
        OUT=out[0], OUT_A=out[1], OUT_B=out[2], PEEP=peephole,
        GATE_CLIP=cfg.gate_clip is not None, GATE_BOUND=float(cfg.gate_clip or 0.0),
        CELL_CLIP=cfg.cell_clip is not None, CELL_BOUND=float(cfg.cell_clip or 0.0), COUPLED=cfg.coupled,
        ZONE_H=zone(draws[0], cfg.zoneout_hidden), WH=float(cfg.zoneout_hidden),
        ZONE_C=zone(draws[1], cfg.zoneout_cell), WC=float(cfg.zoneout_cell),
        LN=layer_norm, EPS=float(cfg.eps), MASKED=masked, ZERO_OUT=cfg.zero_out, PROJECTED=projected,
        FLOAT64=float64,
    )


class VariantSteps:
    """The fused steps of one variant call of fast_variants' bodies: the call's constants, shared tensors
    and launch grid, and one method per kernel (each takes step t's (B, .) slices, all contiguous).

    x (T, B, F); peephole (3H,) or None; ln_hh, ln_c: (gain, bias) of LN_hh (4H,) and LN_c (H,), or None;
    step_mask (T, B) bool or None; zh (T, B, P), zc (T, B, H): zoneout draws or None (then cfg's weights).
    """

    def __init__(self, cfg: Any, x: Tensor, hidden: int, proj: int, peephole: Tensor | None,
                 ln_hh: tuple[Tensor, Tensor] | None, ln_c: tuple[Tensor, Tensor] | None,
                 step_mask: Tensor | None, zh: Tensor | None, zc: Tensor | None, projected: bool) -> None:
        self.cfg, self.H, self.P, self.B = cfg, hidden, proj, x.shape[1]
        kernels = _importable_variant_kernels()
        assert kernels is not None  # (accepts_variants said so)
        self.kernels: Any = kernels
        self.peephole = None if peephole is None else peephole.contiguous()
        self.ln_hh, self.ln_c = ln_hh, ln_c
        self.keep = () if step_mask is None else step_mask.contiguous().view(torch.uint8).unbind(0)
        self.zh = () if zh is None else zh.contiguous().unbind(0)
        self.zc = () if zc is None else zc.contiguous().unbind(0)
        self.constants = _variant_constants(
            cfg, peephole is not None, ln_hh is not None, step_mask is not None, projected,
            x.dtype == torch.float64, (zh is not None, zc is not None),
        )
        self.projected = projected
        # one program per row and block of columns; a whole row per program with layer normalisation
        width = triton_next_power_of_2(hidden)
        self.block = width if ln_hh is not None else min(width, _BLOCK)
        self.grid = (self.B, (hidden + self.block - 1) // self.block)
        self.warps = max(4, min(16, self.block // 256))

    def _step(self, t: int) -> tuple[Any, Any, Any]:
        return (self.keep[t] if self.keep else None, self.zh[t] if self.zh else None,
                self.zc[t] if self.zc else None)

    def forward(
        self, t: int, z: Tensor, c_prev: Tensor, k: Tensor, c_new: Tensor, h_prev: Tensor, h_new: Tensor,
        out: Tensor | None = None, out_prev: Tensor | None = None, r: Tensor | None = None,
        a: Tensor | None = None, rr: Tensor | None = None, r_stats: tuple[Tensor, Tensor] | None = None,
        n: Tensor | None = None, c_stats: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        """Step t forward (``_triton_variant_kernels.variant_forward_step``): z (B, 4H) the pre-activations
        (with LN: written from a (B, 4H) + LN_hh(rr (B, 4H)), statistics into r_stats (B, 1) each),
        c_prev (B, H), k (B, H) the record's candidate, c_new (B, H), and either h_prev, h_new, out,
        out_prev (B, P = H) or, projected, r (B, H); n and c_stats: LN_c's record."""
        keep, wh, wc = self._step(t)
        lw_hh, lb_hh = self.ln_hh if self.ln_hh is not None else (k, k)
        lw_c, lb_c = self.ln_c if self.ln_c is not None else (k, k)
        r_mean, r_rstd = r_stats if r_stats is not None else (k, k)
        c_mean, c_rstd = c_stats if c_stats is not None else (k, k)
        self.kernels.variant_forward_step[self.grid](
            z, z if a is None else a, z if rr is None else rr, r_mean, r_rstd, lw_hh, lb_hh, c_prev, h_prev,
            k if self.peephole is None else self.peephole, k if wh is None else wh, k if wc is None else wc,
            k if keep is None else keep, lw_c, lb_c, k, c_new, h_new, h_new if out is None else out,
            h_new if out_prev is None else out_prev, k if r is None else r, k if n is None else n, c_mean,
            c_rstd, self.H, **self.constants, BLOCK=self.block, num_warps=self.warps,
        )

    def project(self, t: int, rp: Tensor, h_prev: Tensor, h_new: Tensor, out: Tensor | None = None,
                out_prev: Tensor | None = None) -> None:
        """The (B, P) end of projected step t: h_new (and out) from rp = r W_hr^T (B, P) and h_prev."""
        keep, wh, _ = self._step(t)
        flags = self.constants
        n = rp.numel()
        self.kernels.variant_projected_step[_grid(n)](
            rp, h_prev, rp if wh is None else wh, rp if keep is None else keep, h_new,
            h_new if out is None else out, h_new if out_prev is None else out_prev, n, self.P,
            ZONE_H=flags["ZONE_H"], WH=flags["WH"], PROJ_CLIP=self.cfg.proj_clip is not None,
            PROJ_BOUND=float(self.cfg.proj_clip or 0.0), MASKED=flags["MASKED"], ZERO_OUT=flags["ZERO_OUT"],
            FLOAT64=flags["FLOAT64"], BLOCK=_BLOCK,
        )

    def backward_prelude(self, t: int, dout: Tensor, dh: Tensor, carry: Tensor | None, rp: Tensor | None,
                         dh_cell: Tensor, rest: Tensor) -> None:
        """The (B, P) start of projected step t backward: dh_cell = the gradient of r W_hr^T (0 outside
        proj_clip, rp the saved product), rest = what of dh' skips the cell; carry updated in place."""
        keep, wh, _ = self._step(t)
        flags = self.constants
        n = dh.numel()
        self.kernels.variant_backward_prelude[_grid(n)](
            dout, dh, dh if carry is None else carry, dh if keep is None else keep, dh if wh is None else wh,
            dh if rp is None else rp, dh_cell, rest, n, self.P, ZONE_H=flags["ZONE_H"], WH=flags["WH"],
            PROJ_CLIP=rp is not None, PROJ_BOUND=float(self.cfg.proj_clip or 0.0), MASKED=flags["MASKED"],
            ZERO_OUT=flags["ZERO_OUT"], FLOAT64=flags["FLOAT64"], BLOCK=_BLOCK,
        )

    def backward(self, t: int, z: Tensor, k: Tensor, c_prev: Tensor, dc: Tensor, dz: Tensor,
                 dout: Tensor | None = None, dh: Tensor | None = None, carry: Tensor | None = None,
                 rest: Tensor | None = None, dr: Tensor | None = None, n: Tensor | None = None,
                 c_stats: tuple[Tensor, Tensor] | None = None, rr: Tensor | None = None,
                 r_stats: tuple[Tensor, Tensor] | None = None, d_rr: Tensor | None = None,
                 dn: Tensor | None = None) -> None:
        """Step t backward (``variant_backward_step``): dz (B, 4H) the gate gradients, dc (B, H) read and
        written, from the record (z, k, c_prev; with LN n, c_stats, rr, r_stats, writing d_rr (B, 4H) and
        dn (B, H)) and either dout, dh, carry, writing rest (B, P = H), or, projected, dr (B, H)."""
        keep, wh, wc = self._step(t)
        lw_c = self.ln_c[0] if self.ln_c is not None else k
        lw_hh = self.ln_hh[0] if self.ln_hh is not None else k
        c_mean, c_rstd = c_stats if c_stats is not None else (k, k)
        r_mean, r_rstd = r_stats if r_stats is not None else (k, k)
        self.kernels.variant_backward_step[self.grid](
            z, k, c_prev, k if n is None else n, c_mean, c_rstd, lw_c, z if rr is None else rr, r_mean,
            r_rstd, lw_hh, k if self.peephole is None else self.peephole, k if wh is None else wh,
            k if wc is None else wc, k if keep is None else keep, dc if dout is None else dout,
            dc if dh is None else dh, dc if carry is None else carry, dc if rest is None else rest,
            dc if dr is None else dr, dc, dz, dz if d_rr is None else d_rr, dc if dn is None else dn, self.H,
            **self.constants, BLOCK=self.block, num_warps=self.warps,
        )


def triton_next_power_of_2(n: int) -> int:
    """The smallest power of 2 >= n (triton.next_power_of_2 without importing Triton)."""
    return 1 << max(0, (n - 1).bit_length())
