"""unilstm.torch.LSTMCell against torch.nn.LSTMCell itself (torch is the reference framework here): the same
initial weights after torch.manual_seed, state dicts both ways, outputs and gradients in float32 and float64
on every kernel, unbatched input, and the same errors (type and message) for bad inputs."""

from __future__ import annotations

import pickle

import pytest
import torch

import unilstm.torch
from unilstm.kernels import dispatch, force_kernel

TOLERANCE = {torch.float32: 2e-6, torch.float64: 1e-13}  # max |unilstm - torch| over outputs and grads


@pytest.fixture(params=["dispatch", *(entry[0] for entry in dispatch.DIRECTION_KERNELS)])
def kernel(request):
    """The default dispatch, then every registered direction kernel forced (the reference loop included)."""
    force_kernel(None if request.param == "dispatch" else request.param)
    yield request.param
    force_kernel(None)


def pair(
    input_size: int, hidden_size: int, seed: int = 0, **kwargs
) -> tuple[torch.nn.LSTMCell, torch.nn.Module]:
    """torch's cell and unilstm's, each made right after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    reference = torch.nn.LSTMCell(input_size, hidden_size, **kwargs)
    torch.manual_seed(seed)
    ours = unilstm.torch.LSTMCell(input_size, hidden_size, **kwargs)
    return reference, ours


def max_difference(got, want) -> float:
    return max(
        float((g.detach() - w.detach()).abs().max()) if g.numel() else 0.0
        for g, w in zip(got, want, strict=True)
    )


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_initial_weights_names_and_shapes_as_torch(bias: bool, dtype: torch.dtype) -> None:
    reference, ours = pair(6, 5, seed=3, bias=bias, dtype=dtype)
    want, got = reference.state_dict(), ours.state_dict()
    assert list(got) == list(want) == (["weight_ih", "weight_hh", "bias_ih", "bias_hh"] if bias
                                       else ["weight_ih", "weight_hh"])
    for name in want:
        assert got[name].dtype == dtype
        assert torch.equal(got[name], want[name]), name
    assert [name for name, _ in ours.named_parameters()] == [name for name, _ in reference.named_parameters()]
    assert (ours.bias_ih is None) == (not bias)
    assert (ours.input_size, ours.hidden_size, ours.bias) == (6, 5, bias)
    assert repr(ours) == repr(reference)


def test_state_dict_moves_both_ways() -> None:
    reference, ours = pair(4, 3, seed=1)
    torch.manual_seed(99)
    other = torch.nn.LSTMCell(4, 3)
    ours.load_state_dict(other.state_dict())
    x = torch.randn(2, 4)
    assert max_difference(ours(x), other(x)) < TOLERANCE[torch.float32]
    back = torch.nn.LSTMCell(4, 3)
    back.load_state_dict(ours.state_dict())
    for name, value in other.state_dict().items():
        assert torch.equal(back.state_dict()[name], value)
    with pytest.raises(RuntimeError, match="size mismatch for weight_ih"):
        ours.load_state_dict(torch.nn.LSTMCell(5, 3).state_dict())


@pytest.mark.parametrize("batch", [4, 40], ids=["batch4", "batch40"])  # 40 rows: torch's fused kernel
@pytest.mark.parametrize("with_states", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_and_gradients_match_torch(
    kernel, dtype: torch.dtype, bias: bool, with_states: bool, batch: int
) -> None:
    reference, ours = pair(5, 7, seed=2, bias=bias, dtype=dtype)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(batch, 5, dtype=dtype, generator=generator, requires_grad=True)
    h = torch.randn(batch, 7, dtype=dtype, generator=generator, requires_grad=True)
    c = torch.randn(batch, 7, dtype=dtype, generator=generator, requires_grad=True)
    w_h = torch.randn(batch, 7, dtype=dtype, generator=generator)
    w_c = torch.randn(batch, 7, dtype=dtype, generator=generator)
    hx = (h, c) if with_states else None
    leaves = [x, h, c] if with_states else [x]

    want = reference(x, hx)
    got = ours(x, hx)
    assert max_difference(got, want) <= TOLERANCE[dtype]
    want_grads = torch.autograd.grad((want[0] * w_h).sum() + (want[1] * w_c).sum(),
                                     [*leaves, *reference.parameters()])
    got_grads = torch.autograd.grad((got[0] * w_h).sum() + (got[1] * w_c).sum(),
                                    [*leaves, *ours.parameters()])
    assert len(got_grads) == len(want_grads)
    assert max_difference(got_grads, want_grads) <= TOLERANCE[dtype] * 10


def test_a_sequence_of_steps_matches_torch_and_the_lstm_door() -> None:
    """Twelve steps fed back into the cell: the same states as torch's cell and as one LSTM call."""
    reference, ours = pair(3, 4, seed=5)
    xs = torch.randn(12, 2, 3)
    state_ref = state_ours = None
    for x in xs:
        state_ref = reference(x, state_ref)
        state_ours = ours(x, state_ours)
    assert max_difference(state_ours, state_ref) < 1e-5
    lstm = unilstm.torch.LSTM(3, 4)
    lstm.load_state_dict({f"{name}_l0": value for name, value in ours.state_dict().items()})
    _, (h_n, c_n) = lstm(xs)
    assert max_difference(state_ours, (h_n[0], c_n[0])) < 1e-5


@pytest.mark.parametrize("with_states", [True, False])
def test_unbatched_input_matches_torch(with_states: bool) -> None:
    reference, ours = pair(5, 3, seed=6)
    x = torch.randn(5)
    hx = (torch.randn(3), torch.randn(3)) if with_states else None
    want, got = reference(x, hx), ours(x, hx)
    assert got[0].shape == got[1].shape == (3,)
    assert max_difference(got, want) < TOLERANCE[torch.float32]


def test_empty_batch_and_zero_hidden_size_as_torch() -> None:
    reference, ours = pair(5, 3)
    got = ours(torch.randn(0, 5))
    want = reference(torch.randn(0, 5))
    assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in want] == [(0, 3)] * 2
    torch.manual_seed(0)
    zero = unilstm.torch.LSTMCell(5, 0)
    assert [tuple(t.shape) for t in zero(torch.randn(2, 5))] == [(2, 0), (2, 0)]


def test_float16_and_bfloat16_close_to_float64() -> None:
    """Low precisions compute on the fast kernel: close to the float64 step."""
    _, ours = pair(5, 4, seed=7, dtype=torch.float64)
    x = torch.randn(3, 5, dtype=torch.float64)
    h, c = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    want = ours(x, (h, c))
    for dtype, tolerance in ((torch.float16, 5e-3), (torch.bfloat16, 3e-2)):
        low = pickle.loads(pickle.dumps(ours)).to(dtype)
        got = low(x.to(dtype), (h.to(dtype), c.to(dtype)))
        assert got[0].dtype == dtype
        assert max_difference([g.double() for g in got], want) < tolerance


def _error(call) -> tuple[type, str]:
    with pytest.raises(Exception) as info:
        call()
    return info.type, str(info.value)


BAD_CALLS = {
    "input 3-D": lambda: (torch.randn(2, 3, 3), None),
    "input 0-D": lambda: (torch.tensor(1.0), None),
    "hx[0] 3-D": lambda: (torch.randn(2, 3), (torch.randn(1, 2, 4), torch.randn(2, 4))),
    "hx[1] 4-D": lambda: (torch.randn(2, 3), (torch.randn(2, 4), torch.randn(1, 1, 2, 4))),
    "input features": lambda: (torch.randn(2, 5), None),
    "h batch": lambda: (torch.randn(2, 3), (torch.randn(3, 4), torch.randn(2, 4))),
    "c batch": lambda: (torch.randn(2, 3), (torch.randn(2, 4), torch.randn(3, 4))),
    "h hidden size": lambda: (torch.randn(2, 3), (torch.randn(2, 5), torch.randn(2, 4))),
    "c hidden size": lambda: (torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 5))),
    "unbatched input, batched states": lambda: (torch.randn(3), (torch.randn(2, 4), torch.randn(2, 4))),
    "batched input, unbatched states": lambda: (torch.randn(2, 3), (torch.randn(4), torch.randn(4))),
    "one state": lambda: (torch.randn(2, 3), (torch.randn(2, 4),)),
    "three states": lambda: (torch.randn(2, 3), (torch.randn(2, 4),) * 3),
    "unbatched, one state": lambda: (torch.randn(3), (torch.randn(4),)),
    "float64 input": lambda: (torch.randn(2, 3, dtype=torch.float64), None),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_errors_are_torchs(case: str) -> None:
    reference, ours = pair(3, 4)
    x, hx = BAD_CALLS[case]()
    want = _error(lambda: reference(x, hx))
    got = _error(lambda: ours(x, hx))
    assert got == want


def test_states_of_another_dtype_are_refused_by_name() -> None:
    """torch fails inside its kernel for a float64 h_0 (and promotes a float64 c_0); this class names it."""
    _, ours = pair(3, 4)
    x = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match=r"hidden1: expected dtype torch.float32 \(the input's dtype\)"):
        ours(x, (torch.randn(2, 4), torch.randn(2, 4, dtype=torch.float64)))


def test_input_size_zero_is_refused_at_the_call() -> None:
    cell = unilstm.torch.LSTMCell(0, 3)
    assert cell.weight_ih.shape == (12, 0)
    with pytest.raises(NotImplementedError, match="input_size=0"):
        cell(torch.randn(2, 0))


def test_constructor_errors_are_torchs() -> None:
    for args in ((3, -1), (-2, 3), (3.0, 4)):
        want = _error(lambda args=args: torch.nn.LSTMCell(*args))
        got = _error(lambda args=args: unilstm.torch.LSTMCell(*args))
        assert got == want, args
