# ruff: noqa: N803, N806, E741  (T, B, I, H: the shape names used throughout)
"""Side-by-side speed and memory benchmark: unilstm against torch.nn.LSTM, Keras 3 and MindSpore.

    python -m unilstm.bench                       # the full suite (minutes on a 2-core CPU)
    python -m unilstm.bench --quick               # tiny shapes, seconds: checks that the suite runs
    python -m unilstm.bench --tf-python .refenv/tf/bin/python --ms-python .refenv/ms/bin/python

What is measured (float32, CPU unless ``--device``):

* ``fw``: forward under ``torch.no_grad()``; ``fw+bw``: forward, ``out.sum().backward()``. Medians over
  ``--repeats`` runs after one warm-up run; unilstm and its torch.nn.LSTM baseline alternate run by run, so
  that both see the same machine load.
* the baseline of every row is torch.nn.LSTM computing the *standard* spec of the same shape (same
  bidirectional / proj_size, no mask); for the "lengths" row torch runs a PackedSequence.
* memory: the bytes of the tensors autograd keeps for backward (``saved_tensors_hooks``, each storage
  counted once, parameters and the input left out: they exist anyway), for unilstm and torch. Process
  peak RSS is not used: in one process it only grows, and torch's CPU allocator returns memory to the OS
  unevenly.
* Keras 3 (on TensorFlow) and MindSpore run in their own interpreters (``--tf-python``, ``--ms-python``, or
  the ``UNILSTM_TF_PYTHON`` / ``UNILSTM_MS_PYTHON`` variables; skipped when absent) on the same shapes and
  features: Keras's layer call inside ``tf.function``, forward and GradientTape gradients of the weights;
  MindSpore ``nn.LSTM`` (standard spec only) with ``value_and_grad``.
* streaming: batch 1, one step per call with the state carried, median latency per call.

Writes ``results.md`` (Markdown tables), ``results.json`` and, when matplotlib is installed, ``chart.png``
to ``--out`` (default ``benchmarks/out``). Every report records the CPU model and the BLAS torch was built
with (``cpu``, ``blas``): they set the GEMM speed every row depends on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import LSTM
from .kernels import dispatch

FULL_SHAPES = [(100, 64, 512, 512), (50, 32, 64, 128), (1000, 16, 256, 256), (100, 1, 512, 512)]
QUICK_SHAPES = [(6, 3, 5, 8)]
SPEC_NAMES = [
    "standard", "lengths", "relu", "recurrent_dropout", "mask_gaps", "go_backwards_mask", "bidir_proj_mask",
]


@dataclass
class Case:
    """One benchmark row: a shape and a named spec."""

    shape: tuple[int, int, int, int]
    spec: str
    unilstm: dict = field(default_factory=dict)
    torch_kwargs: dict = field(default_factory=dict)
    keras: dict | None = None
    mindspore: bool = False
    mask: str | None = None  # None | "gaps" | "right"
    lengths: bool = False
    training: bool = False


def make_cases(shapes: list[tuple[int, int, int, int]], specs: list[str]) -> list[Case]:
    cases = []
    for shape in shapes:
        H = shape[3]
        table = {
            "standard": Case(shape, "standard", keras={}, mindspore=True),
            "lengths": Case(shape, "lengths", lengths=True, keras=None),
            "relu": Case(shape, "relu", unilstm=dict(activation="relu"), keras=dict(activation="relu")),
            "recurrent_dropout": Case(
                shape, "recurrent_dropout", unilstm=dict(recurrent_dropout=0.2), training=True,
                keras=dict(recurrent_dropout=0.2),
            ),
            "mask_gaps": Case(
                shape, "mask_gaps", unilstm=dict(masked_output="previous"), mask="gaps", keras={}
            ),
            "go_backwards_mask": Case(
                shape, "go_backwards_mask", unilstm=dict(go_backwards=True, masked_output="previous"),
                mask="right", keras=dict(go_backwards=True),
            ),
            "bidir_proj_mask": Case(
                shape, "bidir_proj_mask",
                unilstm=dict(bidirectional=True, proj_size=max(1, H // 2), masked_output="previous"),
                torch_kwargs=dict(bidirectional=True, proj_size=max(1, H // 2)),
                mask="gaps", keras=dict(bidirectional=True),
            ),
        }
        cases += [table[name] for name in specs]
    return cases


def make_mask(kind: str | None, T: int, B: int, seed: int = 0) -> torch.Tensor | None:
    """(B, T) bool, True where a step counts: random gaps (15% masked), or right padding."""
    if kind is None:
        return None
    if kind == "gaps":
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(B, T, generator=gen) > 0.15
    return right_padded_mask(T, B, seed)


def right_padded_mask(T: int, B: int, seed: int = 0) -> torch.Tensor:
    """(B, T) bool: random lengths from T // 2 to T, the first sequence full length."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=gen)
    lengths[0] = T
    return torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)


def saved_bytes(fn: Callable[[], torch.Tensor], live: Sequence[torch.Tensor] = ()) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn`` runs (each storage once), leaving out
    the storages of ``live`` (parameters and inputs: saving them costs no memory, they exist anyway)."""
    seen: dict[int, int] = {}
    skip = {t.untyped_storage().data_ptr() for t in live}

    def pack(t: torch.Tensor):
        try:
            storage = t.untyped_storage()
            if storage.data_ptr() in skip:
                return t
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        except (RuntimeError, NotImplementedError):  # opaque (mkldnn) tensors
            seen[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def run_torch_case(case: Case, repeats: int, device: str) -> dict:
    T, B, I, H = case.shape
    torch.manual_seed(0)
    x = torch.randn(T, B, I, device=device)
    mask = make_mask(case.mask, T, B)
    lengths = None
    if case.lengths:
        lengths = right_padded_mask(T, B).sum(dim=1)
    ref = torch.nn.LSTM(I, H, **case.torch_kwargs).to(device)
    uni = LSTM(I, H, **case.unilstm).to(device)
    uni.load_state_dict(ref.state_dict())
    # train mode like the torch baseline (cuDNN refuses backward in eval mode); no spec here has dropout
    # outside its "training" cases
    uni.train(True)
    ref.train(True)
    mask_d = None if mask is None else mask.to(device)
    lengths_d = None if lengths is None else lengths.to(device)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def uni_forward():
        return uni(x, lengths=lengths_d, mask=mask_d)[0]

    def torch_forward():
        if lengths is None:
            return ref(x)[0]
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        return torch.nn.utils.rnn.pad_packed_sequence(ref(packed)[0], total_length=T)[0]

    def fw(f):
        def run():
            with torch.no_grad():
                f()
            sync()
        return run

    def fb(f):
        def run():
            f().sum().backward()
            sync()
        return run

    result: dict[str, object] = {"shape": list(case.shape), "spec": case.spec}
    result["fw"] = interleaved_medians({"unilstm": fw(uni_forward), "torch": fw(torch_forward)}, repeats)
    result["fw+bw"] = interleaved_medians({"unilstm": fb(uni_forward), "torch": fb(torch_forward)}, repeats)
    result["saved_bytes"] = {
        "unilstm": saved_bytes(uni_forward, [x, *uni.parameters()]),
        "torch": saved_bytes(torch_forward, [x, *ref.parameters()]),
    }
    return result


def run_streaming(hidden: int, input_size: int, steps: int, repeats: int, activation: str) -> dict:
    torch.manual_seed(0)
    ref = torch.nn.LSTM(input_size, hidden)
    uni = LSTM(input_size, hidden, activation=activation)
    uni.load_state_dict(ref.state_dict())
    xs = torch.randn(steps, 1, 1, input_size)

    def stream(layer):
        def run():
            state = None
            with torch.no_grad():
                for t in range(steps):
                    _, state = layer(xs[t], state)
        return run

    med = interleaved_medians({"unilstm": stream(uni), "torch": stream(ref)}, repeats)
    return {
        "shape": [1, 1, input_size, hidden], "spec": f"streaming_{activation}",
        "latency": {k: v / steps for k, v in med.items()},
    }


# ------------------------------------------------------------------------------------------------------
# Peers in their own interpreters
# ------------------------------------------------------------------------------------------------------

# A peer script measures cases given in a JSON file (``script cfg.json``: all at once, one RESULT line) or,
# with ``--serve``, one request per stdin line ({"case": ..., "repeats": n}), answering each with a RESULT
# line, so that bench can alternate peer and unilstm measurements of the same case (``--alternate``).
PEER_MAIN = r'''
def main():
    if sys.argv[1] == "--serve":
        print("READY " + json.dumps({"version": VERSION}), flush=True)
        for line in sys.stdin:
            request = json.loads(line)
            print("RESULT " + json.dumps(measure(request["case"], request["repeats"])), flush=True)
        return
    cfg = json.load(open(sys.argv[1]))
    results = []
    for case in cfg["cases"]:
        results.append(measure(case, cfg["repeats"]))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print("RESULT " + json.dumps({"version": VERSION, "results": results}))


main()
'''

KERAS_SCRIPT = r'''
import json, os, statistics, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf
import keras
VERSION = "keras " + keras.__version__ + ", tensorflow " + tf.__version__
built = {}


def build(case):
    T, B, I, H = case["shape"]
    kw = dict(case["keras"])
    bidirectional = kw.pop("bidirectional", False)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((B, T, I)).astype("float32"))
    mask = None
    if case["mask"] == "gaps":
        mask = tf.constant(rng.random((B, T)) > 0.15)
    elif case["mask"] == "right":
        lengths = rng.integers(T // 2, T + 1, B); lengths[0] = T
        mask = tf.constant(np.arange(T)[None, :] < lengths[:, None])
    layer = keras.layers.LSTM(H, return_sequences=True, **kw)
    if bidirectional:
        layer = keras.layers.Bidirectional(layer)
    training = case["training"]
    layer(x, mask=mask, training=training)
    @tf.function
    def fw(x, mask):
        return layer(x, mask=mask, training=training)
    @tf.function
    def fb(x, mask):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, mask=mask, training=training))
        return tape.gradient(loss, layer.trainable_weights)
    return fw, fb, x, mask


def measure(case, repeats):
    key = json.dumps(case, sort_keys=True)
    if key not in built:
        built[key] = build(case)
    fw, fb, x, mask = built[key]
    out = {}
    for name, f in (("fw", fw), ("fw+bw", fb)):
        r = f(x, mask); tf.nest.map_structure(lambda t: t.numpy(), r)
        ts = []
        for _ in range(repeats):
            s = time.perf_counter(); r = f(x, mask); tf.nest.map_structure(lambda t: t.numpy(), r)
            ts.append(time.perf_counter() - s)
        out[name] = statistics.median(ts)
    return {"shape": case["shape"], "spec": case["spec"], **out}
''' + PEER_MAIN

MINDSPORE_SCRIPT = r'''
import json, statistics, sys, time
import numpy as np
import mindspore as ms
from mindspore import nn
VERSION = "mindspore " + ms.__version__


def measure(case, repeats):
    T, B, I, H = case["shape"]
    net = nn.LSTM(I, H, batch_first=False)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32))
    def fw():
        return net(x)[0].asnumpy()
    def loss(x):
        return net(x)[0].sum()
    grad = ms.value_and_grad(loss, None, net.trainable_params())
    def fb():
        value, grads = grad(x)
        return [g.asnumpy() for g in grads]
    out = {}
    for name, f in (("fw", fw), ("fw+bw", fb)):
        f()
        ts = []
        for _ in range(repeats):
            s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
        out[name] = statistics.median(ts)
    return {"shape": case["shape"], "spec": case["spec"], **out}
''' + PEER_MAIN


def peer_case(case: Case) -> dict:
    return {"shape": list(case.shape), "spec": case.spec, "keras": case.keras, "mask": case.mask,
            "training": case.training}


class PeerWorker:
    """A peer script in ``--serve`` mode: one process, its framework imported once, measuring cases on
    request while this process waits (and idle while this process measures)."""

    def __init__(self, python: str, script: str, timeout: float) -> None:
        self.timeout = timeout
        self._dir = tempfile.TemporaryDirectory()
        source = Path(self._dir.name, "peer.py")
        source.write_text(script)
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
        self.process = subprocess.Popen(
            [python, str(source), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env=env,
        )
        self.version = json.loads(self._answer("READY "))["version"]

    def _answer(self, prefix: str) -> str:
        deadline = time.monotonic() + self.timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"peer exited with {self.process.wait()}")
            if line.startswith(prefix):
                return line[len(prefix):]
        raise TimeoutError(f"peer gave no {prefix.strip()} line within {self.timeout} s")

    def measure(self, case: Case, repeats: int) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"case": peer_case(case), "repeats": repeats}) + "\n")
        self.process.stdin.flush()
        return json.loads(self._answer("RESULT "))

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._dir.cleanup()


def run_peer(python: str, script: str, cases: list[Case], repeats: int, timeout: float) -> dict | None:
    payload = {"repeats": repeats, "cases": [peer_case(c) for c in cases]}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp, "cfg.json")
        cfg.write_text(json.dumps(payload))
        src = Path(tmp, "peer.py")
        src.write_text(script)
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
        try:
            proc = subprocess.run(
                [python, str(src), str(cfg)], capture_output=True, text=True, timeout=timeout, env=env
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"bench: peer {python} failed: {exc}", file=sys.stderr)
            return None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = proc.stderr[-2000:]
    print(f"bench: peer {python} gave no result (exit {proc.returncode}):\n{tail}", file=sys.stderr)
    return None


# ------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; elsewhere what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_description() -> str:
    """The BLAS and LAPACK torch was built with, and whether its oneDNN (mkldnn) kernels are on."""
    config = torch.__config__.show()
    built = dict(re.findall(r"\b(BLAS_INFO|LAPACK_INFO)=([^,\s]+)", config))
    libraries = [
        line.strip(" -") for line in config.splitlines()
        if any(name in line for name in ("Math Kernel Library", "MKL-DNN", "oneDNN", "OpenBLAS"))
    ]
    mkldnn = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    text = (
        f"BLAS {built.get('BLAS_INFO', 'unknown')}, LAPACK {built.get('LAPACK_INFO', 'unknown')}, "
        f"oneDNN {'on' if mkldnn else 'off'}"
    )
    return f"{text} ({'; '.join(libraries)})" if libraries else text


def machine_description() -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds:.1f} s"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def render_markdown(report: dict) -> str:
    lines = [
        "# unilstm benchmark",
        "",
        f"Machine: {report['machine']}",
        "",
        *([f"BLAS: {report['blas']}", ""] if "blas" in report else []),
        f"Peers: {', '.join(report['peers']) or 'none found'}. Repeats: {report['repeats']} (median). "
        "Times in ms; ratio = unilstm / torch.nn.LSTM (standard spec of the same shape, measured alternately "
        "in the same process); x Keras = Keras time / unilstm time." + (
            f" Each case ran in {report['rounds']} rounds, unilstm and torch alternating with the peers "
            "(each peer one process answering requests): medians of the rounds' medians."
            if report.get("rounds", 1) > 1 else ""
        ),
        "",
        "| shape (T, B, in, H) | spec | mode | unilstm | torch.nn.LSTM | ratio | Keras 3 | x Keras "
        "| MindSpore | saved MB unilstm / torch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    peers = report.get("peer_results", {})

    def peer_time(peer: str, shape, spec, mode):
        for r in peers.get(peer, []):
            if tuple(r["shape"]) == tuple(shape) and r["spec"] == spec:
                return r.get(mode)
        return None

    for r in report["results"]:
        if "latency" in r:
            continue
        mem = r["saved_bytes"]
        for mode in ("fw", "fw+bw"):
            u, t = r[mode]["unilstm"], r[mode]["torch"]
            k = peer_time("keras", r["shape"], r["spec"], mode)
            m = peer_time("mindspore", r["shape"], r["spec"], mode)
            mem_text = f"{mem['unilstm'] / 2**20:.1f} / {mem['torch'] / 2**20:.1f}" if mode == "fw+bw" else ""
            lines.append(
                f"| {tuple(r['shape'])} | {r['spec']} | {mode} | {_ms(u)} | {_ms(t)} | {_ratio(u, t)} "
                f"| {_ms(k)} "
                f"| {_ratio(k, u)} | {_ms(m)} | {mem_text} |"
            )
    streaming = [r for r in report["results"] if "latency" in r]
    if streaming:
        lines += [
            "",
            "Streaming inference (batch 1, one step per call, state carried): latency per call in µs.",
            "",
            "| (in, H) | spec | unilstm | torch.nn.LSTM (standard) | ratio |",
            "|---|---|---|---|---|",
        ]
        for r in streaming:
            u, t = r["latency"]["unilstm"], r["latency"]["torch"]
            lines.append(
                f"| ({r['shape'][2]}, {r['shape'][3]}) | {r['spec']} | {u * 1e6:.0f} | {t * 1e6:.0f} "
                f"| {_ratio(u, t)} |"
            )
    lines.append("")
    return "\n".join(lines)


def write_chart(report: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in report["results"] if "fw+bw" in r]
    labels = [f"{r['spec']}\n{tuple(r['shape'])}" for r in rows]
    ratios = [r["fw+bw"]["unilstm"] / r["fw+bw"]["torch"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows)), 4.5))
    ax.bar(range(len(rows)), ratios, color=["tab:blue" if v <= 1.3 else "tab:red" for v in ratios])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(1.3, color="gray", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, rotation=90, fontsize=6)
    ax.set_ylabel("fw+bw time / torch.nn.LSTM standard")
    ax.set_title("unilstm vs torch.nn.LSTM (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"a shape is T,B,in,H, got {text!r}")
    return parts  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unilstm bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats: checks that the suite runs")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out"), help="folder for results.md/json/png")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (median)")
    p.add_argument("--shape", type=parse_shape, action="append", help="T,B,in,H (repeatable)")
    p.add_argument("--spec", choices=SPEC_NAMES, action="append", help="spec names (repeatable)")
    p.add_argument("--tf-python", default=os.environ.get("UNILSTM_TF_PYTHON"), help="python with Keras 3")
    p.add_argument("--ms-python", default=os.environ.get("UNILSTM_MS_PYTHON"), help="python with MindSpore")
    p.add_argument("--no-peers", action="store_true", help="skip Keras and MindSpore")
    p.add_argument(
        "--reuse-peers", type=Path, default=None,
        help="peers this run does not measure (no --tf-python/--ms-python) come from an earlier results.json",
    )
    p.add_argument("--no-streaming", action="store_true")
    p.add_argument("--peer-timeout", type=float, default=1800.0)
    p.add_argument(
        "--alternate", type=int, default=1, metavar="ROUNDS",
        help="measure each case ROUNDS times, unilstm and torch alternating with Keras and MindSpore (each "
             "a process serving requests), and report the median of the rounds' medians; 1 (default): the "
             "peers run after all unilstm rows",
    )
    p.add_argument("--device", default="cpu")
    return p


def start_peer_workers(args: argparse.Namespace) -> dict[str, PeerWorker]:
    """Keras and MindSpore serving processes, for those whose interpreter is given and starts."""
    workers: dict[str, PeerWorker] = {}
    if args.no_peers or args.device != "cpu":
        return workers
    for name, python, script in (("keras", args.tf_python, KERAS_SCRIPT),
                                 ("mindspore", args.ms_python, MINDSPORE_SCRIPT)):
        if python and Path(python).exists():
            try:
                workers[name] = PeerWorker(python, script, args.peer_timeout)
            except (OSError, RuntimeError, TimeoutError) as exc:
                print(f"bench: peer {python} failed to start: {exc}", file=sys.stderr)
    return workers


def median_of_rounds(rounds: list[dict]) -> dict:
    """One result from several rounds of the same case: the median of each time, the rest from the first."""
    combined = dict(rounds[0])
    for mode in ("fw", "fw+bw"):
        first = rounds[0][mode]
        if isinstance(first, dict):
            combined[mode] = {k: statistics.median(r[mode][k] for r in rounds) for k in first}
        else:
            combined[mode] = statistics.median(r[mode] for r in rounds)
    return combined


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    shapes = args.shape or (QUICK_SHAPES if args.quick else FULL_SHAPES)
    specs = args.spec or SPEC_NAMES
    repeats = args.repeats or (2 if args.quick else 5)
    cases = make_cases(shapes, specs)
    dispatch.force_kernel(None)
    report: dict = {"machine": machine_description(), "cpu": cpu_model(), "blas": blas_description(),
                    "repeats": repeats, "results": [], "peers": [], "rounds": max(1, args.alternate)}
    report["peer_results"] = {}
    peer_reps = max(2, min(repeats, 3))
    workers = start_peer_workers(args) if args.alternate > 1 else {}
    try:
        for case in cases:
            # big shapes: fewer repeats keep the suite within minutes on 2 cores
            T, B, I, H = case.shape
            reps = repeats if T * B * H * (I + H) < 2e9 else max(3, repeats // 2)
            rounds: list[dict] = []
            peer_rounds: dict[str, list[dict]] = {name: [] for name in workers}
            for _ in range(report["rounds"]):
                rounds.append(run_torch_case(case, reps, args.device))
                peer_has_case = {"keras": case.keras is not None, "mindspore": case.mindspore}
                for name, worker in workers.items():
                    if peer_has_case[name]:
                        peer_rounds[name].append(worker.measure(case, peer_reps))
            result = median_of_rounds(rounds)
            report["results"].append(result)
            for name, measured in peer_rounds.items():
                if measured:
                    report["peer_results"].setdefault(name, []).append(median_of_rounds(measured))
            fb = result["fw+bw"]
            print(
                f"{case.spec:>18} {str(case.shape):>22}  fw+bw unilstm {fb['unilstm'] * 1e3:9.1f} ms  "
                f"torch {fb['torch'] * 1e3:9.1f} ms  ratio {fb['unilstm'] / fb['torch']:.2f}",
                flush=True,
            )
    finally:
        for worker in workers.values():
            worker.close()
    report["peers"] += [worker.version for worker in workers.values()]
    if not args.no_streaming:
        sizes = [(8, 16)] if args.quick else [(64, 128), (32, 64), (512, 512)]
        for input_size, hidden in sizes:
            for activation in ("tanh", "relu"):
                r = run_streaming(hidden, input_size, 20 if args.quick else 200, repeats, activation)
                report["results"].append(r)
                print(f"streaming {activation} (in={input_size}, H={hidden}): "
                      f"{ {k: round(v * 1e6, 1) for k, v in r['latency'].items()} } µs/step", flush=True)
    if not args.no_peers and args.device == "cpu":
        if args.tf_python and Path(args.tf_python).exists() and "keras" not in workers:
            keras_cases = [c for c in cases if c.keras is not None]
            got = run_peer(args.tf_python, KERAS_SCRIPT, keras_cases, peer_reps, args.peer_timeout)
            if got:
                report["peers"].append(got["version"])
                report["peer_results"]["keras"] = got["results"]
        if args.ms_python and Path(args.ms_python).exists() and "mindspore" not in workers:
            ms_cases = [c for c in cases if c.mindspore]
            got = run_peer(args.ms_python, MINDSPORE_SCRIPT, ms_cases, peer_reps, args.peer_timeout)
            if got:
                report["peers"].append(got["version"])
                report["peer_results"]["mindspore"] = got["results"]
    if args.reuse_peers is not None:
        # peers this run did not measure (their environment is absent) come from the earlier file, labelled
        earlier = json.loads(args.reuse_peers.read_text())
        for name, results in earlier.get("peer_results", {}).items():
            if name not in report["peer_results"]:
                report["peer_results"][name] = results
                versions = [v for v in earlier.get("peers", []) if name.lower() in v.lower()] or [name]
                source = args.reuse_peers.name
                report["peers"] += [f"{v.split(' (from ')[0]} (from {source})" for v in versions]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=1))
    markdown = render_markdown(report)
    (args.out / "results.md").write_text(markdown)
    chart = write_chart(report, args.out / "chart.png")
    print(markdown)
    extra = ", chart.png" if chart else " (no matplotlib: no chart)"
    print(f"wrote {args.out / 'results.md'}, results.json{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
