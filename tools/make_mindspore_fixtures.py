"""Write the MindSpore parity fixtures under tests/fixtures/mindspore/ by running real MindSpore 2.10.

Recipe (a virtual environment outside the repository; MindSpore fails to import with numpy 2)::

    python3.11 -m venv /work/refenv/ms
    /work/refenv/ms/bin/pip install mindspore==2.10.0 "numpy<2"
    /work/refenv/ms/bin/python tools/make_mindspore_fixtures.py

What it writes (all small; numbers in .npz, files in .ckpt):
- ``case_<name>.npz``: one forward + backward of ``mindspore.nn.LSTM`` per case of a matrix (1-3 layers,
  bidirectional, batch_first, no bias, seq_length with lengths 0, 1, T, mixed and out of range, non-zero
  initial states, dropout in eval mode, float16 and float64 inputs). Keys: ``config`` (JSON), ``x``, ``h0``,
  ``c0``, ``seq_length`` (when used), ``param/<name>`` (the weights, after ``numpy.random.seed``),
  ``out``, ``h_n``, ``c_n``, the cotangents ``w_out``, ``w_h``, ``w_c`` of the loss
  ``sum(out * w_out) + sum(h_n * w_h) + sum(c_n * w_c)`` and its gradients ``grad/x``, ``grad/h0``,
  ``grad/c0``, ``grad/param/<name>``. For float16/float64 inputs without seq_length also
  ``per_step_out``, ``per_step_h_n``, ``per_step_c_n``, ``per_step_grad/...``: MindSpore 2.10's fused CPU
  kernel gives wrong gradients (and at times a garbage c_n) for those dtypes; these are the results of its
  per-step path (seq_length = T everywhere), the same function.
- ``init.npz``: the initial weights MindSpore draws after ``numpy.random.seed(seed)`` for some configurations,
  keys ``<k>/config`` (JSON) and ``<k>/<parameter name>``, in MindSpore's listing order (``<k>/names``).
- ``*.ckpt``: checkpoints written by ``mindspore.save_checkpoint`` and ``checkpoints.json``, what
  ``mindspore.load_checkpoint`` reads back from each (dtype, shape and the raw bytes in hex, or the string).
- ``errors.json``: the exception type and message real MindSpore raises for each bad-input case.
"""

from __future__ import annotations

import json
import os
import pathlib
import stat
import sys

import numpy as np

os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ logging: errors only

import mindspore as ms  # noqa: E402
from mindspore import Tensor, nn  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "mindspore"

# name: constructor arguments, input shape (T, B, F) before batch_first, and call options.
#   hx: give non-zero initial states; seq: seq_length values; x_dtype: input dtype; dtype: parameter dtype.
CASES: dict[str, dict] = {
    "l1_basic": dict(args=dict(input_size=3, hidden_size=4), T=5, B=3),
    "l2_hx": dict(args=dict(input_size=3, hidden_size=4, num_layers=2), T=5, B=3, hx=True),
    "l3_bi_hx": dict(
        args=dict(input_size=2, hidden_size=3, num_layers=3, bidirectional=True), T=4, B=2, hx=True
    ),
    "bi_batch_first_hx": dict(
        args=dict(input_size=3, hidden_size=4, batch_first=True, bidirectional=True), T=5, B=3, hx=True
    ),
    "nobias_l2_bi": dict(
        args=dict(input_size=3, hidden_size=4, num_layers=2, has_bias=False, bidirectional=True),
        T=4,
        B=2,
        hx=True,
    ),
    "seq_mixed_l2": dict(
        args=dict(input_size=3, hidden_size=4, num_layers=2), T=5, B=4, hx=True, seq=[5, 0, 1, 3]
    ),
    "seq_mixed_l2_bi_batch_first": dict(
        args=dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True),
        T=5,
        B=4,
        hx=True,
        seq=[0, 1, 5, 3],
    ),
    "seq_all_T_bi": dict(args=dict(input_size=3, hidden_size=4, bidirectional=True), T=4, B=3, seq=[4, 4, 4]),
    "seq_int64_nobias": dict(
        args=dict(input_size=3, hidden_size=4, has_bias=False, bidirectional=True),
        T=4,
        B=3,
        hx=True,
        seq=[2, 4, 1],
        seq_dtype="int64",
    ),
    # unidirectional MindSpore accepts lengths outside [0, T]: negative acts as 0, beyond T as T
    "seq_out_of_range_uni": dict(args=dict(input_size=3, hidden_size=4), T=5, B=3, hx=True, seq=[-2, 9, 3]),
    "dropout_eval_l3_bi": dict(
        args=dict(input_size=3, hidden_size=4, num_layers=3, dropout=0.5, bidirectional=True),
        T=4,
        B=2,
        hx=True,
    ),
    "float16_l2_bi": dict(
        args=dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, dtype="float16"),
        T=5,
        B=3,
        hx=True,
        x_dtype="float16",
    ),
    "float16_input_float32_params": dict(args=dict(input_size=3, hidden_size=4), T=5, B=3, x_dtype="float16"),
    "float64_input_no_hx": dict(
        args=dict(input_size=3, hidden_size=4, num_layers=2), T=4, B=2, x_dtype="float64"
    ),
    "float16_seq_mixed": dict(
        args=dict(input_size=3, hidden_size=4, dtype="float16"),
        T=5,
        B=3,
        hx=True,
        seq=[5, 2, 0],
        x_dtype="float16",
    ),
}

MS_DTYPES = {"float16": ms.float16, "float32": ms.float32, "float64": ms.float64}


def make_net(args: dict, seed: int) -> nn.LSTM:
    args = dict(args)
    if "dtype" in args:
        args["dtype"] = MS_DTYPES[args["dtype"]]
    np.random.seed(seed)
    return nn.LSTM(**args)


def parameter_arrays(net: nn.Cell) -> dict[str, np.ndarray]:
    return {name: p.asnumpy() for name, p in net.parameters_and_names()}


def run_case(name: str, case: dict, seed: int) -> dict[str, np.ndarray]:
    net = make_net(case["args"], seed)
    net.set_train(False)
    args = case["args"]
    directions = 2 if args.get("bidirectional") else 1
    layers = args.get("num_layers", 1) * directions
    steps, batch, hidden = case["T"], case["B"], args["hidden_size"]
    x_dtype = np.dtype(case.get("x_dtype", "float32"))
    rng = np.random.RandomState(seed + 1000)
    x = rng.uniform(-1, 1, (steps, batch, args["input_size"])).astype(x_dtype)
    if args.get("batch_first"):
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    record: dict[str, np.ndarray] = {"x": x}
    h0 = c0 = None
    if case.get("hx"):
        h0 = rng.uniform(-1, 1, (layers, batch, hidden)).astype(x_dtype)
        c0 = rng.uniform(-1, 1, (layers, batch, hidden)).astype(x_dtype)
        record.update(h0=h0, c0=c0)
    seq = None
    if "seq" in case:
        seq = np.array(case["seq"], dtype=case.get("seq_dtype", "int32"))
        record["seq_length"] = seq
    out_steps = x.shape[0], x.shape[1]
    w_out = rng.uniform(-1, 1, (*out_steps, directions * hidden)).astype(x_dtype)
    w_h = rng.uniform(-1, 1, (layers, batch, hidden)).astype(x_dtype)
    w_c = rng.uniform(-1, 1, (layers, batch, hidden)).astype(x_dtype)
    record.update(w_out=w_out, w_h=w_h, w_c=w_c)
    for pname, value in parameter_arrays(net).items():
        record[f"param/{pname}"] = value
    seq_tensor = None if seq is None else Tensor(seq)

    def forward(*inputs):
        hx = None if h0 is None else (inputs[1], inputs[2])
        return net(inputs[0], hx, seq_tensor)

    def loss_fn(*inputs):
        out, (h_n, c_n) = forward(*inputs)
        return (out * Tensor(w_out)).sum() + (h_n * Tensor(w_h)).sum() + (c_n * Tensor(w_c)).sum()

    inputs = [Tensor(x)] + ([] if h0 is None else [Tensor(h0), Tensor(c0)])
    out, (h_n, c_n) = forward(*inputs)
    record.update(out=out.asnumpy(), h_n=h_n.asnumpy(), c_n=c_n.asnumpy())
    weights = net.trainable_params()
    grad_fn = ms.value_and_grad(loss_fn, grad_position=tuple(range(len(inputs))), weights=weights)
    _, (input_grads, weight_grads) = grad_fn(*inputs)
    if not isinstance(input_grads, tuple):
        input_grads = (input_grads,)
    for key, grad in zip(("x", "h0", "c0"), input_grads, strict=False):
        record[f"grad/{key}"] = grad.asnumpy()
    for parameter, grad in zip(weights, weight_grads, strict=True):
        record[f"grad/param/{parameter.name}"] = grad.asnumpy()
    if x_dtype != np.float32 and seq is None:
        # MindSpore 2.10's fused CPU LSTM is unreliable for float16/float64 inputs: zero or garbage gradients,
        # and now and then garbage in c_n (values like -512 in one run of two); its per-step path (taken
        # whenever seq_length is given) is right. Record that path with every length = T: the same function.
        seq_tensor = Tensor(np.full(batch, steps, np.int32))
        out, (h_n, c_n) = forward(*inputs)
        record.update(per_step_out=out.asnumpy(), per_step_h_n=h_n.asnumpy(), per_step_c_n=c_n.asnumpy())
        _, (input_grads, weight_grads) = grad_fn(*inputs)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for key, grad in zip(("x", "h0", "c0"), input_grads, strict=False):
            record[f"per_step_grad/{key}"] = grad.asnumpy()
        for parameter, grad in zip(weights, weight_grads, strict=True):
            record[f"per_step_grad/param/{parameter.name}"] = grad.asnumpy()
    config = dict(case, seed=seed, name=name)
    record["config"] = np.array(json.dumps(config))
    return record


def make_init() -> dict[str, np.ndarray]:
    configs = [
        dict(args=dict(input_size=3, hidden_size=4), seed=0),
        dict(
            args=dict(input_size=5, hidden_size=3, num_layers=2, bidirectional=True, batch_first=True), seed=7
        ),
        dict(
            args=dict(input_size=4, hidden_size=6, num_layers=3, has_bias=False, bidirectional=True), seed=123
        ),
        dict(args=dict(input_size=2, hidden_size=5, num_layers=2, dtype="float16"), seed=42),
        dict(args=dict(input_size=2, hidden_size=3, dtype="float64"), seed=5),
    ]
    record: dict[str, np.ndarray] = {}
    for k, config in enumerate(configs):
        net = make_net(config["args"], config["seed"])
        arrays = parameter_arrays(net)
        record[f"{k}/config"] = np.array(json.dumps(config))
        record[f"{k}/names"] = np.array(list(arrays))
        for pname, value in arrays.items():
            record[f"{k}/{pname}"] = value
        # what numpy's global RNG gives next: the draw must consume exactly what MindSpore consumes
        record[f"{k}/next_draw"] = np.array(np.random.uniform())
    return record


class Encoder(nn.Cell):
    """A bigger network that holds an LSTM as attribute ``encoder``."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Dense(5, 3)
        self.encoder = nn.LSTM(3, 4, 2, bidirectional=True)
        self.head = nn.Dense(8, 2)

    def construct(self, x):
        return self.head(self.encoder(self.embedding(x))[0])


def write_checkpoint(path: pathlib.Path, save_obj, **kwargs) -> None:
    if path.exists():
        os.chmod(path, stat.S_IWUSR | stat.S_IRUSR)
        path.unlink()
    ms.save_checkpoint(save_obj, str(path), **kwargs)


def describe_checkpoint(path: pathlib.Path) -> dict:
    entries = {}
    for name, value in ms.load_checkpoint(str(path)).items():
        if isinstance(value, str):
            entries[name] = {"str": value}
        else:
            array = value.asnumpy()
            entries[name] = {
                "dtype": str(value.dtype),
                "shape": list(array.shape),
                "hex": array.tobytes().hex(),
            }
    return entries


def make_checkpoints() -> dict:
    written = {}
    np.random.seed(11)
    lstm = nn.LSTM(3, 4, 2, bidirectional=True)
    write_checkpoint(OUT / "lstm_l2_bi.ckpt", lstm)
    written["lstm_l2_bi.ckpt"] = dict(
        config=dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    )
    write_checkpoint(OUT / "lstm_l2_bi_crc.ckpt", lstm, crc_check=True)
    written["lstm_l2_bi_crc.ckpt"] = dict(config=written["lstm_l2_bi.ckpt"]["config"], crc=True)
    np.random.seed(12)
    lstm16 = nn.LSTM(2, 3, dtype=ms.float16)
    write_checkpoint(OUT / "lstm_float16.ckpt", lstm16)
    written["lstm_float16.ckpt"] = dict(config=dict(input_size=2, hidden_size=3, dtype="float16"))
    np.random.seed(13)
    encoder = Encoder()
    append = {"epoch_num": 7, "step_num": 2**40, "lr": 0.25, "note": "trained on 中文 data", "done": True}
    write_checkpoint(OUT / "encoder_in_cell.ckpt", encoder, append_dict=append)
    written["encoder_in_cell.ckpt"] = dict(
        config=dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True), prefix="encoder."
    )
    typed = [
        {"name": "f16", "data": Tensor(np.linspace(-2, 2, 6, dtype=np.float16).reshape(2, 3))},
        {"name": "bf16", "data": Tensor(np.array([0.5, -1.25, 3.0e5, 1e-3], np.float32)).astype(ms.bfloat16)},
        {"name": "f32", "data": Tensor(np.arange(6, dtype=np.float32).reshape(3, 2) / 7)},
        {"name": "f64", "data": Tensor(np.array([np.pi, -np.e, 1e-300]))},
        {"name": "i32", "data": Tensor(np.array([[1, -2], [3, 2**31 - 1]], np.int32))},
        {"name": "i64", "data": Tensor(np.array([-(2**62), 5], np.int64))},
        {"name": "u8", "data": Tensor(np.array([0, 255, 7], np.uint8))},
        {"name": "flags", "data": Tensor(np.array([True, False, True]))},
        {"name": "scalar_f64", "data": Tensor(np.float64(2.5))},
    ]
    write_checkpoint(OUT / "dtypes.ckpt", typed, append_dict={"empty": "", "count": 0})
    written["dtypes.ckpt"] = {}
    np.random.seed(14)
    write_checkpoint(OUT / "encrypted.ckpt", nn.LSTM(2, 2), enc_key=b"0123456789abcdef")
    written["encrypted.ckpt"] = dict(encrypted=True)
    for name, meta in written.items():
        if not meta.get("encrypted"):
            meta["entries"] = describe_checkpoint(OUT / name)
        meta["mode"] = oct(os.stat(OUT / name).st_mode & 0o777)
        # read-only like MindSpore leaves them, but git and re-runs need to overwrite: 0644 in the repository
        os.chmod(OUT / name, 0o644)
    return written


def capture(fn) -> dict:
    try:
        fn()
    except Exception as error:  # noqa: BLE001 - recording whatever MindSpore raises is the point
        lines = str(error).strip().splitlines()
        return {"type": type(error).__name__, "message": lines[0] if lines else ""}
    return {"type": None, "message": "no error"}


def make_errors() -> dict:
    np.random.seed(0)
    net = nn.LSTM(3, 4, 2)
    bi = nn.LSTM(3, 4, 2, bidirectional=True)
    x = Tensor(np.zeros((5, 2, 3), np.float32))
    h = Tensor(np.zeros((2, 2, 4), np.float32))
    hb = Tensor(np.zeros((4, 2, 4), np.float32))

    def seq(values, dtype=np.int32):
        return Tensor(np.array(values, dtype))

    cases = {
        "dropout_int": lambda: nn.LSTM(3, 4, dropout=0),
        "dropout_one": lambda: nn.LSTM(3, 4, dropout=1.0),
        "dropout_negative": lambda: nn.LSTM(3, 4, dropout=-0.1),
        "dropout_nan": lambda: nn.LSTM(3, 4, dropout=float("nan")),
        "dropout_bool": lambda: nn.LSTM(3, 4, dropout=False),
        "dropout_numpy_float32": lambda: nn.LSTM(3, 4, dropout=np.float32(0.1)),
        "input_size_zero": lambda: nn.LSTM(0, 4),
        "input_size_float": lambda: nn.LSTM(3.0, 4),
        "hidden_size_bool": lambda: nn.LSTM(3, True),
        "num_layers_zero": lambda: nn.LSTM(3, 4, 0),
        "has_bias_int": lambda: nn.LSTM(3, 4, has_bias=1),
        "batch_first_int": lambda: nn.LSTM(3, 4, batch_first=1),
        "bidirectional_int": lambda: nn.LSTM(3, 4, bidirectional=1),
        "x_rank_2": lambda: net(Tensor(np.zeros((5, 3), np.float32))),
        "x_rank_4": lambda: net(Tensor(np.zeros((5, 2, 3, 1), np.float32))),
        "x_features": lambda: net(Tensor(np.zeros((5, 2, 4), np.float32))),
        "x_int32": lambda: net(Tensor(np.zeros((5, 2, 3), np.int32))),
        "x_bfloat16": lambda: net(x.astype(ms.bfloat16)),
        "x_no_steps": lambda: net(Tensor(np.zeros((0, 2, 3), np.float32))),
        "x_float64_with_hx": lambda: net(x.astype(ms.float64), (h.astype(ms.float64), h.astype(ms.float64))),
        "hx_list": lambda: net(x, [h, h]),
        "hx_tensor": lambda: net(x, h),
        "hx_three": lambda: net(x, (h, h, h)),
        "h0_layers": lambda: net(x, (Tensor(np.zeros((1, 2, 4), np.float32)), h)),
        "c0_batch": lambda: net(x, (h, Tensor(np.zeros((2, 3, 4), np.float32)))),
        "h0_hidden": lambda: net(x, (Tensor(np.zeros((2, 2, 5), np.float32)), h)),
        "h0_rank_2": lambda: net(x, (Tensor(np.zeros((2, 4), np.float32)), h)),
        "h0_float16": lambda: net(x, (h.astype(ms.float16), h)),
        "c0_float64": lambda: net(x, (h, h.astype(ms.float64))),
        "seq_float32": lambda: net(x, None, seq([5, 3], np.float32)),
        "seq_int16": lambda: net(x, None, seq([5, 3], np.int16)),
        "seq_bool": lambda: net(x, None, seq([True, True], np.bool_)),
        "seq_batch": lambda: net(x, None, seq([5, 3, 1])),
        "seq_rank_2": lambda: bi(x, None, seq([[5], [3]])),
        "seq_scalar": lambda: net(x, None, seq(5)),
        "seq_list": lambda: net(x, None, [5, 3]),
        "seq_negative_uni": lambda: net(x, None, seq([-1, 3])),
        "seq_beyond_T_uni": lambda: net(x, None, seq([6, 3])),
        "seq_negative_bi": lambda: bi(x, (hb, hb), seq([-1, 3])),
        "seq_beyond_T_bi": lambda: bi(x, None, seq([6, 3])),
        "seq_zero_bi": lambda: bi(x, None, seq([0, 3])),
    }
    return {name: capture(fn) for name, fn in cases.items()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for seed, (name, case) in enumerate(CASES.items()):
        np.savez_compressed(OUT / f"case_{name}.npz", **run_case(name, case, seed))
    np.savez_compressed(OUT / "init.npz", **make_init())
    checkpoints = make_checkpoints()
    (OUT / "checkpoints.json").write_text(json.dumps(checkpoints, indent=1, ensure_ascii=False) + "\n")
    errors = make_errors()
    (OUT / "errors.json").write_text(json.dumps(errors, indent=1) + "\n")
    meta = {"mindspore": ms.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}
    (OUT / "versions.json").write_text(json.dumps(meta, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files, {total / 1024:.0f} KiB, to {OUT}")


if __name__ == "__main__":
    main()
