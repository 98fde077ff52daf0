"""The torch.nn.LSTM front door: ``from unilstm.torch import LSTM`` is a drop-in for ``torch.nn.LSTM``."""

from .frontends.torch import LSTM

__all__ = ["LSTM"]
