"""Check that whole Keras models written as MindSpore code + .ckpt (``emit_mindspore_model``) run under the
real MindSpore and give ``unilstm.keras.load_model``'s outputs and the outputs real Keras computed.

    .venv/bin/python tools/live/check_emitted_mindspore_models.py --ms-python /work/msenv/bin/python \
        [--work DIR] [FIXTURE ...]

Stage 1 (this interpreter, with unilstm): for each fixture model of tests/fixtures/keras_models (all by
default), write the generated module and its .ckpt (unilstm's own checkpoint writer), and the fixture's
inputs, Keras's outputs and load_model's outputs, into a folder of its own. A model the writer refuses is
reported with the reason and skipped.
Stage 2 (``--ms-python``, with mindspore 2.x): import each module, ``load()`` it, run it on the inputs and
print one JSON line per model with the largest relative differences. Exits non-zero when any model is off by
more than 1e-5 relative (+1e-6 absolute) from load_model, or fails to run.
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


def prepare(work: Path, names: list[str]) -> list[dict]:
    """Stage 1: modules, checkpoints and expected outputs under ``work``; returns the case list."""
    import torch

    from unilstm.convert.file_kinds import ConversionError
    from unilstm.convert.model_code_mindspore import emit_mindspore_model
    from unilstm.convert.model_program import model_program
    from unilstm.formats.mindspore_ckpt import save_checkpoint
    from unilstm.keras import load_model

    files = [FIXTURES / n for n in names] if names else _fixtures()
    manifest = []
    for path in files:
        folder = work / path.name.replace(".", "_")
        folder.mkdir(parents=True, exist_ok=True)
        try:
            model = load_model(path)
            source, params = emit_mindspore_model(model_program(model), "model.ckpt")
        except (ConversionError, ValueError) as error:
            manifest.append({"fixture": path.name, "refused": f"{type(error).__name__}: {error}"})
            continue
        (folder / "model_ms.py").write_text(source)
        save_checkpoint(params, folder / "model.ckpt", file_mode=None)
        data = np.load(path.with_suffix(".npz"))
        inputs = [data[k] for k in sorted((k for k in data.files if k.startswith("input_")), key=_index)]
        keras = [data[k] for k in sorted((k for k in data.files if k.startswith("output_")), key=_index)]
        model.eval()
        with torch.no_grad():
            result = model(*[torch.from_numpy(x) for x in inputs])
        ours = [t.numpy() for t in (result if isinstance(result, (list, tuple)) else [result])]
        arrays = {f"input_{i}": x for i, x in enumerate(inputs)}
        arrays.update({f"keras_{i}": y for i, y in enumerate(keras)})
        arrays.update({f"ours_{i}": y for i, y in enumerate(ours)})
        np.savez(folder / "expected.npz", **arrays)
        manifest.append({"fixture": path.name, "folder": str(folder), "parameters": len(params)})
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _index(key: str) -> int:
    return int(key.rsplit("_", 1)[1])


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / (atol + rtol |want|) * rtol: <= rtol where the tolerance holds."""
    return float((np.abs(got - want) / (ATOL / RTOL + np.abs(want))).max())


def check(work: Path) -> int:
    """Stage 2, under MindSpore: run every module and compare."""
    import mindspore

    mindspore.set_context(mode=mindspore.PYNATIVE_MODE)
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
            spec = importlib.util.spec_from_file_location(f"ms_{folder.name}", folder / "model_ms.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            model = module.load()  # WEIGHTS next to the module
            expected = np.load(folder / "expected.npz")
            inputs = [
                expected[k] for k in sorted((k for k in expected.files if k.startswith("input_")), key=_index)
            ]
            result = model(*[mindspore.Tensor(x) for x in inputs])
            outputs = [t.asnumpy() for t in (result if isinstance(result, (list, tuple)) else [result])]
            ours = [expected[f"ours_{i}"] for i in range(len(outputs))]
            keras = [expected[f"keras_{i}"] for i in range(len(outputs)) if f"keras_{i}" in expected.files]
            record["vs_load_model"] = max(_relative(g, w) for g, w in zip(outputs, ours, strict=True))
            record["vs_keras"] = (
                max(_relative(g, w) for g, w in zip(outputs, keras, strict=False)) if keras else None
            )
            record["max_abs_vs_load_model"] = max(
                float(np.abs(g - w).max()) for g, w in zip(outputs, ours, strict=True)
            )
            record["status"] = "ok" if record["vs_load_model"] <= RTOL else "MISMATCH"
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
    parser.add_argument("fixtures", nargs="*", help="fixture file names (default: all Keras model fixtures)")
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
