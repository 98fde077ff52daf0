"""keras_names: the one translation of Keras's activation and class names."""

from __future__ import annotations

import pytest
import torch

from unilstm.keras_names import (
    KERAS2_HARD_SIGMOID,
    UnknownKerasActivationError,
    activation_from_keras,
    activation_from_stored_config,
    activation_to_keras,
    is_keras_builtin,
    snake_case,
    stored_activation_name,
)


def test_snake_case_is_keras_to_snake_case():
    assert snake_case("LSTM") == "lstm"
    assert snake_case("GlorotUniform") == "glorot_uniform"
    assert snake_case("L1L2") == "l1l2"
    assert snake_case("Bidirectional") == "bidirectional"


def test_layer_arguments():
    assert activation_from_keras(None, "activation", False) == "linear"
    assert activation_from_keras("hard_sigmoid", "activation", True) == KERAS2_HARD_SIGMOID
    assert activation_from_keras("hard_sigmoid", "activation", False) == "hard_sigmoid"
    assert activation_from_keras({"class_name": "function", "config": "relu"}, "a", False) == "relu"
    assert activation_from_keras("keras.activations.relu", "a", False) == "relu"
    assert activation_from_keras(torch.tanh, "a", False) is torch.tanh
    with pytest.raises(ValueError, match="unknown activation"):
        activation_from_keras("nope", "activation", False)
    with pytest.raises(ValueError, match="'glu' halves the last axis"):
        activation_from_keras("glu", "activation", False)
    with pytest.raises(TypeError, match="must be a name, None or a callable"):
        activation_from_keras(3, "activation", False)


def test_stored_configs():
    def custom(x):
        return x

    assert activation_from_stored_config(None, False, {}) is None
    assert activation_from_stored_config("linear", False, {}) == "linear"
    assert activation_from_stored_config("hard_sigmoid", True, {}) == KERAS2_HARD_SIGMOID
    stored = {"class_name": "function", "config": "mine"}
    assert activation_from_stored_config(stored, False, {"mine": custom}) is custom
    with pytest.raises(UnknownKerasActivationError):
        activation_from_stored_config("mine", False, {})
    with pytest.raises(TypeError, match="cannot read the activation"):
        activation_from_stored_config(3, False, {})
    assert stored_activation_name({"class_name": "function", "config": "x"}) == "x"
    assert is_keras_builtin("keras.activations.tanh") and not is_keras_builtin("mine")


def test_back_to_keras():
    assert activation_to_keras(KERAS2_HARD_SIGMOID) == "hard_sigmoid"
    assert activation_to_keras("tanh") == "tanh"
    assert activation_to_keras(torch.tanh) == "tanh"
