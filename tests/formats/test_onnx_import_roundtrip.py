"""ONNX round trip: every layer option unilstm's ONNX writer accepts is written with the project's own export
API (``unilstm.export_onnx``, the Keras door through it), read back with ``unilstm.load`` and run on random
inputs: the loaded layer must give the original layer's outputs and final states, and onnxruntime's on the
same file. What the reader refuses is listed by name in :data:`REFUSED` with the documented reason; every
case of the grid is either read back or refused as listed (no skips)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch

import unilstm
from unilstm.activations import parametric
from unilstm.formats.onnx_export import ONNX_ACTIVATIONS, run_onnx
from unilstm.formats.onnx_import import OnnxFileError, read_onnx_lstms

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TOL = 2e-6  # float32, as the other ONNX import tests


pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


F, H, B, T = 3, 4, 4, 5

# -- the grid --------------------------------------------------------------------------------------------

#: structure x run-time inputs: (num_layers, bidirectional, go_backwards, batch_first, masked_output,
#: lengths, initial states); every combination for one layer; for two layers every combination with
#: batch_first tied to masked_output (a Transpose at each end, independent of the rest); a diagonal for three
STRUCTURE = [
    (layers, bi, back, batch_first, masked, lengths, states)
    for layers, bi, back, batch_first, masked, lengths, states in itertools.product(
        [1, 2, 3],
        [False, True],
        [False, True],
        [False, True],
        ["zero", "previous"],
        [False, True],
        [False, True],
    )
    if layers == 1
    or (layers == 2 and batch_first == (masked == "previous"))
    or (batch_first == lengths and masked == ("previous" if states else "zero"))
]

#: cell options on a bidirectional two-layer go_backwards layer read with lengths (and on a plain one)
VARIANTS: dict[str, dict] = {
    "no bias": dict(bias=False),
    "peepholes": dict(peepholes=True),
    "gate_clip": dict(gate_clip=0.7),
    "coupled_gates": dict(coupled_gates=True),
    "forget_bias": dict(forget_bias=1.0),
    "forget_bias without bias": dict(forget_bias=0.5, bias=False),
    "output_activation": dict(output_activation="softsign"),
    "all variants": dict(
        peepholes=True,
        gate_clip=0.9,
        coupled_gates=True,
        forget_bias=0.3,
        output_activation="relu",
        bias=False,
    ),
    # every exportable activation once as activation and once as recurrent_activation
    **{
        f"activations {name}, {after}": dict(activation=name, recurrent_activation=after)
        for name, after in zip(ONNX_ACTIVATIONS, [*list(ONNX_ACTIVATIONS)[1:], "sigmoid"], strict=True)
    },
    "callables": dict(activation=torch.tanh, recurrent_activation=torch.sigmoid),
    **{
        f"parametric {kind}": dict(
            activation=parametric(
                kind, 0.7, 0.3 if kind in ("affine", "scaled_tanh", "hard_sigmoid") else None
            ),
            recurrent_activation=parametric("hard_sigmoid", 0.25, 0.45),
            output_activation=parametric(
                kind, 0.6, 0.2 if kind in ("affine", "scaled_tanh", "hard_sigmoid") else None
            ),
        )
        for kind in ("affine", "leaky_relu", "thresholded_relu", "scaled_tanh", "hard_sigmoid", "elu")
    },
}

#: Keras-door layers exported through the Keras door (its return_sequences and merge_mode glue); Keras's
#: Bidirectional refuses a wrapped go_backwards layer, so go_backwards is on plain layers only
KERAS = [
    (bidirectional, return_sequences, merge_mode, go_backwards)
    for bidirectional, return_sequences, merge_mode, go_backwards in itertools.product(
        [False, True], [True, False], ["concat", "sum", "mul", "ave"], [False, True]
    )
    if (bidirectional and not go_backwards) or (not bidirectional and merge_mode == "concat")
]


def keras_name(bi: bool, rs: bool, merge: str, back: bool) -> str:
    return f"keras bi={bi} return_sequences={rs} {merge} back={back}"


#: what the reader refuses, by name, with the reason docs/onnx.md gives: nothing the writer accepts
REFUSED: dict[str, str] = {}

#: Keras's output glue reads back, the graph's output being the part of the layer's output the stack's notes
#: name: the last output (return_sequences=False: each direction's half at the last step of its processing
#: order; Keras's Bidirectional refuses go_backwards, so the backward half is at step 0) and the merges
KERAS_OUTPUT: dict[str, str] = {}
for _bi, _rs, _merge, _back in KERAS:
    _halves = (
        (f"output[:, -1][:, :{H}]", f"output[:, 0][:, {H}:]")
        if not _rs
        else (f"output[..., :{H}]", f"output[..., {H}:]")
    )
    KERAS_OUTPUT[keras_name(_bi, _rs, _merge, _back)] = "the layer's " + (
        ("output[:, -1]" if not _rs else "output")
        if not _bi
        else {
            "concat": f"{_halves[0]} and {_halves[1]} concatenated" if not _rs else "output",
            "sum": f"{_halves[0]} + {_halves[1]}",
            "mul": f"{_halves[0]} * {_halves[1]}",
            "ave": f"({_halves[0]} + {_halves[1]}) / 2",
        }[_merge]
    )


def keras_output(out: torch.Tensor, bi: bool, rs: bool, merge: str) -> torch.Tensor:
    """The part of the loaded layer's (B, T, D*H) output a Keras-door graph returns."""
    if not rs:
        out = torch.cat([out[:, -1, :H], out[:, 0, H:]], -1) if bi else out[:, -1]
    if not bi or merge == "concat":
        return out
    forward, backward = out[..., :H], out[..., H:]
    return {"sum": forward + backward, "mul": forward * backward, "ave": (forward + backward) / 2}[merge]


def structure_cases() -> list[tuple[str, dict, dict]]:
    cases = []
    for layers, bi, back, batch_first, masked, lengths, states in STRUCTURE:
        name = f"L{layers} bi={bi} back={back} bf={batch_first} {masked} lengths={lengths} states={states}"
        layer = dict(num_layers=layers, bidirectional=bi, go_backwards=back, batch_first=batch_first)
        layer["masked_output"] = masked
        cases.append((name, layer, dict(lengths=lengths, initial_states=states)))
    return cases


def variant_cases() -> list[tuple[str, dict, dict]]:
    cases = []
    for name, options in VARIANTS.items():
        cases.append((f"{name} plain", options, dict(lengths=False, initial_states=False)))
        structure = dict(num_layers=2, bidirectional=True, go_backwards=True, masked_output="previous")
        cases.append((f"{name} bi back", {**structure, **options}, dict(lengths=True, initial_states=True)))
    return cases


_BI_BACK = dict(num_layers=2, bidirectional=True, go_backwards=True)
#: the rest the writer accepts: training-only features (not in the graph; the layer read back has none),
#: the oldest opset, float64 weights
OTHERS: list[tuple[str, dict, dict]] = [
    (
        "dropouts (training only)",
        dict(**_BI_BACK, dropout=0.3, input_dropout=0.2, recurrent_dropout=0.4, per_gate_dropout=True),
        dict(lengths=True, initial_states=False),
    ),
    ("stateful (between calls)", dict(stateful=True), dict(lengths=False, initial_states=True)),
    ("opset 13", _BI_BACK, dict(lengths=True, initial_states=True, opset=13)),
    ("float64", {**_BI_BACK, "dtype": torch.float64}, dict(lengths=True, initial_states=True)),
]
#: cases onnxruntime cannot run: compared with the original layer only, and onnxruntime's refusal asserted
ONNXRUNTIME_CANNOT_RUN = {"float64": "LSTM operator does not support double"}

CASES = structure_cases() + variant_cases() + OTHERS


# -- running ---------------------------------------------------------------------------------------------


def inputs(spec, seed: int, lengths: bool, states: bool):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((B, T, F) if spec.batch_first else (T, B, F), generator=generator)
    lens = torch.tensor([T, 2, 0, 3]) if lengths else None
    d = spec.num_layers * spec.num_directions
    state = (
        (torch.randn(d, B, H, generator=generator), torch.randn(d, B, H, generator=generator))
        if states
        else None
    )
    return x, lens, state


def results(layer, x, lens, state) -> list[np.ndarray]:
    with torch.no_grad():
        out, (h, c) = layer(x, state, lengths=lens)
    return [out.numpy(), h.numpy(), c.numpy()]


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def read_back(path, original, x, lens, state, *, onnxruntime: bool = True) -> dict[str, float]:
    [loaded] = unilstm.load(path)
    assert isinstance(loaded, unilstm.LSTM)
    assert loaded.weight_ih_l0.dtype == original.weight_ih_l0.dtype
    ours = results(loaded, x, lens, state)
    theirs = list(run_onnx(path, x, lengths=lens, state=state)) if onnxruntime else ours
    # every graph output is the loaded layer's result itself, as the notes say
    [stack] = read_onnx_lstms(path)
    for name, result in (
        ("output", "the layer's output"),
        ("h_n", "the layer's h_n"),
        ("c_n", "the layer's c_n"),
    ):
        assert f"graph output {name!r} = {result}" in stack.notes
    return {"layer": max_diff(ours, results(original, x, lens, state)), "onnxruntime": max_diff(ours, theirs)}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_layer_the_writer_accepts_reads_back(case, tmp_path):
    name, options, export = case
    torch.manual_seed(len(name))
    layer = unilstm.LSTM(F, H, **options).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(0.6)  # keeps unbounded activations (relu, elu, affine) from overflowing
    path = unilstm.export_onnx(layer, tmp_path / "m.onnx", **export)
    assert name not in REFUSED
    x, lens, state = inputs(layer.spec, len(name), export["lengths"], export["initial_states"])
    dtype = layer.weight_ih_l0.dtype
    x, state = x.to(dtype), None if state is None else tuple(s.to(dtype) for s in state)
    if name in ONNXRUNTIME_CANNOT_RUN:
        with pytest.raises(Exception, match=ONNXRUNTIME_CANNOT_RUN[name]):
            run_onnx(path, x, lengths=lens, state=state)
    diffs = read_back(path, layer, x, lens, state, onnxruntime=name not in ONNXRUNTIME_CANNOT_RUN)
    assert diffs["layer"] < TOL and diffs["onnxruntime"] < TOL, diffs


def keras_cases() -> list[tuple[str, tuple]]:
    return [(keras_name(*case), case) for case in KERAS]


@pytest.mark.parametrize("case", keras_cases(), ids=[c[0] for c in keras_cases()])
def test_keras_door_layers_read_back_or_are_refused_by_name(case, tmp_path):
    keras = pytest.importorskip("unilstm.keras")
    name, (bi, rs, merge, back) = case
    torch.manual_seed(5)
    inner = keras.LSTM(H, return_sequences=rs, go_backwards=back)
    layer = keras.Bidirectional(inner, merge_mode=merge) if bi else inner
    layer.build((None, None, F))
    path = unilstm.export_onnx(layer, tmp_path / "k.onnx", lengths=True)
    if name in REFUSED:
        with pytest.raises(OnnxFileError, match=re.escape(REFUSED[name])) as info:
            unilstm.load(path)
        assert str(path) in str(info.value)
        return
    [loaded] = unilstm.load(path)
    x = torch.randn(B, T, F)
    lens = torch.tensor([T, 2, 1, 3])
    mask = torch.arange(T)[None, :] < lens[:, None]
    with torch.no_grad():
        expected = layer(x, mask=mask).numpy()
        out, _ = loaded(x, lengths=lens)
    [stack] = read_onnx_lstms(path)
    assert f"graph output 'output' = {KERAS_OUTPUT[name]}" in stack.notes
    out = keras_output(out, bi, rs, merge)
    onnx_out, _, _ = run_onnx(path, x, lengths=lens)
    assert loaded.spec.batch_first
    assert max(float(np.abs(out.numpy() - expected).max()), float(np.abs(out.numpy() - onnx_out).max())) < TOL


def test_the_refusal_list_names_only_cases_of_the_grid():
    names = {c[0] for c in CASES} | {c[0] for c in keras_cases()}
    assert set(REFUSED) <= names and set(KERAS_OUTPUT) == {c[0] for c in keras_cases()}


#: stacks one after the other in one graph, as ``unilstm.save`` / ``unilstm convert`` write a Keras
#: Sequential of LSTM layers (``build_chain``): (first stack's options, second's, layers read back). The same
#: cell reads as one stack; else each stack is a layer, the second's notes saying that it reads the first's
#: output (flipped in time, its axes exchanged: as the graph feeds it)
CHAINS = {
    "same cells": (dict(masked_output="previous"), dict(masked_output="previous"), 1),
    "another size": (dict(), dict(hidden=5), 2),
    "bidirectional then forward": (dict(bidirectional=True), dict(), 2),
    "go_backwards then forward": (dict(go_backwards=True, masked_output="previous"), dict(), 2),
    "go_backwards twice": (dict(go_backwards=True), dict(go_backwards=True), 2),
    "bidirectional go_backwards then bidirectional": (
        dict(bidirectional=True, go_backwards=True, masked_output="previous"),
        dict(bidirectional=True),
        2,
    ),
    "batch_first, another size": (dict(batch_first=True), dict(batch_first=True, hidden=5), 2),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_stacks_written_one_after_the_other_read_back_as_the_notes_say(name, tmp_path):
    from unilstm.formats.onnx_export import build_chain, write_model

    first_options, second_options, count = CHAINS[name]
    second_options = dict(second_options)
    hidden = second_options.pop("hidden", H)
    torch.manual_seed(9)
    first = unilstm.LSTM(F, H, **first_options).eval()
    second = unilstm.LSTM(first.spec.num_directions * H, hidden, **second_options).eval()
    stages = [(first, True, "concat"), (second, True, "concat")]
    path = write_model(build_chain(stages, lengths=True), tmp_path / "c.onnx")
    layers = unilstm.load(path)
    assert len(layers) == count
    x, lens, _ = inputs(first.spec, 9, True, False)
    with torch.no_grad():
        middle, _ = first(x, lengths=lens)
        expected, _ = second(middle, lengths=lens)
        output, _ = layers[0](x, lengths=lens)
        if count == 2:
            [note] = [n for n in read_onnx_lstms(path)[1].notes if "input is the output of stack" in n]
            time_axis = 1 if layers[0].spec.batch_first else 0
            output = output.flip(time_axis) if "flipped in time" in note else output
            output = output.transpose(0, 1) if "axes exchanged" in note else output
            output, _ = layers[1](output, lengths=lens)
    if layers[-1].spec.batch_first != second.spec.batch_first:
        output = output.transpose(0, 1)  # the graph's output in the second stack's layout, as its notes say
    onnx_out = run_onnx(path, x, lengths=lens, all_outputs=True)["output"]
    diff = max(
        float(np.abs(output.numpy() - expected.numpy()).max()), float(np.abs(output.numpy() - onnx_out).max())
    )
    assert diff < TOL


LAST_AND_MERGED = [(False, back, "concat") for back in (False, True)] + [
    (True, back, merge) for back in (False, True) for merge in ("concat", "sum", "mul", "ave")
]


@pytest.mark.parametrize("bi,back,merge", LAST_AND_MERGED)
def test_the_last_output_of_any_layer_reads_back_as_the_steps_the_notes_name(bi, back, merge, tmp_path):
    """export_onnx(return_sequences=False, merge_mode=...): each direction's output at the end of its
    processing order, merged; the notes name the steps and the merge."""
    torch.manual_seed(11)
    layer = unilstm.LSTM(F, H, 2, bidirectional=bi, go_backwards=back, masked_output="previous").eval()
    export = dict(lengths=True, return_sequences=False, merge_mode=merge)
    path = unilstm.export_onnx(layer, tmp_path / "last.onnx", **export)
    [loaded] = unilstm.load(path)
    [stack] = read_onnx_lstms(path)
    x, lens, _ = inputs(layer.spec, 11, True, False)
    first, last = (-1, 0) if back else (0, -1)  # the backward-running half ends at the other end
    halves = (f"output[{last}][:, :{H}]", f"output[{first}][:, {H}:]")
    text = {
        "concat": f"{halves[0]} and {halves[1]} concatenated",
        "sum": f"{halves[0]} + {halves[1]}",
        "mul": f"{halves[0]} * {halves[1]}",
        "ave": f"({halves[0]} + {halves[1]}) / 2",
    }[merge]
    assert f"graph output 'output' = the layer's {text if bi else 'output[-1]'}" in stack.notes

    def picked(out: np.ndarray) -> np.ndarray:
        if not bi:
            return out[-1]
        forward, backward = out[last, :, :H], out[first, :, H:]
        return {
            "concat": np.concatenate([forward, backward], -1),
            "sum": forward + backward,
            "mul": forward * backward,
            "ave": (forward + backward) / 2,
        }[merge]

    ours = picked(results(loaded, x, lens, None)[0])
    onnx_out, _, _ = run_onnx(path, x, lengths=lens)
    expected = picked(results(layer, x, lens, None)[0])
    assert max(float(np.abs(ours - onnx_out).max()), float(np.abs(ours - expected).max())) < TOL
