# ruff: noqa: N803, N806
"""The native kernel's C interface: the C activations against torch, the argument checks of the entry
points, the packed-product entry point, and the constants the built module exports (one activation table
for C, Triton and Python).
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from kernel_cases import (
    NATIVE_NAMES,
    needs_extension,
)

import unilstm.kernels.native as native_package
from unilstm.activations import REGISTRY, resolve
from unilstm.kernels import native
from unilstm.kernels.activation_ids import ACTIVATION_COUNT, ACTIVATION_IDS
from unilstm.kernels.native import NATIVE_ACTIVATION_IDS, _blas, _extension

SPECIAL = [0.0, 3.0, -3.0, 1.0, -1.0, 6.0, -6.0, 2.5, -2.5, 20.0, -20.0, 88.7, 89.0, -104.0, -110.0]


NONFINITE = [float("inf"), float("-inf"), float("nan")]


def c_activation(act_id, x, g):
    y, out = torch.full_like(x, 7.0), torch.full_like(x, 7.0)
    _extension.activation(float64=x.dtype == torch.float64, act=act_id, x=x.data_ptr(), y=y.data_ptr(),
                          g=g.data_ptr(), out=out.data_ptr(), n=x.numel())
    return y, out


def torch_activation(fn, x, g):
    leaf = x.clone().requires_grad_()
    y = fn(leaf)
    (d,) = torch.autograd.grad(y, leaf, g)
    return y.detach(), d


def assert_same_specials(got, want, x, where):
    """nan exactly where torch gives nan, inf of the same sign exactly where torch gives inf."""
    bad = (got.isnan() != want.isnan()) | (got.isinf() != want.isinf()) | (got.isinf() & (got != want))
    assert not bad.any(), f"{where}: x={x[bad].tolist()} got {got[bad].tolist()} want {want[bad].tolist()}"


def assert_ulp_close(got, want64, want32, x, where):
    """|got - want| <= 1e-6 + 4e-6 |want| where finite, against float64 torch or, at the kinks that float32
    rounding moves (hard_sigmoid's x + 3 == 6 for x just below 3), float32 torch."""
    finite = got.isfinite() & want32.isfinite()
    close64 = (got.double() - want64).abs() <= 1e-6 + 4e-6 * want64.abs()
    close32 = (got.double() - want32.double()).abs() <= 1e-6 + 4e-6 * want32.double().abs()
    bad = finite & ~(close64 | close32)
    assert not bad.any(), (
        f"{where}: x={x[bad][:10].tolist()} got {got[bad][:10].tolist()} want {want64[bad][:10].tolist()}"
    )


@needs_extension
@pytest.mark.parametrize("act", NATIVE_NAMES)
def test_c_activation_float32_matches_torch(act):
    fn = resolve(act)
    act_id = NATIVE_ACTIVATION_IDS[fn]
    x = torch.cat([torch.linspace(-30.0, 30.0, 24001), torch.tensor(SPECIAL + NONFINITE)]).float()
    g = torch.linspace(-2.0, 2.0, x.numel()).float()
    y, d = c_activation(act_id, x, g)
    y64, d64 = torch_activation(fn, x.double(), g.double())
    y32, d32 = torch_activation(fn, x, g)
    # values: everywhere, specials included
    assert_same_specials(y, y32, x, f"{act} value")
    assert_ulp_close(y, y64, y32, x, f"{act} value")
    # derivatives: at finite inputs (at +-inf and nan torch's composite formulas give arbitrary values)
    fin = x.isfinite()
    assert_same_specials(d[fin], d32[fin], x[fin], f"{act} derivative")
    assert_ulp_close(d[fin], d64[fin], d32[fin], x[fin], f"{act} derivative")
    # without g, the C call computes y alone and leaves out untouched
    y_only, untouched = torch.full_like(x, 7.0), torch.full_like(x, 7.0)
    _extension.activation(float64=False, act=act_id, x=x.data_ptr(), y=y_only.data_ptr(), g=0,
                          out=untouched.data_ptr(), n=x.numel())
    torch.testing.assert_close(y_only, y, equal_nan=True, rtol=0, atol=0)
    assert bool((untouched == 7.0).all())


@needs_extension
def test_c_exp_overflow_and_underflow_like_torch():
    x = torch.tensor([88.0, 88.7, 88.72, 88.73, 89.0, 100.0, 1e30, float("inf"), -87.0, -100.0, -103.9,
                      -104.0, -110.0, -1e30, float("-inf"), float("nan")])
    y, _ = c_activation(NATIVE_ACTIVATION_IDS[resolve("exponential")], x, torch.ones_like(x))
    want = torch.exp(x)
    assert torch.equal(y.isinf(), want.isinf()), (y.tolist(), want.tolist())
    assert torch.equal(y.isnan(), want.isnan())
    assert bool((y[want == 0] == 0).all())
    finite = want.isfinite() & (want > 0)
    torch.testing.assert_close(y[finite], want[finite], rtol=4e-6, atol=0)


@needs_extension
@pytest.mark.parametrize("act", NATIVE_NAMES)
def test_c_activation_float64_is_exact(act):
    fn = resolve(act)
    x = torch.cat([torch.linspace(-30.0, 30.0, 3001, dtype=torch.float64), torch.tensor(SPECIAL).double()])
    g = torch.linspace(-2.0, 2.0, x.numel(), dtype=torch.float64)
    y, d = c_activation(NATIVE_ACTIVATION_IDS[fn], x, g)
    want_y, want_d = torch_activation(fn, x, g)
    torch.testing.assert_close(y, want_y, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(d, want_d, rtol=1e-12, atol=1e-14)


@needs_extension
def test_c_entry_points_check_their_arguments():
    cell = _extension._lstm_cell
    assert set(NATIVE_ACTIVATION_IDS.values()) == set(range(15))
    for bad in (99, -1, 15):
        with pytest.raises(ValueError, match="activation id"):
            cell.forward_step(*([0] * 20), bad, 1)
        with pytest.raises(ValueError, match="activation id"):
            cell.forward_step(*([0] * 20), 1, bad)
        with pytest.raises(ValueError, match="activation id"):
            cell.backward_step(*([0] * 22), bad, 2)
        with pytest.raises(ValueError, match="activation id"):
            cell.backward_step(*([0] * 22), 2, bad)
        with pytest.raises(ValueError, match="activation id"):
            cell.activation(0, bad, 0, 0, 0, 0, 0)
        for loop, count in ((cell.forward_loop, 42), (cell.backward_loop, 32)):  # ..., act, ract, stride
            with pytest.raises(ValueError, match="activation id"):
                loop(*([0] * (count - 3)), bad, 1, 0)
            with pytest.raises(ValueError, match="activation id"):
                loop(*([0] * (count - 3)), 1, bad, 0)
    for loop, count in ((cell.forward_loop, 42), (cell.backward_loop, 32)):
        with pytest.raises(ValueError, match="BLAS gemm"):  # gemm address 0
            loop(*([0] * (count - 3)), 1, 2, 0)
        with pytest.raises(ValueError, match="step stride >= 0, received -4"):
            loop(*([0] * (count - 3)), 1, 2, -4)
    for fn, count in ((cell.forward_step, 22), (cell.backward_step, 24), (cell.finish_hidden, 13),
                      (cell.forward_loop, 42), (cell.backward_loop, 32), (cell.activation, 7)):
        for wrong in (0, count - 1, count + 1):
            with pytest.raises(TypeError, match="expected"):
                fn(*([0] * wrong))
        with pytest.raises(TypeError):
            fn(*([0] * (count - 1)), 1.5)
    # n = 0: nothing is read or written
    cell.activation(0, 1, 0, 0, 0, 0, 0)


@needs_extension
def test_packed_product_entry_point_matches_torch():
    gemm = native.blas_gemm(torch.float32)
    pack = _blas._BLAS_PACK.get(torch.float32, (0, 0, 0))
    if not gemm:
        pytest.skip("no BLAS gemm exported by this torch build: the per-step loop runs instead")
    g = torch.Generator().manual_seed(3)
    for M, K, N in ((16, 256, 1024), (3, 5, 7)):  # packed (when available), plain
        a, w = torch.randn(M, K, generator=g), torch.randn(K, N, generator=g)
        for trans, stored in ((0, w), (1, w.t().contiguous())):
            got = torch.empty(M, N)
            _extension.product(
                float64=False, blas=(gemm, *pack, 0), trans=bool(trans), M=M, N=N, K=K, A=a.data_ptr(), lda=K,
                W=stored.data_ptr(), ldw=K if trans else N, C=got.data_ptr(), ldc=N,
            )
            torch.testing.assert_close(got, a @ w, rtol=1e-5, atol=1e-4)


# -- the built module's constants: one source of truth ------------------------------------------------
@needs_extension
def test_extension_exports_the_tables_python_uses():
    """The C module was compiled from unilstm/kernels/activation_ids.py (setup.py passes the ids as macros)
    and exports them back with its sizes and thresholds; Python's tables are built from the same file."""
    cell = _extension._lstm_cell
    assert cell.ACTIVATION_IDS == ACTIVATION_IDS
    assert cell.ACTIVATION_COUNT == ACTIVATION_COUNT == len(ACTIVATION_IDS)
    assert {REGISTRY[name]: code for name, code in ACTIVATION_IDS.items()} == NATIVE_ACTIVATION_IDS
    assert _extension.SCRATCH_PER_HIDDEN == cell.SCRATCH_PER_HIDDEN > 0
    for name in ("PACK_MIN_ROWS", "PACK_MIN_WEIGHT", "PACK_MIN_STEPS", "CELL_PARALLEL_MIN"):
        assert getattr(_extension, name) == getattr(cell, name) > 0, name


def test_triton_codes_are_the_same_table():
    """The Triton cell numbers its activations with the same ids (plus celu, which is elu)."""
    from unilstm.kernels import triton_cell

    for name, code in ACTIVATION_IDS.items():
        assert triton_cell.ACTIVATION_CODES[REGISTRY[name]] == code, name
    assert triton_cell.ACTIVATION_CODES[REGISTRY["celu"]] == ACTIVATION_IDS["elu"]
    assert len(triton_cell.ACTIVATION_CODES) == len(ACTIVATION_IDS) + 1


@needs_extension
def test_a_build_from_another_activation_table_is_refused(monkeypatch):
    """A stale extension (its exported ids differ from activation_ids.py) leaves native unavailable, with a
    reason that says to rebuild."""
    stale = types.SimpleNamespace(**{
        name: getattr(_extension._lstm_cell, name) for name in dir(_extension._lstm_cell)
        if not name.startswith("__")
    })
    stale.ACTIVATION_IDS = {**ACTIVATION_IDS, "tanh": 99}
    monkeypatch.setitem(sys.modules, "unilstm.kernels.native._lstm_cell", stale)
    monkeypatch.setattr(native_package, "_lstm_cell", stale)
    module, reason = _extension._load()
    assert module is None and "stale build" in reason and "build_ext" in reason
    stale.ACTIVATION_IDS = dict(ACTIVATION_IDS)
    assert _extension._load() == (stale, "")


@needs_extension
@pytest.mark.parametrize(("kind", "sizes"), [("forward", (12, 15, 15)), ("backward", (11, 15, 6))])
def test_loop_arguments_by_name(kind, sizes):
    """A loop's argument tuple is built from its parameters by name in three parts, each in the order of
    FORWARD_LOOP_PARAMETERS / BACKWARD_LOOP_PARAMETERS whatever the keywords' order; a missing, unknown or
    positional argument is refused."""
    names = getattr(_extension, f"{kind.upper()}_LOOP_PARAMETERS")
    assert len(names) == len(set(names)) == sum(sizes) == (42 if kind == "forward" else 32)
    built, start = (), 0
    for part, size in zip(("head", "buffers", "tail"), sizes, strict=True):
        build = getattr(_extension, f"{kind}_loop_{part}")
        chunk = names[start:start + size]
        built += build(**{name: index for index, name in reversed(list(enumerate(chunk, start)))})
        with pytest.raises(TypeError, match="missing"):
            build(**{name: 0 for name in chunk[1:]})
        with pytest.raises(TypeError, match="unexpected"):
            build(**{name: 0 for name in chunk}, bogus=1)
        with pytest.raises(TypeError, match="keyword arguments only"):
            build(0)
        start += size
    assert built == tuple(range(sum(sizes)))
