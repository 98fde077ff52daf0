"""Second derivatives (``create_graph=True``) and repeated backward passes (``retain_graph=True``) through
every kernel and every door, as torch.nn.LSTM gives them on the CPU: ``gradcheck`` and ``gradgradcheck`` in
float64 on small shapes.

The native and fast kernels have hand-written backward passes that are not differentiable and that write
the gate gradients over the saved pre-activations. Without their fallbacks (the reference loop, which
autograd records, when the backward itself is recorded; the forward run again for a second backward) double
backward raised or gave zeros and a second backward raised."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import make_case, needs_extension
from torch.autograd import gradcheck, gradgradcheck
from torch.nn.utils.rnn import pack_padded_sequence

import unilstm
import unilstm.keras
import unilstm.mindspore
import unilstm.torch
from unilstm.kernels import native, policy
from unilstm.kernels.fast import run_direction_fast
from unilstm.kernels.native import run_bidirectional_native, run_direction_native, run_direction_native_halves
from unilstm.kernels.reference import DirectionRun, DirectionWeights, run_direction_reference

# (T=4, B=2): step 1 masks every row, row 1 starts masked
MASK = torch.tensor([[1, 0], [0, 0], [1, 1], [0, 1]], dtype=torch.bool)

#: specs of one direction (make_case's arguments): every option the kernels compute
SPECS = {
    "standard": {},
    "relu": {"act": "relu"},
    "mask_gaps_previous": {"mask": MASK, "zero": False},
    "mask_gaps_reverse": {"mask": MASK, "reverse": True},
    "proj_size": {"P": 2},
    "dropout_shared": {"mx_kind": "shared", "mh_kind": "shared"},
    "dropout_per_gate": {"mx_kind": "per_gate", "mh_kind": "per_gate", "P": 2},
    "one_bias": {"bias": "ih"},
}
KERNELS = {"native": run_direction_native, "fast": run_direction_fast}
GRAD_FN = {"native": "_NativeLSTMBackward", "fast": "_FastLSTMBackward"}


def small_case(seed: int = 0, **spec):
    return make_case(seed, T=4, B=2, F=2, H=3, **spec)


def weight_leaves(w: DirectionWeights) -> list[torch.Tensor]:
    return [t for t in (w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr) if t is not None]


def as_function(kernel, w: DirectionWeights, run: DirectionRun):
    """kernel(x, h0, c0, *weights) with the weights given positionally (those ``w`` has)."""
    present = [name for name in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr") if getattr(w, name) is not None]

    def call(x, h0, c0, *weights):
        return kernel(x, h0, c0, DirectionWeights(**dict(zip(present, weights, strict=True))), run)

    return call


def weighted_loss(tensors, seed: int = 5) -> torch.Tensor:
    """A loss that weighs every element of every tensor differently."""
    gen = torch.Generator().manual_seed(seed)
    return sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in tensors)


def hessian_vector_product(fn, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    """d/dleaves <grad loss, v> for a fixed v: a Hessian-vector product of a weighted loss of fn's results."""
    grads = torch.autograd.grad(weighted_loss(fn(*leaves)), leaves, create_graph=True)
    gen = torch.Generator().manual_seed(11)
    inner = sum((g * torch.randn(g.shape, generator=gen, dtype=g.dtype)).sum() for g in grads)
    return list(torch.autograd.grad(inner, leaves, allow_unused=True, materialize_grads=True))


# -- kernels -----------------------------------------------------------------------------------------------
@needs_extension
@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_kernels_pass_gradcheck_and_gradgradcheck(kernel, spec):
    """Guards double backward of the native and fast kernels: gradgradcheck failed (their backward was
    once_differentiable), and the Hessian-vector product equals the reference loop's."""
    x, h0, c0, w, run = small_case(**SPECS[spec])
    fn = as_function(KERNELS[kernel], w, run)
    leaves = [x, h0, c0, *weight_leaves(w)]
    assert type(fn(*leaves)[0].grad_fn).__name__ == GRAD_FN[kernel]
    assert gradcheck(fn, leaves)
    assert gradgradcheck(fn, leaves, fast_mode=True)
    want = hessian_vector_product(as_function(run_direction_reference, w, run), leaves)
    for got, expected in zip(hessian_vector_product(fn, leaves), want, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


@needs_extension
@pytest.mark.parametrize("spec", ["standard", "mask_gaps_previous", "proj_size", "dropout_per_gate"])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_second_backward_through_one_call_gives_the_same_gradients(kernel, spec, cell):
    """Guards backward(retain_graph=True) twice: the second (and third) backward through one call raised
    ("backward ran twice through the same graph"); now it runs the forward again and gives the first
    backward's gradients bit for bit (for the native kernel on both its loops, C and per step)."""
    x, h0, c0, w, run = small_case(**SPECS[spec])
    leaves = [x, h0, c0, *weight_leaves(w)]
    loss = weighted_loss(KERNELS[kernel](x, h0, c0, w, run))
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    second = torch.autograd.grad(loss, leaves, retain_graph=True)
    third = torch.autograd.grad(loss, leaves)
    for a, b, c in zip(first, second, third, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    want = torch.autograd.grad(weighted_loss(run_direction_reference(x, h0, c0, w, run)), leaves)
    for got, expected in zip(second, want, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


def test_a_backward_after_changing_a_saved_input_still_raises_torchs_error():
    """The second backward reruns the forward on the saved inputs: an input changed in place since then is
    refused by autograd's version check (as torch.nn.LSTM's backward refuses it), not silently used."""
    x, h0, c0, w, run = small_case()
    loss = weighted_loss(run_direction_fast(x, h0, c0, w, run))
    loss.backward(retain_graph=True)
    with torch.no_grad():
        w.w_hh.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@needs_extension
@pytest.mark.parametrize("spec", ["standard", "mask_gaps_previous", "dropout_per_gate"])
def test_both_directions_at_once_double_and_repeated_backward(spec, two_threads):
    """Guards the native pair Function (a bidirectional layer's two directions on two threads, sharing x):
    gradcheck, gradgradcheck, and a second backward equal to the first."""
    forward = small_case(0, **SPECS[spec])
    backward = small_case(1, **SPECS[spec], reverse=True)
    x, run_f, run_b = forward[0], forward[4], backward[4]
    h0 = torch.stack([forward[1], backward[1]]).detach().requires_grad_()
    c0 = torch.stack([forward[2], backward[2]]).detach().requires_grad_()
    w_f, w_b = weight_leaves(forward[3]), weight_leaves(backward[3])
    assert native.pair_accepts(x, h0, c0, (forward[3], backward[3]), (run_f, run_b))

    def fn(x, h0, c0, *weights):
        weights_f, weights_b = DirectionWeights(*weights[: len(w_f)]), DirectionWeights(*weights[len(w_f) :])
        (out_f, h_f, c_f), (out_b, h_b, c_b) = run_bidirectional_native(
            x, h0, c0, (weights_f, weights_b), (run_f, run_b)
        )
        return out_f, h_f, c_f, out_b, h_b, c_b

    leaves = [x, h0, c0, *w_f, *w_b]
    assert type(fn(*leaves)[0].grad_fn).__name__ == "_NativeLSTMPairBackward"
    assert gradcheck(fn, leaves, fast_mode=True)
    assert gradgradcheck(fn, leaves, fast_mode=True)
    loss = weighted_loss(fn(*leaves))
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    for a, b in zip(first, torch.autograd.grad(loss, leaves), strict=True):
        assert torch.equal(a, b)


@needs_extension
@pytest.mark.parametrize("spec", ["standard", "mask_gaps_reverse", "dropout_shared"])
def test_batch_halves_double_and_repeated_backward(spec, two_threads, monkeypatch):
    """Guards the native pair Function on a batch's two halves (one output tensor written by both loops,
    the weights shared): gradcheck, gradgradcheck, and a second backward equal to the first."""
    monkeypatch.setattr(policy, "HALVES_MIN_BATCH", 4)
    x, h0, c0, w, run = make_case(2, T=3, B=4, F=2, H=3, **{**SPECS[spec], "mask": None})
    if spec == "mask_gaps_reverse":
        run = DirectionRun(**{**run.__dict__, "step_mask": MASK[:3].repeat(1, 2)})
    assert native.halves_accept(x, h0, c0, w, run)
    fn = as_function(run_direction_native_halves, w, run)
    leaves = [x, h0, c0, *weight_leaves(w)]
    assert type(fn(*leaves)[0].grad_fn).__name__ == "_NativeLSTMPairBackward"
    assert gradcheck(fn, leaves, fast_mode=True)
    assert gradgradcheck(fn, leaves, fast_mode=True)
    loss = weighted_loss(fn(*leaves))
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    for a, b in zip(first, torch.autograd.grad(loss, leaves), strict=True):
        assert torch.equal(a, b)


def test_the_fast_kernel_on_cuda_graph_stand_ins(stand_in_graphs):
    """The fast kernel's CUDA path (forward and backward replayed from CUDA graphs, run here on the CPU
    stand-ins): double backward goes through the reference loop, and a second backward reruns the forward
    through the graphs."""
    x, h0, c0, w, run = small_case(**SPECS["mask_gaps_previous"])
    fn = as_function(run_direction_fast, w, run)
    leaves = [x, h0, c0, *weight_leaves(w)]
    for _ in range(3):  # the first call runs directly, the second captures, the third replays
        loss = weighted_loss(fn(*leaves))
        first = torch.autograd.grad(loss, leaves, retain_graph=True)
        for a, b in zip(first, torch.autograd.grad(loss, leaves), strict=True):
            assert torch.equal(a, b)
    want = hessian_vector_product(as_function(run_direction_reference, w, run), leaves)
    for got, expected in zip(hessian_vector_product(fn, leaves), want, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


def test_a_tensor_given_as_both_states_gets_both_shares():
    """The reference backward differentiates each argument place on its own: one tensor given as h0 and
    c0 gets the sum of the two shares once, as from the reference loop itself."""
    x, h0, _, w, run = small_case()
    state = h0.detach().requires_grad_()
    fast, reference = as_function(run_direction_fast, w, run), as_function(run_direction_reference, w, run)
    leaves = [x, state, *weight_leaves(w)]
    want = hessian_vector_product(lambda x, s, *ws: reference(x, s, s, *ws), leaves)
    got = hessian_vector_product(lambda x, s, *ws: fast(x, s, s, *ws), leaves)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


# -- doors -------------------------------------------------------------------------------------------------
def check_module(call, inputs: list[torch.Tensor], module: torch.nn.Module) -> None:
    """gradcheck and gradgradcheck of ``call()`` (a function of ``inputs`` and the module's parameters, which
    gradcheck changes in place, as PyTorch's own module tests do), then a second backward equal to the
    first."""
    params = [p for p in module.parameters() if p.requires_grad]

    def fn(*_):
        out = call()
        return tuple(t for t in out if t.requires_grad)

    leaves = [*inputs, *params]
    assert gradcheck(fn, leaves, fast_mode=True)
    assert gradgradcheck(fn, leaves, fast_mode=True)
    loss = weighted_loss(fn())
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    for a, b in zip(first, torch.autograd.grad(loss, leaves), strict=True):
        assert torch.equal(a, b)


def leaf(*shape, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.8).requires_grad_()


CANONICAL = {  # name: (constructor kwargs, call kwargs)
    "standard": ({}, {}),
    "bidirectional_two_layers_proj": ({"num_layers": 2, "bidirectional": True, "proj_size": 2}, {}),
    "mask_gaps_relu": ({"activation": "relu", "masked_output": "previous"}, {"mask": MASK.t()}),
    "lengths_bidirectional": ({"bidirectional": True}, {"lengths": torch.tensor([4, 2])}),
    "recurrent_dropout": ({"recurrent_dropout": 0.3, "input_dropout": 0.2, "per_gate_dropout": True}, {}),
    "go_backwards": ({"go_backwards": True}, {"mask": MASK.t()}),
}


@needs_extension
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", list(CANONICAL))
def test_canonical_layer(name, threads):
    """Guards the canonical layer (CPU training runs the native kernel; bidirectional layers both
    directions at once on two threads): double backward and repeated backward. Recurrent dropout draws its
    masks from a generator seeded on every call (fixed masks)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        constructor, call_kwargs = CANONICAL[name]
        torch.manual_seed(0)
        layer = unilstm.LSTM(2, 3, batch_first=True, **constructor).double()
        x = leaf(2, 4, 2)

        def call():
            out, (h, c) = layer(x, generator=torch.Generator().manual_seed(3), **call_kwargs)
            return out, h, c

        check_module(call, [x], layer)
    finally:
        torch.set_num_threads(before)


@needs_extension
def test_canonical_layer_batch_halves(two_threads, monkeypatch):
    """Guards the canonical layer's batch-halves path (one direction's batch as two halves on two
    threads)."""
    monkeypatch.setattr(policy, "HALVES_MIN_BATCH", 4)
    torch.manual_seed(0)
    layer = unilstm.LSTM(2, 3).double()
    x = leaf(3, 4, 2)

    def call():
        out, (h, c) = layer(x)
        return out, h, c

    check_module(call, [x], layer)


@needs_extension
@pytest.mark.parametrize("steps", [3, 6])
@pytest.mark.parametrize("packed", [False, True])
def test_torch_door(steps, packed):
    """Guards the torch door: short runs (at most policy.STREAMING_MAX_STEPS steps, the native kernel),
    longer ones (torch's kernel) and PackedSequence (the native kernel in CPU training), with initial
    states: double backward and repeated backward, as torch.nn.LSTM."""
    assert (steps <= policy.STREAMING_MAX_STEPS) == (steps == 3)
    torch.manual_seed(0)
    lstm = unilstm.torch.LSTM(2, 2, num_layers=2, bidirectional=True).double()
    x, h0, c0 = leaf(steps, 2, 2), leaf(4, 2, 2, seed=1), leaf(4, 2, 2, seed=2)

    def call():
        if packed:
            packed_x = pack_padded_sequence(x, torch.tensor([steps, 2]), enforce_sorted=False)
            out, (h, c) = lstm(packed_x, (h0, c0))
            return out.data, h, c
        out, (h, c) = lstm(x, (h0, c0))
        return out, h, c

    check_module(call, [x, h0, c0], lstm)


@needs_extension
@pytest.mark.parametrize(
    "kwargs", [{}, {"go_backwards": True}, {"activation": "relu", "recurrent_dropout": 0.3, "seed": 4}]
)
def test_keras_door(kwargs):
    """Guards the Keras door (a mask with gaps, Keras's "previous" outputs, its own weight layout):
    double backward and repeated backward, at every length (native kernel in CPU training)."""
    layer = unilstm.keras.LSTM(3, dtype="float64", return_sequences=True, return_state=True, **kwargs)
    x = leaf(2, 4, 2)
    mask = MASK.t()
    layer(x, mask=mask)  # builds the weights
    training = "recurrent_dropout" in kwargs

    def call():
        layer._generators.clear()  # the seeded generator starts again: the same dropout masks every call
        return layer(x, mask=mask, training=training)

    check_module(call, [x], layer)


@needs_extension
def test_mindspore_door():
    """Guards the MindSpore door (seq_length, both directions): double backward and repeated backward."""
    torch.manual_seed(0)
    net = unilstm.mindspore.LSTM(2, 3, 1, bidirectional=True, dtype="float64")
    x = leaf(4, 2, 2)
    lengths = torch.tensor([4, 2])

    def call():
        out, (h, c) = net(x, None, lengths)
        return out, h, c

    check_module(call, [x], net)
