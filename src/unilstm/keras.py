"""unilstm's Keras front door: ``from unilstm.keras import LSTM, LSTMCell, RNN, Bidirectional``.

The tf.keras layer signature, call convention, weights (Keras layout) and numbers, on unilstm's engine, in
PyTorch, and Keras files (.keras, .weights.h5, legacy .h5) on such layers. See
:mod:`unilstm.frontends.keras` and :mod:`unilstm.frontends.keras_files`. Whole Keras models (the layers
around the LSTMs too): :func:`load_model` (:mod:`unilstm.keras_model`).
"""

from .frontends import keras_constraints as constraints
from .frontends import keras_initializers as initializers
from .frontends import keras_regularizers as regularizers
from .frontends.keras import LSTM, apply_constraints, constrain
from .frontends.keras_bidirectional import Bidirectional
from .frontends.keras_cell import LSTMCell
from .frontends.keras_files import KerasFileError, load_layers, load_weights, save_model
from .frontends.keras_rnn import RNN, StackedRNNCells
from .keras_model import KerasModel, KerasModelError, load_model

__all__ = [
    "LSTM",
    "LSTMCell",
    "Bidirectional",
    "RNN",
    "StackedRNNCells",
    "KerasFileError",
    "KerasModel",
    "KerasModelError",
    "apply_constraints",
    "constrain",
    "constraints",
    "initializers",
    "load_layers",
    "load_model",
    "load_weights",
    "regularizers",
    "save_model",
]
