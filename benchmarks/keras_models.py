"""Whole Keras models: ``unilstm.keras.load_model`` in torch against Keras 3 on TensorFlow, inference.

    python benchmarks/keras_models.py --keras-python /path/to/tf-env/bin/python [--repeats 20]

One run does both sides: it starts ``benchmarks/keras_models_tf.py`` under the TensorFlow environment,
which builds the two models (a tagger: Embedding(20000, 128, mask_zero) -> Bidirectional(LSTM(64)) x2 ->
Dense(10) on 50 ids with right padding; a forecaster: LSTM(50) -> Dropout -> LSTM(50) -> Dropout ->
Dense(1) on (60, 1)), saves them as ``.keras`` and times ``tf.function(model(x, training=False))`` at batch
1 and 32; then it loads the same files here, checks that the outputs agree, and times ``model(x)`` under
``torch.inference_mode()`` the same way (median of ``repeats`` after 3 warm-up calls). It prints a markdown
table with the CPU, and the ratio Keras time / unilstm time (above 1: unilstm is faster).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from unilstm.keras import load_model


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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
    args = parser.parse_args()
    here = pathlib.Path(__file__).parent
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [args.keras_python, str(here / "keras_models_tf.py"), folder, "--repeats", str(args.repeats)],
            capture_output=True,
            text=True,
            check=True,
        )
        keras_rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        print(
            f"CPU: {_cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"Keras {keras_rows[0]['keras']} on TensorFlow {keras_rows[0]['tensorflow']}"
        )
        print("| model | batch | Keras 3 on TF (ms) | unilstm (ms) | Keras / unilstm | max abs diff |")
        print("|---|---|---|---|---|---|")
        for row in keras_rows:
            name, batch = row["model"], row["batch"]
            model = load_model(pathlib.Path(folder) / f"{name}.keras")
            x = np.load(pathlib.Path(folder) / f"{name}_b{batch}.npy")
            expected = np.load(pathlib.Path(folder) / f"{name}_b{batch}_out.npy")
            ours, out = _time_ours(model, x, args.repeats)
            diff = float(np.max(np.abs(out - expected)))
            print(
                f"| {name} | {batch} | {row['median_ms']:.2f} | {ours:.2f} | "
                f"{row['median_ms'] / ours:.2f}x | {diff:.1e} |"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
