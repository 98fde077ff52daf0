"""A short tour of unilstm: ``python -m unilstm.demo`` (or ``make demo``).

Each section prints what it does and the numbers that prove it, so the output reads on its own.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

import unilstm
from unilstm import cli
from unilstm import keras as uk
from unilstm import mindspore as ms
from unilstm import torch as ut
from unilstm.formats.layout import torch_from_keras


def _section(title: str) -> None:
    print()
    print(title)
    print("-" * len(title))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def mindspore_and_torch(workdir: str) -> None:
    _section("1. MindSpore's documented example, in PyTorch, without MindSpore")
    print("net = unilstm.mindspore.LSTM(10, 16, 1, has_bias=True, batch_first=True, bidirectional=False)")
    np.random.seed(0)  # MindSpore draws its initial weights from numpy's global RNG: same seed, same weights
    net = ms.LSTM(10, 16, 1, has_bias=True, batch_first=True, bidirectional=False)
    x = np.ones([3, 5, 10], dtype=np.float32)
    h0 = np.zeros([1, 3, 16], dtype=np.float32)
    c0 = np.zeros([1, 3, 16], dtype=np.float32)
    output, (hn, cn) = net(x, (torch.from_numpy(h0), torch.from_numpy(c0)))
    print(f"output: {tuple(output.shape)}   h_n: {tuple(hn.shape)}   c_n: {tuple(cn.shape)}")
    print(f"h_n squeezed: {tuple(hn.squeeze(0).shape)}")
    print("(MindSpore's docs: (3, 5, 16), (1, 3, 16), (1, 3, 16))")
    print(f"h_n equals the last output step: {bool(torch.equal(hn[0], output[:, -1]))}")

    _section("2. The same weights through the torch.nn.LSTM front door")
    tnet = ut.LSTM(10, 16, 1, bias=True, batch_first=True)
    tnet.load_state_dict(net.state_dict())  # torch's parameter names are MindSpore's names
    reference = torch.nn.LSTM(10, 16, 1, bias=True, batch_first=True)
    reference.load_state_dict(net.state_dict())
    t_out, (t_h, t_c) = tnet(torch.from_numpy(x))
    r_out, _ = reference(torch.from_numpy(x))
    print(f"unilstm.torch vs unilstm.mindspore, max |difference| of outputs: {_max_diff(t_out, output):.3g}")
    print(f"unilstm.torch vs the real torch.nn.LSTM:                      {_max_diff(t_out, r_out):.3g}")

    _section("3. A MindSpore checkpoint, written and read back (protobuf, no MindSpore needed)")
    path = os.path.join(workdir, "lstm.ckpt")
    ms.save_checkpoint(net, path, append_dict={"epoch": 3, "note": "demo"})
    params = ms.load_checkpoint(path)
    print(f"wrote {os.path.basename(path)} ({os.path.getsize(path)} bytes): {sorted(params)}")
    fresh = ms.LSTM(10, 16, 1, has_bias=True, batch_first=True)
    not_loaded, unused = ms.load_param_into_net(fresh, params)
    f_out, _ = fresh(x)
    print(f"params not loaded: {not_loaded}; checkpoint entries not used: {unused}")
    print(f"outputs after reloading, max |difference|: {_max_diff(f_out, output):.3g}")

    _section("4. Variable lengths, MindSpore's seq_length (packed semantics)")
    lengths = torch.tensor([5, 2, 0], dtype=torch.int32)
    v_out, (v_h, _) = net(x, None, lengths)
    print(f"seq_length={lengths.tolist()}: outputs past each length are zero: "
          f"{bool((v_out[1, 2:] == 0).all() and (v_out[2] == 0).all())}; "
          f"h_n of the length-2 row is its step-2 output: {bool(torch.equal(v_h[0, 1], v_out[1, 1]))}; "
          f"a length-0 row returns h0: {bool((v_h[0, 2] == 0).all())}")


def keras_to_mindspore(workdir: str) -> None:
    _section("6. Keras's documented example, and its weights moved to the MindSpore front door")
    print("lstm = unilstm.keras.LSTM(16, return_sequences=True, return_state=True)")
    torch.manual_seed(0)
    lstm = uk.LSTM(16, return_sequences=True, return_state=True)
    inputs = np.ones((3, 5, 10), dtype=np.float32)
    whole_seq_output, final_memory_state, final_carry_state = lstm(inputs)
    print(f"whole_seq_output {tuple(whole_seq_output.shape)}, final_memory_state "
          f"{tuple(final_memory_state.shape)}, final_carry_state {tuple(final_carry_state.shape)}")
    print("(Keras's docs: (3, 5, 16), (3, 16), (3, 16))")
    kernel, recurrent_kernel, bias = lstm.get_weights()  # Keras layout
    print(f"kernel {kernel.shape}, recurrent_kernel {recurrent_kernel.shape}, bias {bias.shape}")
    net = ms.LSTM(10, 16, 1, has_bias=True, batch_first=True)
    converted = torch_from_keras(kernel, recurrent_kernel, bias)
    net.load_state_dict({f"{name}_l0": torch.from_numpy(value) for name, value in converted.items()})
    output, (hn, cn) = net(inputs)
    print(f"MindSpore door on the Keras weights, max |difference|: output "
          f"{_max_diff(output, whole_seq_output):.3g}, h {_max_diff(hn[0], final_memory_state):.3g}, "
          f"c {_max_diff(cn[0], final_carry_state):.3g}")

    path = os.path.join(workdir, "model.keras")
    uk.save_model([lstm], path, input_shape=(None, 10))
    (reloaded,) = uk.load_layers(path)
    again, _, _ = reloaded(inputs)
    print(f"saved as {os.path.basename(path)} (real Keras 3 opens it) and loaded back: max |difference| "
          f"{_max_diff(again, whole_seq_output):.3g}")


def canonical_union() -> None:
    _section("5. The canonical unilstm.LSTM: what no single framework offers, combined")
    print("unilstm.LSTM(8, 32, num_layers=2, bidirectional=True, proj_size=16, activation='relu',")
    print("             recurrent_dropout=0.25, input_dropout=0.1)  + a mask with gaps")
    torch.manual_seed(0)
    layer = unilstm.LSTM(
        8, 32, num_layers=2, bidirectional=True, proj_size=16, activation="relu",
        recurrent_dropout=0.25, input_dropout=0.1, batch_first=True,
    )
    x = torch.randn(4, 12, 8)
    mask = torch.rand(4, 12) > 0.3
    layer.train()
    out, (h, c) = layer(x, mask=mask, generator=torch.Generator().manual_seed(1))
    out.sum().backward()
    gradient = layer.get_parameter("weight_hr_l1_reverse").grad
    assert gradient is not None  # backward() above reached every parameter
    print(f"output {tuple(out.shape)}, h_n {tuple(h.shape)}, c_n {tuple(c.shape)}; "
          f"gradient on weight_hr_l1_reverse: {tuple(gradient.shape)}")


def convert_files(workdir: str) -> None:
    _section("7. One command: a Keras model to a MindSpore checkpoint and to ONNX, verified")

    torch.manual_seed(0)
    stack = [uk.LSTM(16, return_sequences=True), uk.LSTM(16, return_sequences=True)]
    keras_path = os.path.join(workdir, "stack.keras")
    uk.save_model(stack, keras_path, input_shape=(None, 10))  # builds the layers, as a Sequential would
    for target in ("stack.ckpt", "stack.onnx"):
        print(f"$ unilstm convert stack.keras {target} --prefix encoder.")
        code = cli.main(["convert", keras_path, os.path.join(workdir, target), "--prefix", "encoder."])
        print(f"exit code {code}")


def main() -> None:
    print(f"unilstm {unilstm.__version__} on torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as workdir:
        mindspore_and_torch(workdir)
        canonical_union()
        keras_to_mindspore(workdir)
        convert_files(workdir)
    print()
    print("Done. README.md covers every option, file conversion (unilstm convert) and the benchmarks.")


if __name__ == "__main__":
    main()
