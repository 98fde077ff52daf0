"""unilstm: one LSTM engine with the semantics of tf.keras, MindSpore and torch.

``unilstm.LSTM`` is the canonical layer with every option of the three frameworks; the front doors
``unilstm.keras``, ``unilstm.mindspore`` and ``unilstm.torch`` reproduce each framework's own interface.
``unilstm.load`` / ``unilstm.save`` read and write every supported file format, ``unilstm.export_onnx``
writes the standard ONNX LSTM operator.
"""

from ._version import __version__
from .convert import export_onnx, load, save
from .layer import LSTM
from .spec import LSTMSpec

__all__ = ["LSTM", "LSTMSpec", "__version__", "export_onnx", "load", "save"]
