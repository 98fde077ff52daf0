"""Live check: real MindSpore 2.10 reads the .ckpt files unilstm writes, with identical tensors and numbers.

Run in the MindSpore reference environment (see tools/fixtures/make_mindspore_fixtures.py for the recipe; it
also needs torch 2.13 and protobuf, which unilstm imports)::

    .refenv/ms/bin/python tools/live/check_mindspore_reads_ours.py

It writes files with :func:`unilstm.mindspore.save_checkpoint` (LSTMs of several shapes, float16 parameters,
a CRC trailer, tensors split in chunks, append_dict values, every dtype MindSpore stores, an LSTM inside a
bigger torch model), loads each with ``mindspore.load_checkpoint`` (``crc_check=True``) and
``mindspore.load_param_into_net``, compares every entry byte for byte and runs ``mindspore.nn.LSTM`` with the
loaded weights against ``unilstm.mindspore.LSTM``. Exit status 0 when everything matches.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile

os.environ.setdefault("GLOG_v", "3")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "src"))

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import unilstm  # noqa: E402
from unilstm.mindspore import LSTM, save_checkpoint  # noqa: E402

failures: list[str] = []


def check(condition: bool, what: str) -> None:
    print(("ok    " if condition else "FAIL  ") + what)
    if not condition:
        failures.append(what)


def raw(value: torch.Tensor) -> bytes:
    value = value.detach().contiguous()
    if value.dtype == torch.bfloat16:
        value = value.view(torch.int16)
    return value.numpy().tobytes()


def same_entries(path: pathlib.Path, expected: dict[str, object], crc: bool = False) -> dict:
    loaded = ms.load_checkpoint(str(path), crc_check=crc)
    check(list(loaded) == list(expected), f"{path.name}: names and order {list(loaded)[:4]}...")
    for name, value in expected.items():
        theirs = loaded.get(name)
        if isinstance(value, str):
            check(theirs == value, f"{path.name}: {name} = {value!r}")
        else:
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            array = theirs.asnumpy()
            check(
                list(array.shape) == list(tensor.shape) and array.tobytes() == raw(tensor),
                f"{path.name}: {name} {tuple(tensor.shape)} {tensor.dtype} bit for bit ({theirs.dtype})",
            )
    return loaded


def lstm_parity(path: pathlib.Path, ours: LSTM, args: dict, strict: bool = True) -> None:
    theirs = ms.nn.LSTM(**args)
    params = ms.load_checkpoint(str(path))
    not_loaded, _ = ms.load_param_into_net(theirs, params, strict_load=strict)
    check(not_loaded == [], f"{path.name}: load_param_into_net loads every parameter (left {not_loaded})")
    x = np.random.RandomState(0).randn(5, 3, args["input_size"]).astype(np.float32)
    if args.get("batch_first"):
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    seq = np.array([5, 2, 0], np.int32)
    expected, (h_n, c_n) = theirs(ms.Tensor(x), None, ms.Tensor(seq))
    out, (h, c) = ours(x, None, seq)
    error = max(
        float(np.abs(out.detach().numpy() - expected.asnumpy()).max()),
        float(np.abs(h.detach().numpy() - h_n.asnumpy()).max()),
        float(np.abs(c.detach().numpy() - c_n.asnumpy()).max()),
    )
    check(error <= 1e-5, f"{path.name}: MindSpore runs our weights like unilstm, max |diff| {error:.2e}")


def main() -> int:
    folder = pathlib.Path(tempfile.mkdtemp(prefix="unilstm_ms_check_"))
    cases = [
        dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True),
        dict(input_size=4, hidden_size=5, num_layers=3, has_bias=False, batch_first=True),
        dict(input_size=2, hidden_size=3),
    ]
    for k, args in enumerate(cases):
        torch.manual_seed(k)
        ours = LSTM(**args)
        with torch.no_grad():  # random weights, not MindSpore's draw, so the check does not depend on it
            for p in ours.parameters():
                p.uniform_(-0.5, 0.5)
        expected = dict(ours.parameters_and_names())
        for crc in (False, True):
            path = folder / f"lstm_{k}{'_crc' if crc else ''}.ckpt"
            save_checkpoint(ours, path, crc=crc)
            same_entries(path, expected, crc=crc)
        lstm_parity(folder / f"lstm_{k}_crc.ckpt", ours, args)
        path = folder / f"lstm_{k}_chunked.ckpt"
        save_checkpoint(ours, path, chunk_bytes=24)
        same_entries(path, expected)

    half = LSTM(2, 3, dtype="float16")
    path = folder / "lstm_float16.ckpt"
    save_checkpoint(half, path, append_dict={"epoch_num": 3, "lr": 0.125, "note": "ünïcode ✓", "done": True})
    loaded = same_entries(
        path,
        {**dict(half.parameters_and_names()), "epoch_num": 3, "lr": 0.125, "note": "ünïcode ✓", "done": True},
    )
    theirs = ms.nn.LSTM(2, 3, dtype=ms.float16)
    check(ms.load_param_into_net(theirs, loaded, strict_load=True)[0] == [], "float16 LSTM loads strictly")

    typed = {
        "f16": torch.linspace(-2, 2, 6, dtype=torch.float16).reshape(2, 3),
        "bf16": torch.tensor([0.5, -1.25, 3.0e5, 1e-3], dtype=torch.bfloat16),
        "f32": torch.arange(6, dtype=torch.float32).reshape(3, 2) / 7,
        "f64": torch.tensor([np.pi, -np.e, 1e-300], dtype=torch.float64),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "i16": torch.tensor([-(2**15), 7], dtype=torch.int16),
        "i32": torch.tensor([[1, -2], [3, 2**31 - 1]], dtype=torch.int32),
        "i64": torch.tensor([-(2**62), 5], dtype=torch.int64),
        "u8": torch.tensor([0, 255, 7], dtype=torch.uint8),
        "flags": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
    }
    path = folder / "dtypes.ckpt"
    save_checkpoint(typed, path, append_dict={"empty": "", "count": 0}, crc=True)
    same_entries(path, {**typed, "empty": "", "count": 0}, crc=True)

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Linear(5, 3)
            self.encoder = unilstm.LSTM(3, 4, 2, bidirectional=True)

    model = Model()
    path = folder / "model.ckpt"
    save_checkpoint(model, path)
    theirs = ms.nn.LSTM(3, 4, 2, bidirectional=True)
    # MindSpore's own prefix fallback (strict_load=False) finds "encoder." in our names
    not_loaded, _ = ms.load_param_into_net(theirs, ms.load_checkpoint(str(path)))
    check(not_loaded == [], "a unilstm LSTM inside a torch model loads into mindspore.nn.LSTM by prefix")
    front = LSTM(3, 4, 2, bidirectional=True)
    front.load_state_dict(model.encoder.state_dict())
    args = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    lstm_parity(path, front, args, strict=False)

    mode = oct(os.stat(folder / "lstm_0.ckpt").st_mode & 0o777)
    check(mode == "0o400", f"file mode {mode} like MindSpore's 0o400")
    print(f"\nMindSpore {ms.__version__}, torch {torch.__version__}: {len(failures)} failure(s)")
    print(f"files in {folder}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
