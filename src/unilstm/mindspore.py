"""The MindSpore front door: ``mindspore.nn.LSTM``'s interface and MindSpore ``.ckpt`` files, in PyTorch.

    from unilstm.mindspore import LSTM, load_checkpoint, load_param_into_net, save_checkpoint

    net = LSTM(10, 16, 2, has_bias=True, batch_first=True, bidirectional=False)
    output, (h_n, c_n) = net(x, (h0, c0), seq_length)        # MindSpore's shapes and rules
    params = load_checkpoint("model.ckpt", prefix="encoder.")  # a MindSpore file, no MindSpore needed
    load_param_into_net(net, params)
    save_checkpoint(net, "lstm.ckpt")                          # real MindSpore loads it

See :class:`unilstm.frontends.mindspore.LSTM` and :mod:`unilstm.formats.mindspore_ckpt`.
"""

from .formats.mindspore_ckpt import (
    CheckpointError,
    load_checkpoint,
    load_param_into_net,
    mindspore_named_parameters,
    save_checkpoint,
)
from .frontends.mindspore import LSTM, SeqLengthError, bfloat16, float16, float32, float64

__all__ = [
    "LSTM",
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
