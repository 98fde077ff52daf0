"""Whole models that real Keras wrote (tests/fixtures/keras_models/, made by
tools/fixtures/make_keras_model_fixtures.py with Keras 3.15 and tf-keras 2.21, and laid out as Keras 2.2.4
writes files by tools/fixtures/keras22_layout.py): every file of every model loads and computes what the
writing framework computed, within 1e-5 relative; the gradients of a fine-tuning step match Keras's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from unilstm.keras import KerasFileError, load_model

MODELS = Path(__file__).parent.parent / "fixtures" / "keras_models"
_DATA = (".npz", ".json")


def _cases() -> list[tuple[Path, Path]]:
    cases = []
    for npz in sorted(MODELS.glob("*.npz")):
        stem = npz.name[: -len(".npz")]
        for path in sorted(MODELS.glob(stem + ".*")):
            if not path.name.endswith(_DATA):
                cases.append((path, npz))
    return cases


def _indexed(data, prefix: str) -> list[np.ndarray]:
    keys = [k for k in data.files if k.startswith(prefix) and k[len(prefix) :].isdigit()]
    return [data[k] for k in sorted(keys, key=lambda k: int(k[len(prefix) :]))]


def _load(path: Path):
    config = path.with_name(path.name.split(".")[0] + ".json")
    weights_only = path.name.endswith(".weights.h5")
    return load_model(path, config=config if weights_only else None)


def test_the_fixture_set_covers_every_generation_and_format():
    names = {path.name for path, _ in _cases()}
    assert len(names) >= 60
    for generation, suffixes in (
        ("k3_", (".keras", ".h5", ".weights.h5")),
        ("tfk_", (".keras", ".h5")),
        ("k22_", (".h5",)),
    ):
        for suffix in suffixes:
            assert any(n.startswith(generation) and n.endswith(suffix) for n in names), (generation, suffix)


@pytest.mark.parametrize(
    ("path", "npz"), _cases(), ids=lambda value: value.name if isinstance(value, Path) else ""
)
def test_outputs_match_the_framework_that_wrote_the_file(path: Path, npz: Path):
    data = np.load(npz)
    model = _load(path)
    with torch.no_grad():
        got = model(*_indexed(data, "input_"))
    expected = _indexed(data, "output_")
    returned = json.loads(str(data["spec"])).get("returned")
    if returned is not None:  # what Keras's model(x) returned: a lone tensor or a list
        assert isinstance(got, list) == (returned == "list"), returned
    got_list = got if isinstance(got, list) else [got]
    assert len(got_list) == len(expected)
    for tensor, want in zip(got_list, expected, strict=True):
        assert tuple(tensor.shape) == want.shape
        np.testing.assert_allclose(tensor.numpy(), want, rtol=1e-5, atol=2e-6, err_msg=path.name)


def _parameter(model, layer: str, weight: str) -> torch.Tensor:
    module = dict(model.named_modules())[layer]
    found = [p for name, p in module.named_parameters() if name == weight or name.endswith("." + weight)]
    assert len(found) == 1, (layer, weight)
    return found[0]


@pytest.mark.parametrize("stem", ["k3_finetune", "tfk_finetune"])
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_fine_tuning_step_has_kerass_gradients(stem: str, suffix: str):
    """d mean((model(x) - y)^2) / d weight for every trainable weight, against Keras's GradientTape."""
    data = np.load(MODELS / f"{stem}.npz")
    model = _load(MODELS / f"{stem}{suffix}")
    out = model(*_indexed(data, "input_"))
    loss = (out - torch.from_numpy(data["y"])).square().mean()
    np.testing.assert_allclose(loss.item(), float(data["loss"]), rtol=1e-5)
    loss.backward()
    grads = [k for k in data.files if k.startswith("grad_")]
    assert grads
    for key in grads:
        layer, weight = key[len("grad_") :].split("/")
        parameter = _parameter(model, layer, weight)
        np.testing.assert_allclose(parameter.grad.numpy(), data[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert {n.split(".")[0] for n, _ in model.named_parameters()} == {k[5:].split("/")[0] for k in grads}


def test_files_older_than_keras2_are_refused():
    with pytest.raises(KerasFileError, match="older than Keras 2.0"):
        load_model(MODELS / "k1_refused.h5")


def test_train_mode_turns_dropout_on():
    """Keras's training=True: the Dropout layers drop, so two calls differ; eval is deterministic."""
    data = np.load(MODELS / "k3_sign.npz")
    model = _load(MODELS / "k3_sign.keras")
    x = _indexed(data, "input_")
    torch.manual_seed(0)
    model.train()
    first, second = model(*x), model(*x)
    assert not torch.allclose(first, second)
    model.eval()
    torch.testing.assert_close(model(*x), model(*x))


def test_every_model_spec_names_its_keras_version():
    for npz in MODELS.glob("*.npz"):
        spec = json.loads(str(np.load(npz)["spec"]))
        assert spec.get("keras"), npz.name


@pytest.mark.parametrize(
    "path", [path for path, _ in _cases() if "_stateful." in path.name], ids=lambda path: path.name
)
def test_stateful_models_continue_their_states_across_calls(path: Path):
    data = np.load(MODELS / (path.name.split(".")[0] + ".npz"))
    model = _load(path)
    with torch.no_grad():
        first = model(data["input_0"])
        second = model(data["second_input_0"])
    np.testing.assert_allclose(first.numpy(), data["output_0"], rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(second.numpy(), data["second_output_0"], rtol=1e-5, atol=2e-6)
    model.reset_states()  # tf-keras's Model.reset_states: every stateful layer back to zeros
    with torch.no_grad():
        again = model(data["input_0"])
    np.testing.assert_allclose(again.numpy(), data["output_0"], rtol=1e-5, atol=2e-6)
