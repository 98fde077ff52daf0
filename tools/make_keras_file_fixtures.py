"""Write small Keras weight files with real Keras, and reference numbers to check our reader against.

Run with the TensorFlow reference environment (see DESIGN.md, "Reference frameworks")::

    /work/refenv/tf/bin/python tools/make_keras_file_fixtures.py [out_dir]

It needs tensorflow-cpu 2.21 (``keras`` = ``tf.keras`` = Keras 3.15) and tf-keras 2.21 (Keras 2), both with
h5py. Everything goes to ``tests/fixtures/keras_files/`` (a few hundred kB):

- ``k3_seq.keras``, ``k3_seq.weights.h5``, ``k3_seq_legacy.h5``: a Keras 3 Sequential (two LSTMs, a
  Bidirectional(LSTM), a Dense) saved as .keras, as .weights.h5 and in the legacy HDF5 format.
- ``k3_func.keras``, ``k3_func.weights.h5``, ``k3_func_legacy.h5``: a Keras 3 Functional model with a
  nested Sequential, a Bidirectional with its own backward layer, and an LSTM without unit_forget_bias.
- ``tfk_seq.h5``, ``tfk_seq.keras``, ``tfk_seq_weights.h5``: a tf-keras (Keras 2) Sequential with
  ``hard_sigmoid`` (Keras 2's) and a custom activation ``my_act`` (0.5 * tanh), saved as legacy .h5, as
  tf-keras's .keras, and with ``save_weights`` to .h5 (weights only, no config).
- ``tfk_nested.h5``: a tf-keras Functional model with a nested Sequential, legacy .h5.

and for each model ``<model>.npz``: ``x`` (the input), ``model_out`` (the whole model's output) and, for the
i-th LSTM or Bidirectional layer in model order, ``in_<i>`` (its input), ``out_<i>`` (its output), the
arrays of ``get_weights()`` as ``w_<i>_<j>``, and ``names`` (the layer names in that order).
"""

from __future__ import annotations

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests" / "fixtures" / "keras_files"
T, F = 6, 3


def randomize(model, rng: np.random.Generator) -> None:
    """Give every weight distinct random values (Keras's initial biases are mostly zeros)."""
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype) for w in weights])


def is_model(layer) -> bool:
    return hasattr(layer, "layers") and type(layer).__name__ in ("Sequential", "Functional", "Model")


def chain(layers, x, records: list) -> np.ndarray:
    """Run a chain of layers eagerly, one by one, recursing into nested models, and record each LSTM's and
    Bidirectional's input, output and weights."""
    for layer in layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        if is_model(layer):
            x = chain(layer.layers, x, records)
            continue
        y = layer(x)
        y = np.asarray(y[0] if isinstance(y, (list, tuple)) else y)
        if kind in ("LSTM", "Bidirectional"):
            records.append((layer.name, np.asarray(x), y, [np.asarray(w) for w in layer.get_weights()]))
        x = y
    return x


def save_reference(model, name: str, x: np.ndarray) -> None:
    records: list = []
    chained = chain(model.layers, x, records)
    whole = np.asarray(model(x))
    assert np.allclose(whole, chained, atol=1e-6), f"{name}: the chain does not reproduce the model"
    arrays = {"x": x, "model_out": whole, "names": np.array([r[0] for r in records])}
    for i, (_, inp, out, weights) in enumerate(records):
        arrays[f"in_{i}"] = inp
        arrays[f"out_{i}"] = out
        for j, w in enumerate(weights):
            arrays[f"w_{i}_{j}"] = w
    np.savez_compressed(OUT / f"{name}.npz", **arrays)


def keras3_models(x: np.ndarray) -> None:
    import keras
    from keras import layers

    rng = np.random.default_rng(3)
    seq = keras.Sequential(
        [
            keras.Input((T, F)),
            layers.LSTM(5, return_sequences=True, name="encoder"),
            layers.LSTM(
                4,
                return_sequences=True,
                activation="relu",
                recurrent_activation="hard_sigmoid",
                use_bias=False,
            ),
            layers.Bidirectional(layers.LSTM(3), merge_mode="concat"),
            layers.Dense(2),
        ],
        name="k3_seq",
    )
    randomize(seq, rng)
    seq.save(OUT / "k3_seq.keras")
    seq.save_weights(OUT / "k3_seq.weights.h5")
    seq.save(OUT / "k3_seq_legacy.h5")
    save_reference(seq, "k3_seq", x)

    inner = keras.Sequential(
        [keras.Input((T, F)), layers.LSTM(4, return_sequences=True, go_backwards=True, name="inner_lstm")],
        name="inner",
    )
    inp = keras.Input((T, F))
    h = inner(inp)
    h = layers.Bidirectional(
        layers.LSTM(3, return_sequences=True),
        backward_layer=layers.LSTM(3, return_sequences=True, go_backwards=True, activation="elu"),
        merge_mode="ave",
        name="bi",
    )(h)
    h = layers.LSTM(2, unit_forget_bias=False, recurrent_activation="tanh", name="last")(h)
    func = keras.Model(inp, h, name="k3_func")
    for layer in [inner.layers[0], *func.layers[2:]]:
        layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype) for w in layer.get_weights()])
    func.save(OUT / "k3_func.keras")
    func.save_weights(OUT / "k3_func.weights.h5")
    func.save(OUT / "k3_func_legacy.h5")
    save_reference(func, "k3_func", x)


def tf_keras_models(x: np.ndarray) -> None:
    import tensorflow as tf
    import tf_keras
    from tf_keras import layers

    def my_act(v):
        return 0.5 * tf.tanh(v)

    rng = np.random.default_rng(4)
    with tf_keras.utils.custom_object_scope({"my_act": my_act}):
        seq = tf_keras.Sequential(
            [
                layers.LSTM(
                    4, return_sequences=True, recurrent_activation="hard_sigmoid", input_shape=(T, F)
                ),
                layers.LSTM(3, return_sequences=True, activation=my_act),
                layers.Bidirectional(layers.LSTM(2), merge_mode="sum"),
                layers.Dense(2),
            ],
            name="tfk_seq",
        )
        randomize(seq, rng)
        seq.save(OUT / "tfk_seq.h5")
        seq.save(OUT / "tfk_seq.keras")
        seq.save_weights(OUT / "tfk_seq_weights.h5")
        save_reference(seq, "tfk_seq", x)

    inner = tf_keras.Sequential([layers.LSTM(3, return_sequences=True, input_shape=(T, F))], name="inner")
    inp = tf_keras.Input((T, F))
    h = inner(inp)
    h = layers.Bidirectional(layers.LSTM(2, return_sequences=True), name="bi")(h)
    h = layers.LSTM(2, name="last")(h)
    nested = tf_keras.Model(inp, h, name="tfk_nested")
    randomize(inner, rng)
    randomize(nested, rng)
    nested.save(OUT / "tfk_nested.h5")
    save_reference(nested, "tfk_nested", x)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).normal(size=(2, T, F)).astype(np.float32)
    keras3_models(x)
    tf_keras_models(x)
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files, {total / 1024:.0f} kB, to {OUT}")


if __name__ == "__main__":
    main()
