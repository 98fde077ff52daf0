"""Training at scale: DistributedDataParallel on two CPU processes (gloo) gets the gradients of one
process on the whole batch."""

from __future__ import annotations

import faulthandler
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import unilstm

SPECS = {
    "fast": dict(activation="relu", bidirectional=True, masked_output="previous"),
    "fused": dict(num_layers=2),
    # one direction: on two threads the one-process reference splits its 32 sequences in halves
    "halves": dict(activation="relu", masked_output="previous"),
}


def _data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 32, 5, generator=gen, dtype=torch.float64)  # (T, N, F)
    mask = torch.rand(32, 7, generator=gen) > 0.25  # (N, T), with gaps
    target = torch.randn(7, 32, generator=gen, dtype=torch.float64)
    return x, mask, target


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(123)
    return unilstm.LSTM(5, 6, **SPECS[kind]).double()


def _loss(model, x, mask, target):
    out, _ = model(x, mask=mask)
    return ((out.sum(-1) - target) ** 2).mean()


def _worker(rank: int, world: int, kind: str, out_dir: str) -> None:
    faulthandler.dump_traceback_later(120, exit=True)  # a hung worker reports where, then exits
    torch.set_num_threads(1)
    # A file rendezvous: no port to race for with other processes on the machine.
    store = "file://" + os.path.join(out_dir, "rendezvous")
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    try:
        model = torch.nn.parallel.DistributedDataParallel(_model(kind))
        x, mask, target = _data()
        share = x.shape[1] // world
        rows = slice(rank * share, (rank + 1) * share)
        loss = _loss(model, x[:, rows], mask[rows], target[:, rows])
        loss.backward()
        grads = {name: p.grad.detach().clone() for name, p in model.module.named_parameters()}
        torch.save(grads, os.path.join(out_dir, f"grads_{rank}.pt"))
        # tear down together: a DDP object outliving its peer's process group can hang in gloo
        del model, loss
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
@pytest.mark.parametrize("kind", sorted(SPECS))
def test_ddp_two_cpu_processes_match_one_process(kind, tmp_path):
    mp.spawn(_worker, args=(2, kind, str(tmp_path)), nprocs=2, join=True)
    model = _model(kind)
    x, mask, target = _data()
    _loss(model, x, mask, target).backward()
    for rank in range(2):
        grads = torch.load(tmp_path / f"grads_{rank}.pt")
        for name, p in model.named_parameters():
            torch.testing.assert_close(grads[name], p.grad, atol=1e-12, rtol=1e-10, msg=name)
