"""CUDA check of every front door: ``python tools/gpu/cuda_check.py [cuda|cpu]`` from the repo root.

Runs on a machine with a GPU (no test in the suite needs one). Each line compares a layer on the device
with the same layer on the CPU (float64) or with torch.nn.LSTM on the device, on outputs, states and
gradients, and prints the largest difference. Exits 1 when any check fails.
"""

from __future__ import annotations

import pathlib
import sys
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import unilstm  # noqa: E402
from unilstm import keras as uk  # noqa: E402
from unilstm import mindspore as ums  # noqa: E402
from unilstm import torch as ut  # noqa: E402

DEVICE = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
# cuDNN's float32 RNN uses TF32 by default on Ampere and newer (errors near 1e-3 against the CPU): the
# comparisons with CPU results below ask for full float32.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
failures: list[str] = []


def report(name: str, got, want, tolerance: float) -> None:
    got = [g for g in got if g is not None]
    want = [w for w in want if w is not None]
    diff = max(
        float((g.detach().double().cpu() - w.detach().double().cpu()).abs().max())
        for g, w in zip(got, want, strict=False)
    )
    ok = diff <= tolerance and len(got) == len(want)
    print(f"{'PASS' if ok else 'FAIL'}  {name:70s} max diff {diff:.2e} (tolerance {tolerance:.0e})")
    if not ok:
        failures.append(name)


def outputs_and_grads(module: torch.nn.Module, run) -> list[torch.Tensor]:
    module.zero_grad()
    tensors = run()
    loss = sum((t.double() * torch.linspace(-1, 1, t.numel(), device=t.device, dtype=torch.double)
                .view_as(t)).sum() for t in tensors)
    loss.backward()
    return list(tensors) + [p.grad for p in module.parameters()]


def torch_door() -> None:
    configs = [
        dict(input_size=6, hidden_size=8),
        dict(input_size=6, hidden_size=8, num_layers=2, bidirectional=True, proj_size=3, batch_first=True),
        dict(input_size=6, hidden_size=8, num_layers=3, bias=False),
    ]
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        for config in configs:
            torch.manual_seed(0)
            # training mode: cuDNN's backward refuses eval mode (torch.nn.LSTM's too); no dropout is set
            reference = torch.nn.LSTM(**config).to(DEVICE, dtype).train()
            ours = ut.LSTM(**config).to(DEVICE, dtype).train()
            ours.load_state_dict(reference.state_dict())
            ours.flatten_parameters()
            x = torch.randn(7, 4, 6, device=DEVICE, dtype=dtype)  # (T, B, F), or (B, T, F) batch_first
            lengths = torch.tensor([4, 2, 3, 1, 4, 1, 2] if config.get("batch_first") else [7, 2, 5, 1])
            for name, call in (
                ("tensor", lambda m, x=x: m(x)),
                ("packed", lambda m, x=x, lengths=lengths: m(pack_padded_sequence(
                    x, lengths, batch_first=m.batch_first, enforce_sorted=False))),
            ):
                def run(m, call=call):
                    out, (h, c) = call(m)
                    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
                        out = pad_packed_sequence(out, batch_first=m.batch_first)[0]
                    return out, h, c
                with torch.backends.cudnn.flags(enabled=True):
                    want = outputs_and_grads(reference, lambda r=reference, run=run: run(r))
                    got = outputs_and_grads(ours, lambda o=ours, run=run: run(o))
                report(f"torch door {name} {dtype} {config}", got, want, tolerance)


def canonical_flattened() -> None:
    """After .to(cuda) the canonical layer's weights are views into one cuDNN buffer, as torch.nn.LSTM's:
    cuDNN then neither copies them per call nor warns; numbers equal torch.nn.LSTM's."""
    config = dict(input_size=6, hidden_size=8, num_layers=2, bidirectional=True, proj_size=3)
    torch.manual_seed(0)
    reference = torch.nn.LSTM(**config).to(DEVICE).train()
    ours = unilstm.LSTM(**config)
    ours.load_state_dict(reference.state_dict())  # on the CPU: .to() must flatten what it moves
    ours.to(DEVICE).train()
    storages = {p.untyped_storage().data_ptr() for p in ours.parameters()}
    x = torch.randn(7, 4, 6, device=DEVICE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "RNN module weights are not part of single contiguous chunk"
        want = outputs_and_grads(reference, lambda: flat(reference(x)))
        got = outputs_and_grads(ours, lambda: flat(ours(x)))
    expected = 1 if DEVICE.type == "cuda" else len(list(ours.parameters()))  # flattening is for cuDNN only
    report(f"canonical flattened on .to(): {len(storages)} weight storage(s), {expected} expected",
           got, want, 1e-5 if len(storages) == expected else -1.0)


def flat(result):
    output, (h, c) = result
    return output, h, c


def canonical_vs_cpu() -> None:
    cases = [
        ("relu + mask with gaps", dict(activation="relu"), "mask"),
        ("go_backwards + Keras masking", dict(go_backwards=True, masked_output="previous"), "mask"),
        ("2 layers bidirectional proj + lengths incl. 0", dict(num_layers=2, bidirectional=True, proj_size=3),
         "lengths"),
        ("standard + lengths incl. 0", dict(), "lengths"),
        ("hard_sigmoid gates, selu, bidirectional", dict(recurrent_activation="hard_sigmoid",
                                                        activation="selu", bidirectional=True), None),
    ]
    for name, options, extra in cases:
        torch.manual_seed(1)
        cpu = unilstm.LSTM(5, 8, batch_first=True, dtype=torch.float64, **options)
        gpu = unilstm.LSTM(5, 8, batch_first=True, dtype=torch.float64, device=DEVICE, **options)
        gpu.load_state_dict(cpu.state_dict())
        x = torch.randn(3, 9, 5, dtype=torch.float64)
        kwargs_cpu, kwargs_gpu = {}, {}
        if extra == "mask":
            mask = torch.rand(3, 9, generator=torch.Generator().manual_seed(2)) > 0.4
            kwargs_cpu, kwargs_gpu = {"mask": mask}, {"mask": mask.to(DEVICE)}
        elif extra == "lengths":
            lengths = torch.tensor([9, 0, 4])
            kwargs_cpu, kwargs_gpu = {"lengths": lengths}, {"lengths": lengths.to(DEVICE)}
        want = outputs_and_grads(cpu, lambda m=cpu, x=x, k=kwargs_cpu: flat(m(x, **k)))
        x_device = x.to(DEVICE)
        got = outputs_and_grads(gpu, lambda m=gpu, x=x_device, k=kwargs_gpu: flat(m(x, **k)))
        report(f"canonical {name}", got, want, 1e-10)


def mindspore_door() -> None:
    for dtype, tolerance in (("float32", 1e-5), ("float16", 5e-3)):
        np.random.seed(0)
        cpu = ums.LSTM(6, 8, 2, batch_first=True, bidirectional=True, dtype=dtype)
        np.random.seed(0)
        gpu = ums.LSTM(6, 8, 2, batch_first=True, bidirectional=True, dtype=dtype).to(DEVICE)
        x = np.random.randn(3, 5, 6).astype(dtype)
        seq_length = np.array([5, 0, 3], dtype=np.int32)
        want = cpu(x.astype(np.float32) if dtype == "float16" else x, None, seq_length)
        got = gpu(x, None, seq_length)  # numpy in, runs on the layer's device
        report(f"MindSpore door {dtype}, seq_length with 0, numpy inputs",
               [got[0], *got[1]], [want[0], *want[1]], tolerance)


def keras_door() -> None:
    torch.manual_seed(3)
    layer = uk.Bidirectional(uk.LSTM(8, return_sequences=True, return_state=True), merge_mode="sum")
    x = np.random.RandomState(0).randn(3, 6, 5).astype(np.float32)
    mask = np.array([[1, 1, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1]], dtype=bool)
    want = layer(x, mask=mask)
    layer.to(DEVICE)
    got = layer(x, mask=mask)
    report("Keras door Bidirectional(sum), mask with gaps", list(got), list(want), 1e-5)
    standard = uk.LSTM(8, return_sequences=True, return_state=True)  # cuDNN on the Keras-layout kernels
    want = standard(x)
    standard.to(DEVICE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cuDNN's "not part of single contiguous chunk": silenced (fused.py)
        got = standard(x)
    report("Keras door standard spec through cuDNN, no warning", list(got), list(want), 1e-5)
    dropout = uk.LSTM(8, recurrent_dropout=0.3, dropout=0.2, seed=7, return_sequences=True)
    dropout.build((None, None, 5))
    dropout.to(DEVICE).train()
    first, second = dropout(x), dropout(x)
    print(f"PASS  Keras door recurrent dropout trains on {DEVICE}: output {tuple(first.shape)}, "
          f"two draws differ: {bool((first != second).any())}")


def autocast_and_compile() -> None:
    layer = unilstm.LSTM(6, 8, num_layers=2, device=DEVICE)
    x = torch.randn(5, 3, 6, device=DEVICE)
    dtype = torch.float16 if DEVICE.type == "cuda" else torch.bfloat16
    with torch.autocast(DEVICE.type, dtype=dtype):
        out, _ = layer(x.to(dtype))
    want, _ = layer(x)
    report(f"canonical under autocast {dtype}", [out], [want], 2e-2)
    compiled = torch.compile(lambda t: layer(t)[0])
    report("canonical inside torch.compile", [compiled(x)], [want], 1e-6)


def main() -> int:
    print(f"device {DEVICE}: {torch.cuda.get_device_name() if DEVICE.type == 'cuda' else 'cpu'}, "
          f"torch {torch.__version__}")
    for check in (torch_door, canonical_flattened, canonical_vs_cpu, mindspore_door, keras_door,
                  autocast_and_compile):
        try:
            check()
        except Exception as error:  # a crash is a failure to report, not a reason to skip the rest
            print(f"FAIL  {check.__name__} raised {type(error).__name__}: {error}")
            failures.append(check.__name__)
    print(f"{len(failures)} failed: {failures}" if failures else "all CUDA checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
