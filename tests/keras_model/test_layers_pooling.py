"""Keras's GlobalAveragePooling1D, GlobalMaxPooling1D, MaxPooling1D, AveragePooling1D and Conv1D against
real Keras 3 and tf-keras (fixtures of tools/fixtures/make_keras_layer_fixtures_merge.py), and their
refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from layer_fixtures import LAYER_FIXTURES, assert_matches, load_fixture, run_fixture

import unilstm.keras_model.layers_pooling  # noqa: F401  (registers the layers)
from unilstm.keras_model.base import REGISTRY, KerasModelError, LayerSpec

POOLING = {"GlobalAveragePooling1D", "GlobalMaxPooling1D", "MaxPooling1D", "AveragePooling1D", "Conv1D"}


def fixtures_of(classes: set[str]) -> list[Path]:
    found = []
    for path in sorted(LAYER_FIXTURES.glob("merge_*.npz")):
        with np.load(path, allow_pickle=False) as data:
            if json.loads(str(data["spec"]))["class_name"] in classes:
                found.append(path)
    return found


def make(class_name: str, config: dict, shape: tuple, keras2: bool = False, **more):
    spec = LayerSpec(
        name="layer", class_name=class_name, config=config, input_shapes=(shape,), keras2=keras2, **more
    )
    return REGISTRY[class_name](spec)


@pytest.mark.parametrize("path", fixtures_of(POOLING), ids=lambda p: p.stem)
def test_matches_keras(path: Path):
    assert_matches(load_fixture(path))


@pytest.mark.parametrize("gen", ["k3", "tfk"])
def test_masked_average_of_a_fully_masked_sequence_is_nan_as_in_keras(gen):
    fixture = load_fixture(LAYER_FIXTURES / f"merge_{gen}_gap_mask.npz")
    assert not fixture.masks[0][2].any()
    (out,), (mask,) = run_fixture(fixture)
    assert torch.isnan(out[2]).all() and not torch.isnan(out[:2]).any() and mask is None


@pytest.mark.parametrize("gen", ["k3", "tfk"])
@pytest.mark.parametrize("case", ["gmp_mask", "maxpool_mask", "avgpool_mask", "conv_mask"])
def test_the_mask_is_ignored_and_dropped(gen, case):
    fixture = load_fixture(LAYER_FIXTURES / f"merge_{gen}_{case}.npz")
    assert fixture.masks[0] is not None and fixture.output_masks == [None]
    layer_out, _ = run_fixture(fixture)
    fixture.masks = [None]
    unmasked, masks = run_fixture(fixture)
    assert torch.equal(layer_out[0], unmasked[0]) and masks == [None]


def test_same_average_pooling_does_not_count_the_padding():
    layer = make("AveragePooling1D", {"pool_size": [3], "strides": [1], "padding": "same"}, (None, 3, 1))
    out, _ = layer(torch.tensor([[[3.0], [6.0], [9.0]]]), None)
    assert out.flatten().tolist() == [4.5, 6.0, 7.5]
    layer = make("MaxPooling1D", {"pool_size": 3, "strides": 1, "padding": "same"}, (None, 3, 1))
    out, _ = layer(torch.tensor([[[-3.0], [-6.0], [-9.0]]]), None)
    assert out.flatten().tolist() == [-3.0, -3.0, -6.0]


@pytest.mark.parametrize(
    ("config", "shape", "keras2", "weights", "output"),
    [
        ({"filters": 6, "kernel_size": [3]}, (None, 8, 4), False, [(3, 4, 6), (6,)], (None, 6, 6)),
        (
            {"filters": 6, "kernel_size": 3, "groups": 2, "use_bias": False},
            (None, None, 4),
            False,
            [(3, 2, 6)],
            (None, None, 6),
        ),
        (
            {"filters": 2, "kernel_size": 4, "strides": 3, "padding": "same"},
            (None, 8, 4),
            True,
            [(4, 4, 2), (2,)],
            (None, 3, 2),
        ),
        (
            {"filters": 2, "kernel_size": 3, "dilation_rate": 2, "padding": "causal"},
            (None, 8, 4),
            False,
            [(3, 4, 2), (2,)],
            (None, 8, 2),
        ),
        (
            {"filters": 2, "kernel_size": 3, "data_format": "channels_first"},
            (None, 5, 8),
            False,
            [(3, 5, 2), (2,)],
            (None, 2, 6),
        ),
    ],
)
def test_conv_weight_shapes_from_config_and_input_shape(config, shape, keras2, weights, output):
    layer = make("Conv1D", config, shape, keras2)
    assert layer.weight_shapes() == weights
    assert layer.weight_names == ["kernel", "bias"][: len(weights)]
    assert layer.output_shape([shape]) == output


@pytest.mark.parametrize(
    ("class_name", "config", "shape", "expected"),
    [
        ("GlobalAveragePooling1D", {}, (None, 5, 4), (None, 4)),
        ("GlobalAveragePooling1D", {"keepdims": True}, (None, 5, 4), (None, 1, 4)),
        ("GlobalMaxPooling1D", {"data_format": "channels_first"}, (None, 4, 5), (None, 4)),
        (
            "GlobalMaxPooling1D",
            {"data_format": "channels_first", "keepdims": True},
            (None, 4, 5),
            (None, 4, 1),
        ),
        ("MaxPooling1D", {"pool_size": 2}, (None, 7, 4), (None, 3, 4)),
        ("MaxPooling1D", {"pool_size": 3, "strides": 2, "padding": "same"}, (None, 7, 4), (None, 4, 4)),
        ("AveragePooling1D", {"pool_size": 2, "strides": 3}, (None, None, 4), (None, None, 4)),
        ("AveragePooling1D", {"pool_size": 3, "data_format": "channels_first"}, (2, 4, 9), (2, 4, 3)),
    ],
)
def test_pooling_shapes_and_no_weights(class_name, config, shape, expected):
    layer = make(class_name, config, shape)
    assert layer.output_shape([shape]) == expected
    assert layer.weight_shapes() == []


@pytest.mark.parametrize(
    ("class_name", "config", "shape", "message"),
    [
        ("GlobalAveragePooling1D", {"data_format": "channels_middle"}, (None, 5, 4), "data_format"),
        ("GlobalMaxPooling1D", {}, (None, 4), "rank 3"),
        ("MaxPooling1D", {"pool_size": 0}, (None, 5, 4), "pool_size must be an integer >= 1"),
        ("MaxPooling1D", {"pool_size": 2, "padding": "causal"}, (None, 5, 4), "padding must be one of"),
        ("AveragePooling1D", {"pool_size": 2, "strides": [0]}, (None, 5, 4), "strides must be"),
        ("AveragePooling1D", {"pool_size": 6}, (None, 5, 4), "longer than the 5 input steps"),
        (
            "Conv1D",
            {"filters": 2, "kernel_size": 3, "strides": 2, "dilation_rate": 2},
            (None, 9, 4),
            "strides > 1",
        ),
        ("Conv1D", {"filters": 3, "kernel_size": 3, "groups": 2}, (None, 9, 4), "divisible by groups"),
        (
            "Conv1D",
            {"filters": 4, "kernel_size": 3, "groups": 4},
            (None, 9, 6),
            "input channels must be divisible",
        ),
        ("Conv1D", {"filters": 2, "kernel_size": 3, "lora_rank": 4}, (None, 9, 4), "lora_rank"),
        ("Conv1D", {"filters": 2, "kernel_size": 3, "activation": "glu"}, (None, 9, 4), "'glu'"),
        (
            "Conv1D",
            {"filters": 2, "kernel_size": 3, "activation": "my_act"},
            (None, 9, 4),
            "activation 'my_act'",
        ),
        ("Conv1D", {"filters": 2, "kernel_size": 3, "activation": "threshold"}, (None, 9, 4), "'threshold'"),
        (
            "Conv1D",
            {"filters": 2, "kernel_size": 3, "padding": "full"},
            (None, 9, 4),
            "padding must be one of",
        ),
        ("Conv1D", {"filters": 2, "kernel_size": 3, "use_bias": 1}, (None, 9, 4), "use_bias"),
        ("Conv1D", {"filters": 2, "kernel_size": 3}, (None, 9, None), "channel axis"),
        ("Conv1D", {"filters": 2, "kernel_size": 10}, (None, 9, 4), "longer than the 9 steps"),
        ("Conv1D", {"kernel_size": 3}, (None, 9, 4), "filters must be"),
    ],
)
def test_refuses_bad_configs(class_name, config, shape, message):
    with pytest.raises(KerasModelError, match=message) as info:
        make(class_name, config, shape)
    assert "layer" in str(info.value)


def test_refuses_bad_calls():
    conv = make("Conv1D", {"filters": 2, "kernel_size": 3}, (None, None, 4))
    with pytest.raises(KerasModelError, match="before its weights"):
        conv(torch.zeros(1, 5, 4), None)
    conv.load([np.zeros((3, 4, 2), np.float32), np.zeros(2, np.float32)])
    with pytest.raises(KerasModelError, match="longer than the 2 steps"):
        conv(torch.zeros(1, 2, 4), None)
    with pytest.raises(KerasModelError, match="unsupported call arguments: training"):
        conv(torch.zeros(1, 5, 4), None, training=True)
    pool = make("MaxPooling1D", {"pool_size": 3}, (None, None, 4))
    with pytest.raises(KerasModelError, match="longer than the 2 input steps"):
        pool(torch.zeros(1, 2, 4), None)


def test_conv_custom_activation_and_float64():
    layer = make(
        "Conv1D",
        {"filters": 1, "kernel_size": 1, "activation": "my_abs"},
        (None, 3, 1),
        custom_objects={"my_abs": torch.abs},
    )
    layer.load([np.full((1, 1, 1), -2.0, np.float32), np.zeros(1, np.float32)])
    out, mask = layer(torch.tensor([[[1.0], [-2.0], [3.0]]], dtype=torch.float64), None)
    assert out.dtype == torch.float64 and out.flatten().tolist() == [2.0, 4.0, 6.0] and mask is None
    assert [name for name, _ in layer.named_parameters()] == ["kernel", "bias"]
