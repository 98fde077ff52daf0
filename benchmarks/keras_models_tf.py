"""Keras 3 on TensorFlow: inference time of the two whole-model benchmark models, and their ``.keras`` files.

Run with the TensorFlow reference environment (never a dependency of unilstm)::

    .refenv/tf/bin/python benchmarks/keras_models_tf.py OUT_DIR [--repeats 20] [--warmup 3] [--threads N]

It builds (seeded weights, Keras's own initializers) and saves to ``OUT_DIR``:

- ``tagger.keras``: Input ids (T=50) -> Embedding(20000, 128, mask_zero) -> Bidirectional(LSTM(64,
  return_sequences)) x2 -> Dense(10); its inputs have right padding (id 0) in some rows, so the mask counts.
- ``forecaster.keras``: (T=60, F=1) -> LSTM(50, return_sequences) -> Dropout(0.2) -> LSTM(50) ->
  Dropout(0.2) -> Dense(1).

and times ``tf.function(lambda x: model(x, training=False))`` at batch 1 and 32: the median of ``repeats``
calls after ``warmup`` calls, printing one JSON line per case (model, batch, median and min ms, the CPU model
from /proc/cpuinfo, TensorFlow's thread settings). The inputs are saved as ``<model>_b<batch>.npy`` and
Keras's outputs as ``<model>_b<batch>_out.npy``, so that another implementation can time and check the same
calls.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

VOCAB, TAGGER_T, FORECAST_T = 20000, 50, 60


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def tagger() -> keras.Model:
    layers = keras.layers
    inp = keras.Input(shape=(TAGGER_T,), dtype="int32")
    x = layers.Embedding(VOCAB, 128, mask_zero=True)(inp)
    x = layers.Bidirectional(layers.LSTM(64, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(64, return_sequences=True))(x)
    return keras.Model(inp, layers.Dense(10)(x), name="tagger")


def forecaster() -> keras.Model:
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=(FORECAST_T, 1)),
            layers.LSTM(50, return_sequences=True),
            layers.Dropout(0.2),
            layers.LSTM(50),
            layers.Dropout(0.2),
            layers.Dense(1),
        ],
        name="forecaster",
    )


def inputs(model_name: str, batch: int, rng: np.random.Generator) -> np.ndarray:
    if model_name == "tagger":
        ids = rng.integers(1, VOCAB, (batch, TAGGER_T)).astype(np.int32)
        lengths = rng.integers(TAGGER_T // 2, TAGGER_T + 1, batch)
        lengths[0] = TAGGER_T  # one full row; batch 1 is unpadded
        for row, length in enumerate(lengths):
            ids[row, length:] = 0
        return ids
    return rng.standard_normal((batch, FORECAST_T, 1)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="folder for tagger.keras, forecaster.keras and the inputs")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, help="TensorFlow's intra- and inter-op threads")
    args = parser.parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    for name, build in (("tagger", tagger), ("forecaster", forecaster)):
        model = build()
        model.save(out / f"{name}.keras")
        run = tf.function(lambda x, model=model: model(x, training=False))
        for batch in (1, 32):
            x = inputs(name, batch, rng)
            np.save(out / f"{name}_b{batch}.npy", x)
            feed = tf.constant(x)
            np.save(out / f"{name}_b{batch}_out.npy", run(feed).numpy())
            for _ in range(args.warmup):
                run(feed).numpy()
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                run(feed).numpy()
                times.append(time.perf_counter() - start)
            print(
                json.dumps(
                    {
                        "framework": "keras",
                        "keras": keras.__version__,
                        "tensorflow": tf.__version__,
                        "model": name,
                        "batch": batch,
                        "median_ms": round(statistics.median(times) * 1e3, 3),
                        "min_ms": round(min(times) * 1e3, 3),
                        "repeats": args.repeats,
                        "cpu": cpu_model(),
                        "cpu_count": os.cpu_count(),
                        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                    }
                )
            )


if __name__ == "__main__":
    main()
