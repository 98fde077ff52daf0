"""The MindSpore front door: ``mindspore.nn.LSTM``'s interface and MindSpore ``.ckpt`` files, in PyTorch.

    from unilstm.mindspore import LSTM, LSTMCell, load_checkpoint, load_param_into_net, save_checkpoint

    net = LSTM(10, 16, 2, has_bias=True, batch_first=True, bidirectional=False)
    output, (h_n, c_n) = net(x, (h0, c0), seq_length)        # MindSpore's shapes and rules
    params = load_checkpoint("model.ckpt", prefix="encoder.")  # a MindSpore file, no MindSpore needed
    load_param_into_net(net, params)
    save_checkpoint(net, "lstm.ckpt")                          # real MindSpore loads it
    h, c = LSTMCell(10, 16)(x_t, (h, c))                       # mindspore.nn.LSTMCell, one step

See :class:`unilstm.frontends.mindspore.LSTM`, :class:`unilstm.frontends.mindspore_cell.LSTMCell` and
:mod:`unilstm.formats.mindspore_ckpt`.
"""

from .formats.mindspore_ckpt import (
    CheckpointError,
    load_checkpoint,
    load_param_into_net,
    mindspore_named_parameters,
    save_checkpoint,
)
from .frontends.mindspore import LSTM, SeqLengthError, bfloat16, float16, float32, float64
from .frontends.mindspore_cell import LSTMCell

__all__ = [
    "LSTM",
    "LSTMCell",
    "CheckpointError",
    "SeqLengthError",
    "bfloat16",
    "float16",
    "float32",
    "float64",
    "load_checkpoint",
    "load_param_into_net",
    "mindspore_named_parameters",
    "save_checkpoint",
]
