"""Keras's merge layers (Concatenate, Add, Subtract, Multiply, Average, Maximum, Minimum, Dot) against real
Keras 3 and tf-keras (fixtures of tools/fixtures/make_keras_layer_fixtures_merge.py), and their refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from layer_fixtures import LAYER_FIXTURES, assert_matches, load_fixture

import unilstm.keras_model.layers_attention  # noqa: F401  (registers the layers)
import unilstm.keras_model.layers_merge  # noqa: F401
import unilstm.keras_model.layers_pooling  # noqa: F401
from unilstm.keras_model.base import REGISTRY, KerasModelError, LayerSpec

MERGES = {"Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Dot"}
POOLING = {"GlobalAveragePooling1D", "GlobalMaxPooling1D", "MaxPooling1D", "AveragePooling1D", "Conv1D"}
ATTENTION = {"Attention", "AdditiveAttention"}


def fixtures_of(classes: set[str]) -> list[Path]:
    """This task's fixture files (``merge_*.npz``) of layers of the given Keras classes."""
    found = []
    for path in sorted(LAYER_FIXTURES.glob("merge_*.npz")):
        with np.load(path, allow_pickle=False) as data:
            if json.loads(str(data["spec"]))["class_name"] in classes:
                found.append(path)
    return found


def make(class_name: str, config: dict, *shapes: tuple, keras2: bool = False, **more):
    spec = LayerSpec(
        name="layer", class_name=class_name, config=config, input_shapes=tuple(shapes), keras2=keras2, **more
    )
    return REGISTRY[class_name](spec)


def test_every_fixture_is_tested_here_or_in_the_sibling_files():
    every = {p.name for p in LAYER_FIXTURES.glob("merge_*.npz")}
    assert len(every) > 150
    assert every == {p.name for p in fixtures_of(MERGES | POOLING | ATTENTION)}
    assert {g for p in every for g in ("k3", "tfk") if p.startswith(f"merge_{g}_")} == {"k3", "tfk"}


@pytest.mark.parametrize("path", fixtures_of(MERGES), ids=lambda p: p.stem)
def test_matches_keras(path: Path):
    assert_matches(load_fixture(path))


def test_keras3_or_and_keras2_and_of_masks():
    """The rule the fixtures pin, spelled out: Keras 3 ORs the masks (None when one is missing), Keras 2
    ANDs those present."""
    a = torch.tensor([[True, False, True, False]])
    b = torch.tensor([[True, True, False, False]])
    x = [torch.ones(1, 4, 2), torch.ones(1, 4, 2)]
    for keras2, both, one in (
        (False, [True, True, True, False], None),
        (True, [True, False, False, False], a),
    ):
        layer = make("Add", {}, (None, 4, 2), (None, 4, 2), keras2=keras2)
        assert layer(x, [a, b])[1].tolist() == [both]
        got = layer(x, [a, None])[1]
        assert (got is None) if one is None else torch.equal(got, one)


def test_keras2_refuses_masks_tf_keras_cannot_concatenate():
    # measured: tf-keras raises (ConcatV2 of mask shapes (3, 5, 1) and (3, 2, 4)); Keras 3 broadcasts
    path = LAYER_FIXTURES / "merge_k3_concat_time_one_mask.npz"
    assert path.exists() and not (LAYER_FIXTURES / "merge_tfk_concat_time_one_mask.npz").exists()
    layer = make("Concatenate", {"axis": 1}, (None, 5, 4), (None, 2, 4), keras2=True)
    x = [torch.zeros(3, 5, 4), torch.zeros(3, 2, 4)]
    with pytest.raises(KerasModelError, match="tf-keras cannot concatenate the masks"):
        layer(x, [torch.ones(3, 5, dtype=torch.bool), None])
    out, mask = layer(x, [torch.ones(3, 5, dtype=torch.bool), torch.zeros(3, 2, dtype=torch.bool)])
    assert out.shape == (3, 7, 4) and mask.tolist() == [[True] * 5 + [False] * 2] * 3


@pytest.mark.parametrize(
    ("class_name", "config", "shapes", "message"),
    [
        ("Subtract", {}, [(None, 5, 4)] * 3, "exactly 2 inputs"),
        ("Add", {}, [(None, 5, 4), (None, 5, 3)], "incompatible shapes"),
        ("Add", {}, [(2, 5, 4), (3, 5, 4)], "different batch sizes"),
        ("Concatenate", {"axis": -1}, [(None, 5, 4), (None, 6, 4)], "must match except"),
        ("Concatenate", {"axis": 0}, [(None, 5, 4), (None, 5, 4)], "batch axis"),
        ("Concatenate", {"axis": 3}, [(None, 5, 4), (None, 5, 4)], "out of range"),
        ("Concatenate", {"axis": "1"}, [(None, 5, 4), (None, 5, 4)], "axis must be an integer"),
        ("Concatenate", {}, [(None, 5, 4), (None, 5)], "different ranks"),
        ("Dot", {"axes": [1, 2, 3]}, [(None, 5, 4), (None, 5, 4)], "two integers"),
        ("Dot", {"axes": "x"}, [(None, 5, 4), (None, 5, 4)], "two integers"),
        ("Dot", {"axes": 0}, [(None, 5, 4), (None, 5, 4)], "batch axis"),
        ("Dot", {"axes": 2}, [(None, 5, 4), (None, 5, 3)], "incompatible input shapes"),
        ("Dot", {"axes": 1}, [(None, 5, 4)] * 3, "exactly 2 inputs"),
        ("Dot", {"axes": 1, "normalize": "yes"}, [(None, 5, 4)] * 2, "normalize must be a boolean"),
    ],
)
def test_refuses_bad_configs(class_name, config, shapes, message):
    with pytest.raises(KerasModelError, match=message) as info:
        make(class_name, config, *shapes)
    assert "layer" in str(info.value)


def test_refuses_bad_calls():
    layer = make("Add", {}, (None, 5, 4), (None, 5, 4))
    x = torch.zeros(2, 5, 4)
    with pytest.raises(KerasModelError, match="list of tensors"):
        layer(x, None)
    with pytest.raises(KerasModelError, match="2 inputs but 1 masks"):
        layer([x, x], [None])
    with pytest.raises(KerasModelError, match="unsupported call arguments: training_flag"):
        layer([x, x], None, training_flag=True)
    with pytest.raises(KerasModelError, match="exactly 2"):
        make("Subtract", {}, (None, 5, 4), (None, 5, 4))([x, x, x], None)


@pytest.mark.parametrize(
    ("class_name", "config", "shapes", "expected"),
    [
        ("Add", {}, [(None, 5, 4), (None, 1, 4)], (None, 5, 4)),
        ("Multiply", {}, [(None, 5, 4), (None, 4)], (None, 5, 4)),
        ("Maximum", {}, [(None, None, 4), (8, 5, 1)], (8, None, 4)),
        ("Concatenate", {}, [(None, 5, 4), (None, 5, 2)], (None, 5, 6)),
        ("Concatenate", {"axis": 1}, [(None, None, 4), (None, 5, 4)], (None, None, 4)),
        ("Dot", {"axes": 2}, [(None, 5, 4), (None, 6, 4)], (None, 5, 6)),
        ("Dot", {"axes": [1, 1]}, [(None, 5, 4), (None, 5, 3)], (None, 4, 3)),
        ("Dot", {"axes": 1}, [(None, 4), (None, 4)], (None, 1)),
    ],
)
def test_output_shape_and_no_weights(class_name, config, shapes, expected):
    layer = make(class_name, config, *shapes)
    assert layer.output_shape(shapes) == expected
    assert layer.weight_shapes() == [] and layer.weight_names == []
    layer.load([])
    with pytest.raises(KerasModelError, match="takes no weights"):
        layer.load([np.zeros(1)])


def test_dot_normalize_of_a_zero_vector_is_zero_in_both_generations():
    for keras2 in (False, True):
        layer = make("Dot", {"axes": 1, "normalize": True}, (None, 3), (None, 3), keras2=keras2)
        out, mask = layer([torch.zeros(2, 3), torch.ones(2, 3)], None)
        assert out.tolist() == [[0.0], [0.0]] and mask is None
