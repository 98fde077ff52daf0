"""Check that whole Keras models written as MindSpore code + .ckpt (``emit_mindspore_model``) run under the
real MindSpore and give ``unilstm.keras.load_model``'s outputs and the outputs real Keras computed.

    .venv/bin/python tools/live/check_emitted_mindspore_models.py --ms-python .refenv/ms/bin/python \
        [--work DIR] [FIXTURE ...]

Stage 1 (this interpreter, with unilstm): for each fixture model of tests/fixtures/keras_models (all by
default), write the generated module and its .ckpt (unilstm's own checkpoint writer), and the fixture's
inputs, Keras's outputs and load_model's outputs, into a folder of its own. A model the writer refuses is
reported with the reason and skipped. Then the same for a few models crafted here from tf-keras configs
with random weights (``crafted_*``: the layer arguments and mask situations the fixtures lack: go_backwards
with masks in the middle, merge modes, return_state, masked Concatenate, Conv1D padding, pooling, Dot,
LayerNormalization over two axes, TimeDistributed(BatchNormalization), attention, Keras 3's masked
merges), compared with load_model only.
Stage 2 (``--ms-python``, with mindspore 2.x): import each module, ``load()`` it, run it on the inputs in
PyNative mode and in graph mode and print one JSON line per model with the largest relative differences.
Exits non-zero when any model is off by more than 1e-5 relative (+1e-6 absolute) from load_model, or fails
to run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "keras_models"
RTOL, ATOL = 1e-5, 1e-6


def _fixtures() -> list[Path]:
    files = sorted(FIXTURES.glob("k3_*.keras")) + sorted(FIXTURES.glob("k22_*.h5"))
    return files + sorted(FIXTURES.glob("tfk_*.h5"))


def _layer(class_name: str, name: str, inputs: list, **config: object) -> dict:
    """A tf-keras functional layer entry called on ``inputs`` (names; a nested list: a list input)."""
    nodes = [[[n, 0, 0, {}] for n in group] for group in inputs] if inputs else []
    return {
        "class_name": class_name,
        "name": name,
        "config": {"name": name, "trainable": True, "dtype": "float32", **config},
        "inbound_nodes": nodes,
    }


def _input(name: str, shape: list, dtype: str = "float32") -> dict:
    return _layer("InputLayer", name, [], batch_input_shape=[None, *shape], dtype=dtype)


def _model(name: str, layers: list[dict], inputs: list[str], outputs: list[list]) -> dict:
    return {
        "class_name": "Functional",
        "config": {
            "name": name,
            "layers": layers,
            "input_layers": [[n, 0, 0] for n in inputs],
            "output_layers": [[n, 0, i] for n, i in outputs],
        },
    }


def _lstm(units: int, **config: object) -> dict:
    return {"class_name": "LSTM", "config": {"units": units, "name": "inner", "trainable": True, **config}}


def _crafted() -> dict[str, tuple[dict, list[np.ndarray]]]:
    """tf-keras model configs and their inputs (zeros in the middle of sequences: masks not right-padded)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, 4)).astype(np.float32)
    x[0, 2] = x[0, 5] = x[1, 0] = x[1, 3:] = 0.0  # Masking drops these steps
    ids = np.array([[3, 7, 0, 2, 9, 0], [0, 5, 6, 0, 0, 0], [1, 2, 3, 4, 5, 6]], dtype=np.int32)
    masked = _model(
        "crafted_go_backwards",
        [
            _input("x", [6, 4]),
            _layer("Masking", "masking", [["x"]], mask_value=0.0),
            _layer("LSTM", "backwards", [["masking"]], units=5, go_backwards=True, return_sequences=True),
            _layer(
                "LSTM",
                "zeros",
                [["backwards"]],
                units=4,
                go_backwards=True,
                return_sequences=True,
                zero_output_for_mask=True,
            ),
            _layer("LSTM", "last", [["zeros"]], units=3, return_sequences=False),
            _layer("Dense", "dense", [["last"]], units=2, activation="sigmoid"),
            _layer("LSTM", "states", [["masking"]], units=3, return_state=True, go_backwards=True),
        ],
        ["x"],
        [["dense", 0], ["zeros", 0], ["states", 1], ["states", 2]],
    )
    bidirectional = _model(
        "crafted_bidirectional",
        [
            _input("ids", [6], "int32"),
            _layer("Embedding", "embedding", [["ids"]], input_dim=10, output_dim=4, mask_zero=True),
            _layer(
                "Bidirectional",
                "mul",
                [["embedding"]],
                merge_mode="mul",
                layer=_lstm(5, return_sequences=True),
            ),
            _layer(
                "Bidirectional",
                "pair",
                [["mul"]],
                merge_mode=None,
                layer=_lstm(3, return_sequences=True, return_state=True),
            ),
            _layer("Concatenate", "joined", [["pair", "pair"]], axis=-1),
            _layer("GlobalAveragePooling1D", "mean", [["joined"]]),
            _layer("Bidirectional", "ave", [["embedding"]], merge_mode="ave", layer=_lstm(6)),
            _layer("Concatenate", "all", [["mean", "ave"]], axis=-1),
            _layer("Dense", "dense", [["all"]], units=3, activation="softmax"),
        ],
        ["ids"],
        [["dense", 0]],
    )
    # the second and later outputs of "pair" (backward sequence, states) are read through node tensors
    for entry in bidirectional["config"]["layers"]:
        if entry["name"] == "joined":
            entry["inbound_nodes"] = [[["pair", 0, 0, {}], ["pair", 0, 1, {}]]]
    convolutions = _model(
        "crafted_convolutions",
        [
            _input("x", [9, 4]),
            _layer("Conv1D", "same", [["x"]], filters=6, kernel_size=3, strides=2, padding="same"),
            _layer(
                "Conv1D",
                "causal",
                [["same"]],
                filters=5,
                kernel_size=2,
                dilation_rate=2,
                padding="causal",
                activation="relu",
            ),
            _layer("MaxPooling1D", "pool", [["causal"]], pool_size=2, padding="same"),
            _layer("Flatten", "flat", [["pool"]]),
            _layer("BatchNormalization", "norm", [["flat"]], epsilon=0.01),
            _layer("Dense", "dense", [["norm"]], units=3, activation="tanh"),
        ],
        ["x"],
        [["dense", 0]],
    )
    shapes = _model(
        "crafted_shapes",
        [
            _input("x", [6, 4]),
            _layer("LayerNormalization", "norm", [["x"]], axis=[1, 2]),
            _layer(
                "TimeDistributed",
                "steps",
                [["norm"]],
                layer={"class_name": "BatchNormalization", "config": {"name": "bn", "epsilon": 0.01}},
            ),
            _layer("GlobalMaxPooling1D", "top", [["steps"]]),
            _layer("GlobalAveragePooling1D", "mean", [["x"]]),
            _layer("Dot", "cosine", [["top", "mean"]], axes=1, normalize=True),
            _layer("Dense", "dense", [["steps"]], units=4, activation="elu"),
            _layer("Dot", "scores", [["dense", "x"]], axes=[1, 1]),
            _layer("Flatten", "flat", [["scores"]]),
            _layer("Concatenate", "all", [["flat", "cosine"]]),
        ],
        ["x"],
        [["all", 0]],
    )
    attention = _model(
        "crafted_attention",
        [
            _input("query", [5, 4]),
            _input("values", [6, 4]),
            _layer("Masking", "masking", [["values"]], mask_value=0.0),
            _layer("Attention", "concat", [["query", "masking"]], use_scale=True, score_mode="concat"),
            _layer("AdditiveAttention", "additive", [["query", "masking", "values"]], use_scale=False),
            _layer("Attention", "causal", [["query", "query"]], causal=True),
            _layer("Concatenate", "all", [["concat", "additive", "causal"]]),
        ],
        ["query", "values"],
        [["all", 0]],
    )
    # read as a Keras 3 model: Keras 3's mask rules for merges (values of masked Multiply / Maximum /
    # Minimum, OR of the masks, Concatenate's any)
    keras3_merges = _model(
        "crafted_keras3_merges",
        [
            _input("x", [6, 4]),
            _layer("Masking", "masking", [["x"]], mask_value=0.0),
            _layer("Dense", "dense", [["masking"]], units=4),
            _layer("Multiply", "both", [["masking", "dense"]]),
            _layer("Maximum", "partly", [["both", "x"]]),
            _layer("Minimum", "smallest", [["both", "dense", "masking"]]),
            _layer("Multiply", "product", [["masking", "x"]]),
            _layer("Concatenate", "joined", [["smallest", "partly", "product"]]),
            _layer("LSTM", "lstm", [["joined"]], units=3),
        ],
        ["x"],
        [["lstm", 0], ["smallest", 0]],
    )
    names = [
        "linear",
        "relu",
        "relu6",
        "sigmoid",
        "tanh",
        "softmax",
        "log_softmax",
        "softplus",
        "softsign",
        "elu",
        "selu",
        "exponential",
        "swish",
        "silu",
        "gelu",
        "mish",
        "hard_sigmoid",
    ]
    dense = [_layer("Dense", f"dense_{n}", [["x"]], units=3, activation=n) for n in names]
    activations = _model(
        "crafted_keras3_activations",
        [_input("x", [6, 4]), *dense, _layer("Concatenate", "all", [[f"dense_{n}" for n in names]])],
        ["x"],
        [["all", 0]],
    )
    return {
        "crafted_keras3_activations": (activations, [x * 3]),
        "crafted_keras3_merges": (keras3_merges, [x]),
        "crafted_attention": (attention, [rng.standard_normal((3, 5, 4)).astype(np.float32), x]),
        "crafted_go_backwards": (masked, [x]),
        "crafted_bidirectional": (bidirectional, [ids]),
        "crafted_convolutions": (convolutions, [rng.standard_normal((3, 9, 4)).astype(np.float32)]),
        "crafted_shapes": (shapes, [x]),
    }


def _crafted_model(config: dict, seed: int):  # type: ignore[no-untyped-def]
    """The model of a crafted config (tf-keras's, or Keras 3's for ``crafted_keras3_*``), every layer's
    weights drawn at random (variances positive)."""
    from unilstm.keras_model.model import build_model

    model = build_model(config, not config["config"]["name"].startswith("crafted_keras3"), None)
    rng = np.random.default_rng(seed)
    for module in model._by_name.values():
        arrays = [rng.normal(0, 0.5, s).astype(np.float32) for s in module.weight_shapes()]
        for index, name in enumerate(module.weight_names):
            if name == "moving_variance":
                arrays[index] = np.abs(arrays[index]) + 0.5
        if arrays:
            module.load(arrays)
    return model.eval()


def prepare(work: Path, names: list[str]) -> list[dict]:
    """Stage 1: modules, checkpoints and expected outputs under ``work``; returns the case list."""
    import torch

    from unilstm.convert.file_kinds import ConversionError
    from unilstm.convert.model_code_mindspore import emit_mindspore_model
    from unilstm.convert.model_program import model_program
    from unilstm.formats.mindspore_ckpt import save_checkpoint
    from unilstm.keras import load_model

    crafted = _crafted()
    cases = [n for n in names if n in crafted] + [FIXTURES / n for n in names if n not in crafted]
    manifest = []
    for index, case in enumerate(cases or [*_fixtures(), *crafted]):
        label = case if isinstance(case, str) else case.name
        folder = work / label.replace(".", "_")
        folder.mkdir(parents=True, exist_ok=True)
        try:
            if isinstance(case, str):
                config, inputs = crafted[case]
                model, keras = _crafted_model(config, index), []
            else:
                model = load_model(case)
                data = np.load(case.with_suffix(".npz"))
                inputs = [
                    data[k] for k in sorted((k for k in data.files if k.startswith("input_")), key=_index)
                ]
                keras = [
                    data[k] for k in sorted((k for k in data.files if k.startswith("output_")), key=_index)
                ]
            source, params = emit_mindspore_model(model_program(model), "model.ckpt")
        except (ConversionError, ValueError) as error:
            manifest.append({"fixture": label, "refused": f"{type(error).__name__}: {error}"})
            continue
        (folder / "model_ms.py").write_text(source)
        save_checkpoint(params, folder / "model.ckpt", file_mode=None)
        model.eval()
        with torch.no_grad():
            result = model(*[torch.from_numpy(x) for x in inputs])
        ours = [t.numpy() for t in (result if isinstance(result, (list, tuple)) else [result])]
        arrays = {f"input_{i}": x for i, x in enumerate(inputs)}
        arrays.update({f"keras_{i}": y for i, y in enumerate(keras)})
        arrays.update({f"ours_{i}": y for i, y in enumerate(ours)})
        np.savez(folder / "expected.npz", **arrays)
        manifest.append({"fixture": label, "folder": str(folder), "parameters": len(params)})
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _index(key: str) -> int:
    return int(key.rsplit("_", 1)[1])


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / (atol + rtol |want|) * rtol: <= rtol where the tolerance holds."""
    return float((np.abs(got - want) / (ATOL / RTOL + np.abs(want))).max())


def _run(module, mindspore, mode: int, inputs: list[np.ndarray]) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    mindspore.set_context(mode=mode)
    model = module.load()  # WEIGHTS next to the module
    result = model(*[mindspore.Tensor(x) for x in inputs])
    return [t.asnumpy() for t in (result if isinstance(result, (list, tuple)) else [result])]


def check(work: Path) -> int:
    """Stage 2, under MindSpore: run every module, in PyNative and in graph mode, and compare."""
    import mindspore

    mindspore.set_device("CPU")
    manifest = json.loads((work / "manifest.json").read_text())
    failures = 0
    for case in manifest:
        if "refused" in case:
            print(json.dumps({"fixture": case["fixture"], "status": "refused", "reason": case["refused"]}))
            continue
        folder = Path(case["folder"])
        record: dict = {"fixture": case["fixture"], "parameters": case["parameters"]}
        try:
            name = f"ms_{folder.name}"
            spec = importlib.util.spec_from_file_location(name, folder / "model_ms.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # graph mode reads the Cells' source through their module
            spec.loader.exec_module(module)
            expected = np.load(folder / "expected.npz")
            inputs = [
                expected[k] for k in sorted((k for k in expected.files if k.startswith("input_")), key=_index)
            ]
            outputs = _run(module, mindspore, mindspore.PYNATIVE_MODE, inputs)
            ours = [expected[f"ours_{i}"] for i in range(len(outputs))]
            keras = [expected[f"keras_{i}"] for i in range(len(outputs)) if f"keras_{i}" in expected.files]
            record["vs_load_model"] = max(_relative(g, w) for g, w in zip(outputs, ours, strict=True))
            record["vs_keras"] = (
                max(_relative(g, w) for g, w in zip(outputs, keras, strict=False)) if keras else None
            )
            record["max_abs_vs_load_model"] = max(
                float(np.abs(g - w).max()) for g, w in zip(outputs, ours, strict=True)
            )
            graph = _run(module, mindspore, mindspore.GRAPH_MODE, inputs)
            record["graph_mode_vs_load_model"] = max(
                _relative(g, w) for g, w in zip(graph, ours, strict=True)
            )
            worst = max(record["vs_load_model"], record["graph_mode_vs_load_model"])
            record["status"] = "ok" if worst <= RTOL else "MISMATCH"
        except Exception as error:  # report and go on with the other models
            record["status"] = "FAILED"
            record["error"] = f"{type(error).__name__}: {error}"
        failures += record["status"] != "ok"
        print(json.dumps(record))
    ran = sum("refused" not in c for c in manifest)
    print(f"{ran - failures} of {ran} models ok; {len(manifest) - ran} refused; {failures} failed")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ms-python",
        default=os.environ.get("UNILSTM_MS_PYTHON", str(ROOT / ".refenv/ms/bin/python")),
        help="a Python with mindspore (the reference environment of CONTRIBUTING.md by default)",
    )
    parser.add_argument("--work", help="folder for the generated files (a temporary one by default)")
    parser.add_argument("--stage", choices=("all", "prepare", "check"), default="all")
    parser.add_argument(
        "fixtures", nargs="*", help="fixture file names or crafted_* cases (default: all of them)"
    )
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="unilstm-ms-models-"))
    if args.stage in ("all", "prepare"):
        sys.path.insert(0, str(ROOT / "src"))
        prepare(work, args.fixtures)
        print(f"prepared {work}")
    if args.stage == "check":
        return check(work)
    if args.stage == "all":
        return subprocess.call([args.ms_python, __file__, "--stage", "check", "--work", str(work)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
