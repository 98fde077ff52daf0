"""Whole Keras models as MindSpore code + .ckpt parameters (``emit_mindspore_model``), without MindSpore.

The numbers under the real MindSpore are checked by tools/live/check_emitted_mindspore_models.py. Here:
the generated module compiles and has the documented shape (``WEIGHTS``, one Cell class per model, ``load``
checking every parameter); the parameters the code creates (read from its ``__init__`` with MindSpore
2.10's parameter names and shapes, as measured on MindSpore: ``nn.LSTM`` ``weight_ih_l0`` (4H, F) ...,
``nn.Dense`` ``weight`` (out, in), ``nn.Conv1d`` ``weight`` (out, in / group, 1, k) ...) are exactly the
returned ones; the returned parameters, mapped back to Keras's layouts, equal the Keras weights; and what the
writer cannot compute is refused by layer class and name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from unilstm.convert.file_kinds import ConversionError
from unilstm.convert.model_code_mindspore import emit_mindspore_model
from unilstm.convert.model_program import Program, Step, model_program
from unilstm.formats.layout import keras_from_torch
from unilstm.keras import load_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "keras_models"
#: every fixture model the writer supports (k22_func: load_model's program probe fails on its float ids)
SUPPORTED = sorted(p.name for p in FIXTURES.glob("k3_*.keras") if "_stateful." not in p.name) + [
    "k22_bidirectional.h5",
    "k22_cudnn.h5",
    "k22_hard_sigmoid.h5",
    "k22_seq.h5",
]


HELPER_CELLS = ("KerasLSTM", "DotAttention", "ConcatAttention", "AdditiveAttention")


def _program(name: str) -> Program:
    return model_program(load_model(FIXTURES / name))


# -- the parameters the generated code declares --------------------------------------------------------------


def _lstm_parameters(args: list[Any], kwargs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    features, hidden = args[:2]
    shapes = {"weight_ih": (4 * hidden, features), "weight_hh": (4 * hidden, hidden)}
    if kwargs.get("has_bias", True):
        shapes.update(bias_ih=(4 * hidden,), bias_hh=(4 * hidden,))
    suffixes = ["", "_reverse"] if kwargs.get("bidirectional", False) else [""]
    return {f"{name}_l0{suffix}": shape for suffix in suffixes for name, shape in shapes.items()}


def _cell_parameters(function: str, args: list[Any], kwargs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """MindSpore 2.10's parameters of ``function(*args, **kwargs)`` (names relative to the Cell)."""
    if function in ("nn.LSTM", "KerasLSTM"):
        return _lstm_parameters(args, kwargs)
    if function == "nn.Dense":
        shapes = {"weight": (args[1], args[0])}
        return shapes | ({"bias": (args[1],)} if kwargs.get("has_bias", True) else {})
    if function == "nn.Embedding":
        return {"embedding_table": (args[0], args[1])}
    if function == "nn.BatchNorm1d":
        return {name: (args[0],) for name in ("gamma", "beta", "moving_mean", "moving_variance")}
    if function == "nn.LayerNorm":
        return {"gamma": tuple(args[0]), "beta": tuple(args[0])}
    if function == "nn.Conv1d":
        channels, filters, size = args[:3]
        shapes = {"weight": (filters, channels // kwargs.get("group", 1), 1, size)}
        return shapes | ({"bias": (filters,)} if kwargs.get("has_bias", False) else {})
    if function in ("nn.MaxPool1d", "nn.AvgPool1d"):
        return {}
    if function in ("DotAttention", "ConcatAttention"):
        shapes = {"scale": ()} if kwargs.get("use_scale") else {}
        return shapes | ({"concat_score_weight": ()} if function == "ConcatAttention" else {})
    if function == "AdditiveAttention":
        return {} if kwargs.get("scale_shape") is None else {"scale": tuple(kwargs["scale_shape"])}
    raise AssertionError(f"the generated code builds an unexpected {function}")


def _declared(source: str) -> dict[str, tuple[int, ...]]:
    """Every parameter the module's top Cell (the class ``load`` builds) creates, by full name."""
    tree = ast.parse(source)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    load = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "load")
    top = next(
        n.value.func.id
        for n in ast.walk(load)
        if isinstance(n, ast.Assign)
        and ast.unparse(n.targets[0]) == "model"
        and isinstance(n.value, ast.Call)
        and isinstance(n.value.func, ast.Name)
    )

    def walk(class_name: str, prefix: str) -> dict[str, tuple[int, ...]]:
        init = next(
            n for n in classes[class_name].body if isinstance(n, ast.FunctionDef) and n.name == "__init__"
        )
        found: dict[str, tuple[int, ...]] = {}
        for node in init.body:
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
                continue
            target = node.targets[0]
            assert isinstance(target, ast.Attribute)
            function = ast.unparse(node.value.func)
            attribute = f"{prefix}{target.attr}."
            if function in classes and function not in HELPER_CELLS:
                found |= walk(function, attribute)  # a nested model's Cell
                continue
            args = [ast.literal_eval(a) for a in node.value.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.value.keywords}
            found |= {attribute + k: v for k, v in _cell_parameters(function, args, kwargs).items()}
        return found

    return walk(top, "")


@pytest.mark.parametrize("name", SUPPORTED)
def test_module_compiles_and_declares_exactly_the_returned_parameters(name: str) -> None:
    program = _program(name)
    source, params = emit_mindspore_model(program, "model.ckpt")
    compile(source, name, "exec")
    assert "WEIGHTS = 'model.ckpt'" in source
    assert "load_param_into_net" in source and "if missing:" in source and "set_train(False)" in source
    assert {k: tuple(v.shape) for k, v in params.items()} == _declared(source)
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in params.values())
    lines = source[source.rindex("def construct") :].splitlines()
    assigned = [re.findall(r"\w+", line.split(" = ")[0]) if " = " in line else [] for line in lines]
    order = []
    for step in program.steps:  # graph order, Keras's names: each step's outputs are assigned in turn
        order.append(next(i for i, targets in enumerate(assigned) if step.outputs[0] in targets))
    assert order == sorted(order)


# -- the parameters, mapped back, are Keras's weights ------------------------------------------------------


def _keras_weights(module: Any, class_name: str) -> list[np.ndarray]:
    """The layer's weights in Keras's layout and order (get_weights()), from the loaded layer."""
    if class_name == "TimeDistributed":
        return _keras_weights(module.layer, module.layer.spec.class_name)
    if class_name in ("LSTM", "CuDNNLSTM"):
        cells = [module.cell]
    elif class_name == "Bidirectional":
        cells = [module.forward_layer, module.backward_layer]
    else:
        return [getattr(module, n).detach().numpy() for n in module.weight_names]
    return [
        getattr(cell, n).detach().numpy()
        for cell in cells
        for n in ("kernel", "recurrent_kernel", "bias")
        if getattr(cell, n) is not None
    ]


def _mapped_back(
    params: dict[str, np.ndarray], prefix: str, class_name: str, module: Any
) -> list[np.ndarray]:
    """The MindSpore parameters of one layer back in Keras's layout (gate order i, f, g, o in both)."""
    own = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
    if class_name == "TimeDistributed":
        return _mapped_back(params, prefix, module.layer.spec.class_name, module.layer)
    if class_name in ("LSTM", "CuDNNLSTM", "Bidirectional"):
        arrays = []
        for suffix in ["", "_reverse"] if class_name == "Bidirectional" else [""]:
            arrays += keras_from_torch(
                *(own.get(f"{name}_l0{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            )
        return arrays
    if class_name == "Dense":
        return [own["weight"].T] + ([own["bias"]] if "bias" in own else [])
    if class_name == "Embedding":
        return [own["embedding_table"]]
    if class_name == "Conv1D":
        return [own["weight"][:, :, 0, :].transpose(2, 1, 0)] + ([own["bias"]] if "bias" in own else [])
    return [own[name] for name in module.weight_names]  # normalization, attention: Keras's own names


def _steps(program: Program, prefix: str = "") -> dict[str, Step]:
    """The steps of layers with weights (a shared layer once), by their parameters' prefix."""
    found: dict[str, Step] = {}
    for step in program.steps:
        if step.nested is not None:
            found |= _steps(step.nested, f"{prefix}{step.attribute}.")
        elif step.module is not None and step.module.weight_names:
            found.setdefault(f"{prefix}{step.attribute}.", step)
    return found


@pytest.mark.parametrize("name", SUPPORTED)
def test_parameters_mapped_back_are_the_keras_weights(name: str) -> None:
    program = _program(name)
    _, params = emit_mindspore_model(program, "model.ckpt")
    checked = 0
    steps = _steps(program)
    for prefix, step in steps.items():
        want = _keras_weights(step.module, step.class_name)
        got = _mapped_back(params, prefix, step.class_name, step.module)
        assert len(got) == len(want), step.layer
        for g, k in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, k.reshape(g.shape), err_msg=f"{name} {step.layer}")
        checked += len(want)
    assert checked and all(any(k.startswith(p) for p in steps) for k in params)


def test_lstm_bias_goes_to_bias_ih_with_zero_bias_hh() -> None:
    program = _program("k3_forecast.keras")
    _, params = emit_mindspore_model(program, "model.ckpt")
    cell = program.steps[0].module.cell  # type: ignore[union-attr]
    np.testing.assert_array_equal(params["lstm.bias_ih_l0"], cell.bias.detach().numpy())
    assert not params["lstm.bias_hh_l0"].any()
    # i, f, g, o blocks in both: the forget block is the second quarter in MindSpore as in Keras
    units = cell.units
    np.testing.assert_array_equal(
        params["lstm.weight_ih_l0"][units : 2 * units], cell.kernel.detach().numpy()[:, units : 2 * units].T
    )


def test_nested_model_is_a_cell_of_its_own() -> None:
    source, params = emit_mindspore_model(_program("k3_nested.keras"), "nested.ckpt")
    assert "class Sequential(nn.Cell):" in source and "self.sequential = Sequential()" in source
    assert "sequential.lstm.weight_ih_l0" in params and "sequential.dense.weight" in params


def test_masks_are_glue_only_where_the_program_has_them() -> None:
    source, _ = emit_mindspore_model(_program("k3_tagger.keras"), "tagger.ckpt")
    assert "present_first(" in source and "backward_steps(" in source and "seq_length=" in source
    assert "embedding_mask" not in source  # Keras makes it, no layer of this model reads it
    plain, _ = emit_mindspore_model(_program("k3_forecast.keras"), "forecast.ckpt")
    assert "present_first" not in plain and "seq_length" not in plain


def test_non_default_activations_use_the_written_out_lstm() -> None:
    source, params = emit_mindspore_model(_program("k22_hard_sigmoid.h5"), "m.ckpt")
    assert "class KerasLSTM(nn.Cell):" in source and "recurrent_activation='hard_sigmoid_keras2'" in source
    plain, _ = emit_mindspore_model(_program("k3_forecast.keras"), "m.ckpt")
    assert "KerasLSTM" not in plain and "nn.LSTM(" in plain


def test_float_ids_are_cast_as_keras_casts_them() -> None:
    program = _program("k3_finetune.keras")
    source, _ = emit_mindspore_model(program, "model.ckpt")
    assert "self.embedding(x_input_layer)" in source
    program.input_dtypes = ["float32"]  # Keras 2.2's Input(shape=(T,)) holds ids as floats
    source, _ = emit_mindspore_model(program, "model.ckpt")
    assert "self.embedding(x_input_layer.astype(mindspore.int32))" in source


def test_variables_never_shadow_the_module_names() -> None:
    program = _program("k3_zoo.keras")
    step = _step(program, "activation")  # an Activation('tanh') layer called "tanh"
    step.outputs = ["tanh"]
    for other in program.steps:
        other.inputs = ["tanh" if v == "activation" else v for v in other.inputs]
    source, _ = emit_mindspore_model(program, "model.ckpt")
    assert "tanh_ = tanh(spatial_dropout1d)" in source and "add = gaussian_noise + tanh_" in source
    assert step.outputs == ["tanh"]  # the caller's program is unchanged


# -- refusals, by layer class and name -----------------------------------------------------------------------


def _refused(program: Program, where: str, reason: str) -> None:
    with pytest.raises(ConversionError) as caught:
        emit_mindspore_model(program, "model.ckpt")
    assert where in str(caught.value) and reason in str(caught.value), str(caught.value)


def _step(program: Program, layer: str) -> Step:
    return next(s for s in program.steps if s.layer == layer)


def test_refuses_an_unwritten_layer_class() -> None:
    program = _program("k3_forecast.keras")
    _step(program, "dense").class_name = "Conv2D"
    _refused(program, "Conv2D 'dense'", "not written")


def test_refuses_an_lstm_activation_it_cannot_compute() -> None:
    program = _program("k3_forecast.keras")
    _step(program, "lstm").module.cell.activation = "softsign"  # type: ignore[union-attr]
    _refused(program, "LSTM 'lstm'", "activation='softsign'")


def test_refuses_a_stateful_lstm() -> None:
    program = _program("k3_forecast.keras")
    _step(program, "lstm_1").module.cell.stateful = True  # type: ignore[union-attr]
    _refused(program, "LSTM 'lstm_1'", "stateful=True")


def test_refuses_a_bidirectional_with_a_backwards_forward_layer() -> None:
    program = _program("k3_tagger_sum.keras")
    _step(program, "bidirectional").module.door.forward_layer.go_backwards = True  # type: ignore[union-attr]
    _refused(program, "Bidirectional 'bidirectional'", "go_backwards")


def test_refuses_a_dense_activation_without_counterpart() -> None:
    program = _program("k3_forecast.keras")
    _step(program, "dense").config["activation"] = "sparsemax"
    _refused(program, "Dense 'dense'", "activation='sparsemax'")


def test_keras3_masks_change_multiply_values() -> None:
    program = _program("k3_zoo.keras")
    step = _step(program, "multiply")
    step.input_masks = ["x_input_layer_mask", None]
    source, _ = emit_mindspore_model(program, "model.ckpt")
    assert "ops.where(x_input_layer_mask.expand_dims(-1), add, ops.ones_like(add)) * activation" in source


def test_refuses_a_mask_it_cannot_compute() -> None:
    program = _program("k3_zoo.keras")
    _step(program, "dot").output_masks = ["dot_mask"]
    _refused(program, "Dot 'dot'", "mask")


def test_refuses_a_nested_model_with_masks() -> None:
    program = _program("k3_nested.keras")
    _step(program, "sequential").input_masks = ["x_input_layer_1"]
    _refused(program, "Sequential 'sequential'", "nested model")


def test_refuses_average_pooling_with_same_padding() -> None:
    program = _program("k3_zoo.keras")
    _step(program, "average_pooling1d").module.padding = "same"  # type: ignore[union-attr]
    _refused(program, "AveragePooling1D 'average_pooling1d'", "padding='same'")
