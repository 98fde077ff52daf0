"""Keras weight files: read LSTM layers from ``.keras``, ``.weights.h5`` and legacy ``.h5`` files, and write
``.keras`` / ``.weights.h5`` files that real Keras 3 opens.

This module works on plain data (numpy arrays in Keras layout and Keras config dicts); it imports neither
TensorFlow nor Keras. ``h5py`` is needed (``pip install unilstm[keras]``) and imported only when a file is
read or written.

What the files hold (as Keras 3.15 and tf-keras 2.21 write them):

- ``.keras``: a zip with ``config.json`` (the model, serialized), ``metadata.json`` (``keras_version``) and
  ``model.weights.h5``. ``.weights.h5`` (``model.save_weights``) is that HDF5 file on its own.
  Inside it an LSTM's arrays are at ``layers/<key>/cell/vars/{0,1,2}`` = kernel (F, 4H), recurrent_kernel
  (H, 4H), bias (4H,). The **key** is the snake-case class name plus a counter per container, in container
  order (``lstm``, ``lstm_1``, ``bidirectional``), not the layer's name. A Bidirectional keeps its two LSTMs
  at ``layers/bidirectional/forward_layer/...`` and ``.../backward_layer/...``; a nested model nests
  ``layers/`` (key ``sequential/lstm``). Keras 3 also stores each layer's name as the attribute ``name`` of
  its ``vars`` group; tf-keras does not.
- legacy ``.h5`` (``model.save('m.h5')``, or tf-keras ``save_weights('w.h5')``): groups per layer **name**
  under ``model_weights/`` (or at the root for weights-only files); each group's ``weight_names`` attribute
  lists its arrays in order (tf-keras names end in ``:0``, Keras 3's do not). The root attribute
  ``model_config`` holds the model's config as JSON (absent in weights-only files), ``keras_version`` the
  writer's version.

The records this module returns use **keys**: for ``.keras``/``.weights.h5`` the path of the layer's group
below ``layers/`` with the inner ``layers/`` removed (``lstm``, ``lstm_1``, ``bidirectional``,
``sequential/lstm``); for legacy ``.h5`` the layer's name (``nested_model/inner_lstm`` inside a nested
model). Files with a config (``.keras``, legacy ``.h5`` from ``model.save``) give their layers in model
order; a weights-only file carries no order (HDF5 lists groups alphabetically), so its layers come sorted by
key (``bidirectional``, ``lstm``, ``lstm_1``, ...) or, for tf-keras ``save_weights`` .h5, in its
``layer_names`` order.

Hostile files: every HDF5 read goes through :func:`unilstm.formats.hdf5.open_hdf5`, which refuses external
storage, virtual datasets and any link that is not a hard link inside the file before any data is read. Each
weight's declared shape and dtype (float16/32/64, Keras's bfloat16) is checked against what its layer needs
(kernel (F, 4H), recurrent_kernel (H, 4H), bias (4H,)) and against the layer's config (``units``,
``use_bias``) before anything is read, and what one read may decompress and allocate is bounded: weights (and
the weights member of a ``.keras`` zip) by ``max_bytes=`` of the readers, else ``$UNILSTM_MAX_FILE_BYTES``,
else 1 GiB; each JSON document by ``$UNILSTM_MAX_CONFIG_BYTES``, else 16 MiB (sizes like ``4G`` or ``64M``;
see :mod:`.limits`). Every refusal is a :class:`KerasFileError` naming the file and the entry.

Entry points: :func:`read_keras_lstm_layers` and :func:`write_keras_model`, on plain data. The layer-level
API on ``unilstm.keras`` layers (``load_weights``, ``load_layers``, ``save_model``) is
:mod:`unilstm.frontends.keras_files`.
"""

from .limits import (
    DEFAULT_MAX_CONFIG_BYTES,
    DEFAULT_MAX_FILE_BYTES,
    MAX_CONFIG_BYTES_ENV,
    MAX_FILE_BYTES_ENV,
)
from .reading import read_keras_lstm_layers, read_keras_model_config, select_record
from .records import WRITTEN_KERAS_VERSION, KerasFileError, KerasLayerRecord, lstm_configs
from .writing import (
    build_sequential_config,
    keras3_lstm_config,
    keras3_record,
    store_keys,
    weights_store_bytes,
    write_keras_model,
)

__all__ = [
    "DEFAULT_MAX_CONFIG_BYTES",
    "DEFAULT_MAX_FILE_BYTES",
    "MAX_CONFIG_BYTES_ENV",
    "MAX_FILE_BYTES_ENV",
    "WRITTEN_KERAS_VERSION",
    "KerasFileError",
    "KerasLayerRecord",
    "build_sequential_config",
    "keras3_lstm_config",
    "keras3_record",
    "lstm_configs",
    "read_keras_lstm_layers",
    "read_keras_model_config",
    "select_record",
    "store_keys",
    "weights_store_bytes",
    "write_keras_model",
]
