"""Check that real Keras 3 opens the .keras and .weights.h5 files unilstm writes, with the same numbers.

Two steps, two environments::

    .venv/bin/python tools/check_keras_reads_ours.py write /tmp/ours      # unilstm writes files + our outputs
    /work/refenv/tf/bin/python tools/check_keras_reads_ours.py check /tmp/ours   # Keras 3 reads and compares

``write`` makes, in the directory:

- ``records_*.keras``, ``records_*.weights.h5``: the LSTM layers of fixtures in tests/fixtures/keras_files
  (Keras 3 Sequential, Keras 3 Functional with a nested model, tf-keras legacy .h5 with Keras 2 configs)
  written back by :func:`unilstm.formats.keras_files.write_keras_model` (the format layer alone), with
  ``records_*.npz`` = the input and the output real Keras computed for those layers when it made the fixture.
- ``ours.keras``, ``ours.weights.h5`` (when ``unilstm.keras`` exists): a Sequential of our Keras front-door
  layers with random weights, written by ``unilstm.keras.save_model``, with ``ours.npz`` = the input and the
  output of our layers.

``check`` loads every ``<stem>.keras`` with ``keras.saving.load_model`` and runs it on ``x``; for
``<stem>.weights.h5`` it rebuilds the model from the .keras file's config with fresh weights, calls
``model.load_weights`` and runs it; it prints the largest absolute difference to ``<stem>.npz``'s ``y`` and
exits 1 when one exceeds 1e-5.
"""

from __future__ import annotations

import os
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "keras_files"
TOLERANCE = 1e-5


def write(directory: pathlib.Path) -> None:
    from unilstm.formats.keras_files import read_keras_lstm_layers, write_keras_model

    directory.mkdir(parents=True, exist_ok=True)
    # fixtures whose LSTM layers form a chain: Keras computed the last one's output from x when it made them
    for stem, source in (
        ("records_k3", "k3_seq.keras"),
        ("records_k3func", "k3_func.keras"),
        ("records_tfk", "tfk_nested.h5"),
    ):
        records = read_keras_lstm_layers(FIXTURES / source)
        reference = np.load(FIXTURES / (source.split(".")[0] + ".npz"))
        x = reference["x"]
        write_keras_model(records, directory / f"{stem}.keras", x.shape[1:])
        write_keras_model(records, directory / f"{stem}.weights.h5", x.shape[1:])
        np.savez(directory / f"{stem}.npz", x=x, y=reference[f"out_{len(records) - 1}"])
        print(f"wrote {stem}.keras, {stem}.weights.h5 ({len(records)} layers of {source})")
    try:
        import unilstm.keras as ukeras
    except ImportError:
        print("unilstm.keras is not there yet: skipping ours.*")
        return
    if not hasattr(ukeras, "save_model"):
        print("unilstm.keras has no save_model yet: skipping ours.*")
        return
    write_ours(directory, ukeras)


def our_layers(ukeras) -> list:
    """A Sequential's worth of layers exercising the options a .keras file carries."""
    return [
        ukeras.LSTM(
            5, return_sequences=True, activation="relu", recurrent_activation="hard_sigmoid", name="first"
        ),
        ukeras.LSTM(4, return_sequences=True, use_bias=False, go_backwards=True, unit_forget_bias=False),
        ukeras.Bidirectional(ukeras.LSTM(3, return_sequences=True, activation="elu"), merge_mode="mul"),
        ukeras.Bidirectional(
            ukeras.LSTM(3, return_sequences=True),
            backward_layer=ukeras.LSTM(3, return_sequences=True, go_backwards=True, activation="softsign"),
            merge_mode="ave",
        ),
        ukeras.Bidirectional(ukeras.LSTM(2, recurrent_activation="tanh"), merge_mode="concat"),
    ]


def write_ours(directory: pathlib.Path, ukeras) -> None:
    import torch

    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 7, 4)).astype(np.float32)
    layers = our_layers(ukeras)
    y = torch.as_tensor(x)
    for layer in layers:
        layer.build(tuple(y.shape))
        layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32) for w in layer.get_weights()])
        y = layer(y)
    ukeras.save_model(layers, directory / "ours.keras", input_shape=x.shape[1:])
    ukeras.save_model(layers, directory / "ours.weights.h5", input_shape=x.shape[1:])
    np.savez(directory / "ours.npz", x=x, y=y.detach().numpy())
    print(f"wrote ours.keras, ours.weights.h5 ({len(layers)} layers of unilstm.keras)")


def check(directory: pathlib.Path) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import keras

    print(f"Keras {keras.__version__}")
    worst = 0.0
    stems = sorted(p.stem for p in directory.glob("*.npz"))
    if not stems:
        print(f"nothing to check in {directory}: run the write step first")
        return 1
    for stem in stems:
        data = np.load(directory / f"{stem}.npz")
        model = keras.saving.load_model(directory / f"{stem}.keras")
        diff = float(np.max(np.abs(np.asarray(model(data["x"])) - data["y"])))
        print(f"{stem}.keras: load_model -> max |keras - expected| = {diff:.3g}")
        worst = max(worst, diff)
        weights_file = directory / f"{stem}.weights.h5"
        if weights_file.exists():
            fresh = keras.models.model_from_json(model.to_json())
            before = float(np.max(np.abs(np.asarray(fresh(data["x"])) - data["y"])))
            fresh.load_weights(weights_file)
            diff = float(np.max(np.abs(np.asarray(fresh(data["x"])) - data["y"])))
            print(
                f"{stem}.weights.h5: load_weights -> max |keras - expected| = {diff:.3g} "
                f"(before loading {before:.3g})"
            )
            worst = max(worst, diff)
    print(f"worst max abs difference {worst:.3g} (tolerance {TOLERANCE})")
    return 0 if worst <= TOLERANCE else 1


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("write", "check"):
        print(__doc__)
        return 2
    directory = pathlib.Path(argv[2])
    if argv[1] == "write":
        write(directory)
        return 0
    return check(directory)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
