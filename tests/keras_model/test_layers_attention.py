"""Keras's Attention and AdditiveAttention against real Keras 3 and tf-keras (fixtures of
tools/fixtures/make_keras_layer_fixtures_merge.py), and their refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from layer_fixtures import LAYER_FIXTURES, assert_matches, build_layer, load_fixture, run_fixture

import unilstm.keras_model.layers_attention  # noqa: F401  (registers the layers)
from unilstm.keras_model.base import REGISTRY, KerasModelError, LayerSpec

ATTENTION = {"Attention", "AdditiveAttention"}


def fixtures_of(classes: set[str]) -> list[Path]:
    found = []
    for path in sorted(LAYER_FIXTURES.glob("merge_*.npz")):
        with np.load(path, allow_pickle=False) as data:
            if json.loads(str(data["spec"]))["class_name"] in classes:
                found.append(path)
    return found


def make(class_name: str, config: dict, *shapes: tuple, keras2: bool = False):
    spec = LayerSpec(name="layer", class_name=class_name, config=config, input_shapes=shapes, keras2=keras2)
    return REGISTRY[class_name](spec)


@pytest.mark.parametrize("path", fixtures_of(ATTENTION), ids=lambda p: p.stem)
def test_matches_keras(path: Path):
    assert_matches(load_fixture(path))


@pytest.mark.parametrize("gen", ["k3", "tfk"])
def test_a_query_that_sees_no_value_attends_to_all_equally(gen):
    fixture = load_fixture(LAYER_FIXTURES / f"merge_{gen}_att_scores.npz")
    assert not fixture.masks[1][1].any()
    (_, weights), masks = run_fixture(fixture)
    np.testing.assert_allclose(weights[1].numpy(), np.full((5, 6), 1 / 6), rtol=1e-6)
    assert masks[1] is None and torch.equal(masks[0], torch.from_numpy(fixture.masks[0]))


@pytest.mark.parametrize("gen", ["k3", "tfk"])
def test_dropout_only_in_training(gen):
    fixture = load_fixture(LAYER_FIXTURES / f"merge_{gen}_att_dropout.npz")
    assert fixture.spec.config["dropout"] == 0.5
    assert_matches(fixture)  # inference: no dropout
    layer = build_layer(fixture)
    inputs = [torch.from_numpy(a) for a in fixture.inputs]
    masks = [torch.from_numpy(m) for m in fixture.masks]
    torch.manual_seed(0)
    (out, weights), _ = layer(inputs, masks, return_attention_scores=True, training=True)
    kept = weights[fixture.masks[0]]
    # inverted dropout: each weight is 0 or twice the softmax weight
    assert (kept == 0).any() and not torch.allclose(out, torch.from_numpy(fixture.outputs[0]))
    layer.train(True)
    torch.manual_seed(1)
    out_train, _ = layer(inputs, masks)
    assert not torch.allclose(out_train, torch.from_numpy(fixture.outputs[0]))


def test_keras2_causal_config_argument():
    fixture = load_fixture(LAYER_FIXTURES / "merge_tfk_att_causal_arg.npz")
    assert fixture.spec.config["causal"] is True
    assert_matches(fixture)
    with pytest.raises(KerasModelError, match="causal=True is a Keras 2 argument"):
        make("Attention", {"causal": True}, (None, 5, 3), (None, 6, 3))


def test_keras2_refuses_an_additive_scale_tf_keras_cannot_broadcast():
    # measured: tf-keras fails (Mul of shapes [5] and [3, 5, 6, 3]); Keras 3 sizes scale by the query
    assert (LAYER_FIXTURES / "merge_k3_add_att_key.npz").exists()
    assert not (LAYER_FIXTURES / "merge_tfk_add_att_key.npz").exists()
    shapes = ((None, 5, 3), (None, 6, 5), (None, 6, 3))
    with pytest.raises(KerasModelError, match="tf-keras sizes `scale` by the value's last axis"):
        make("AdditiveAttention", {}, *shapes, keras2=True)
    assert make("AdditiveAttention", {}, *shapes).weight_shapes() == [(3,)]
    assert make(
        "AdditiveAttention", {}, (None, 5, 3), (None, 6, 1), (None, 6, 3), keras2=True
    ).weight_shapes() == [(1,)]


@pytest.mark.parametrize(
    ("class_name", "config", "weights", "names"),
    [
        ("Attention", {}, [], []),
        ("Attention", {"use_scale": True}, [()], ["scale"]),
        ("Attention", {"score_mode": "concat"}, [()], ["concat_score_weight"]),
        (
            "Attention",
            {"use_scale": True, "score_mode": "concat"},
            [(), ()],
            ["scale", "concat_score_weight"],
        ),
        ("AdditiveAttention", {}, [(3,)], ["scale"]),
        ("AdditiveAttention", {"use_scale": False}, [], []),
    ],
)
def test_weight_shapes(class_name, config, weights, names):
    for keras2 in (False, True):
        layer = make(class_name, config, (None, 5, 3), (None, 6, 3), keras2=keras2)
        assert layer.weight_shapes() == weights and layer.weight_names == names


def test_output_shapes():
    layer = make("Attention", {}, (None, 5, 3), (None, 6, 4), (None, 6, 3))
    shapes = [(None, 5, 3), (None, 6, 4), (None, 6, 3)]
    assert layer.output_shape(shapes) == (None, 5, 4)
    assert layer.output_shape(shapes, return_attention_scores=True) == [(None, 5, 4), (None, 5, 6)]


@pytest.mark.parametrize(
    ("class_name", "config", "shapes", "message"),
    [
        ("Attention", {"score_mode": "general"}, [(None, 5, 3)] * 2, "score_mode"),
        ("AdditiveAttention", {"score_mode": "general"}, [(None, 5, 3)] * 2, "score_mode"),
        ("Attention", {"dropout": 1.5}, [(None, 5, 3)] * 2, "dropout"),
        ("Attention", {"use_scale": "yes"}, [(None, 5, 3)] * 2, "use_scale"),
        ("Attention", {}, [(None, 5, 3)] * 4, "got 4 inputs"),
        ("Attention", {}, [(None, 5, 3)], "got 1 inputs"),
        ("Attention", {}, [(None, 5, 3), (None, 6, 4)], "same last axis"),
        ("Attention", {}, [(None, 5, 3), (None, 6, 3), (None, 7, 3)], "same steps"),
        ("Attention", {}, [(None, 3), (None, 3)], "rank 3"),
        ("AdditiveAttention", {}, [(None, 5, None), (None, 6, None)], "must be known"),
    ],
)
def test_refuses_bad_configs(class_name, config, shapes, message):
    with pytest.raises(KerasModelError, match=message) as info:
        make(class_name, config, *shapes)
    assert "layer" in str(info.value)


def test_refuses_bad_calls():
    q = torch.zeros(2, 5, 3)
    scaled = make("Attention", {"use_scale": True}, (None, 5, 3), (None, 5, 3))
    with pytest.raises(KerasModelError, match="before its weights"):
        scaled([q, q], None)
    for keras2, most in ((False, 3), (True, 2)):
        layer = make("Attention", {}, (None, 5, 3), (None, 5, 3), keras2=keras2)
        with pytest.raises(KerasModelError, match="unsupported call arguments: causal"):
            layer([q, q], None, causal=True)
        with pytest.raises(KerasModelError, match=r"list \[query, value\]"):
            layer(q, None)
        with pytest.raises(KerasModelError, match="the mask is a list"):
            layer([q, q], torch.ones(2, 5, dtype=torch.bool))
        with pytest.raises(KerasModelError, match=f"2 to {most} masks"):
            layer([q, q], [None] * (most + 1))
