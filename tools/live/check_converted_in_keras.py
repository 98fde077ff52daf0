"""Check that checkpoints converted by `unilstm convert` open in real Keras 3 with the source framework's
numbers: a MindSpore .ckpt and a torch .pt, each converted to .keras.

    .venv/bin/python tools/live/check_converted_in_keras.py [--ms-python ...] [--tf-python ...] [--work DIR]

Stages (each in its own environment, run in turn by the default ``all``):

1. ``reference`` (``--ms-python``, MindSpore 2.x + torch): run the fixture checkpoint
   tests/fixtures/mindspore/lstm_l2_bi.ckpt in real ``mindspore.nn.LSTM`` (2 layers, bidirectional), with and
   without ``seq_length``, and a random ``torch.nn.LSTM`` (saved as .pt) in real torch; save the outputs.
2. ``convert`` (this interpreter, unilstm): ``unilstm convert`` both to .keras (verified through the engine).
3. ``check`` (``--tf-python``, TensorFlow + Keras 3): ``keras.saving.load_model`` each .keras file, run its
   layers on the same input (batch-major, with a right-padded mask for the seq_length case) and print the
   largest difference from the real MindSpore / torch outputs. Exits 1 beyond 1e-5.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
# the reference environments CONTRIBUTING.md describes (git-ignored under the repository root)
MS_PYTHON = ".refenv/ms/bin/python"
TF_PYTHON = ".refenv/tf/bin/python"
CKPT = ROOT / "tests" / "fixtures" / "mindspore" / "lstm_l2_bi.ckpt"
TOLERANCE = 1e-5


def reference(work: Path) -> None:
    """Real MindSpore and real torch outputs."""
    import mindspore
    import torch

    mindspore.set_context(mode=mindspore.PYNATIVE_MODE, device_target="CPU")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 3, 3)).astype(np.float32)  # (T, B, F), MindSpore's default layout
    lengths = np.array([7, 4, 1], dtype=np.int32)
    net = mindspore.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    mindspore.load_param_into_net(net, mindspore.load_checkpoint(str(CKPT)), strict_load=True)
    net.set_train(False)
    plain, _ = net(mindspore.Tensor(x))
    masked, _ = net(mindspore.Tensor(x), seq_length=mindspore.Tensor(lengths))
    np.savez(work / "mindspore.npz", x=x, lengths=lengths, plain=plain.asnumpy(), masked=masked.asnumpy())

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 5, num_layers=2, batch_first=True).eval()
    torch.save(lstm.state_dict(), work / "torch_source.pt")
    xb = torch.from_numpy(np.ascontiguousarray(x.transpose(1, 0, 2)))
    with torch.no_grad():
        out, _ = lstm(xb)
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            xb, torch.from_numpy(lengths).long(), batch_first=True, enforce_sorted=False
        )
        masked_t, _ = lstm(packed)
        masked_t, _ = torch.nn.utils.rnn.pad_packed_sequence(masked_t, batch_first=True, total_length=7)
    np.savez(work / "torch.npz", x=xb.numpy(), lengths=lengths, plain=out.numpy(), masked=masked_t.numpy())


def convert(work: Path) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    cv = importlib.import_module("unilstm.convert")

    for source, target in (
        (CKPT, work / "from_mindspore.keras"),
        (work / "torch_source.pt", work / "from_torch.keras"),
    ):
        report = cv.convert(source, target)
        print(
            f"converted {source.name} -> {target.name}: "
            f"engine check max difference {report.max_difference:.3g}"
        )


def check(work: Path) -> int:
    import keras

    failures = 0
    for stem, reference_file, time_major in (
        ("from_mindspore", "mindspore.npz", True),
        ("from_torch", "torch.npz", False),
    ):
        model = keras.saving.load_model(work / f"{stem}.keras")
        data = np.load(work / reference_file)
        x = data["x"].transpose(1, 0, 2) if time_major else data["x"]
        mask = np.arange(x.shape[1])[None, :] < data["lengths"][:, None]
        for case, use_mask in (("plain", False), ("masked", True)):
            value = keras.ops.convert_to_tensor(x)
            for layer in model.layers:
                value = layer(value, mask=keras.ops.convert_to_tensor(mask)) if use_mask else layer(value)
            got = keras.ops.convert_to_numpy(value)
            want = data[case].transpose(1, 0, 2) if time_major else data[case]
            diff = float(np.abs(got - want).max())
            status = "ok" if diff <= TOLERANCE else "MISMATCH"
            failures += status != "ok"
            print(
                f"{status:8s} {stem}.keras in Keras {keras.__version__} [{case}]: "
                f"max |Keras - {reference_file[:-4]}| "
                f"= {diff:.3g} ({[type(layer).__name__ for layer in model.layers]})"
            )
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ms-python", default=os.environ.get("UNILSTM_MS_PYTHON", str(ROOT / MS_PYTHON)))
    parser.add_argument("--tf-python", default=os.environ.get("UNILSTM_TF_PYTHON", str(ROOT / TF_PYTHON)))
    parser.add_argument("--work")
    parser.add_argument("--stage", choices=("all", "reference", "convert", "check"), default="all")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="unilstm-keras-check-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.stage == "reference":
        reference(work)
        return 0
    if args.stage == "convert":
        convert(work)
        return 0
    if args.stage == "check":
        return check(work)
    for python, stage in (
        (args.ms_python, "reference"),
        (sys.executable, "convert"),
        (args.tf_python, "check"),
    ):
        code = subprocess.call([python, __file__, "--stage", stage, "--work", str(work)])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
