"""One epoch of ``model.fit`` on Keras 3's torch backend: ``unilstm.keras3.LSTM`` against keras.layers.LSTM.

Both models are ``Sequential([Input((T, in)), LSTM(H), Dense(1)])`` with the same initial weights (Adam, mse),
trained in one process, epochs alternating between the two after one warm-up epoch each; the table gives the
median epoch time and keras / unilstm. Rows: the standard cell, ``activation="relu"``,
``recurrent_dropout=0.2``, and the standard cell behind ``Masking`` (about 15% of the steps padded at the end
of the sequences).

    python benchmarks/keras3_torch_backend.py [--repeats 5] [--batches 16] [--shape T,B,in,H] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import unilstm.keras3  # noqa: E402
from unilstm.bench import cpu_model  # noqa: E402

SPECS = (
    ("standard", {}, False),
    ("relu", {"activation": "relu"}, False),
    ("recurrent_dropout 0.2", {"recurrent_dropout": 0.2}, False),
    ("standard, Masking", {}, True),
)


def _model(layer_class, steps: int, features: int, units: int, kwargs: dict, masking: bool):
    layers = [keras.Input((steps, features))]
    if masking:
        layers.append(keras.layers.Masking(0.0))
    layers += [layer_class(units, **kwargs), keras.layers.Dense(1)]
    model = keras.Sequential(layers)
    model.compile(optimizer="adam", loss="mse")
    return model


def _epoch(model, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs of each model")
    parser.add_argument("--batches", type=int, default=16, help="batches per epoch")
    parser.add_argument("--shape", default="50,32,64,128", help="T,B,in,H")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps, batch, features, units = (int(v) for v in args.shape.split(","))
    print(
        f"CPU: {cpu_model()} ({os.cpu_count()} cores); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; keras {keras.__version__} (backend {keras.backend.backend()}); "
        f"load average before the run {os.getloadavg()[0]:.2f}"
    )
    print(f"one epoch of model.fit: {args.batches} batches of (T, B, in, H) = ({steps}, {batch}, {features}, "
          f"{units}); median of {args.repeats} epochs each, alternating")
    print("| spec | keras.layers.LSTM (s) | unilstm.keras3.LSTM (s) | keras / unilstm |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batches * batch, steps, features)).astype("float32")
    x[::3, -steps // 7 :] = 0.0  # padding at the end of every third sequence (masked with Masking)
    y = rng.standard_normal((args.batches * batch, 1)).astype("float32")
    for name, kwargs, masking in SPECS:
        keras.utils.set_random_seed(0)
        reference = _model(keras.layers.LSTM, steps, features, units, kwargs, masking)
        ours = _model(unilstm.keras3.LSTM, steps, features, units, kwargs, masking)
        ours.set_weights(reference.get_weights())
        times: dict[str, list[float]] = {"keras": [], "unilstm": []}
        for model in (reference, ours):
            _epoch(model, x, y, batch)  # warm-up: the trainer's first-call set-up
        for _ in range(args.repeats):
            times["keras"].append(_epoch(reference, x, y, batch))
            times["unilstm"].append(_epoch(ours, x, y, batch))
        k, u = statistics.median(times["keras"]), statistics.median(times["unilstm"])
        print(f"| {name} | {k:.3f} | {u:.3f} | {k / u:.2f} |", flush=True)


if __name__ == "__main__":
    main()
