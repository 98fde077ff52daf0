"""unilstm's Keras front door: ``from unilstm.keras import LSTM, Bidirectional``.

The tf.keras layer signature, call convention, weights (Keras layout) and numbers, on unilstm's engine, in
PyTorch. See :mod:`unilstm.frontends.keras`.
"""

from .frontends import keras_constraints as constraints
from .frontends import keras_initializers as initializers
from .frontends import keras_regularizers as regularizers
from .frontends.keras import LSTM, apply_constraints, constrain
from .frontends.keras_bidirectional import Bidirectional

__all__ = [
    "LSTM",
    "Bidirectional",
    "apply_constraints",
    "constrain",
    "constraints",
    "initializers",
    "regularizers",
]

# Keras files (.keras, .weights.h5, legacy .h5): unilstm.formats.keras_files
from .formats.keras_files import KerasFileError, load_layers, load_weights, save_model  # noqa: E402

__all__ += ["KerasFileError", "load_layers", "load_weights", "save_model"]
