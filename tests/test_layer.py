"""The canonical layer unilstm.LSTM: lazy input size, lengths, masks, states, errors, dtypes, gradients."""

from __future__ import annotations

import warnings

import pytest
import torch

import unilstm
from unilstm.kernels import dispatch, force_kernel


@pytest.fixture(params=["dispatch", *(entry[0] for entry in dispatch.DIRECTION_KERNELS)])
def kernel(request):
    """The default dispatch, then every registered direction kernel forced (the reference loop included)."""
    force_kernel(None if request.param == "dispatch" else request.param)
    yield request.param
    force_kernel(None)


def make(*args, seed: int = 0, **kwargs) -> unilstm.LSTM:
    torch.manual_seed(seed)
    return unilstm.LSTM(*args, **kwargs)


# -- lazy input size --------------------------------------------------------------------------------------
def test_lazy_input_size_inferred_on_first_call():
    lstm = make(None, 6, 2, bidirectional=True)
    assert not lstm.is_built and lstm.input_size is None
    out, (h, c) = lstm(torch.randn(5, 3, 7))
    assert lstm.is_built and lstm.input_size == 7
    assert lstm.weight_ih_l0.shape == (24, 7) and lstm.weight_ih_l0_reverse.shape == (24, 7)
    assert out.shape == (5, 3, 12) and h.shape == (4, 3, 6) and c.shape == (4, 3, 6)
    bound = float(torch.tensor(1 / 6**0.5, dtype=torch.float32))  # uniform_ draws in float32
    weight = lstm.weight_ih_l0.detach()
    assert float(weight.abs().max()) <= bound and float(weight.std()) > 0
    with pytest.raises(ValueError, match=r"input: expected 7 features .* got 4"):
        lstm(torch.randn(5, 3, 4))


def test_lazy_input_size_via_build():
    lstm = make(None, 5)
    lstm.build(3)
    assert lstm.weight_ih_l0.shape == (20, 3)
    lstm.build(3)  # the same size again does nothing
    with pytest.raises(ValueError, match=r"input_size: the layer was built for 3, got 4"):
        lstm.build(4)
    assert lstm(torch.randn(2, 1, 3))[0].shape == (2, 1, 5)
    names = [n for n, _ in lstm.named_parameters()]
    assert names == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]


def test_lazy_layer_trains_after_build():
    lstm = make(None, 4, batch_first=True)
    lstm(torch.randn(2, 3, 5))
    optimizer = torch.optim.SGD(lstm.parameters(), lr=0.1)
    before = lstm.weight_ih_l0.detach().clone()
    lstm(torch.randn(2, 3, 5))[0].sum().backward()
    optimizer.step()
    assert not torch.equal(before, lstm.weight_ih_l0)


# -- lengths ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lengths_zero_returns_initial_state_and_zero_outputs(kernel, bidirectional):
    lstm = make(3, 4, 2, bidirectional=bidirectional, dtype=torch.float64)
    d = 2 if bidirectional else 1
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    h0 = torch.randn(2 * d, 3, 4, dtype=torch.float64)
    c0 = torch.randn(2 * d, 3, 4, dtype=torch.float64)
    lengths = torch.tensor([0, 5, 2])
    out, (h, c) = lstm(x, (h0, c0), lengths=lengths)
    assert torch.equal(out[:, 0], torch.zeros(5, 4 * d, dtype=torch.float64))
    assert torch.equal(h[:, 0], h0[:, 0]) and torch.equal(c[:, 0], c0[:, 0])
    assert torch.equal(out[2:, 2], torch.zeros(3, 4 * d, dtype=torch.float64))
    # each row equals a run on its own valid prefix
    for b, n in ((1, 5), (2, 2)):
        ref_out, (ref_h, ref_c) = lstm(x[:n, b : b + 1], (h0[:, b : b + 1], c0[:, b : b + 1]))
        assert torch.allclose(out[:n, b : b + 1], ref_out, atol=1e-12)
        assert torch.allclose(h[:, b : b + 1], ref_h, atol=1e-12)
        assert torch.allclose(c[:, b : b + 1], ref_c, atol=1e-12)


def test_all_lengths_zero_and_empty_batch(kernel):
    lstm = make(3, 4)
    x = torch.randn(4, 2, 3)
    out, (h, c) = lstm(x, lengths=torch.tensor([0, 0]))
    assert torch.equal(out, torch.zeros(4, 2, 4)) and torch.equal(h, torch.zeros(1, 2, 4))
    out, (h, c) = lstm(torch.randn(4, 0, 3), lengths=torch.zeros(0, dtype=torch.long))
    assert out.shape == (4, 0, 4) and h.shape == (1, 0, 4)


def test_zero_steps_returns_initial_state(kernel):
    lstm = make(3, 4, 2, bidirectional=True)
    h0, c0 = torch.randn(4, 2, 4), torch.randn(4, 2, 4)
    out, (h, c) = lstm(torch.randn(0, 2, 3), (h0, c0))
    assert out.shape == (0, 2, 8)
    assert torch.equal(h, h0) and torch.equal(c, c0)


def test_lengths_batch_first_and_unbatched(kernel):
    lstm = make(3, 4, batch_first=True, dtype=torch.float64)
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    out, (h, _) = lstm(x, lengths=torch.tensor([6, 3]))
    assert torch.equal(out[1, 3:], torch.zeros(3, 4, dtype=torch.float64))
    single, (h1, _) = lstm(x[1, :3])
    assert torch.allclose(out[1, :3], single, atol=1e-12) and torch.allclose(h[:, 1], h1, atol=1e-12)
    out_u, (h_u, _) = lstm(x[1], lengths=torch.tensor(3))
    assert torch.allclose(out_u, out[1], atol=1e-12) and torch.allclose(h_u, h[:, 1], atol=1e-12)


# -- masks ------------------------------------------------------------------------------------------------
def test_right_padded_mask_equals_lengths(kernel):
    lstm = make(3, 4, 2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([5, 1, 3])
    mask = torch.arange(5).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    a = lstm(x, lengths=lengths)
    b = lstm(x, mask=mask)
    assert torch.allclose(a[0], b[0], atol=1e-12) and torch.allclose(a[1][0], b[1][0], atol=1e-12)


@pytest.mark.parametrize("masked_output", ["zero", "previous"])
def test_mask_with_gaps_skips_steps(kernel, masked_output):
    lstm = make(3, 4, masked_output=masked_output, dtype=torch.float64)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True, False, True], [False, False, True, False, True, True]])
    out, (h, c) = lstm(x, mask=mask)
    for b in range(2):
        kept = mask[b].nonzero().squeeze(1)
        ref_out, (ref_h, ref_c) = lstm(x[kept, b : b + 1])
        assert torch.allclose(out[kept, b], ref_out[:, 0], atol=1e-12)
        assert torch.allclose(h[:, b], ref_h[:, 0], atol=1e-12)
        assert torch.allclose(c[:, b], ref_c[:, 0], atol=1e-12)
        previous = torch.zeros(4, dtype=torch.float64)
        for t in range(6):
            if mask[b, t]:
                previous = out[t, b]
            else:
                want = torch.zeros(4, dtype=torch.float64) if masked_output == "zero" else previous
                assert torch.equal(out[t, b], want)


def test_mask_and_lengths_combine():
    lstm = make(2, 3, dtype=torch.float64)
    x = torch.randn(4, 2, 2, dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True], [True, True, True, True]])
    a = lstm(x, lengths=torch.tensor([3, 2]), mask=mask)
    b = lstm(x, mask=mask & (torch.arange(4) < torch.tensor([[3], [2]])))
    assert torch.equal(a[0], b[0])


def test_go_backwards_reverses_time(kernel):
    forward = make(3, 4, dtype=torch.float64)
    backward = make(3, 4, go_backwards=True, dtype=torch.float64)
    backward.load_state_dict(forward.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    a, (h_a, _) = backward(x)
    b, (h_b, _) = forward(x.flip(0))
    assert torch.allclose(a, b, atol=1e-12) and torch.allclose(h_a, h_b, atol=1e-12)


# -- unbatched --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_equals_batch_of_one(kernel, batch_first):
    lstm = make(3, 5, 2, bidirectional=True, proj_size=2, batch_first=batch_first, dtype=torch.float64)
    x = torch.randn(6, 3, dtype=torch.float64)
    h0, c0 = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    out, (h, c) = lstm(x, (h0, c0))
    assert out.shape == (6, 4) and h.shape == (4, 2) and c.shape == (4, 5)
    xb = x.unsqueeze(0 if batch_first else 1)
    out_b, (h_b, c_b) = lstm(xb, (h0.unsqueeze(1), c0.unsqueeze(1)))
    assert torch.allclose(out, out_b.squeeze(0 if batch_first else 1), atol=1e-12)
    assert torch.allclose(h, h_b.squeeze(1), atol=1e-12) and torch.allclose(c, c_b.squeeze(1), atol=1e-12)


# -- stateful ---------------------------------------------------------------------------------------------
def test_stateful_carries_states_and_reset_states(kernel):
    stateful = make(3, 4, 2, stateful=True, dtype=torch.float64)
    plain = make(3, 4, 2, dtype=torch.float64)
    plain.load_state_dict(stateful.state_dict())
    x = torch.randn(8, 2, 3, dtype=torch.float64)
    whole, (h_whole, c_whole) = plain(x)
    first, _ = stateful(x[:5])
    second, (h, c) = stateful(x[5:])
    assert torch.allclose(torch.cat([first, second]), whole, atol=1e-12)
    assert torch.allclose(h, h_whole, atol=1e-12) and torch.allclose(c, c_whole, atol=1e-12)
    assert torch.allclose(stateful.states[0], h_whole, atol=1e-12)
    assert not stateful.states[0].requires_grad
    stateful.reset_states()
    assert stateful.states is None
    assert torch.allclose(stateful(x[:5])[0], first, atol=1e-12)
    stateful.reset_states((torch.zeros(2, 2, 4), torch.zeros(2, 2, 4)))
    assert stateful.states[0].dtype == torch.float64
    assert torch.allclose(stateful(x[:5])[0], first, atol=1e-12)
    # an explicit state overrides the stored one
    h0, c0 = torch.randn(2, 2, 4, dtype=torch.float64), torch.randn(2, 2, 4, dtype=torch.float64)
    assert torch.allclose(stateful(x, (h0, c0))[0], plain(x, (h0, c0))[0], atol=1e-12)
    with pytest.raises(ValueError, match=r"batch size 2, got batch size 3.*reset_states"):
        stateful(torch.randn(4, 3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="states must be a pair"):
        stateful.reset_states(torch.zeros(2, 2, 4))


# -- errors -----------------------------------------------------------------------------------------------
X = torch.randn(5, 3, 4)
H = torch.zeros(2, 3, 6)
ERRORS = [
    (lambda m: m(torch.randn(2, 5, 3, 4)), ValueError,
     r"input must be 3-D .* or 2-D .*, got 4-D with shape \(2, 5, 3, 4\)"),
    (lambda m: m(torch.randn(4)), ValueError, r"got 1-D with shape \(4\)"),
    (lambda m: m([[1.0]]), TypeError, r"input must be a torch.Tensor, got list"),
    (lambda m: m(torch.ones(5, 3, 4, dtype=torch.long)), TypeError,
     r"input must be a floating-point tensor, got dtype torch.int64"),
    (lambda m: m(torch.randn(5, 3, 7)), ValueError,
     r"input: expected 4 features in the last dimension, got 7"),
    (lambda m: m(X.double()), TypeError, r"input: expected dtype torch.float32 .* got torch.float64"),
    (lambda m: m(torch.randn(5, 3, 4), (torch.zeros(2, 2, 6), torch.zeros(2, 3, 6))), ValueError,
     r"h_0: expected shape \(2, 3, 6\), got \(2, 2, 6\)"),
    (lambda m: m(torch.randn(5, 3, 4), (torch.zeros(2, 3, 6), torch.zeros(2, 3))), ValueError,
     r"c_0: expected shape \(2, 3, 6\), got \(2, 3\)"),
    (lambda m: m(X, (H.double(), H)), TypeError,
     r"h_0: expected dtype torch.float32 .*, got torch.float64"),
    (lambda m: m(X, H), TypeError, r"state must be a pair \(h_0, c_0\), got Tensor"),
    (lambda m: m(X, (H, [0.0])), TypeError, r"c_0 must be a torch.Tensor, got list"),
    (lambda m: m(torch.randn(5, 3, 4), lengths=torch.tensor([5, 5])), ValueError,
     r"lengths: expected shape \(3,\) .*, got \(2\)"),
    (lambda m: m(torch.randn(5, 3, 4), lengths=torch.tensor([5.0, 5.0, 5.0])), TypeError,
     r"lengths must be an integer tensor, got dtype torch.float32"),
    (lambda m: m(torch.randn(5, 3, 4), lengths=torch.tensor([True, True, True])), TypeError,
     r"lengths must be an integer tensor, got dtype torch.bool"),
    (lambda m: m(torch.randn(5, 3, 4), lengths=torch.tensor([5, 6, 1])), ValueError,
     r"lengths must lie in \[0, 5\] .*got min 1 and max 6"),
    (lambda m: m(X, lengths=torch.tensor([5, -1, 1])), ValueError, r"got min -1 and max 5"),
    (lambda m: m(torch.randn(5, 3, 4), mask=torch.ones(5, 3, dtype=torch.bool)), ValueError,
     r"mask: expected shape \(3, 5\) \(batch, steps\), got \(5, 3\)"),
]


@pytest.mark.parametrize("call,error,message", ERRORS)
def test_clear_errors(call, error, message):
    lstm = make(4, 6, 2)
    with pytest.raises(error, match=message):
        call(lstm)


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"proj_size must be smaller than hidden_size, got proj_size=4"):
        unilstm.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match=r"dropout must be a float in \[0, 1\], got 1.5"):
        unilstm.LSTM(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match=r"recurrent_dropout must be a float in \[0, 1\], got -0.1"):
        unilstm.LSTM(3, 4, recurrent_dropout=-0.1)
    with pytest.raises(TypeError, match=r"hidden_size must be an int, got float 4.0"):
        unilstm.LSTM(3, 4.0)
    with pytest.raises(ValueError, match=r"num_layers must be >= 1, got 0"):
        unilstm.LSTM(3, 4, 0)
    with pytest.raises(ValueError, match=r"activation: unknown activation 'tanhh'"):
        unilstm.LSTM(3, 4, activation="tanhh")
    with pytest.raises(ValueError, match=r"masked_output must be 'zero' or 'previous', got 'last'"):
        unilstm.LSTM(3, 4, masked_output="last")


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, torch.float8_e4m3fn, "float32"])
def test_non_float_parameter_dtypes_are_refused_at_construction(dtype):
    """Guards issue 13 item 7: dtype=torch.int64 failed inside torch ("Only Tensors of floating point ... can
    require gradients") and complex64 built a layer no call could run; both are refused up front, naming
    the argument (lazy layers and from_spec too)."""
    message = r"dtype: expected a floating-point dtype \(torch.float16, .*\), got"
    with pytest.raises(TypeError, match=message):
        unilstm.LSTM(3, 4, dtype=dtype)
    with pytest.raises(TypeError, match=message):
        unilstm.LSTM(None, 4, dtype=dtype)
    with pytest.raises(TypeError, match=message):
        unilstm.LSTM.from_spec(unilstm.LSTM(3, 4).spec, dtype=dtype)
    assert unilstm.LSTM(3, 4, dtype=torch.float64).weight_hh_l0.dtype == torch.float64


@pytest.mark.parametrize("training", ["no", 1, 0, torch.tensor(True)])
def test_training_must_be_a_bool_or_none(training):
    """Guards issue 13 item 7: training="no" was taken as True (bool("no")), dropout on; anything but a
    bool or None is refused."""
    lstm = make(4, 6, recurrent_dropout=0.5).eval()
    with pytest.raises(TypeError, match=r"training must be a bool or None, got "):
        lstm(X, training=training)
    out_none, _ = lstm(X, training=None)
    out_false, _ = lstm(X, training=False)
    torch.testing.assert_close(out_none, out_false)


def test_meta_and_other_device_inputs_are_refused_clearly():
    """Guards issue 13 item 7: a meta input failed deep inside ("unknown device type for autocast ..."). An
    input or state on another device than the parameters gets torch.nn.LSTM's RuntimeError, naming both;
    a meta layer called on meta tensors is refused: the layer computes values and meta tensors have
    none."""
    lstm = make(4, 6)
    mismatch = r"not at the same device, found input tensor at meta and parameter tensor at cpu"
    with pytest.raises(RuntimeError, match=mismatch):
        lstm(torch.randn(5, 3, 4, device="meta"))
    with pytest.raises(RuntimeError, match=r"found input tensor at cpu and hidden tensor at meta"):
        lstm(X, (torch.zeros(1, 3, 6, device="meta"), torch.zeros(1, 3, 6)))
    on_meta = unilstm.LSTM(4, 6, device="meta")
    with pytest.raises(RuntimeError, match=r"found input tensor at cpu and parameter tensor at meta"):
        on_meta(X)
    with pytest.raises(NotImplementedError, match=r"meta tensors hold none"):
        on_meta(torch.randn(5, 3, 4, device="meta"))


# -- dtypes and gradients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kwargs", [dict(), dict(num_layers=2, bidirectional=True), dict(activation="relu")])
def test_half_precision_runs(kernel, dtype, kwargs):
    full = make(3, 8, **kwargs)
    half = make(3, 8, **kwargs).to(dtype)
    x = torch.randn(5, 2, 3)
    lengths = torch.tensor([5, 2])
    for extra in (dict(), dict(lengths=lengths), dict(mask=torch.rand(2, 5) > 0.3)):
        out, (h, c) = half(x.to(dtype), **extra)
        want, (h_want, _) = full(x, **extra)
        assert out.dtype == dtype and h.dtype == dtype and c.dtype == dtype
        assert torch.isfinite(out).all()
        assert float((out.float() - want).abs().max()) < 0.05
        assert float((h.float() - h_want).abs().max()) < 0.05


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_layers=2, bidirectional=True, proj_size=2),
        dict(bias=False, activation="relu"),
        dict(go_backwards=True),
    ],
)
def test_gradients_flow_to_everything(kernel, kwargs):
    lstm = make(3, 4, **kwargs, dtype=torch.float64)
    d = 2 if lstm.bidirectional else 1
    layers = lstm.num_layers * d
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(layers, 2, lstm.spec.output_size, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(layers, 2, 4, dtype=torch.float64, requires_grad=True)
    out, (h, c) = lstm(x, (h0, c0), lengths=torch.tensor([5, 3]))
    (out.sum() + h.square().sum() + c.sum()).backward()
    for name, tensor in [("x", x), ("h0", h0), ("c0", c0), *lstm.named_parameters()]:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all(), name
        assert float(tensor.grad.abs().sum()) > 0, name


def test_gradcheck_reference_kernel():
    force_kernel("reference")
    try:
        lstm = make(2, 3, 2, bidirectional=True, proj_size=1, dtype=torch.float64)
        x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
        mask = torch.tensor([[True, False, True], [True, True, False]])
        assert torch.autograd.gradcheck(lambda inp: lstm(inp, mask=mask)[0], (x,))
    finally:
        force_kernel(None)


def test_training_dropout_variants_run_and_eval_is_deterministic():
    lstm = make(3, 6, 2, input_dropout=0.2, recurrent_dropout=0.4)
    x = torch.randn(5, 2, 3)
    lstm.train()
    first = lstm(x, generator=torch.Generator().manual_seed(1))[0]
    assert torch.equal(first, lstm(x, generator=torch.Generator().manual_seed(1))[0])
    assert not torch.equal(first, lstm(x, generator=torch.Generator().manual_seed(2))[0])
    lstm.eval()
    assert torch.equal(lstm(x)[0], lstm(x)[0])
    assert torch.equal(lstm(x, training=False)[0], lstm(x)[0])


def test_repr_and_all_weights():
    lstm = make(3, 4, 2, bidirectional=True, activation="relu", stateful=True)
    assert repr(lstm) == "LSTM(3, 4, num_layers=2, bidirectional=True, activation='relu', stateful=True)"
    assert len(lstm.all_weights) == 4 and len(lstm.all_weights[0]) == 4


def test_lazy_layer_state_dict_before_and_after_build():
    lazy = make(None, 4, 2, bidirectional=True)
    state = lazy.state_dict()
    assert list(state) == [n for n, _ in lazy.named_parameters()]
    built = make(3, 4, 2, bidirectional=True, seed=5)
    lazy.load_state_dict(built.state_dict())
    assert lazy.is_built and lazy.input_size == 3
    x = torch.randn(4, 2, 3)
    assert torch.equal(lazy(x)[0], built(x)[0])
    with pytest.raises(RuntimeError, match="size mismatch for weight_ih_l0"):
        make(5, 4, 2, bidirectional=True).load_state_dict(built.state_dict())


class _OnCuda(torch.Tensor):
    """A CPU tensor that says it is on CUDA, for the warning filter's choice (no GPU in the suite)."""

    is_cuda = True  # type: ignore[assignment]


def test_cudnn_chunk_warning_silenced_only_for_weights_made_per_call():
    from unilstm.kernels import fused

    made_per_call = torch.Tensor._make_subclass(_OnCuda, torch.zeros(2))
    own = torch.nn.Parameter(torch.zeros(2))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for weights in ([own], [own, made_per_call]):
            with fused._quiet_about_derived_weights(weights):
                warnings.warn(fused._NOT_ONE_CHUNK + ". This means ...", UserWarning, stacklevel=1)
    assert len(seen) == 1  # a layer's own Parameters keep torch's advice to flatten them


def test_flattening_is_a_no_op_off_cuda_and_before_build():
    unilstm.LSTM(None, 4).flatten_parameters()  # unbuilt: nothing to flatten, no error
    built = unilstm.LSTM(3, 4, num_layers=2)
    pointers = [p.data_ptr() for p in built.parameters()]
    built.flatten_parameters()
    built.to(torch.float64)
    assert [p.data_ptr() for p in built.parameters()] != pointers  # moved by .to, and still separate on CPU
    assert len({p.untyped_storage().data_ptr() for p in built.parameters()}) == len(pointers)
