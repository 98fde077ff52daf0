"""unilstm.torch.LSTM against real torch.nn.LSTM: fixtures made by torch 2.13, state dicts, init, errors."""

from __future__ import annotations

import copy
import json
import pathlib
import warnings

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence, pad_packed_sequence

import unilstm
import unilstm.torch
from unilstm.kernels import dispatch, force_kernel

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "torch"
CASES = sorted(p.name for p in FIXTURES.glob("*.npz") if not p.name.startswith("init_"))
TOLERANCE = {  # (abs on outputs and states, relative on gradients)
    "float32": (1e-5, 1e-4),
    "float64": (1e-10, 1e-10),
}
CONSTRUCTOR = ("num_layers", "bias", "batch_first", "dropout", "bidirectional", "proj_size")


@pytest.fixture(params=["dispatch", *(entry[0] for entry in dispatch.DIRECTION_KERNELS)])
def kernel(request):
    """The default dispatch, then every registered direction kernel forced (the reference loop included)."""
    force_kernel(None if request.param == "dispatch" else request.param)
    yield request.param
    force_kernel(None)


def relative_error(got: torch.Tensor, want: np.ndarray) -> float:
    want_t = torch.from_numpy(want)
    return float((got.detach() - want_t).abs().max() / max(float(want_t.abs().max()), 1e-30))


def run_fixture(data, lstm):
    """Run ``lstm`` on a fixture's inputs; returns (out padded, h_n, c_n, {name: grad})."""
    config = json.loads(str(data["config"]))
    x = torch.from_numpy(data["x"]).requires_grad_()
    leaves = {"x": x}
    hx = None
    if "h0" in data:
        leaves["h0"] = torch.from_numpy(data["h0"]).requires_grad_()
        leaves["c0"] = torch.from_numpy(data["c0"]).requires_grad_()
        hx = (leaves["h0"], leaves["c0"])
    if config["lengths"] is None:
        out, (h_n, c_n) = lstm(x, hx)
    else:
        lengths = torch.tensor(config["lengths"])
        packed = pack_padded_sequence(x, lengths, batch_first=lstm.batch_first, enforce_sorted=False)
        packed_out, (h_n, c_n) = lstm(packed, hx)
        assert isinstance(packed_out, torch.nn.utils.rnn.PackedSequence)
        assert torch.equal(packed_out.batch_sizes, packed.batch_sizes)
        assert torch.equal(packed_out.sorted_indices, packed.sorted_indices)
        assert torch.equal(packed_out.unsorted_indices, packed.unsorted_indices)
        steps = x.shape[1 if lstm.batch_first else 0]
        out, out_lengths = pad_packed_sequence(packed_out, batch_first=lstm.batch_first, total_length=steps)
        assert torch.equal(out_lengths, lengths)
    loss = sum((t * torch.from_numpy(data[r])).sum() for t, r in ((out, "R1"), (h_n, "R2"), (c_n, "R3")))
    for name, parameter in lstm.named_parameters():
        leaves[name] = parameter
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return out, h_n, c_n, dict(zip(leaves, grads, strict=True))


def build_from_fixture(data) -> unilstm.torch.LSTM:
    config = json.loads(str(data["config"]))
    kwargs = {key: config[key] for key in CONSTRUCTOR if key in config}
    dtype = getattr(torch, config["dtype"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lstm = unilstm.torch.LSTM(config["input_size"], config["hidden_size"], dtype=dtype, **kwargs).eval()
    assert [n for n, _ in lstm.named_parameters()] == config["parameter_order"]
    state = {n[len("param/"):]: torch.from_numpy(data[n]) for n in data.files if n.startswith("param/")}
    lstm.load_state_dict(state)
    return lstm


@pytest.mark.parametrize("case", CASES)
def test_fixture_parity(case, kernel):
    data = np.load(FIXTURES / case)
    lstm = build_from_fixture(data)
    dtype_name = json.loads(str(data["config"]))["dtype"]
    abs_tol, rel_tol = TOLERANCE[dtype_name]
    out, h_n, c_n, grads = run_fixture(data, lstm)
    assert out.dtype == getattr(torch, dtype_name)
    for name, got in (("out", out), ("h_n", h_n), ("c_n", c_n)):
        want = torch.from_numpy(data[name])
        assert got.shape == want.shape, name
        err = float((got.detach() - want).abs().max()) if want.numel() else 0.0
        assert err <= abs_tol, f"{case} {kernel}: {name} differs by {err:.3g} > {abs_tol}"
    for name, got in grads.items():
        want = data[f"grad/{name}"]
        assert got.shape == want.shape, name
        err = relative_error(got, want)
        assert err <= rel_tol, f"{case} {kernel}: grad {name} relative error {err:.3g} > {rel_tol}"


def test_fixture_matrix_covers_the_brief():
    configs = [json.loads(str(np.load(FIXTURES / c)["config"])) for c in CASES]
    assert {c["num_layers"] for c in configs} == {1, 2, 3}
    assert any(c.get("bidirectional") for c in configs)
    assert any(c.get("batch_first") for c in configs)
    assert any(c.get("bias") is False for c in configs)
    assert any(c.get("proj_size") for c in configs)
    assert any(c.get("dropout") for c in configs)
    lengths = [c["lengths"] for c in configs if c["lengths"]]
    assert [1, 1, 1] in lengths and [5, 5, 5] in lengths and [5, 2, 3] in lengths
    assert {c["dtype"] for c in configs} == {"float32", "float64"}
    assert sum(p.stat().st_size for p in FIXTURES.glob("*")) < 1_000_000


# -- live comparisons with the torch.nn.LSTM in this environment --------------------------------------
SPECS = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=3, proj_size=2, bias=False, batch_first=True),
    dict(num_layers=2, bidirectional=True, proj_size=3, dropout=0.25),
]


@pytest.mark.parametrize("kwargs", SPECS)
def test_same_init_after_manual_seed(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(123)
        ours = unilstm.torch.LSTM(4, 5, **kwargs)
        ours_next = torch.rand(3)
        torch.manual_seed(123)
        theirs = torch.nn.LSTM(4, 5, **kwargs)
        theirs_next = torch.rand(3)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(ours_next, theirs_next)  # the same number of draws from the global generator


@pytest.mark.parametrize("seed", [0, 7])
def test_init_matches_stored_torch_draw(seed):
    data = np.load(FIXTURES / f"init_seed{seed}.npz")
    config = json.loads(str(data["config"]))
    kwargs = {k: v for k, v in config.items() if k not in ("seed", "torch")}
    torch.manual_seed(seed)
    ours = unilstm.torch.LSTM(4, 5, **kwargs)
    for name, p in ours.named_parameters():
        assert torch.equal(p.detach(), torch.from_numpy(data[f"param/{name}"])), name


@pytest.mark.parametrize("kwargs", SPECS)
def test_state_dict_both_ways(kwargs):
    theirs = torch.nn.LSTM(4, 5, **kwargs).eval()
    ours = unilstm.torch.LSTM(4, 5, **kwargs).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(6, 2, 4)
    assert torch.allclose(ours(x)[0], theirs(x)[0], atol=1e-6)
    ours.reset_parameters()
    theirs.load_state_dict(ours.state_dict())
    for name, p in ours.state_dict().items():
        assert torch.equal(p, theirs.state_dict()[name])
    assert torch.allclose(ours(x)[0], theirs(x)[0], atol=1e-6)
    canonical = unilstm.LSTM(4, 5, **kwargs).eval()
    canonical.load_state_dict(theirs.state_dict())
    assert torch.allclose(canonical(x)[0], theirs(x)[0], atol=1e-6)


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("kwargs", SPECS[:3])
def test_packed_round_trip(kwargs, enforce_sorted, kernel):
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(3, 5, **kwargs).double().eval()
    ours = unilstm.torch.LSTM(3, 5, **kwargs, dtype=torch.float64).eval()
    ours.load_state_dict(theirs.state_dict())
    sizes = (6, 4, 4, 1) if enforce_sorted else (2, 6, 1, 4)
    seqs = [torch.randn(n, 3, dtype=torch.float64) for n in sizes]
    packed = pack_sequence(seqs, enforce_sorted=enforce_sorted)
    layers = theirs.num_layers * (2 if theirs.bidirectional else 1)
    hx = (torch.randn(layers, 4, theirs.proj_size or 5, dtype=torch.float64), torch.randn(layers, 4, 5,
                                                                                           dtype=torch.float64))
    for state in (None, hx):
        got, (h, c) = ours(packed, state)
        want, (h_t, c_t) = theirs(packed, state)
        assert type(got) is type(want)
        assert got.batch_sizes is packed.batch_sizes
        for a, b in ((got.data, want.data), (h, h_t), (c, c_t)):
            assert torch.allclose(a, b, atol=1e-12, rtol=0)
        if enforce_sorted:
            assert got.sorted_indices is None and got.unsorted_indices is None


def test_unbatched_and_batch_first_shapes():
    torch.manual_seed(0)
    for kwargs in SPECS:
        theirs = torch.nn.LSTM(4, 5, **kwargs).eval()
        ours = unilstm.torch.LSTM(4, 5, **kwargs).eval()
        ours.load_state_dict(theirs.state_dict())
        for x in (torch.randn(7, 4), torch.randn(7, 3, 4)):
            got, (h, c) = ours(x)
            want, (h_t, c_t) = theirs(x)
            assert got.shape == want.shape and h.shape == h_t.shape and c.shape == c_t.shape
            assert torch.allclose(got, want, atol=1e-6)
            got2, _ = ours(x, (h, c))
            want2, _ = theirs(x, (h_t, c_t))
            assert torch.allclose(got2, want2, atol=1e-6)


def test_module_conventions():
    kwargs = dict(num_layers=2, bias=False, batch_first=True, dropout=0.5, bidirectional=True, proj_size=3)
    ours = unilstm.torch.LSTM(4, 6, **kwargs)
    theirs = torch.nn.LSTM(4, 6, **kwargs)
    assert repr(ours) == repr(theirs)
    assert repr(unilstm.torch.LSTM(4, 6)) == repr(torch.nn.LSTM(4, 6))
    assert ours._flat_weights_names == theirs._flat_weights_names
    assert ours._all_weights == theirs._all_weights
    shapes = [[[p.shape for p in ws] for ws in m.all_weights] for m in (ours, theirs)]
    assert shapes[0] == shapes[1]
    assert [w.shape for w in ours._flat_weights] == [w.shape for w in theirs._flat_weights]
    for name in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
                 "proj_size", "mode"):
        assert getattr(ours, name) == getattr(theirs, name), name
    ours.flatten_parameters()
    ours.double()
    assert ours.weight_ih_l0.dtype == torch.float64
    clone = copy.deepcopy(ours)
    assert torch.equal(clone.weight_hr_l1_reverse, ours.weight_hr_l1_reverse)
    assert isinstance(ours, unilstm.LSTM)


def test_positional_arguments_like_torch():
    ours = unilstm.torch.LSTM(4, 6, 2, False, True, 0.0, True, 3)
    theirs = torch.nn.LSTM(4, 6, 2, False, True, 0.0, True, 3)
    assert repr(ours) == repr(theirs)
    assert unilstm.torch.LSTM(4, 6, dtype=torch.float64).weight_ih_l0.dtype == torch.float64


def test_training_dropout_is_random_and_eval_is_not():
    lstm = unilstm.torch.LSTM(3, 8, 3, dropout=0.5)
    x = torch.randn(4, 2, 3)
    lstm.train()
    a, b = lstm(x)[0], lstm(x)[0]
    assert not torch.equal(a, b)
    lstm.eval()
    assert torch.equal(lstm(x)[0], lstm(x)[0])


def test_dropout_warning_like_torch():
    with warnings.catch_warnings(record=True) as ours_w:
        warnings.simplefilter("always")
        unilstm.torch.LSTM(4, 6, dropout=0.5)
    with warnings.catch_warnings(record=True) as theirs_w:
        warnings.simplefilter("always")
        torch.nn.LSTM(4, 6, dropout=0.5)
    assert [str(w.message) for w in ours_w] == [str(w.message) for w in theirs_w]


# -- errors: the same type and message as torch.nn.LSTM ---------------------------------------------
def _error(factory):
    try:
        factory()
    except Exception as error:  # noqa: BLE001 - comparing whatever is raised
        return type(error), str(error)
    return None


CONSTRUCTOR_ERRORS = [
    ((4, 6), dict(dropout=1.5)),
    ((4, 6), dict(dropout=-0.1)),
    ((4, 6), dict(dropout=True)),
    ((4, 6), dict(dropout="a")),
    ((4, 6), dict(proj_size=6)),
    ((4, 6), dict(proj_size=9)),
    ((4, 6), dict(proj_size=-1)),
    ((4, 6), dict(num_layers=0)),
    ((4, 6), dict(num_layers=1.5)),
    ((4, 6), dict(bias=1)),
    ((4, 6), dict(batch_first=0)),
    ((0, 6), dict()),
    ((4.0, 6), dict()),
    ((None, 6), dict()),
    ((4, 0), dict()),
    ((4, 6.0), dict()),
]


@pytest.mark.parametrize("args,kwargs", CONSTRUCTOR_ERRORS)
def test_constructor_errors_like_torch(args, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = _error(lambda: torch.nn.LSTM(*args, **kwargs))
        got = _error(lambda: unilstm.torch.LSTM(*args, **kwargs))
    assert want is not None
    assert got == want


def _forward_cases():
    x = torch.randn(5, 3, 4)
    h = torch.zeros(2, 3, 6)
    c = torch.zeros(2, 3, 6)
    return {
        "rank 4": (torch.randn(1, 5, 3, 4), None),
        "rank 1": (torch.randn(4), None),
        "feature size": (torch.randn(5, 3, 7), None),
        "feature size with hx": (torch.randn(5, 3, 7), (h, c)),
        "input dtype": (x.double(), None),
        "integer input": (torch.ones(5, 3, 4, dtype=torch.long), None),
        "h0 shape": (x, (torch.zeros(2, 2, 6), c)),
        "c0 shape": (x, (h, torch.zeros(2, 3, 5))),
        "h0 rank": (x, (torch.zeros(3, 6), c)),
        "unbatched with 3-D states": (torch.randn(5, 4), (h, c)),
        "hx a tensor": (x, h),
        "three states": (x, (h, c, c)),
        "one state": (x, (h,)),
        "not a tensor": ([1, 2], None),
        "zero steps": (torch.randn(0, 3, 4), None),
    }


@pytest.mark.parametrize("case", list(_forward_cases()))
def test_forward_errors_like_torch(case, kernel):
    x, hx = _forward_cases()[case]
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(4, 6, 2)
    ours = unilstm.torch.LSTM(4, 6, 2)
    want = _error(lambda: theirs(x, hx))
    got = _error(lambda: ours(x, hx))
    assert want is not None
    assert got == want


def test_forward_errors_where_torch_fails_inside_its_kernel():
    """torch 2.13 raises RuntimeError from C++ with implementation messages here; we raise the same type
    with a message that names the argument, the expected and the received value."""
    ours = unilstm.torch.LSTM(4, 6, 2)
    x = torch.randn(5, 3, 4)
    h, c = torch.zeros(2, 3, 6), torch.zeros(2, 3, 6)
    with pytest.raises(RuntimeError, match=r"hidden\[0\] dtype torch.float32 .*got torch.float64"):
        ours(x, (h.double(), c))
    with pytest.raises(RuntimeError, match=r"hidden\[1\] dtype torch.float32 .*got torch.float64"):
        ours(x, (h, c.double()))
    packed = pack_sequence([torch.randn(5, 7), torch.randn(3, 7)])
    with pytest.raises(RuntimeError, match=r"must be equal to input_size. Expected 4, got 7"):
        ours(packed)
    packed = pack_sequence([torch.randn(5, 4).double(), torch.randn(3, 4).double()])
    with pytest.raises(RuntimeError, match=r"RNN input dtype \(torch.float64\) does not match weight dtype"):
        ours(packed)
    packed = pack_sequence([torch.randn(5, 4), torch.randn(3, 4)])
    with pytest.raises(RuntimeError, match=r"Expected hidden\[1\] size \(2, 2, 6\), got \[2, 2, 5\]"):
        ours(packed, (torch.zeros(2, 2, 6), torch.zeros(2, 2, 5)))
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(2, 2, 6\), got \[2, 1, 6\]"):
        ours(packed, (torch.zeros(2, 1, 6), torch.zeros(2, 1, 6)))


def test_gradients_match_live_torch_float64():
    torch.manual_seed(3)
    kwargs = dict(num_layers=2, bidirectional=True, proj_size=2)
    theirs = torch.nn.LSTM(3, 4, **kwargs).double()
    ours = unilstm.torch.LSTM(3, 4, **kwargs, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    for model in (ours, theirs):
        out, (h, c) = model(x)
        (out.square().sum() + h.sum() + c.sum()).backward()
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-12, rtol=0), name


#: The README's claim for the default path (torch door vs torch 2.13): (outputs and states abs, gradients rel)
README_DEFAULT_PATH_ERRORS = {"float32": (1.8e-7, 3.9e-7), "float64": (3.4e-16, 1.1e-15)}


def test_default_path_errors_are_the_readmes():
    """The largest errors of the default path over every fixture stay within what the README states."""
    force_kernel(None)
    worst: dict[str, list[float]] = {name: [0.0, 0.0] for name in README_DEFAULT_PATH_ERRORS}
    for case in CASES:
        data = np.load(FIXTURES / case)
        dtype_name = json.loads(str(data["config"]))["dtype"]
        out, h_n, c_n, grads = run_fixture(data, build_from_fixture(data))
        for got, want in ((out, data["out"]), (h_n, data["h_n"]), (c_n, data["c_n"])):
            error = float((got.detach() - torch.from_numpy(want)).abs().max()) if want.size else 0.0
            worst[dtype_name][0] = max(worst[dtype_name][0], error)
        for name, got in grads.items():
            worst[dtype_name][1] = max(worst[dtype_name][1], relative_error(got, data[f"grad/{name}"]))
    print("torch fixture parity, default path, max errors (values abs, gradients rel):", worst)
    for dtype_name, (values, gradients) in README_DEFAULT_PATH_ERRORS.items():
        assert worst[dtype_name][0] <= values, (dtype_name, worst[dtype_name])
        assert worst[dtype_name][1] <= gradients, (dtype_name, worst[dtype_name])


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_autocast_like_torch(input_dtype):
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(4, 6, 2)
    ours = unilstm.torch.LSTM(4, 6, 2)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 3, 4).to(input_dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, (h, c) = ours(x)
        want, (h_t, c_t) = theirs(x)
    assert got.dtype == want.dtype and h.dtype == h_t.dtype
    assert torch.equal(got, want) and torch.equal(h, h_t) and torch.equal(c, c_t)


def test_dropout_assignable_and_functional_call():
    lstm = unilstm.torch.LSTM(3, 4, 2)
    lstm.dropout = 0.5
    assert lstm.dropout == 0.5 and lstm.spec.dropout == 0.5 and "dropout=0.5" in repr(lstm)
    with pytest.raises(ValueError, match=r"dropout must be a float in \[0, 1\], got 2.0"):
        lstm.dropout = 2.0
    lstm.eval()
    x = torch.randn(4, 2, 3)
    zeros = {name: torch.zeros_like(p) for name, p in lstm.named_parameters()}
    out, _ = torch.func.functional_call(lstm, zeros, (x,))
    assert torch.equal(out, torch.zeros(4, 2, 4))


def test_inside_torch_compile():
    torch.manual_seed(0)
    ours = unilstm.torch.LSTM(3, 4, 2, batch_first=True)
    compiled = torch.compile(ours, backend="aot_eager")
    x = torch.randn(2, 5, 3)
    out, (h, c) = compiled(x)
    want, (h_want, _) = ours(x)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(h, h_want)
    out.sum().backward()
    assert ours.weight_hh_l1.grad is not None
