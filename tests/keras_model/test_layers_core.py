"""The core layers around LSTMs against real Keras 3 and tf-keras (fixtures of
tools/fixtures/make_keras_layer_fixtures_core.py), their training-mode noise by its statistics, and every
refusal."""

from __future__ import annotations

import importlib
import math
import pkgutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from layer_fixtures import LAYER_FIXTURES, LayerFixture, assert_matches, build_layer, load_fixture

import unilstm.keras_model
from unilstm.keras_model.base import REGISTRY, KerasLayer, KerasModelError, LayerSpec, Shape

# Every layer module registers its layers on import; TimeDistributed's fixtures also wrap the LSTM layers.
for _module in pkgutil.iter_modules(unilstm.keras_model.__path__, "unilstm.keras_model."):
    importlib.import_module(_module.name)

CORE_FIXTURES = sorted(LAYER_FIXTURES.glob("core_*.npz"))
INFERENCE = [p for p in CORE_FIXTURES if not load_fixture(p).training]
TRAINING = [p for p in CORE_FIXTURES if load_fixture(p).training]


def make(class_name: str, config: dict[str, Any], *shapes: Shape, keras2: bool = False) -> KerasLayer:
    spec = LayerSpec(
        name="layer",
        class_name=class_name,
        config=config,
        input_shapes=shapes or ((None, 4, 3),),
        keras2=keras2,
    )
    return REGISTRY[class_name](spec).eval()  # torch modules start in training mode, Keras at inference


def loaded(class_name: str, config: dict[str, Any], *shapes: Shape, keras2: bool = False) -> KerasLayer:
    """A layer with random weights of its own shapes."""
    layer = make(class_name, config, *shapes, keras2=keras2)
    rng = np.random.default_rng(0)
    layer.load([rng.uniform(0.5, 1.5, [d or 1 for d in s]).astype(np.float32) for s in layer.weight_shapes()])
    return layer


def test_fixtures_cover_every_layer_in_both_generations() -> None:
    classes = {"k3": set(), "tfk": set()}
    for path in CORE_FIXTURES:
        fixture = load_fixture(path)
        classes["tfk" if fixture.spec.keras2 else "k3"].add(fixture.spec.class_name)
    wanted = {
        "Embedding",
        "Masking",
        "Dense",
        "Activation",
        "Dropout",
        "SpatialDropout1D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "BatchNormalization",
        "LayerNormalization",
        "Flatten",
        "Reshape",
        "Permute",
        "RepeatVector",
        "TimeDistributed",
    }
    assert classes["k3"] == wanted
    assert classes["tfk"] == wanted


def _fixture(path: Path) -> LayerFixture:
    """The fixture; skipped while a layer it needs (TimeDistributed's inner LSTM) is not registered."""
    fixture = load_fixture(path)
    inner = fixture.spec.config.get("layer")
    needed = [fixture.spec.class_name, *([inner["class_name"]] if isinstance(inner, dict) else [])]
    missing = [name for name in needed if name not in REGISTRY]
    if missing:
        pytest.skip(f"{missing} not registered (no layer module of unilstm.keras_model implements it yet)")
    return fixture


@pytest.mark.parametrize("path", INFERENCE, ids=lambda p: p.stem)
def test_inference_matches_keras(path: Path) -> None:
    assert_matches(_fixture(path))


@pytest.mark.parametrize("path", CORE_FIXTURES, ids=lambda p: p.stem)
def test_output_shape_agrees_with_the_output(path: Path) -> None:
    fixture = _fixture(path)
    layer = build_layer(fixture)
    shape = layer.output_shape(fixture.spec.input_shapes)
    assert isinstance(shape, tuple)
    assert len(shape) == fixture.outputs[0].ndim
    for want, got in zip(shape[1:], fixture.outputs[0].shape[1:], strict=True):
        assert want is None or want == got


def _weights_now(layer: KerasLayer) -> list[np.ndarray]:
    owner = getattr(layer, "layer", layer)
    return [getattr(owner, name).detach().numpy() for name in layer.weight_names]


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: p.stem)
def test_training_batchnorm_output_and_moving_statistics_match_keras(path: Path) -> None:
    """Training-mode BatchNormalization is deterministic: its output (batch statistics, masked) and the
    moving statistics it leaves behind equal Keras's."""
    fixture = _fixture(path)
    assert_matches(fixture)
    layer = build_layer(fixture)
    x = torch.from_numpy(fixture.inputs[0])
    mask = None if fixture.masks[0] is None else torch.from_numpy(fixture.masks[0])
    layer(x, mask)
    with np.load(path) as data:
        updated = [data[f"updated_weight_{i}"] for i in range(len(fixture.weights))]
    for got, want in zip(_weights_now(layer), updated, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=path.name)


def test_training_batchnorm_variance_is_biased_except_tf_keras_fused() -> None:
    """Measured: Keras 3 updates the moving variance with the biased batch variance on every rank; tf-keras
    too, except on 4-D inputs (its fused kernel), where it takes the unbiased one."""
    x = torch.randn(4, 3, 2, 5)
    n = 4 * 3 * 2
    biased = x.var(dim=(0, 1, 2), unbiased=False)
    for keras2, want in ((False, biased), (True, biased * n / (n - 1))):
        layer = loaded("BatchNormalization", {"momentum": 0.0}, (None, 3, 2, 5), keras2=keras2)
        layer.train()
        layer(x)
        np.testing.assert_allclose(layer.moving_variance.numpy(), want.numpy(), rtol=1e-5)
    layer = loaded("BatchNormalization", {"momentum": 0.0}, (None, 3, 5), keras2=True)
    layer.train()
    layer(x[:, :, 0])
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), x[:, :, 0].var(dim=(0, 1), unbiased=False), rtol=1e-5
    )


# -- Embedding ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [6, 9])
def test_embedding_refuses_ids_past_the_table(bad: int) -> None:
    layer = loaded("Embedding", {"input_dim": 6, "output_dim": 2}, (None, 3))
    with pytest.raises(KerasModelError, match=f"id {bad} is out of range"):
        layer(torch.tensor([[1, bad, 2]]))


def test_embedding_negative_ids_wrap_in_keras3_and_fail_in_tf_keras() -> None:
    k3 = loaded("Embedding", {"input_dim": 6, "output_dim": 2}, (None, 2))
    out, _ = k3(torch.tensor([[-1, -6]]))
    np.testing.assert_array_equal(out[0].detach().numpy(), k3.embeddings.detach().numpy()[[5, 0]])
    with pytest.raises(KerasModelError, match="id -7 is out of range"):
        k3(torch.tensor([[-7, 1]]))
    k2 = loaded("Embedding", {"input_dim": 6, "output_dim": 2}, (None, 2), keras2=True)
    with pytest.raises(KerasModelError, match=r"id -1 is out of range \[0, 6\)"):
        k2(torch.tensor([[-1, 1]]))


def test_embedding_drops_an_incoming_mask_and_makes_its_own() -> None:
    ids = torch.tensor([[1, 0, 2]])
    incoming = torch.tensor([[True, True, False]])
    plain = loaded("Embedding", {"input_dim": 3, "output_dim": 2}, (None, 3))
    assert plain(ids, incoming)[1] is None
    masking = loaded("Embedding", {"input_dim": 3, "output_dim": 2, "mask_zero": True}, (None, 3))
    assert masking(ids, incoming)[1].tolist() == [[True, False, True]]


def test_embedding_input_length_fixes_the_output_shape() -> None:
    layer = make("Embedding", {"input_dim": 3, "output_dim": 2, "input_length": 5}, (None, None), keras2=True)
    assert layer.output_shape([(None, None)]) == (None, 5, 2)
    with pytest.raises(KerasModelError, match="input_length 5 does not fit"):
        make("Embedding", {"input_dim": 3, "output_dim": 2, "input_length": 5}, (None, 4), keras2=True)


def test_masking_zeroes_masked_steps_with_where_in_keras3_and_multiplies_in_tf_keras() -> None:
    """Measured: Masking(inf) on a step of infs gives [0, 0] in Keras 3 (``where``) and [nan, nan] in tf-keras
    (``x * mask``); present steps pass unchanged and the mask ignores the incoming one."""
    x = torch.tensor([[[math.inf, math.inf], [1.0, 2.0]]])
    incoming = torch.tensor([[True, False]])
    for keras2, masked_step in ((False, [0.0, 0.0]), (True, [math.nan, math.nan])):
        out, mask = make("Masking", {"mask_value": math.inf}, (None, 2, 2), keras2=keras2)(x, incoming)
        np.testing.assert_array_equal(out[0, 0].numpy(), masked_step)
        assert out[0, 1].tolist() == [1.0, 2.0]
        assert mask.tolist() == [[False, True]]


# -- weight shapes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("class_name", "config", "shape", "names", "shapes"),
    [
        ("Dense", {"units": 5}, (None, 7, 3), ["kernel", "bias"], [(3, 5), (5,)]),
        ("Dense", {"units": 5, "use_bias": False}, (None, 2), ["kernel"], [(2, 5)]),
        ("Embedding", {"input_dim": 10, "output_dim": 4}, (None, 7), ["embeddings"], [(10, 4)]),
        (
            "BatchNormalization",
            {"axis": 1},
            (None, 7, 3),
            ["gamma", "beta", "moving_mean", "moving_variance"],
            [(7,)] * 4,
        ),
        (
            "BatchNormalization",
            {"center": False, "scale": False},
            (None, 3),
            ["moving_mean", "moving_variance"],
            [(3,)] * 2,
        ),
        ("LayerNormalization", {"axis": [1, 2]}, (None, 7, 3), ["gamma", "beta"], [(7, 3)] * 2),
        ("LayerNormalization", {"center": False}, (None, 3), ["gamma"], [(3,)]),
        ("LayerNormalization", {"rms_scaling": True}, (None, 3), ["gamma"], [(3,)]),
        (
            "TimeDistributed",
            {"layer": {"class_name": "Dense", "config": {"units": 2, "name": "d"}}},
            (None, 4, 6, 3),
            ["kernel", "bias"],
            [(3, 2), (2,)],
        ),
        ("Flatten", {}, (None, 4, 3), [], []),
    ],
)
def test_weight_shapes_come_from_config_and_input_shape(
    class_name: str, config: dict[str, Any], shape: Shape, names: list[str], shapes: list[Shape]
) -> None:
    layer = make(class_name, config, shape)
    assert layer.weight_names == names
    assert layer.weight_shapes() == shapes


# -- refusals ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("class_name", "config", "shape", "keras2", "message"),
    [
        ("Dense", {"units": -3}, (None, 3), False, "units must be a positive integer"),
        ("Dense", {"units": 0}, (None, 3), False, "units must be a positive integer"),
        ("Dense", {"units": 2, "activation": "no_such"}, (None, 3), False, "unknown activation 'no_such'"),
        ("Dense", {"units": 2, "activation": "threshold"}, (None, 3), False, "'threshold' needs"),
        ("Dense", {"units": 3, "activation": "glu"}, (None, 3), False, "'glu' splits the last axis"),
        ("Dense", {"units": 2, "lora_rank": 4}, (None, 3), False, "lora_rank=4 is not supported"),
        (
            "Dense",
            {"units": 2, "quantization_config": {"mode": "int8"}},
            (None, 3),
            False,
            "quantization_config",
        ),
        (
            "Dense",
            {
                "units": 2,
                "dtype": {
                    "class_name": "DTypePolicy",
                    "config": {"name": "int8_from_float32", "mode": "int8"},
                },
            },
            (None, 3),
            False,
            "quantized layers",
        ),
        ("Dense", {"units": 2}, (None, None), False, "must be known"),
        ("Dense", {"units": 2}, (None,), False, "rank >= 2"),
        ("Embedding", {"input_dim": 0, "output_dim": 2}, (None, 3), False, "input_dim must be a positive"),
        ("Embedding", {"input_dim": 4, "output_dim": 2, "lora_rank": 2}, (None, 3), False, "lora_rank"),
        ("Activation", {"activation": "nope"}, (None, 3), False, "unknown activation 'nope'"),
        ("Masking", {"mask_value": "x"}, (None, 4, 3), False, "mask_value must be a number"),
        ("Dropout", {"rate": 1.5}, (None, 3), False, r"rate must be a number in \[0, 1\]"),
        ("Dropout", {"rate": -0.1}, (None, 3), False, "rate must be"),
        ("Dropout", {"rate": 0.1, "noise_shape": [None, 1]}, (None, 4, 3), False, "noise_shape"),
        ("SpatialDropout1D", {"rate": 0.1}, (None, 3), False, "needs inputs"),
        ("GaussianNoise", {"stddev": -1.0}, (None, 3), False, "stddev must be a number >= 0"),
        ("GaussianNoise", {"stddev": 2.0}, (None, 3), False, r"stddev must be in \[0, 1\] in Keras 3"),
        ("GaussianDropout", {"rate": 2}, (None, 3), False, "rate must be"),
        ("AlphaDropout", {"rate": 0.1, "noise_shape": [1]}, (None, 4, 3), False, "noise_shape"),
        ("ActivityRegularization", {"l1": -1}, (None, 3), False, "l1 must be"),
        ("BatchNormalization", {"renorm": True}, (None, 3), False, "renorm=True is not supported"),
        ("BatchNormalization", {"virtual_batch_size": 2}, (None, 3), True, "virtual_batch_size=2"),
        ("BatchNormalization", {"adjustment": "f"}, (None, 3), True, "adjustment"),
        ("BatchNormalization", {"axis": [1, 2]}, (None, 4, 3), True, "several axes"),
        ("BatchNormalization", {"axis": 0}, (None, 4, 3), False, "axis 0 is not valid"),
        ("BatchNormalization", {"axis": 3}, (None, 4, 3), False, "axis 3 is not valid"),
        (
            "BatchNormalization",
            {"axis": 2},
            (None, 4, 5, 3),
            True,
            "fused kernel on 4-D inputs needs axis 1 or 3",
        ),
        ("BatchNormalization", {}, (None, 4, None), False, "must be known"),
        ("LayerNormalization", {"axis": [2, 1]}, (None, 4, 3), True, "out of the inputs' order"),
        ("LayerNormalization", {"rms_scaling": True}, (None, 3), True, "Keras 3 argument"),
        ("Flatten", {"data_format": "nchw"}, (None, 3), False, "data_format"),
        ("Reshape", {"target_shape": [-1, -1]}, (None, 4, 3), False, "more than one -1"),
        ("Reshape", {"target_shape": [0, 3]}, (None, 4, 3), False, "target_shape must be"),
        ("Reshape", {"target_shape": [5, 2]}, (None, 4, 3), False, "12 != 10"),
        ("Reshape", {"target_shape": [5, -1]}, (None, 4, 3), False, "not n \\* 5"),
        ("Permute", {"dims": [1, 3]}, (None, 4, 3), False, "permutation"),
        ("Permute", {"dims": [2, 1]}, (None, 4, 3, 2), False, "rank 3"),
        ("RepeatVector", {"n": 0}, (None, 3), False, "n must be a positive integer"),
        ("RepeatVector", {"n": 2}, (None, 4, 3), False, "needs inputs"),
        (
            "TimeDistributed",
            {"layer": {"class_name": "GRU", "config": {}}},
            (None, 4, 3),
            False,
            "'GRU' is not supported",
        ),
        ("TimeDistributed", {"layer": "Dense"}, (None, 4, 3), False, "serialized inner layer"),
        (
            "TimeDistributed",
            {"layer": {"class_name": "Dense", "config": {"units": 2}}},
            (None, 3),
            False,
            "rank >= 3",
        ),
        (
            "TimeDistributed",
            {"layer": {"class_name": "Dense", "config": {"units": -2, "name": "inner"}}},
            (None, 4, 3),
            False,
            "> Dense 'inner': units must be",
        ),
    ],
)
def test_bad_configs_and_unsupported_arguments_are_refused_by_name(
    class_name: str, config: dict[str, Any], shape: Shape, keras2: bool, message: str
) -> None:
    with pytest.raises(KerasModelError, match=message) as info:
        make(class_name, config, shape, keras2=keras2)
    assert "'layer'" in str(info.value) or "'inner'" in str(info.value)


def test_custom_activation_by_name_from_custom_objects() -> None:
    spec = LayerSpec(
        "d",
        "Dense",
        {"units": 2, "activation": "my_act"},
        ((None, 3),),
        custom_objects={"my_act": torch.square},
    )
    layer = REGISTRY["Dense"](spec)
    layer.load([np.eye(3, 2, dtype=np.float32), np.zeros(2, np.float32)])
    out, _ = layer(torch.tensor([[2.0, -3.0, 1.0]]))
    assert out.tolist() == [[4.0, 9.0]]


def test_synchronized_batchnorm_is_the_plain_one_on_one_device() -> None:
    layer = loaded("BatchNormalization", {"synchronized": True}, (None, 3))
    plain = loaded("BatchNormalization", {}, (None, 3))
    x = torch.randn(5, 3)
    torch.testing.assert_close(layer(x)[0], plain(x)[0])


# -- training-mode noise: Keras's formulas, by their statistics ---------------------------------------------


def _train(class_name: str, config: dict[str, Any], shape: Shape, keras2: bool = False) -> KerasLayer:
    layer = make(class_name, config, shape, keras2=keras2)
    layer.train()
    return layer


def test_dropout_zeroes_rate_of_the_values_and_scales_the_rest() -> None:
    torch.manual_seed(0)
    x = torch.rand(200, 50, 4) + 1.0
    mask = torch.ones(200, 50, dtype=torch.bool)
    out, out_mask = _train("Dropout", {"rate": 0.3}, (None, 50, 4))(x, mask)
    assert out_mask is mask
    dropped = out == 0
    assert abs(dropped.float().mean().item() - 0.3) < 0.01
    torch.testing.assert_close(out[~dropped], x[~dropped] / 0.7)


def test_dropout_noise_shape_shares_one_draw_along_its_one_axes() -> None:
    torch.manual_seed(0)
    x = torch.ones(100, 6, 4)
    out, _ = _train("Dropout", {"rate": 0.5, "noise_shape": [None, 1, 4]}, (None, 6, 4))(x)
    assert bool((out == out[:, :1, :]).all())
    assert abs((out[:, 0] == 0).float().mean().item() - 0.5) < 0.06


def test_spatial_dropout_drops_whole_channels() -> None:
    torch.manual_seed(0)
    x = torch.ones(300, 7, 5)
    out, _ = _train("SpatialDropout1D", {"rate": 0.4}, (None, 7, 5))(x)
    assert bool((out == out[:, :1, :]).all())
    assert abs((out[:, 0] == 0).float().mean().item() - 0.4) < 0.04
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.6))


def test_gaussian_noise_adds_zero_mean_noise_of_stddev() -> None:
    torch.manual_seed(0)
    x = torch.full((400, 500), 2.0)
    noise = _train("GaussianNoise", {"stddev": 0.3}, (None, 500))(x)[0] - x
    assert abs(noise.mean().item()) < 0.003
    assert abs(noise.std().item() - 0.3) < 0.003


def test_gaussian_dropout_multiplies_by_one_mean_noise() -> None:
    torch.manual_seed(0)
    x = torch.full((400, 500), 2.0)
    factor = _train("GaussianDropout", {"rate": 0.2}, (None, 500))(x)[0] / x
    assert abs(factor.mean().item() - 1.0) < 0.003
    assert abs(factor.std().item() - math.sqrt(0.2 / 0.8)) < 0.003


def test_alpha_dropout_keeps_selu_statistics_and_sets_dropped_to_its_constant() -> None:
    torch.manual_seed(0)
    rate = 0.2
    x = torch.randn(400, 500)
    out = _train("AlphaDropout", {"rate": rate}, (None, 500))(x)[0]
    alpha_p = -1.6732632423543772 * 1.0507009873554805
    a = ((1 - rate) * (1 + rate * alpha_p**2)) ** -0.5
    b = -a * alpha_p * rate
    kept = torch.isclose(out, a * x + b, atol=1e-6)
    dropped = torch.isclose(out, torch.tensor(a * alpha_p + b), atol=1e-6)
    assert bool((kept | dropped).all())
    assert abs(dropped.float().mean().item() - rate) < 0.005
    assert abs(out.mean().item()) < 0.01
    assert abs(out.var().item() - 1.0) < 0.01


@pytest.mark.parametrize("class_name", ["GaussianDropout", "AlphaDropout"])
def test_rate_one_is_the_identity_in_tf_keras_and_fails_in_keras3(class_name: str) -> None:
    x = torch.randn(3, 4)
    torch.testing.assert_close(_train(class_name, {"rate": 1.0}, (None, 4), keras2=True)(x)[0], x)
    with pytest.raises(KerasModelError, match="Keras 3 fails"):
        _train(class_name, {"rate": 1.0}, (None, 4))(x)


def test_dropout_of_rate_one_fails_in_training_and_is_the_identity_at_inference() -> None:
    x = torch.randn(3, 4)
    layer = make("Dropout", {"rate": 1.0}, (None, 4))
    torch.testing.assert_close(layer(x)[0], x)
    layer.train()
    with pytest.raises(KerasModelError, match="Keras fails"):
        layer(x)


@pytest.mark.parametrize(
    ("class_name", "config"),
    [
        ("Dropout", {"rate": 0.5}),
        ("SpatialDropout1D", {"rate": 0.5}),
        ("GaussianNoise", {"stddev": 0.5}),
        ("GaussianDropout", {"rate": 0.5}),
        ("AlphaDropout", {"rate": 0.5}),
        ("ActivityRegularization", {"l1": 0.5}),
    ],
)
def test_noise_layers_are_the_identity_at_inference_and_pass_the_mask(class_name: str, config: dict) -> None:
    layer = make(class_name, config, (None, 4, 3))
    x = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, False, True, True], [True, True, False, False]])
    out, out_mask = layer(x, mask)
    assert out is x
    assert out_mask is mask


def test_activity_regularization_is_the_identity_in_training_too() -> None:
    x = torch.randn(2, 3)
    assert _train("ActivityRegularization", {"l1": 0.1, "l2": 0.2}, (None, 3))(x)[0] is x


# -- TimeDistributed --------------------------------------------------------------------------------------


def test_time_distributed_exposes_the_inner_layers_weights() -> None:
    layer = loaded(
        "TimeDistributed", {"layer": {"class_name": "Dense", "config": {"units": 2}}}, (None, 4, 3)
    )
    assert sorted(name for name, _ in layer.named_parameters()) == ["layer.bias", "layer.kernel"]
    x = torch.randn(2, 4, 3)
    inner = layer.layer
    assert isinstance(inner, KerasLayer)
    torch.testing.assert_close(layer(x)[0], inner(x.reshape(8, 3))[0].reshape(2, 4, 2))


def test_time_distributed_refuses_a_mask_that_does_not_fit() -> None:
    layer = loaded(
        "TimeDistributed", {"layer": {"class_name": "Dense", "config": {"units": 2}}}, (None, 4, 3)
    )
    with pytest.raises(KerasModelError, match="does not fit"):
        layer(torch.randn(2, 4, 3), torch.ones(2, 5, dtype=torch.bool))
