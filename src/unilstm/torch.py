"""The torch.nn.LSTM front door: ``from unilstm.torch import LSTM, LSTMCell`` are drop-ins for
``torch.nn.LSTM`` and ``torch.nn.LSTMCell``."""

from .frontends.torch import LSTM
from .frontends.torch_cell import LSTMCell

__all__ = ["LSTM", "LSTMCell"]
