"""Check that real Keras 3 opens the .keras and .weights.h5 files unilstm writes, with the same numbers.

Two steps, two environments::

    .venv/bin/python tools/live/check_keras_reads_ours.py write /tmp/ours    # unilstm writes files + outputs
    .refenv/tf/bin/python tools/live/check_keras_reads_ours.py check /tmp/ours  # Keras 3 reads, compares

``write`` makes, in the directory:

- ``records_*.keras``, ``records_*.weights.h5``: the LSTM layers of fixtures in tests/fixtures/keras_files
  (Keras 3 Sequential, Keras 3 Functional with a nested model, tf-keras legacy .h5 with Keras 2 configs)
  written back by :func:`unilstm.formats.keras_files.write_keras_model` (the format layer alone), with
  ``records_*.npz`` = the input and the output real Keras computed for those layers when it made the fixture.
- ``ours.keras``, ``ours.weights.h5``, ``ours_other.*`` (when ``unilstm.keras`` exists): Sequentials of our
  Keras front-door layers with random weights, written by ``unilstm.keras.save_model``, with ``ours*.npz`` =
  the input and the output of our layers.

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

ROOT = pathlib.Path(__file__).resolve().parents[2]
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


def our_other_layers(ukeras) -> list:
    """Options that only change the config a file carries (initializers, regularizers, constraints,
    dropout rates, seed, unroll), a stateful layer (fixed batch size), linear / hard_sigmoid activations."""
    return [
        ukeras.LSTM(
            4,
            return_sequences=True,
            stateful=True,
            unroll=True,
            zero_output_for_mask=True,
            dropout=0.2,
            recurrent_dropout=0.1,
            seed=3,
            kernel_initializer="he_normal",
            recurrent_initializer="glorot_normal",
            bias_initializer="ones",
            kernel_regularizer="l2",
            recurrent_regularizer="l1",
            activity_regularizer="l1_l2",
            kernel_constraint="max_norm",
            recurrent_constraint="unit_norm",
            bias_constraint="non_neg",
            name="stateful_one",
        ),
        ukeras.LSTM(2, activation=None, recurrent_activation="hard_sigmoid", return_sequences=True),
    ]


def write_ours(directory: pathlib.Path, ukeras) -> None:
    write_model(directory, ukeras, "ours", our_layers(ukeras), batch_size=None)
    write_model(directory, ukeras, "ours_other", our_other_layers(ukeras), batch_size=3)


def write_model(directory: pathlib.Path, ukeras, stem: str, layers: list, batch_size: int | None) -> None:
    import torch

    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 7, 4)).astype(np.float32)
    y = torch.as_tensor(x)
    for layer in layers:
        layer.build(tuple(y.shape))
        layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32) for w in layer.get_weights()])
        y = layer(y)
    for suffix in (".keras", ".weights.h5"):
        ukeras.save_model(
            layers, directory / f"{stem}{suffix}", input_shape=x.shape[1:], batch_size=batch_size
        )
    np.savez(directory / f"{stem}.npz", x=x, y=y.detach().numpy())
    print(f"wrote {stem}.keras, {stem}.weights.h5 ({len(layers)} layers of unilstm.keras)")


COMPARED_KEYS = (
    "units",
    "activation",
    "recurrent_activation",
    "use_bias",
    "return_sequences",
    "return_state",
    "go_backwards",
    "stateful",
    "unroll",
    "dropout",
    "recurrent_dropout",
    "seed",
    "zero_output_for_mask",
    "unit_forget_bias",
    "merge_mode",
    "kernel_initializer",
    "recurrent_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
)


def _same(mine, theirs) -> bool:
    """Our config value equals Keras's, up to float32 rounding, Keras's bookkeeping (shared_object_id) and
    entries Keras adds with their defaults (keys only Keras has)."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        return all(_same(v, theirs.get(k)) for k, v in mine.items() if k != "shared_object_id")
    if isinstance(mine, float) and isinstance(theirs, float):
        return abs(mine - theirs) <= 1e-6 * max(1.0, abs(mine))
    return mine == theirs


def compare_configs(keras_file: pathlib.Path, model) -> list[str]:
    """The layer settings our config.json states that Keras's loaded layers do not have."""
    import json
    import zipfile

    with zipfile.ZipFile(keras_file) as archive:
        ours = json.loads(archive.read("config.json"))["config"]["layers"][1:]
    mismatches = []
    for entry, layer in zip(ours, model.layers, strict=True):
        theirs = layer.get_config()
        pairs = [("", entry["config"], theirs)]
        if entry["class_name"] == "Bidirectional":
            pairs += [
                (f"{member}.", entry["config"][member]["config"], theirs[member]["config"])
                for member in ("layer", "backward_layer")
                if member in entry["config"]
            ]
        for prefix, mine, keras_config in pairs:
            for key in COMPARED_KEYS:
                if key in mine and not _same(mine[key], keras_config.get(key)):
                    mismatches.append(
                        f"{layer.name} {prefix}{key}: ours {mine[key]!r}, Keras {keras_config.get(key)!r}"
                    )
    return mismatches


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
        mismatches = compare_configs(directory / f"{stem}.keras", model)
        print(
            f"{stem}.keras: {len(mismatches)} config mismatches after load_model"
            + "".join(f"\n    {m}" for m in mismatches)
        )
        worst = max(worst, float("inf") if mismatches else 0.0)
        worst = max(worst, diff)
        weights_file = directory / f"{stem}.weights.h5"
        if weights_file.exists():
            fresh = keras.models.model_from_json(model.to_json())
            before = float(np.max(np.abs(np.asarray(fresh(data["x"])) - data["y"])))
            fresh.load_weights(weights_file)
            for layer in fresh.layers:  # the call above moved stateful layers' states on
                if getattr(layer, "stateful", False):
                    layer.reset_state()
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
