"""Reading the layer-level parity fixtures of ``tests/fixtures/keras_layers/`` and running them.

A fixture is an ``.npz`` written by a script in ``tools/fixtures/`` with real Keras 3 or tf-keras:

- ``spec``: JSON ``{"class_name", "config", "input_shapes": [[null, 5, 3], ...], "keras2": bool,
  "call_kwargs": {...}, "training": false, "list_input": bool}``. ``list_input`` says the layer was called
  on a list (merges, Attention) even when it holds one tensor.
- ``weight_<i>``: the layer's ``get_weights()`` in order.
- ``input_<i>`` / ``mask_<i>``: the call's tensors (and masks, present only where the input carries one).
- ``output_<i>`` / ``output_mask_<i>``: what Keras returned (and ``compute_mask``), present only where not
  None; a single-output layer has ``output_0`` only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unilstm.keras_model.base import REGISTRY, KerasLayer, LayerSpec

LAYER_FIXTURES = Path(__file__).parent.parent / "fixtures" / "keras_layers"


@dataclass
class LayerFixture:
    path: Path
    spec: LayerSpec
    call_kwargs: dict[str, Any]
    training: bool
    list_input: bool
    weights: list[np.ndarray]
    inputs: list[np.ndarray]
    masks: list[np.ndarray | None]
    outputs: list[np.ndarray]
    output_masks: list[np.ndarray | None]


def _indexed(data: Any, prefix: str) -> list[str]:
    found = [k for k in data.files if k.startswith(prefix) and k[len(prefix) :].isdigit()]
    return sorted(found, key=lambda k: int(k[len(prefix) :]))


def load_fixture(path: Path) -> LayerFixture:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["spec"]))
        inputs = [data[k] for k in _indexed(data, "input_")]
        outputs = [data[k] for k in _indexed(data, "output_")]
        masks = [data[f"mask_{i}"] if f"mask_{i}" in data.files else None for i in range(len(inputs))]
        output_masks = [
            data[f"output_mask_{i}"] if f"output_mask_{i}" in data.files else None
            for i in range(len(outputs))
        ]
        weights = [data[k] for k in _indexed(data, "weight_")]
    spec = LayerSpec(
        name=meta["config"].get("name", path.stem),
        class_name=meta["class_name"],
        config=meta["config"],
        input_shapes=tuple(tuple(s) for s in meta["input_shapes"]),
        keras2=bool(meta.get("keras2", False)),
        where=f"{meta['class_name']} fixture {path.name}",
    )
    return LayerFixture(
        path,
        spec,
        meta.get("call_kwargs", {}),
        bool(meta.get("training", False)),
        bool(meta.get("list_input", len(inputs) > 1)),
        weights,
        inputs,
        masks,
        outputs,
        output_masks,
    )


def build_layer(fixture: LayerFixture) -> KerasLayer:
    """The registered layer for the fixture's spec, its weight shapes checked and its weights loaded."""
    layer = REGISTRY[fixture.spec.class_name](fixture.spec)
    assert [tuple(s) for s in layer.weight_shapes()] == [w.shape for w in fixture.weights]
    layer.load(fixture.weights)
    layer.train(fixture.training)
    return layer


def _tensor(array: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.array(array))
    return tensor.float() if tensor.is_floating_point() else tensor


def run_fixture(fixture: LayerFixture) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """The layer's outputs and output masks on the fixture's inputs, as lists."""
    layer = build_layer(fixture)
    tensors = [_tensor(a) for a in fixture.inputs]
    masks = [None if m is None else torch.from_numpy(np.array(m)).bool() for m in fixture.masks]
    if fixture.list_input:
        outputs, out_masks = layer(tensors, masks, **fixture.call_kwargs)
    else:
        outputs, out_masks = layer(tensors[0], masks[0], **fixture.call_kwargs)
    output_list = outputs if isinstance(outputs, list) else [outputs]
    mask_list = out_masks if isinstance(out_masks, list) else [out_masks] * len(output_list)
    return output_list, mask_list


def assert_matches(fixture: LayerFixture, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Outputs within rtol of Keras's, output masks equal (None where Keras gave None)."""
    outputs, masks = run_fixture(fixture)
    assert len(outputs) == len(fixture.outputs), fixture.path.name
    for got, want in zip(outputs, fixture.outputs, strict=True):
        np.testing.assert_allclose(
            got.detach().numpy(), want, rtol=rtol, atol=atol, err_msg=fixture.path.name
        )
    for got_mask, want_mask in zip(masks, fixture.output_masks, strict=True):
        if want_mask is None:
            assert got_mask is None, f"{fixture.path.name}: Keras drops the mask, the layer passed one on"
        else:
            assert got_mask is not None, f"{fixture.path.name}: Keras passes a mask on, the layer gave None"
            np.testing.assert_array_equal(got_mask.numpy(), want_mask.astype(bool), err_msg=fixture.path.name)
