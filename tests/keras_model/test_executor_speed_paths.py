"""The compiled executor of :class:`~unilstm.keras_model.model.KerasModel` (calls made once into closures
over integer slots, for batch-1 latency) computes exactly what the plain reading of the graph computes.

The reference below is the dict-keyed executor the model used before: each call's inputs, masks (explicit
``mask=`` first, else the inputs' masks, None for a list of all-None masks) and tensor keyword arguments
looked up by :class:`Ref` per call. Every fixture model of every Keras generation runs through both, with
its nested models, shared layers, operations, initial states and masks; outputs, every traced tensor and
every mask must be equal bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from unilstm.keras import load_model
from unilstm.keras_model.graph import Ref
from unilstm.keras_model.model import KerasModel
from unilstm.keras_model.operations import operation

FIXTURES = Path(__file__).parent.parent / "fixtures" / "keras_models"


def _structure(value: Any, leaf) -> Any:
    if isinstance(value, Ref):
        return leaf(value)
    if isinstance(value, list):
        return [_structure(v, leaf) for v in value]
    if isinstance(value, dict):
        return {k: _structure(v, leaf) for k, v in value.items()}
    return value


def _reference_call(model: KerasModel, inputs: Any, mask: Any, seen: dict) -> tuple[Any, Any]:
    """The dict-keyed executor: every graph tensor and mask by Ref (``seen[id(model)]`` keeps them)."""
    tensors = inputs if isinstance(inputs, list) else [inputs]
    masks_in = mask if isinstance(mask, list) else [mask] * len(tensors)
    values: dict[Ref, torch.Tensor] = {}
    masks: dict[Ref, Any] = {}
    for ref, tensor, input_mask in zip(model.graph.inputs, tensors, masks_in, strict=True):
        values[ref], masks[ref] = tensor, input_mask
    for layer, index in model._plan:
        call = layer.calls[index]
        node = index + layer.first_node
        if layer.kind == "operation":
            fn, _ = operation(layer.class_name, layer.name)
            options = {k: v for k, v in {**layer.config, **call.kwargs}.items() if k != "name"}
            values[Ref(layer.name, node, 0)] = fn(*_structure(call.args, values.__getitem__), **options)
            continue
        args = _structure(call.args[0], values.__getitem__)
        kwargs = dict(call.kwargs)
        kwargs.pop("training", None)
        if "mask" in kwargs:
            call_mask = _structure(kwargs.pop("mask"), values.__getitem__)
        else:
            call_mask = _structure(call.args[0], masks.get)
            if isinstance(call_mask, list) and all(m is None for m in call_mask):
                call_mask = None
        kwargs = _structure(kwargs, values.__getitem__)
        module = model._by_name[layer.name]
        if isinstance(module, KerasModel):
            outputs, out_masks = _reference_call(module, args, call_mask, seen)
        else:
            outputs, out_masks = module(args, call_mask, **kwargs)
        output_list = outputs if isinstance(outputs, list) else [outputs]
        mask_list = out_masks if isinstance(out_masks, list) else [out_masks] * len(output_list)
        for position, (tensor, out_mask) in enumerate(zip(output_list, mask_list, strict=True)):
            values[Ref(layer.name, node, position)] = tensor
            masks[Ref(layer.name, node, position)] = out_mask
    seen[id(model)] = (values, masks)
    outputs = [values[r] for r in model.graph.outputs]
    out_masks = [masks.get(r) for r in model.graph.outputs]
    return (outputs, out_masks) if len(outputs) > 1 else (outputs[0], out_masks[0])


def _models() -> list[Path]:
    """One file per fixture model (its .keras where written, else its .h5)."""
    chosen = []
    for npz in sorted(FIXTURES.glob("*.npz")):
        stem = npz.name[: -len(".npz")]
        for suffix in (".keras", ".h5"):
            if (FIXTURES / f"{stem}{suffix}").is_file():
                chosen.append(FIXTURES / f"{stem}{suffix}")
                break
    return chosen


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("path", _models(), ids=lambda p: p.name)
def test_the_compiled_executor_equals_the_dict_executor_bit_for_bit(path: Path) -> None:
    with np.load(path.with_name(path.name.split(".")[0] + ".npz")) as data:
        keys = sorted((k for k in data.files if k.startswith("input_")), key=lambda k: int(k[6:]))
        raw = [data[k] for k in keys]
    model = load_model(path)
    tensors = [model._as_input(value, position) for position, value in enumerate(raw)]
    inputs = tensors if len(tensors) > 1 else tensors[0]
    with torch.no_grad():  # each call from zero states (stateful models continue them otherwise)
        expected_seen: dict = {}
        want, want_mask = _reference_call(model, inputs, None, expected_seen)
        model.reset_states()
        got, got_mask = model.call(inputs)
        model.reset_states()
        traced = model.trace(*raw)
        model.reset_states()
        again = model(*raw)  # the compiled plan, reused
    assert _same(got, want) and _same(got_mask, want_mask)
    assert _same(again, want)
    assert set(traced) == set(expected_seen)
    for key, (values, masks) in expected_seen.items():
        got_values, got_masks = traced[key]
        assert list(got_values) == list(values)  # the same tensors, in the same order
        assert all(_same(got_values[ref], values[ref]) for ref in values)
        assert list(got_masks) == list(masks)
        assert all(_same(got_masks[ref], masks[ref]) for ref in masks)


def test_forward_hooks_on_a_layer_still_run() -> None:
    model = load_model(FIXTURES / "k3_forecast.keras")
    seen: list[tuple[int, ...]] = []
    handle = model.dense.register_forward_hook(lambda module, args, out: seen.append(tuple(out[0].shape)))
    x = torch.zeros(2, 7, 1)
    with torch.no_grad():
        model(x)
        model(x)
    handle.remove()
    assert seen == [(2, 1), (2, 1)]


def test_threads_making_their_first_calls_together_each_run_one_consistent_plan() -> None:
    import threading

    want_model = load_model(FIXTURES / "k3_nested.keras")
    with np.load(FIXTURES / "k3_nested.npz") as data:
        keys = sorted((k for k in data.files if k.startswith("input_")), key=lambda k: int(k[6:]))
        raw = [data[k] for k in keys]
    with torch.no_grad():
        want = want_model(*raw)
    for _ in range(3):
        model = load_model(FIXTURES / "k3_nested.keras")
        got: list[Any] = []

        def run(model: KerasModel = model, got: list[Any] = got) -> None:
            with torch.no_grad():
                got.append(model(*raw))

        threads = [threading.Thread(target=run) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(got) == 4 and all(_same(result, want) for result in got)
