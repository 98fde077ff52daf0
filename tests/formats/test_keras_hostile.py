"""Hostile Keras files, built in each test from the real fixtures (tests/fixtures/keras_files) with h5py and
zipfile: HDF5 that reads other files (external storage, external / soft / user links, virtual datasets),
weights of the wrong dtype or of sizes their config does not declare, and small files that decompress or
allocate far more than they hold. Every one is refused with a KerasFileError naming the file and the entry,
before the data is read, allocated or a layer is built. Ends with a seeded fuzz test over the readers."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import struct
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

pytest.importorskip("h5py")

import h5py  # noqa: E402

import unilstm  # noqa: E402
from unilstm.convert import convert  # noqa: E402
from unilstm.formats import hdf5  # noqa: E402
from unilstm.formats.keras_files import (  # noqa: E402
    DEFAULT_MAX_CONFIG_BYTES,
    DEFAULT_MAX_FILE_BYTES,
    KerasFileError,
    read_keras_lstm_layers,
    read_keras_model_config,
)
from unilstm.formats.keras_files.limits import max_file_bytes  # noqa: E402
from unilstm.frontends import keras_initializers  # noqa: E402
from unilstm.keras import LSTM, Bidirectional, load_layers, load_weights  # noqa: E402

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "keras_files"
SOURCE = "k3_seq"
#: where the first LSTM's kernel (3, 20) float32 sits in each kind of file made from k3_seq
KERNEL = {
    "weights.h5": "layers/lstm/cell/vars/0",
    "legacy.h5": "model_weights/encoder/k3_seq/encoder/lstm_cell/kernel",
    "keras": "layers/lstm/cell/vars/0",
}
KINDS = list(KERNEL)


def my_act(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.tanh(x)


# -- building hostile copies of the fixtures ----------------------------------------------------------------
def _members(source: pathlib.Path) -> dict[str, bytes]:
    with zipfile.ZipFile(source) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _zip(target: pathlib.Path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> pathlib.Path:
    with zipfile.ZipFile(target, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def edited(tmp_path: pathlib.Path, kind: str, edit, config=None) -> pathlib.Path:
    """A copy of the k3_seq fixture of ``kind`` after ``edit(store, kernel_path)`` on its HDF5 (and, for a
    .keras, ``config(dict)`` on its config.json)."""
    if kind == "keras":
        members = _members(FIXTURES / f"{SOURCE}.keras")
        inner = tmp_path / "inner.h5"
        inner.write_bytes(members["model.weights.h5"])
        with h5py.File(inner, "r+") as store:
            edit(store, KERNEL[kind])
        members["model.weights.h5"] = inner.read_bytes()
        inner.unlink()
        if config is not None:
            members["config.json"] = json.dumps(config(json.loads(members["config.json"]))).encode()
        return _zip(tmp_path / "hostile.keras", members)
    source = FIXTURES / (f"{SOURCE}.weights.h5" if kind == "weights.h5" else f"{SOURCE}_legacy.h5")
    target = tmp_path / ("hostile.weights.h5" if kind == "weights.h5" else "hostile.h5")
    shutil.copy(source, target)
    with h5py.File(target, "r+") as store:
        edit(store, KERNEL[kind])
    return target


def replace(store: h5py.File, where: str, **dataset) -> None:
    """Put a new dataset (h5py create_dataset arguments) where the kernel was."""
    del store[where]
    store.create_dataset(where, **dataset)


def refused(path: pathlib.Path, *words: str, **kwargs) -> str:
    with pytest.raises(KerasFileError) as caught:
        read_keras_lstm_layers(path, **kwargs)
    message = str(caught.value)
    assert str(path) in message, message
    for word in words:
        assert word in message, (word, message)
    return message


@pytest.fixture
def secret(tmp_path: pathlib.Path) -> pathlib.Path:
    """A local file with known bytes: 60 float32s, enough for the (3, 20) kernel."""
    path = tmp_path / "secret.bin"
    path.write_bytes(np.arange(60, dtype=np.float32).tobytes())
    return path


# -- item 1: nothing outside the file is read ---------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_external_storage_is_refused(tmp_path: pathlib.Path, secret: pathlib.Path, kind: str) -> None:
    """Guards: a dataset whose data lives in another file (HDF5 external storage) was read as the weights."""
    path = edited(
        tmp_path,
        kind,
        lambda store, where: replace(
            store, where, shape=(3, 20), dtype="f4", external=[(str(secret), 0, 240)]
        ),
    )
    message = refused(path, KERNEL[kind], "external")
    assert str(secret) in message


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "link",
    [
        lambda secret: h5py.ExternalLink(str(secret.with_suffix(".h5")), "/data"),
        lambda secret: h5py.SoftLink("/nowhere"),
        lambda secret: h5py.SoftLink("/elsewhere"),
    ],
    ids=["external-link", "dangling-soft-link", "soft-link"],
)
def test_links_other_than_hard_links_are_refused(
    tmp_path: pathlib.Path, secret: pathlib.Path, kind: str, link
) -> None:
    """Guards: an ExternalLink (another file's dataset read as the weights) or a soft link where a weight
    should be."""
    with h5py.File(secret.with_suffix(".h5"), "w") as other:
        other.create_dataset("data", data=np.arange(60, dtype=np.float32).reshape(3, 20))

    def edit(store: h5py.File, where: str) -> None:
        store.create_dataset("elsewhere", data=np.ones((3, 20), np.float32))
        del store[where]
        store[where] = link(secret)

    message = refused(edited(tmp_path, kind, edit), KERNEL[kind], "link")
    assert "only hard links" in message


def test_a_link_anywhere_in_the_file_is_refused(tmp_path: pathlib.Path, secret: pathlib.Path) -> None:
    """Guards: links outside the layers read are refused too (no entry of the file may reach elsewhere)."""

    def edit(store: h5py.File, where: str) -> None:
        store["top_level_model_weights/x"] = h5py.ExternalLink(str(secret), "/")

    refused(edited(tmp_path, "legacy.h5", edit), "'/top_level_model_weights/x'", "external link")


@pytest.mark.parametrize("kind", KINDS)
def test_virtual_datasets_are_refused(tmp_path: pathlib.Path, kind: str) -> None:
    """Guards: a virtual dataset assembles its data from datasets of other files."""
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as store:
        store.create_dataset("data", data=np.arange(60, dtype=np.float32).reshape(3, 20))

    def edit(store: h5py.File, where: str) -> None:
        layout = h5py.VirtualLayout(shape=(3, 20), dtype="f4")
        layout[:] = h5py.VirtualSource(str(other), "data", shape=(3, 20))
        del store[where]
        store.create_virtual_dataset(where, layout)

    refused(edited(tmp_path, kind, edit), KERNEL[kind], "virtual")


def test_the_model_config_reader_is_checked_too(tmp_path: pathlib.Path, secret: pathlib.Path) -> None:
    """Guards: conversion's second look at a legacy .h5 (its Sequential order) opened h5py directly."""

    def edit(store: h5py.File, where: str) -> None:
        store["x"] = h5py.ExternalLink(str(secret), "/")

    path = edited(tmp_path, "legacy.h5", edit)
    with pytest.raises(KerasFileError, match="external link"):
        read_keras_model_config(path)
    assert read_keras_model_config(FIXTURES / "k3_seq_legacy.h5")["class_name"] == "Sequential"
    assert read_keras_model_config(FIXTURES / "k3_seq.keras")["class_name"] == "Sequential"
    assert read_keras_model_config(FIXTURES / "k3_seq.weights.h5") is None


def test_conversion_refuses_external_storage(tmp_path: pathlib.Path, secret: pathlib.Path) -> None:
    """Guards: ``unilstm convert evil.weights.h5 out.safetensors`` wrote the other file's bytes out."""
    path = edited(
        tmp_path,
        "weights.h5",
        lambda store, where: replace(
            store, where, shape=(3, 20), dtype="f4", external=[(str(secret), 0, 240)]
        ),
    )
    target = tmp_path / "out.safetensors"
    with pytest.raises(KerasFileError, match="external"):
        convert(path, target, layer="lstm")
    assert not target.exists()
    with pytest.raises(KerasFileError, match="external"):
        unilstm.load(path)


def test_the_opener_checks_every_dataset_once_in_a_cycle(tmp_path: pathlib.Path) -> None:
    """Hard links may form cycles: the walk visits each object once and ends."""
    path = tmp_path / "cycle.h5"
    with h5py.File(path, "w") as store:
        store.create_group("a/b")
        store["a/b/up"] = store["a"]
    with hdf5.open_hdf5(path, str(path), KerasFileError) as store:
        assert "a" in store


# -- item 3: dtypes and config sizes are checked before anything is made ------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "dtype", [np.int32, np.int64, np.bool_, np.complex64, np.complex128, np.longdouble, np.uint8, "S4"]
)
def test_weights_must_be_floats(tmp_path: pathlib.Path, kind: str, dtype) -> None:
    """Guards: int and bool weights gave a RuntimeError, long double a TypeError, and complex64 loaded as a
    complex LSTM."""
    if np.dtype(dtype) == np.dtype(np.float64):
        pytest.skip("long double is float64 on this platform")
    data = np.ones((3, 20)).astype(dtype)
    path = edited(tmp_path, kind, lambda store, where: replace(store, where, data=data))
    refused(path, KERNEL[kind], "dtype", "expected float16, float32, float64")


@pytest.mark.parametrize("kind", KINDS)
def test_float_dtypes_and_byte_orders_read(tmp_path: pathlib.Path, kind: str) -> None:
    """float16 and big-endian float64 weights read as native float arrays with their values."""
    values = np.linspace(-1, 1, 60).reshape(3, 20)
    for dtype in (np.float16, ">f8"):
        data = values.astype(dtype)
        path = edited(tmp_path, kind, lambda store, where, data=data: replace(store, where, data=data))
        kernel = read_keras_lstm_layers(path)[0 if kind != "weights.h5" else 1].weights[0]
        assert kernel.dtype.isnative and kernel.dtype.kind == "f"
        assert np.array_equal(kernel, values.astype(dtype))
        path.unlink()


def test_keras_bfloat16_reads_as_float32(tmp_path: pathlib.Path) -> None:
    """Keras 3 stores bfloat16 as 2-byte opaque values tagged dtype="bfloat16": read exactly, as float32."""
    values = np.linspace(-2, 2, 60, dtype=np.float32).reshape(3, 20)
    top_halves = (values.view(np.uint32) >> 16).astype(np.uint16)

    def edit(store: h5py.File, where: str) -> None:
        replace(store, where, data=top_halves.view("V2"))
        store[where].attrs["dtype"] = "bfloat16"

    kernel = read_keras_lstm_layers(edited(tmp_path, "keras", edit))[0].weights[0]
    expected = (top_halves.astype(np.uint32) << 16).view(np.float32)
    assert kernel.dtype == np.float32 and np.array_equal(kernel, expected)
    assert np.abs(kernel - values).max() < 0.02


def _set_units(units):
    def config(model: dict) -> dict:
        model["config"]["layers"][1]["config"]["units"] = units
        return model

    return config


@pytest.mark.parametrize("units", [1_000_000_000, 3000, 4, True, 5.0, "5"])
def test_config_units_must_match_the_stored_weights(tmp_path: pathlib.Path, units) -> None:
    """Guards: units 1e9 in config.json tried to allocate 48 GB, units 3000 spent 700 MB and seconds of
    orthogonal initialisation before a ValueError. Now the reader refuses it before any layer exists."""
    path = edited(tmp_path, "keras", lambda store, where: None, config=_set_units(units))
    refused(path, "'encoder'", "units=", "(5, 20)")
    with pytest.raises(KerasFileError, match="units="):
        load_layers(path)


def test_config_use_bias_must_match_the_stored_weights(tmp_path: pathlib.Path) -> None:
    """Guards: a flipped use_bias gave a bare ValueError from set_weights."""

    def config(model: dict) -> dict:
        model["config"]["layers"][1]["config"]["use_bias"] = False
        return model

    path = edited(tmp_path, "keras", lambda store, where: None, config=config)
    refused(path, "'encoder'", "use_bias=False", "3 arrays")
    with pytest.raises(KerasFileError, match="use_bias"):
        load_layers(path)


def _bidirectional(model: dict) -> dict:
    return model["config"]["layers"][3]["config"]


@pytest.mark.parametrize(
    "change",
    [
        lambda bi: bi["layer"].pop("config"),
        lambda bi: bi["layer"].update(config="not a dict"),
        lambda bi: bi.update(backward_layer={"class_name": "LSTM"}),
        lambda bi: bi.update(backward_layer={"class_name": "GRU", "config": {}}),
        lambda bi: bi["layer"]["config"].update(units=7),
    ],
    ids=["no-config", "config-not-dict", "backward-no-config", "backward-gru", "units"],
)
def test_bidirectional_configs_are_checked(tmp_path: pathlib.Path, change) -> None:
    """Guards: a Bidirectional whose 'layer' had no "config" raised a KeyError from load_layers."""

    def config(model: dict) -> dict:
        change(_bidirectional(model))
        return model

    path = edited(tmp_path, "keras", lambda store, where: None, config=config)
    refused(path, "Bidirectional", "'bidirectional'")
    with pytest.raises(KerasFileError, match="bidirectional"):
        load_layers(path)


def test_load_weights_checks_sizes_before_building(tmp_path: pathlib.Path) -> None:
    """Guards: load_weights built (and initialised) the layer before comparing its sizes with the file's."""
    layer = LSTM(3000)
    with pytest.raises(KerasFileError, match="weight shapes"):
        load_weights(layer, FIXTURES / "k3_seq.weights.h5", key="lstm")
    assert not layer.built
    wrapper = Bidirectional(LSTM(3, use_bias=False))
    with pytest.raises(KerasFileError, match="weight shapes"):
        load_weights(wrapper, FIXTURES / "k3_seq.weights.h5")
    assert not wrapper.built


def test_load_layers_runs_no_initializer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards: load_layers ran each layer's initializers (seconds of orthogonal initialisation for 3000 units)
    only to overwrite every value they made. The layers keep their configured initializers."""
    called: list[str] = []
    original = keras_initializers.initialize

    def recording(initializer, shape, dtype, argument):
        called.append(type(initializer).__name__)
        return original(initializer, shape, dtype, argument)

    monkeypatch.setattr(keras_initializers, "initialize", recording)
    layers = load_layers(FIXTURES / "k3_seq.keras")
    assert called and set(called) == {"Zeros"}, called
    config = layers[0].get_config()
    assert config["recurrent_initializer"]["class_name"] == "Orthogonal"
    assert config["kernel_initializer"]["class_name"] == "GlorotUniform"
    assert layers[2].forward_layer.get_config()["recurrent_initializer"]["class_name"] == "Orthogonal"
    called.clear()
    layer = LSTM(5, return_sequences=True)
    load_weights(layer, FIXTURES / "k3_seq.keras", key="encoder")
    assert set(called) == {"Zeros"}
    assert layer.get_config()["recurrent_initializer"]["class_name"] == "Orthogonal"


def test_stateful_layer_that_cannot_be_built_is_a_keras_file_error(tmp_path: pathlib.Path) -> None:
    """A config the front door refuses when building is the format's error, not a bare ValueError."""

    def config(model: dict) -> dict:
        model["config"]["layers"][1]["config"]["stateful"] = True
        return model

    path = edited(tmp_path, "keras", lambda store, where: None, config=config)
    with pytest.raises(KerasFileError, match=r"'encoder'.*batch size"):
        load_layers(path)


# -- item 4: what a small file may make the reader decompress and allocate ---------------------------------
def _patch_sizes(data: bytes, member: str, declared: int) -> bytes:
    """Make the zip's local and central headers of ``member`` declare ``declared`` bytes unpacked."""
    raw = bytearray(data)
    name = member.encode()
    local = raw.find(b"PK\x03\x04")
    while local != -1:
        if raw[local + 30 : local + 30 + len(name)] == name:
            struct.pack_into("<I", raw, local + 22, declared)
        local = raw.find(b"PK\x03\x04", local + 4)
    central = raw.find(b"PK\x01\x02")
    while central != -1:
        if raw[central + 46 : central + 46 + len(name)] == name:
            struct.pack_into("<I", raw, central + 24, declared)
        central = raw.find(b"PK\x01\x02", central + 4)
    return bytes(raw)


def _bomb_keras(
    tmp_path: pathlib.Path, member: str, payload: bytes, declared: int | None = None
) -> pathlib.Path:
    members = _members(FIXTURES / f"{SOURCE}.keras")
    members[member] = payload
    path = _zip(tmp_path / "bomb.keras", members, zipfile.ZIP_DEFLATED)
    if declared is not None:
        path.write_bytes(_patch_sizes(path.read_bytes(), member, declared))
    return path


def test_weights_member_past_the_bound_is_refused(tmp_path: pathlib.Path) -> None:
    """Guards: a 3 MB .keras whose weights member unpacks to 3 GiB was inflated whole (6 GB peak). Here an
    honest header declaring 8 MiB is refused under a 1 MiB bound before inflating anything."""
    path = _bomb_keras(tmp_path, "model.weights.h5", bytes(8 << 20))
    assert path.stat().st_size < 100_000
    refused(path, "model.weights.h5", "declares 8388608", "max_bytes=", max_bytes=1 << 20)


def test_weights_member_with_a_lying_header_is_refused(tmp_path: pathlib.Path) -> None:
    """The header may declare a small size: the bound is also enforced while inflating."""
    path = _bomb_keras(tmp_path, "model.weights.h5", bytes(8 << 20), declared=100)
    tracemalloc.start()
    try:
        refused(path, "model.weights.h5", max_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_config_member_bomb_is_refused(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards: a 1 MB config.json that inflated to gigabytes. Its bound is separate from the weights'."""
    monkeypatch.setenv("UNILSTM_MAX_CONFIG_BYTES", "1M")
    path = _bomb_keras(tmp_path, "config.json", b" " * (2 << 20) + b"{}")
    refused(path, "config.json", "UNILSTM_MAX_CONFIG_BYTES")
    lying = _bomb_keras(tmp_path, "config.json", b" " * (2 << 20) + b"{}", declared=10)
    refused(lying, "config.json")
    metadata = _bomb_keras(tmp_path, "metadata.json", b" " * (2 << 20) + b"{}")
    refused(metadata, "metadata.json", "UNILSTM_MAX_CONFIG_BYTES")
    assert DEFAULT_MAX_CONFIG_BYTES == 16 << 20


def test_model_config_attribute_past_the_bound_is_refused(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The legacy .h5's model_config attribute has the same bound as config.json."""
    path = edited(tmp_path, "legacy.h5", lambda store, where: None)
    with h5py.File(path, "r+") as store:
        text = store.attrs["model_config"]
        text = text.decode() if isinstance(text, bytes) else text
        store.attrs["model_config"] = text + " " * 200_000
    monkeypatch.setenv("UNILSTM_MAX_CONFIG_BYTES", "100k")
    refused(path, "model_config", "UNILSTM_MAX_CONFIG_BYTES")
    monkeypatch.setenv("UNILSTM_MAX_CONFIG_BYTES", "1M")
    assert [r.key for r in read_keras_lstm_layers(path)] == ["encoder", "lstm", "bidirectional"]


@pytest.mark.parametrize("kind", KINDS)
def test_compressed_dataset_bomb_is_refused_before_reading(
    tmp_path: pathlib.Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards: a 1 MB .weights.h5 whose gzip-compressed datasets inflated to 2.2 GB. Here the LSTM's arrays
    declare 1024 units (16 MiB of float32, stored in a few kB) under a 4 MiB bound given by the
    environment variable."""
    units, features = 1024, 3

    def edit(store: h5py.File, where: str) -> None:
        group = where.rsplit("/", 1)[0]
        names = ["0", "1", "2"] if kind != "legacy.h5" else ["kernel", "recurrent_kernel", "bias"]
        shapes = [(features, 4 * units), (units, 4 * units), (4 * units,)]
        for name, shape in zip(names, shapes, strict=True):
            replace(store, f"{group}/{name}", data=np.zeros(shape, np.float32), compression="gzip")

    def config(model: dict) -> dict:
        return _set_units(units)(model)

    path = edited(tmp_path, kind, edit, config=config if kind == "keras" else None)
    if kind == "legacy.h5":
        with h5py.File(path, "r+") as store:
            model = json.loads(store.attrs["model_config"])
            store.attrs["model_config"] = json.dumps(_set_units(units)(model))
    assert path.stat().st_size < 200_000
    monkeypatch.setenv("UNILSTM_MAX_FILE_BYTES", "4M")
    refused(path, "UNILSTM_MAX_FILE_BYTES", str(4 << 20), f"({units}, {4 * units})")
    monkeypatch.delenv("UNILSTM_MAX_FILE_BYTES")
    record = read_keras_lstm_layers(path, max_bytes=64 << 20)[0 if kind != "weights.h5" else 1]
    assert record.weights[1].shape == (units, 4 * units)


def test_unallocated_dataset_is_refused(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards: a 10 kB .h5 declaring an unallocated (12000, 48000) dataset made the reader allocate and fill
    4.6 GB for 46 s. Past the bound it is refused by its declared size; under a larger bound, because it
    stores nothing."""

    def huge(store: h5py.File, where: str) -> None:
        group = where.rsplit("/", 1)[0]
        replace(store, f"{group}/0", shape=(3, 48000), dtype="f4")
        replace(store, f"{group}/1", shape=(12000, 48000), dtype="f4")
        replace(store, f"{group}/2", shape=(48000,), dtype="f4")

    monkeypatch.delenv("UNILSTM_MAX_FILE_BYTES", raising=False)
    path = edited(tmp_path, "weights.h5", huge)
    assert path.stat().st_size < 100_000
    refused(path, "'/layers/lstm/cell/vars/1'", "limit of 1073741824", "max_bytes=")
    small = edited(
        tmp_path, "weights.h5", lambda store, where: replace(store, where, shape=(3, 20), dtype="f4")
    )
    refused(small, "'/layers/lstm/cell/vars/0'", "stores 0", "no weights are written")


def test_huge_chunks_count_against_the_bound(tmp_path: pathlib.Path) -> None:
    """HDF5 inflates whole chunks: a small dataset with 8 MiB chunks costs 8 MiB."""
    path = edited(
        tmp_path,
        "weights.h5",
        lambda store, where: replace(
            store,
            where,
            data=np.ones((3, 20), np.float32),
            maxshape=(None, 20),
            chunks=(100_000, 20),
            compression="gzip",
        ),
    )
    refused(path, "vars/0", max_bytes=4 << 20)
    assert read_keras_lstm_layers(path, max_bytes=64 << 20)[1].weights[0].shape == (3, 20)


def test_the_bound_and_how_to_raise_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """max_bytes= first, then UNILSTM_MAX_FILE_BYTES (plain bytes or k/M/G/T), then 1 GiB."""
    monkeypatch.delenv("UNILSTM_MAX_FILE_BYTES", raising=False)
    assert max_file_bytes() == DEFAULT_MAX_FILE_BYTES == 1 << 30
    for text, value in (("123", 123), ("4G", 4 << 30), ("512MiB", 512 << 20), ("64k", 64 << 10)):
        monkeypatch.setenv("UNILSTM_MAX_FILE_BYTES", text)
        assert max_file_bytes() == value
        assert max_file_bytes(7) == 7
    monkeypatch.setenv("UNILSTM_MAX_FILE_BYTES", "lots")
    with pytest.raises(ValueError, match="UNILSTM_MAX_FILE_BYTES='lots'"):
        read_keras_lstm_layers(FIXTURES / "k3_seq.keras")
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="max_bytes"):
            read_keras_lstm_layers(FIXTURES / "k3_seq.keras", max_bytes=bad)
    monkeypatch.delenv("UNILSTM_MAX_FILE_BYTES")
    tight = 10_000
    refused(FIXTURES / "k3_seq.keras", "model.weights.h5", max_bytes=tight)
    refused(FIXTURES / "k3_seq.weights.h5", "max_bytes=", max_bytes=1000)
    assert len(read_keras_lstm_layers(FIXTURES / "k3_seq.weights.h5", max_bytes=4000)) == 3
    with pytest.raises(KerasFileError, match="max_bytes="):
        load_layers(FIXTURES / "k3_seq.keras", max_bytes=tight)
    with pytest.raises(KerasFileError, match="max_bytes="):
        load_weights(LSTM(5), FIXTURES / "k3_seq.weights.h5", key="lstm", max_bytes=1000)


# -- fuzzing the readers ------------------------------------------------------------------------------------
FUZZ_SOURCES = ["k3_seq.keras", "k3_seq.weights.h5", "k3_seq_legacy.h5", "tfk_seq.h5", "tfk_nested.h5"]
FUZZ_BOUND = 1 << 20


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    raw = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        choice = rng.integers(0, 5)
        at = int(rng.integers(0, len(raw)))
        if choice == 0:  # flip bits
            raw[at] ^= 1 << int(rng.integers(0, 8))
        elif choice == 1:  # a run of random bytes
            run = int(rng.integers(1, 64))
            raw[at : at + run] = rng.integers(0, 256, run, dtype=np.uint8).tobytes()
        elif choice == 2:  # a large little-endian number (sizes, offsets, dimensions)
            raw[at : at + 8] = int(rng.integers(1, 1 << 62)).to_bytes(8, "little")
        elif choice == 3:  # truncate
            raw = raw[: max(at, 8)]
        else:  # repeat a stretch
            run = int(rng.integers(1, 256))
            raw[at:at] = raw[at : at + run]
    return bytes(raw)


_ODD_VALUES = [None, 0, -1, 3, 7, 10**9, True, False, 2.5, "x", "tanh", [], {}, {"class_name": "LSTM"}]
_ODD_DTYPES = ["f2", "f4", ">f8", "i4", "u1", "?", "c8", "S3"]


def _json_nodes(value, found: list) -> list:
    if isinstance(value, dict):
        found.append(value)
        for inner in value.values():
            _json_nodes(inner, found)
    elif isinstance(value, list):
        for inner in value:
            _json_nodes(inner, found)
    return found


def _mutate_json(text: bytes | str, rng: np.random.Generator) -> str:
    """Change, remove or retype a few values anywhere in a Keras config."""
    model = json.loads(text)
    for _ in range(int(rng.integers(1, 4))):
        nodes = _json_nodes(model, [])
        node = nodes[int(rng.integers(0, len(nodes)))]
        if not node:
            continue
        key = list(node)[int(rng.integers(0, len(node)))]
        if rng.integers(0, 4) == 0:
            del node[key]
        else:
            node[key] = _ODD_VALUES[int(rng.integers(0, len(_ODD_VALUES)))]
    return json.dumps(model)


def _mutate_store(path: pathlib.Path, rng: np.random.Generator) -> None:
    """Retype, reshape, remove or relink a few entries of an HDF5 file, or reorder its weight lists."""
    with h5py.File(path, "r+") as store:
        for _ in range(int(rng.integers(1, 4))):
            names: list[str] = []
            store.visit(names.append)
            if not names:
                return
            name = names[int(rng.integers(0, len(names)))]
            action = int(rng.integers(0, 6))
            if action == 0 and isinstance(store[name], h5py.Dataset):
                shape = tuple(int(n) for n in rng.integers(0, 30, int(rng.integers(0, 3))))
                dtype = _ODD_DTYPES[int(rng.integers(0, len(_ODD_DTYPES)))]
                del store[name]
                store.create_dataset(name, data=np.ones(shape).astype(dtype))
            elif action == 1:
                del store[name]
            elif action == 2:
                del store[name]
                store[name] = h5py.SoftLink(f"/{names[int(rng.integers(0, len(names)))]}")
            elif action == 3 and isinstance(store[name], h5py.Dataset):
                shape = store[name].shape
                del store[name]
                store.create_dataset(name, shape=shape, dtype="f4")  # declared, never written
            elif action == 4:
                holder = store[name] if isinstance(store[name], h5py.Group) else store
                for attribute in ("weight_names", "layer_names"):
                    if attribute in holder.attrs:
                        values = list(holder.attrs[attribute])
                        holder.attrs[attribute] = [values[int(i)] for i in rng.permutation(len(values))][1:]
            elif "model_config" in store.attrs:
                store.attrs["model_config"] = _mutate_json(store.attrs["model_config"], rng)


def _mutated_file(tmp_path: pathlib.Path, case: int, rng: np.random.Generator) -> pathlib.Path:
    """A fixture with its bytes mutated (odd cases) or its structure edited (even cases: HDF5 entries and
    Keras configs changed through h5py and json, so that the files stay readable and reach the checks)."""
    source = FUZZ_SOURCES[case % len(FUZZ_SOURCES)]
    path = tmp_path / f"case{case}_{source}"
    structural = case % 2 == 0
    if source.endswith(".keras"):
        members = _members(FIXTURES / source)
        if structural:
            inner = tmp_path / "inner.h5"
            inner.write_bytes(members["model.weights.h5"])
            _mutate_store(inner, rng)
            members["model.weights.h5"] = inner.read_bytes()
            members["config.json"] = _mutate_json(members["config.json"], rng).encode()
        elif rng.integers(0, 2):  # a valid zip around corrupt members
            member = ["config.json", "model.weights.h5"][int(rng.integers(0, 2))]
            members[member] = _mutate(members[member], rng)
        else:
            path.write_bytes(_mutate((FIXTURES / source).read_bytes(), rng))
            return path
        return _zip(path, members)
    if structural:
        shutil.copy(FIXTURES / source, path)
        _mutate_store(path, rng)
    else:
        path.write_bytes(_mutate((FIXTURES / source).read_bytes(), rng))
    return path


def test_fuzzed_files_raise_only_keras_file_errors_within_the_bound(tmp_path: pathlib.Path) -> None:
    """Mutated real fixtures (seeded; UNILSTM_FUZZ_CASES for more than the default 250): the readers and
    load_layers raise nothing but KerasFileError, and allocate (as tracemalloc sees numpy and
    Python) no more than the bound plus what the file itself takes."""
    cases = int(os.environ.get("UNILSTM_FUZZ_CASES", "250"))
    rng = np.random.default_rng(20261203)
    outcomes = {"read": 0, "refused": 0}
    started = time.perf_counter()
    for case in range(cases):
        path = _mutated_file(tmp_path, case, rng)
        tracemalloc.start()
        try:
            try:
                read_keras_lstm_layers(path, max_bytes=FUZZ_BOUND)
                outcomes["read"] += 1
                if not path.name.endswith("weights.h5"):
                    load_layers(path, custom_objects={"my_act": my_act}, max_bytes=FUZZ_BOUND)
            except KerasFileError as error:
                outcomes["refused"] += 1
                assert str(path) in str(error), (case, str(error))
            peak = tracemalloc.get_traced_memory()[1]
        except Exception as error:
            raise AssertionError(f"case {case} ({path.name}): {type(error).__name__}: {error}") from error
        finally:
            tracemalloc.stop()
        assert peak < FUZZ_BOUND + 4 * path.stat().st_size + (8 << 20), (case, path.name, peak)
        path.unlink()
    assert outcomes["refused"] > cases // 10 and outcomes["read"] > 0, outcomes
    assert time.perf_counter() - started < 60 + cases / 5
