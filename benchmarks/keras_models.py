"""Whole Keras models: ``unilstm.keras.load_model`` in torch against Keras 3 on TensorFlow, inference.

    python benchmarks/keras_models.py --keras-python /path/to/tf-env/bin/python [--repeats 20] [--threads N]

One run does all three sides: it starts ``benchmarks/keras_models_tf.py`` under the TensorFlow environment,
which builds the two models (a tagger: Embedding(20000, 128, mask_zero) -> Bidirectional(LSTM(64)) x2 ->
Dense(10) on 50 ids with right padding; a forecaster: LSTM(50) -> Dropout -> LSTM(50) -> Dropout ->
Dense(1) on (60, 1)), saves them as ``.keras`` and times ``tf.function(model(x, training=False))`` at batch
1 and 32; then it loads the same files here, checks that the outputs agree, and times ``model(x)`` under
``torch.inference_mode()`` the same way (median of ``repeats`` after 3 warm-up calls), and the ONNX graph
``unilstm convert`` makes of each file in ONNX Runtime (one session, the same inputs). It prints a markdown
table with the CPU and the BLAS torch uses, and the ratios Keras time / unilstm time and ONNX Runtime time /
unilstm time (above 1: unilstm is faster). ``--threads N`` runs all three on N intra-op threads (torch's
``set_num_threads``, ONNX Runtime's ``intra_op_num_threads``, TensorFlow's intra- and inter-op threads): on
a machine whose cores other processes also use, a team of several threads waits for the slowest, and one
thread gives the steadier batch-1 numbers.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from unilstm.bench import blas_description, cpu_model
from unilstm.convert import convert
from unilstm.keras import load_model


def _time_onnx(
    path: pathlib.Path, x: np.ndarray, repeats: int, threads: int | None
) -> tuple[float, np.ndarray]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    kind = session.get_inputs()[0].type
    feed = {
        session.get_inputs()[0].name: x.astype(
            np.int64 if "int64" in kind else np.int32 if "int32" in kind else np.float32
        )
    }
    out = session.run(None, feed)[0]
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, np.asarray(out)


def _time_ours(model: torch.nn.Module, x: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    tensor = torch.from_numpy(x)
    with torch.inference_mode():
        out = model(tensor)
        for _ in range(3):
            model(tensor)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(tensor)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, out.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keras-python", required=True, help="python of an environment with TensorFlow")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, help="intra-op threads for all three (default: their own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = ["--threads", str(args.threads)] if args.threads else []
    here = pathlib.Path(__file__).parent
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [
                args.keras_python, str(here / "keras_models_tf.py"), folder, "--repeats", str(args.repeats),
                *threads,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        keras_rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        print(
            f"CPU: {cpu_model()}; torch {torch.__version__} ({blas_description()}), "
            f"{torch.get_num_threads()} threads; Keras {keras_rows[0]['keras']} on TensorFlow "
            f"{keras_rows[0]['tensorflow']}"
        )
        print(
            "| model | batch | Keras 3 on TF (ms) | ONNX Runtime (ms) | unilstm (ms) | Keras / unilstm | "
            "ONNX Runtime / unilstm | max abs diff (unilstm, ONNX) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for row in keras_rows:
            name, batch = row["model"], row["batch"]
            source = pathlib.Path(folder) / f"{name}.keras"
            graph = pathlib.Path(folder) / f"{name}.onnx"
            if not graph.exists():
                convert(source, graph)
            model = load_model(source)
            x = np.load(pathlib.Path(folder) / f"{name}_b{batch}.npy")
            expected = np.load(pathlib.Path(folder) / f"{name}_b{batch}_out.npy")
            ours, out = _time_ours(model, x, args.repeats)
            onnx_ms, onnx_out = _time_onnx(graph, x, args.repeats, args.threads)
            diff = float(np.max(np.abs(out - expected)))
            onnx_diff = float(np.max(np.abs(onnx_out - expected)))
            print(
                f"| {name} | {batch} | {row['median_ms']:.2f} | {onnx_ms:.2f} | {ours:.2f} | "
                f"{row['median_ms'] / ours:.2f}x | {onnx_ms / ours:.2f}x | {diff:.1e}, {onnx_diff:.1e} |"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
