"""Check that `unilstm convert --emit-code` writes MindSpore code that runs as written and gives the Keras
numbers, with the real MindSpore.

    .venv/bin/python tools/live/check_emitted_mindspore.py [--ms-python .refenv/ms/bin/python] [--work DIR]

Stage 1 (this interpreter, with unilstm and h5py): for each case, write a Keras 3 .keras file with
Keras-layout weights and configs, convert it to a MindSpore .ckpt with ``--emit-code``, and save the Keras
semantics' outputs (computed by unilstm's engine, which the Keras fixtures tie to real Keras) for random
inputs with and without a right-padded mask.
Stage 2 (``--ms-python``, with mindspore 2.x): import each emitted module, ``load()`` the checkpoint with
``mindspore.load_checkpoint`` / ``load_param_into_net``, run it and print the largest difference from the
saved outputs. Exits non-zero when any case is off by more than 1e-5 or fails to run.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5


def _cases():
    """(label, [layer spec dicts]) for the Keras models to convert."""
    cases = []
    for rs, gb, zo in itertools.product([True, False], [False, True], [False, True]):
        cases.append(
            (
                f"lstm return_sequences={rs} go_backwards={gb} zero_output_for_mask={zo}",
                [dict(F=3, H=4, rs=rs, gb=gb, zo=zo)],
            )
        )
    for rs, merge in itertools.product([True, False], ["concat", "sum", "mul", "ave"]):
        cases.append(
            (
                f"bidirectional return_sequences={rs} merge_mode={merge}",
                [dict(F=3, H=4, bi=True, merge=merge, rs=rs)],
            )
        )
    cases.append(
        (
            "stack of 3 LSTMs -> one 3-layer nn.LSTM",
            [dict(F=3, H=4), dict(F=4, H=4), dict(F=4, H=4, rs=False)],
        )
    )
    cases.append(
        (
            "stack of 2 Bidirectionals -> one 2-layer bidirectional nn.LSTM",
            [dict(F=3, H=4, bi=True), dict(F=8, H=4, bi=True, rs=False, merge="ave")],
        )
    )
    cases.append(
        ("two LSTMs of different widths -> two nn.LSTMs", [dict(F=3, H=4), dict(F=4, H=5, rs=False)])
    )
    cases.append(
        (
            "go_backwards LSTM feeding an LSTM -> two nn.LSTMs",
            [dict(F=3, H=4, gb=True), dict(F=4, H=5, rs=False)],
        )
    )
    cases.append(
        (
            "LSTM feeding a go_backwards LSTM -> two nn.LSTMs",
            [dict(F=3, H=4), dict(F=4, H=4, gb=True, rs=False, zo=True)],
        )
    )
    return cases


def _record(
    index: int,
    F: int,  # noqa: N803
    H: int,  # noqa: N803
    bi: bool = False,
    merge: str = "concat",
    rs: bool = True,
    gb: bool = False,
    zo: bool = False,
    rng: np.random.Generator | None = None,
):
    from unilstm.convert import keras_layer_config as _keras_config
    from unilstm.formats.keras_files import KerasLayerRecord
    from unilstm.spec import LSTMSpec

    name = f"layer_{index}"
    config = _keras_config(name, LSTMSpec(F, H), rs, zo)
    config["go_backwards"] = gb
    weights = []
    for _ in range(2 if bi else 1):
        weights += [
            (rng.standard_normal((F, 4 * H)) * 0.5).astype(np.float32),
            (rng.standard_normal((H, 4 * H)) * 0.5).astype(np.float32),
            (rng.standard_normal(4 * H) * 0.5).astype(np.float32),
        ]
    if not bi:
        return KerasLayerRecord(name, name, "LSTM", config, weights, None, "keras")
    backward = dict(config, go_backwards=not gb, name=f"backward_{name}")
    wrapper = {
        "name": name,
        "merge_mode": merge,
        "layer": {"module": "keras.layers", "class_name": "LSTM", "config": config, "registered_name": None},
        "backward_layer": {
            "module": "keras.layers",
            "class_name": "LSTM",
            "config": backward,
            "registered_name": None,
        },
    }
    return KerasLayerRecord(name, name, "Bidirectional", wrapper, weights, None, "keras")


def prepare(work: Path) -> list[dict]:
    """Stage 1: files, emitted code and expected outputs under ``work``; returns the case list."""
    import torch

    cv = importlib.import_module("unilstm.convert")
    from unilstm.formats.keras_files import write_keras_model

    rng = np.random.default_rng(0)
    manifest = []
    for index, (label, layers) in enumerate(_cases()):
        folder = work / f"case_{index:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        records = [_record(i, rng=rng, **layer) for i, layer in enumerate(layers)]
        write_keras_model(records, folder / "model.keras", (None, layers[0]["F"]))
        report = cv.convert(
            folder / "model.keras", folder / "model.ckpt", emit_code=folder / "model_ms.py", prefix="net."
        )
        units = cv.read_units(folder / "model.keras")
        x = rng.standard_normal((3, 6, layers[0]["F"])).astype(np.float32)
        mask = np.arange(6)[None, :] < np.array([6, 3, 1])[:, None]
        expected = {"x": x, "mask": mask}
        for m in [None, mask]:
            value = torch.from_numpy(x)
            lengths = None if m is None else torch.from_numpy(m).sum(1)
            for unit in units:
                value = cv.run_source(unit, value, lengths)["output"]
            expected["masked" if m is not None else "plain"] = value.numpy()
        np.savez(folder / "expected.npz", **expected)
        manifest.append(
            {
                "label": label,
                "folder": str(folder),
                "layers": report.layers,
                "engine_vs_target": report.max_difference,
            }
        )
    manifest.append(_time_major_go_backwards_case(work, len(manifest), rng))
    manifest += _real_keras_cases(work, len(manifest))
    manifest.append(_torch_case(work, len(manifest)))
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _time_major_go_backwards_case(work: Path, index: int, rng: np.random.Generator) -> dict:
    """tf-keras's time_major=True with go_backwards (Keras 3 files cannot hold time_major): the unit of a
    batch-major layer given the time-major glue, its code emitted directly; x is (T, B, F), the mask (B, T),
    the emitted output batch-major."""
    from dataclasses import replace

    import torch

    cv = importlib.import_module("unilstm.convert")
    from unilstm.formats.keras_files import write_keras_model

    folder = work / f"case_{index:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    write_keras_model([_record(0, 3, 4, gb=True, rng=rng)], folder / "model.keras", (None, 3))
    report = cv.convert(folder / "model.keras", folder / "model.ckpt")
    [unit] = cv.read_units(folder / "model.keras")
    spec, glue = replace(unit.spec, batch_first=False), replace(unit.keras, time_major=True)
    unit = replace(unit, spec=spec, keras=glue)
    (folder / "model_ms.py").write_text(cv.emit_code([unit], "ckpt", folder / "model.ckpt"))
    x = rng.standard_normal((3, 6, 3)).astype(np.float32)
    mask = np.arange(6)[None, :] < np.array([6, 3, 1])[:, None]
    expected = {"x": x.transpose(1, 0, 2).copy(), "mask": mask}
    for key, lengths in (("plain", None), ("masked", torch.from_numpy(mask).sum(1))):
        expected[key] = cv.run_source(unit, torch.from_numpy(x), lengths)["output"].numpy()
    np.savez(folder / "expected.npz", **expected)
    return {
        "label": "tf-keras time_major=True go_backwards LSTM (emitted directly)",
        "folder": str(folder),
        "layers": report.layers,
        "engine_vs_target": report.max_difference,
    }


#: (fixture file, layer name, index in its .npz): LSTM layers whose outputs real Keras computed
REAL_KERAS = [
    ("k3_seq.keras", "encoder", 0),
    ("k3_seq.keras", "bidirectional", 2),
    ("k3_func.keras", "inner_lstm", 0),
    ("tfk_seq.h5", "bidirectional", 2),
    ("tfk_nested.h5", "lstm_3", 0),
    ("tfk_nested.h5", "bi", 1),
    ("tfk_nested.h5", "last", 2),
]


def _torch_case(work: Path, index: int) -> dict:
    """A real torch.nn.LSTM (2 layers, bidirectional, time-major) saved as .pt and converted to .ckpt;
    expected = real torch's outputs, with packed sequences for the mask."""
    import torch

    cv = importlib.import_module("unilstm.convert")

    folder = work / f"case_{index:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True).eval()
    torch.save(lstm.state_dict(), folder / "model.pt")
    report = cv.convert(folder / "model.pt", folder / "model.ckpt", emit_code=folder / "model_ms.py")
    x = torch.randn(6, 3, 3)
    lengths = torch.tensor([6, 3, 1])
    with torch.no_grad():
        plain, _ = lstm(x)
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        masked, _ = torch.nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], total_length=6)
    mask = (torch.arange(6)[None, :] < lengths[:, None]).numpy()
    np.savez(folder / "expected.npz", x=x.numpy(), mask=mask, plain=plain.numpy(), masked=masked.numpy())
    return {
        "label": "real torch.nn.LSTM .pt -> .ckpt (time-major, 2 layers, bidirectional)",
        "folder": str(folder),
        "layers": report.layers,
        "engine_vs_target": report.max_difference,
    }


def _real_keras_cases(work: Path, start: int) -> list[dict]:
    """Layers of the Keras fixtures (made by real Keras 3 / tf-keras) converted to .ckpt with emitted code;
    expected = the outputs real Keras computed (no mask)."""
    cv = importlib.import_module("unilstm.convert")

    fixtures = ROOT / "tests" / "fixtures" / "keras_files"
    cases = []
    for offset, (name, layer, index) in enumerate(REAL_KERAS):
        folder = work / f"case_{start + offset:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        source = fixtures / name
        report = cv.convert(source, folder / "model.ckpt", layer=layer, emit_code=folder / "model_ms.py")
        arrays = np.load(fixtures / (name.split(".")[0] + ".npz"))
        x, y = arrays[f"in_{index}"], arrays[f"out_{index}"]
        np.savez(folder / "expected.npz", x=x, mask=np.ones(x.shape[:2], dtype=bool), plain=y)
        cases.append(
            {
                "label": f"real Keras fixture {name} layer {layer!r}",
                "folder": str(folder),
                "layers": report.layers,
                "engine_vs_target": report.max_difference,
            }
        )
    return cases


def check(work: Path) -> int:
    """Stage 2, under MindSpore: run every emitted module and compare."""
    import mindspore

    mindspore.set_context(mode=mindspore.PYNATIVE_MODE, device_target="CPU")
    manifest = json.loads((work / "manifest.json").read_text())
    failures = 0
    for case in manifest:
        folder = Path(case["folder"])
        spec = importlib.util.spec_from_file_location(f"emitted_{folder.name}", folder / "model_ms.py")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            model = module.load(str(folder / "model.ckpt"))
            expected = np.load(folder / "expected.npz")
            diffs = {}
            for key in ("plain", "masked"):
                if key not in expected.files:
                    continue
                mask = None if key == "plain" else mindspore.Tensor(expected["mask"])
                got, _ = model(mindspore.Tensor(expected["x"]), mask)
                diffs[key] = float(np.abs(got.asnumpy() - expected[key]).max())
            worst = max(diffs.values())
            status = "ok" if worst <= TOLERANCE else "MISMATCH"
            failures += status != "ok"
            print(f"{status:8s} {case['label']}: max |MindSpore - expected| {diffs}")
        except Exception as error:  # report and go on with the other cases
            failures += 1
            print(f"FAILED   {case['label']}: {type(error).__name__}: {error}")
    print(f"{len(manifest) - failures} passed, {failures} failed")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ms-python", default=os.environ.get("UNILSTM_MS_PYTHON", str(ROOT / ".refenv/ms/bin/python")),
        help="a Python with mindspore (the reference environment of CONTRIBUTING.md by default)",
    )
    parser.add_argument("--work", help="folder for the generated files (a temporary one by default)")
    parser.add_argument("--stage", choices=("all", "prepare", "check"), default="all")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="unilstm-emit-ms-"))
    if args.stage in ("all", "prepare"):
        sys.path.insert(0, str(ROOT / "src"))
        prepare(work)
        print(f"prepared {work}")
    if args.stage == "check":
        return check(work)
    if args.stage == "all":
        command = [args.ms_python, __file__, "--stage", "check", "--work", str(work)]
        return subprocess.call(command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
