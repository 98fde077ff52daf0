"""Write the torch.nn.LSTM parity fixtures under tests/fixtures/torch/ with real torch 2.13.

Run it with an environment that has ``torch==2.13.0`` (the dev venv has it)::

    .venv/bin/python tools/make_torch_fixtures.py

Each case is one ``<name>.npz`` holding the constructor arguments (``config``, JSON), the inputs (``x``;
``lengths`` for packed runs, whose ``x`` is padded and batch-first or time-major as configured; ``h0``,
``c0`` when given), the parameters (``param/<name>``), the outputs (``out``, padded with zeros for packed
runs; ``h_n``, ``c_n``) and the gradients of

    loss = sum(out * R1) + sum(h_n * R2) + sum(c_n * R3)

(fixed random ``R1``, ``R2``, ``R3`` stored too) with respect to ``x`` (``grad/x``), ``h0``, ``c0`` and every
parameter (``grad/<name>``). ``init_seed<N>.npz`` holds the parameters torch draws after ``manual_seed(N)``.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "torch"
STEPS, BATCH, FEATURES, HIDDEN = 5, 3, 4, 5

CASES: list[dict] = [
    dict(name="l1", num_layers=1),
    dict(name="l2_bidir", num_layers=2, bidirectional=True),
    dict(name="l3", num_layers=3),
    dict(name="l3_bidir_bf", num_layers=3, bidirectional=True, batch_first=True),
    dict(name="l2_nobias", num_layers=2, bias=False),
    dict(name="l1_state", num_layers=1, state=True),
    dict(name="l2_bidir_state_bf", num_layers=2, bidirectional=True, batch_first=True, state=True),
    dict(name="l1_proj", num_layers=1, proj_size=3),
    dict(name="l2_bidir_proj_state", num_layers=2, bidirectional=True, proj_size=2, state=True),
    dict(name="l2_proj_nobias_bf", num_layers=2, proj_size=3, bias=False, batch_first=True),
    dict(name="l2_dropout_eval", num_layers=2, dropout=0.5),
    dict(name="l1_unbatched", num_layers=1, unbatched=True, state=True),
    dict(name="l2_bidir_unbatched_bf", num_layers=2, bidirectional=True, batch_first=True, unbatched=True),
    dict(name="packed_mixed", num_layers=1, lengths=[5, 2, 3]),
    dict(name="packed_ones", num_layers=2, bidirectional=True, lengths=[1, 1, 1]),
    dict(name="packed_full", num_layers=2, lengths=[5, 5, 5], state=True),
    dict(name="packed_mixed_bidir_state_bf", num_layers=2, bidirectional=True, batch_first=True,
         lengths=[2, 5, 1], state=True),
    dict(name="packed_bidir_proj_sorted", num_layers=3, bidirectional=True, proj_size=2, lengths=[5, 3, 1],
         state=True),
    dict(name="packed_nobias_dropout_eval", num_layers=2, bias=False, dropout=0.3, lengths=[4, 1, 5]),
]
CONSTRUCTOR = ("num_layers", "bias", "batch_first", "dropout", "bidirectional", "proj_size")


def make_case(case: dict, dtype: torch.dtype, seed: int) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    kwargs = {key: case[key] for key in CONSTRUCTOR if key in case}
    lstm = torch.nn.LSTM(FEATURES, HIDDEN, dtype=dtype, **kwargs).eval()
    layers = lstm.num_layers * (2 if lstm.bidirectional else 1)
    out_size = lstm.proj_size or HIDDEN
    unbatched = case.get("unbatched", False)
    if unbatched:
        x_shape = (STEPS, FEATURES)
    else:
        x_shape = (BATCH, STEPS, FEATURES) if lstm.batch_first else (STEPS, BATCH, FEATURES)
    x = torch.randn(x_shape, dtype=dtype, requires_grad=True)
    state_shape = (layers,) if unbatched else (layers, BATCH)
    h0 = c0 = None
    if case.get("state"):
        h0 = (0.5 * torch.randn(*state_shape, out_size, dtype=dtype)).requires_grad_()
        c0 = (0.5 * torch.randn(*state_shape, HIDDEN, dtype=dtype)).requires_grad_()
    hx = None if h0 is None else (h0, c0)
    lengths = case.get("lengths")
    if lengths is None:
        out, (h_n, c_n) = lstm(x, hx)
    else:
        packed = pack_padded_sequence(
            x, torch.tensor(lengths), batch_first=lstm.batch_first, enforce_sorted=False
        )
        packed_out, (h_n, c_n) = lstm(packed, hx)
        out, _ = pad_packed_sequence(packed_out, batch_first=lstm.batch_first, total_length=STEPS)
    r1, r2, r3 = (torch.randn(t.shape, dtype=dtype) for t in (out, h_n, c_n))
    loss = (out * r1).sum() + (h_n * r2).sum() + (c_n * r3).sum()
    names = [name for name, _ in lstm.named_parameters()]
    leaves = [x] + ([h0, c0] if h0 is not None else []) + [p for _, p in lstm.named_parameters()]
    grads = torch.autograd.grad(loss, leaves)
    config = dict(kwargs, input_size=FEATURES, hidden_size=HIDDEN, unbatched=unbatched, lengths=lengths,
                  dtype=str(dtype).replace("torch.", ""), parameter_order=names, torch=torch.__version__)
    arrays: dict[str, np.ndarray] = {
        "config": np.array(json.dumps(config)),
        "x": x.detach().numpy(),
        "out": out.detach().numpy(),
        "h_n": h_n.detach().numpy(),
        "c_n": c_n.detach().numpy(),
        "R1": r1.numpy(),
        "R2": r2.numpy(),
        "R3": r3.numpy(),
        "grad/x": grads[0].numpy(),
    }
    if lengths is not None:
        arrays["lengths"] = np.array(lengths, dtype=np.int64)
    rest = list(grads[1:])
    if h0 is not None:
        arrays["h0"], arrays["c0"] = h0.detach().numpy(), c0.detach().numpy()
        arrays["grad/h0"], arrays["grad/c0"] = rest.pop(0).numpy(), rest.pop(0).numpy()
    for name, parameter, grad in zip(names, lstm.parameters(), rest, strict=True):
        arrays[f"param/{name}"] = parameter.detach().numpy()
        arrays[f"grad/{name}"] = grad.numpy()
    return arrays


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.npz"):
        old.unlink()
    seed = 0
    for case in CASES:
        for dtype in (torch.float32, torch.float64):
            seed += 1
            arrays = make_case(case, dtype, seed)
            np.savez_compressed(OUT / f"{case['name']}_{str(dtype)[6:]}.npz", **arrays)
    for seed, kwargs in ((0, dict()), (7, dict(num_layers=2, bidirectional=True, proj_size=3, bias=False))):
        torch.manual_seed(seed)
        lstm = torch.nn.LSTM(FEATURES, HIDDEN, **kwargs)
        arrays = {f"param/{n}": p.detach().numpy() for n, p in lstm.named_parameters()}
        arrays["config"] = np.array(json.dumps(dict(kwargs, seed=seed, torch=torch.__version__)))
        np.savez_compressed(OUT / f"init_seed{seed}.npz", **arrays)
    total = sum(p.stat().st_size for p in OUT.glob("*.npz"))
    print(f"wrote {len(list(OUT.glob('*.npz')))} files, {total / 1024:.0f} KiB, to {OUT}")


if __name__ == "__main__":
    main()
