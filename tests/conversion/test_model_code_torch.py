"""Whole Keras models as torch code + weights (``emit_torch_model``): every fixture model's generated module,
imported from its file and loaded from its default weights path, computes what ``load_model`` computes and
what Keras computed; the layer-level Keras fixtures run through one-step programs; refusals name the layer."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from unilstm.convert.file_kinds import ConversionError
from unilstm.convert.model_code_torch import emit_torch_model, torch_state_names
from unilstm.convert.model_program import Program, Step, model_program
from unilstm.keras import load_model
from unilstm.keras_model.base import REGISTRY, LayerSpec

pytest.importorskip("h5py")
FIXTURES = Path(__file__).parents[1] / "fixtures"
MODELS = FIXTURES / "keras_models"
LAYERS = FIXTURES / "keras_layers"
RTOL, ATOL = 1e-5, 1e-6



def _model_files() -> list[str]:
    files = [
        p.name
        for p in sorted(MODELS.iterdir())
        if p.suffix in (".keras", ".h5") and p.name != "k1_refused.h5" and "_stateful." not in p.name
    ]  # stateful models are refused (tests/conversion/test_convert_whole_models.py)
    return files


def _load(name: str):
    path = MODELS / name
    if name.endswith(".weights.h5"):
        return load_model(path, config=MODELS / (name.removesuffix(".weights.h5") + ".json"))
    return load_model(path)


def _npz(name: str) -> Any:
    stem = name.removesuffix(".weights.h5").removesuffix(".keras").removesuffix(".h5")
    return np.load(MODELS / f"{stem}.npz")


def _import(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"generated_{path.parent.name}_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(tmp_path: Path, program: Program, weights_name: str = "model.pt") -> Path:
    source, state = emit_torch_model(program, weights_name)
    compile(source, "model.py", "exec")
    code = tmp_path / "model.py"
    code.write_text(source)
    if weights_name.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, str(tmp_path / weights_name))
    else:
        torch.save(state, tmp_path / weights_name)
    return code


def _ruff(path: Path) -> None:
    """The generated source passes ruff (the project's line length) where ruff is installed."""
    if importlib.util.find_spec("ruff") is None:
        return
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--isolated",
            "--line-length",
            "110",
            "--select",
            "E,F,W,I,B",
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def _as_list(value: Any) -> list[torch.Tensor]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("name", _model_files())
def test_fixture_model_as_torch_code_equals_keras(name, tmp_path, monkeypatch):
    model = _load(name)
    program = model_program(model)  # k22_func.h5: ids declared float32 (Keras 2's default), probed as ids
    code = _write(tmp_path, program)
    _ruff(code)
    monkeypatch.chdir(FIXTURES)  # load() reads WEIGHTS next to the module, not in the current folder
    generated = _import(code)
    torch_model = generated.load()
    assert not torch_model.training
    data = _npz(name)
    inputs = [torch.from_numpy(data[f"input_{i}"]) for i in range(len(model.input_shapes))]
    with torch.no_grad():
        got = generated_out = torch_model(*inputs)
        want = model(*inputs)
    assert isinstance(generated_out, list) == isinstance(want, list)
    got, want = _as_list(got), _as_list(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(g.numpy(), data[f"output_{i}"], rtol=RTOL, atol=ATOL)
    torch_model.train()  # Keras's training=True where torch has the op: runs, same shapes
    with torch.no_grad():
        trained = _as_list(torch_model(*inputs))
    assert [t.shape for t in trained] == [w.shape for w in want]


def test_safetensors_weights_and_explicit_path(tmp_path):
    model = load_model(MODELS / "k3_tagger.keras")
    program = model_program(model)
    code = _write(tmp_path, program, "tagger.safetensors")
    assert "load_file" in code.read_text()
    generated = _import(code)
    ids = torch.from_numpy(_npz("k3_tagger.keras")["input_0"])
    with torch.no_grad():
        np.testing.assert_allclose(generated.load()(ids).numpy(), model(ids).numpy(), rtol=RTOL, atol=ATOL)
    moved = tmp_path / "elsewhere.safetensors"
    (tmp_path / "tagger.safetensors").rename(moved)
    with torch.no_grad():
        np.testing.assert_allclose(
            generated.load(moved)(ids).numpy(), model(ids).numpy(), rtol=RTOL, atol=ATOL
        )


def test_generated_code_reads_like_the_keras_model(tmp_path):
    program = model_program(load_model(MODELS / "k3_shared.keras"))
    source, state = emit_torch_model(program, "shared.pt")
    assert 'WEIGHTS = "shared.pt"' in source
    assert "class Functional(nn.Module):" in source
    assert source.count("self.lstm = nn.LSTM(") == 1  # a shared layer: one module called twice
    assert source.count("self.lstm(") == 2
    assert "def forward(self, x_input_layer, x_input_layer_1):" in source
    assert "return [dense, subtract]" in source
    assert sorted(state) == sorted(torch_state_names(program))
    assert "lstm.weight_ih_l0" in state and "dense.weight" in state
    nested, _ = emit_torch_model(model_program(load_model(MODELS / "k3_nested.keras")), "n.pt")
    assert "class Sequential(nn.Module):" in nested and "self.sequential = Sequential()" in nested


def test_train_mode_turns_dropout_on(tmp_path):
    model = load_model(MODELS / "k3_forecast.keras")
    generated = _import(_write(tmp_path, model_program(model)))
    torch_model = generated.load()
    assert isinstance(torch_model.dropout, torch.nn.Dropout)
    x = torch.from_numpy(_npz("k3_forecast.keras")["input_0"])
    torch_model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        a, b = torch_model(x), torch_model(x)
    assert not torch.equal(a, b)


# -- layer fixtures as one-step programs -------------------------------------------------------------


def _layer_cases() -> list[str]:
    return sorted(p.name for p in LAYERS.glob("*.npz"))


def _one_step_program(meta: dict[str, Any], data: Any) -> tuple[Program, list[torch.Tensor]]:
    """A program calling the fixture's layer once on inputs x_i with masks m_i (themselves inputs), which
    returns the layer's outputs and then its output masks."""
    spec = LayerSpec(
        name=meta["config"].get("name", "layer"),
        class_name=meta["class_name"],
        config=meta["config"],
        input_shapes=tuple(tuple(s) for s in meta["input_shapes"]),
        keras2=bool(meta.get("keras2", False)),
    )
    layer = REGISTRY[spec.class_name](spec)
    layer.load(
        [
            data[k]
            for k in sorted((k for k in data.files if k.startswith("weight_")), key=lambda k: int(k[7:]))
        ]
    )
    layer.eval()
    count = len([k for k in data.files if k.startswith("input_")])
    inputs, values, masks = [], [], []
    for i in range(count):
        inputs.append(f"x_{i}")
        array = np.array(data[f"input_{i}"])
        values.append(torch.from_numpy(array).float() if array.dtype.kind == "f" else torch.from_numpy(array))
        if f"mask_{i}" in data.files:
            inputs.append(f"m_{i}")
            values.append(torch.from_numpy(np.array(data[f"mask_{i}"])).bool())
            masks.append(f"m_{i}")
        else:
            masks.append(None)
    outs = len([k for k in data.files if k.startswith("output_") and k[7:].isdigit()])
    outputs = [f"y_{i}" for i in range(outs)]
    out_masks = [f"y_{i}_mask" if f"output_mask_{i}" in data.files else None for i in range(outs)]
    attribute = "layer"
    step = Step(
        spec.name,
        attribute,
        spec.class_name,
        dict(spec.config),
        layer,
        [f"x_{i}" for i in range(count)],
        bool(meta.get("list_input", count > 1)),
        masks,
        dict(meta.get("call_kwargs", {})),
        outputs,
        out_masks,
        [],
    )
    program = Program("layer_model", inputs, [], [], [step], outputs + [m for m in out_masks if m])
    return program, values


def _run_layer_case(name: str, tmp_path: Path) -> None:
    with np.load(LAYERS / name) as data:
        meta = json.loads(str(data["spec"]))
        if meta.get("training"):
            pytest.skip("a training-mode fixture (random numbers)")
        program, values = _one_step_program(meta, data)
        count = len([k for k in data.files if k.startswith("output_") and k[7:].isdigit()])
        wanted = [data[f"output_{i}"] for i in range(count)]
        wanted += [data[f"output_mask_{i}"] for i in range(count) if f"output_mask_{i}" in data.files]
    generated = _import(_write(tmp_path, program))
    with torch.no_grad():
        got = _as_list(generated.load()(*values))
    for g, w in zip(got, wanted, strict=True):
        np.testing.assert_allclose(g.numpy(), w, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("name", _layer_cases())
def test_layer_fixture_as_torch_code(name, tmp_path):
    if name == "core_k3_embedding_negative_ids.npz":
        # Keras 3 counts ids -input_dim..-1 from the end; nn.Embedding (like tf-keras) refuses them
        with pytest.raises(IndexError):
            _run_layer_case(name, tmp_path)
        return
    try:
        _run_layer_case(name, tmp_path)
    except ConversionError as error:  # refused by name: never a wrong number
        assert "torch code:" in str(error)
        pytest.skip(f"refused: {error}")


# -- LSTM variants against the loaded layer (itself checked against Keras) ----------------------------

MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)


def _layer_step(
    class_name: str,
    config: dict[str, Any],
    shape: tuple[int | None, ...],
    keras2: bool = False,
    masked: bool = False,
    states: int = 0,
    outputs: int = 1,
) -> tuple[Program, Any]:
    """A program calling one layer (random weights) on x (and mask m, initial states s_i)."""
    spec = LayerSpec(config.get("name", "layer"), class_name, config, (shape,), keras2=keras2)
    layer = REGISTRY[class_name](spec)
    generator = torch.Generator().manual_seed(1)
    layer.load([torch.randn(s, generator=generator).numpy() * 0.5 for s in layer.weight_shapes()])
    layer.eval()
    inputs = ["x"] + (["m"] if masked else []) + [f"s_{i}" for i in range(states)]
    kwargs = {"initial_state": [f"s_{i}" for i in range(states)]} if states else {}
    names = [f"y_{i}" for i in range(outputs)]
    step = Step(
        spec.name,
        spec.name,
        class_name,
        dict(config),
        layer,
        ["x"],
        False,
        ["m" if masked else None],
        kwargs,
        names,
        [None] * outputs,
        [],
    )
    return Program("one_layer", inputs, [], [], [step], names), layer


def _check_against_layer(tmp_path: Path, program: Program, layer: Any, states: int, units: int) -> str:
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 4, generator=generator)
    values = [x] + ([MASK] if "m" in program.inputs else [])
    initial = [torch.randn(3, units, generator=generator) for _ in range(states)]
    values += initial
    code = _write(tmp_path, program)
    _ruff(code)
    with torch.no_grad():
        got = _as_list(_import(code).load()(*values))
        want, _ = layer(
            x, MASK if "m" in program.inputs else None, **({"initial_state": initial} if states else {})
        )
    for g, w in zip(got, _as_list(want), strict=True):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=RTOL, atol=ATOL)
    return code.read_text()


LSTM_CASES = [
    ({}, False, False, 0),
    ({"return_sequences": True}, False, True, 0),
    ({"return_sequences": True, "go_backwards": True}, False, False, 0),
    ({"return_sequences": True, "go_backwards": True}, False, True, 0),
    ({"return_state": True}, False, False, 2),
    ({"return_state": True, "return_sequences": True}, False, True, 2),
    ({"return_sequences": True, "zero_output_for_mask": True}, False, True, 0),
    ({"return_sequences": True, "recurrent_activation": "hard_sigmoid"}, True, False, 0),
    ({"return_sequences": True, "recurrent_activation": "hard_sigmoid"}, False, True, 0),
    ({"activation": "relu", "use_bias": False}, False, False, 0),
]


@pytest.mark.parametrize(("extra", "keras2", "masked", "states"), LSTM_CASES)
def test_lstm_variants(extra, keras2, masked, states, tmp_path):
    config = {"name": "lstm", "units": 3, **extra}
    outputs = 3 if extra.get("return_state") else 1
    program, layer = _layer_step("LSTM", config, (None, 5, 4), keras2, masked, states, outputs)
    source = _check_against_layer(tmp_path, program, layer, states, 3)
    plain = not masked and extra.get("activation", "tanh") == "tanh" and "recurrent_activation" not in extra
    assert ("keras_lstm(" in source) != plain


BIDIRECTIONAL_CASES = [
    ("concat", True, False, False, 0),
    ("concat", True, True, False, 0),
    ("sum", False, True, False, 0),
    ("ave", True, False, False, 0),
    ("mul", False, False, False, 0),
    (None, True, True, False, 0),
    ("concat", False, False, True, 4),
    ("concat", True, True, True, 4),
]


@pytest.mark.parametrize(("merge", "sequences", "masked", "with_states", "states"), BIDIRECTIONAL_CASES)
def test_bidirectional_variants(merge, sequences, masked, with_states, states, tmp_path):
    inner = {
        "class_name": "LSTM",
        "config": {"name": "lstm", "units": 3, "return_sequences": sequences, "return_state": with_states},
    }
    config = {"name": "bidirectional", "layer": inner, "merge_mode": merge}
    outputs = (2 if merge is None else 1) + (4 if with_states else 0)
    program, layer = _layer_step("Bidirectional", config, (None, 5, 4), False, masked, states, outputs)
    _check_against_layer(tmp_path, program, layer, states, 3)


# -- refusals, by layer class and name ------------------------------------------------------------------


def _refused(program: Program, *words: str) -> None:
    with pytest.raises(ConversionError) as error:
        emit_torch_model(program, "model.pt")
    for word in words:
        assert word in str(error.value)


def test_refusals_name_the_layer():
    lstm = {"name": "my_lstm", "units": 3}
    _refused(_layer_step("LSTM", {**lstm, "stateful": True}, (2, 5, 4))[0], "LSTM 'my_lstm'", "stateful")
    _refused(_layer_step("LSTM", {**lstm, "time_major": True}, (5, 2, 4), keras2=True)[0], "time_major")
    backward = {"class_name": "LSTM", "config": {"name": "b", "units": 2, "go_backwards": True}}
    bidirectional = {
        "name": "bi",
        "layer": {"class_name": "LSTM", "config": lstm},
        "backward_layer": backward,
    }
    _refused(_layer_step("Bidirectional", bidirectional, (None, 5, 4))[0], "Bidirectional 'bi'", "backward")
    spec = LayerSpec(
        "d",
        "Dense",
        {"name": "d", "units": 2, "activation": "mine"},
        ((None, 4),),
        custom_objects={"mine": lambda x: 2 * x},
    )
    dense = REGISTRY["Dense"](spec)
    dense.load([np.ones((4, 2), np.float32), np.zeros(2, np.float32)])
    step = Step("d", "d", "Dense", {}, dense, ["x"], False, [None], {}, ["y_0"], [None], [])
    _refused(Program("p", ["x"], [], [], [step], ["y_0"]), "Dense 'd'", "activation")


def test_refusals_of_masks_operations_and_unknown_layers():
    program, _ = _layer_step("Dense", {"name": "d", "units": 2}, (None, 5, 4))
    step = program.steps[0]
    from dataclasses import replace

    concatenate_spec = LayerSpec("cat", "Concatenate", {"name": "cat", "axis": 1}, ((None, 4), (None, 4)))
    concatenate = Step(
        "cat",
        "cat",
        "Concatenate",
        {},
        REGISTRY["Concatenate"](concatenate_spec),
        ["x", "x"],
        True,
        ["m", "m"],
        {},
        ["y_0"],
        ["y_0_mask"],
        [],
    )
    _refused(Program("p", ["x", "m"], [], [], [concatenate], ["y_0"]), "Concatenate 'cat'", "mask")
    operation = Step("sin", "sin", "Sin", {}, None, ["x"], False, [None], {}, ["y_0"], [None], [])
    _refused(Program("p", ["x"], [], [], [operation], ["y_0"]), "Sin 'sin'", "operation")
    custom = replace(step, class_name="MyLayer", layer="mine")
    _refused(replace(program, steps=[custom]), "MyLayer 'mine'", "no torch code")
    nested = model_program(load_model(MODELS / "k3_nested.keras"))
    outer = replace(nested.steps[0], input_masks=["x_input_layer_1"])
    _refused(replace(nested, steps=[outer, *nested.steps[1:]]), "Sequential 'sequential'", "with a mask")


def test_nested_model_hands_its_output_mask_on(tmp_path):
    spec = LayerSpec(
        "embedding", "Embedding", {"input_dim": 6, "output_dim": 4, "mask_zero": True}, ((None, 5),)
    )
    embedding = REGISTRY["Embedding"](spec)
    embedding.load([torch.randn(6, 4, generator=torch.Generator().manual_seed(3)).numpy()])
    looked_up = Step(
        "embedding",
        "embedding",
        "Embedding",
        {},
        embedding,
        ["inner_in"],
        False,
        [None],
        {},
        ["embedding"],
        ["embedding_mask"],
        [],
    )
    inner = Program("inner", ["inner_in"], [], [], [looked_up], ["embedding"])
    nested = Step(
        "inner",
        "inner",
        "Sequential",
        {},
        None,
        ["ids"],
        False,
        [None],
        {},
        ["inner"],
        ["inner_mask"],
        [],
        inner,
    )
    lstm_program, lstm = _layer_step("LSTM", {"name": "lstm", "units": 3}, (None, 5, 4), masked=True)
    from dataclasses import replace

    reading = replace(lstm_program.steps[0], inputs=["inner"], input_masks=["inner_mask"], outputs=["lstm"])
    program = Program("outer", ["ids"], [], [], [nested, reading], ["lstm"])
    code = _write(tmp_path, program)
    source = code.read_text()
    assert "self.inner = Inner()" in source and "inner, inner_mask = self.inner(ids)" in source
    ids = torch.tensor([[1, 2, 0, 3, 0], [4, 5, 5, 0, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        got = _import(code).load()(ids)
        vectors, mask = embedding(ids)
        want, _ = lstm(vectors, mask)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=RTOL, atol=ATOL)
