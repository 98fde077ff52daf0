"""The functions and Cells a generated MindSpore module defines when its layers need them (Keras's mask
glue around ``nn.LSTM`` and Keras's attention), as source text, by name."""

from __future__ import annotations

TANH = '''
def tanh(x):
    """tanh from expm1: MindSpore 2.10's CPU tanh is off by up to 1e-4 for |x| > 3."""
    e = ops.expm1(-2 * ops.abs(x))
    return -ops.sign(x) * e / (2 + e)
'''

PRESENT_FIRST = '''
def present_first(x, mask):
    """x (B, T, F) with each sequence's present steps (mask True) moved to the front in their order, and
    their count (B,) int32. Keras's LSTM skips a masked step (h and c kept), so MindSpore's LSTM run on
    these with seq_length=count reaches Keras's states."""
    steps = x.shape[1]
    key = ops.arange(steps).expand_dims(0) + steps * ops.logical_not(mask).astype(mindspore.int32)
    _, order = ops.sort(key.astype(mindspore.float32), axis=1)
    x = ops.gather_elements(x, 1, order.expand_dims(-1).broadcast_to(x.shape))
    return x, mask.astype(mindspore.int32).sum(1)
'''

FORWARD_STEPS = '''
def forward_steps(out, mask, previous):
    """Keras's output at every step (B, T, H) from the outputs over the present steps (present_first's
    order): a present step's own; at a masked step the previous present step's (zeros before the first)
    when ``previous`` (Keras's default), else zeros (zero_output_for_mask)."""
    seen = ops.cumsum(mask.astype(mindspore.int32), 1)  # present steps up to and including t
    index = ops.maximum(seen - 1, 0)
    taken = ops.gather_elements(out, 1, index.expand_dims(-1).broadcast_to(out.shape))
    keep = seen > 0 if previous else mask
    return ops.where(keep.expand_dims(-1), taken, ops.zeros_like(taken))
'''

BACKWARD_STEPS = '''
def backward_steps(out, mask, previous):
    """The same for a backward direction, which meets the steps from the end: at a masked step it repeats
    the output of the next present step (zeros after the last) when ``previous``, else zeros."""
    present = mask.astype(mindspore.int32)
    following = ops.cumsum(present, 1) - present  # the present step at or after t, in present_first's order
    index = ops.minimum(following, out.shape[1] - 1)
    taken = ops.gather_elements(out, 1, index.expand_dims(-1).broadcast_to(out.shape))
    keep = following < present.sum(1, keepdims=True) if previous else mask
    return ops.where(keep.expand_dims(-1), taken, ops.zeros_like(taken))
'''

ATTEND = '''
def attend(scores, value, query_mask, value_mask, causal, keras2):
    """Keras's attention from its scores S (B, Tq, Tv): the values a query may not see (masked, or after
    the query with causal) get S - 1e9 as in Keras; W = softmax over the values; output W V, zero at masked
    queries (times the mask in Keras 2). Returns the output and W."""
    allowed = None if value_mask is None else value_mask.expand_dims(-2)  # (B, 1, Tv)
    if causal:
        rows, cols = scores.shape[-2], scores.shape[-1]
        below = (ops.arange(rows).expand_dims(-1) >= ops.arange(cols)).expand_dims(0)
        allowed = below if allowed is None else ops.logical_and(allowed, below)
    if allowed is not None:
        scores = ops.where(allowed, scores, scores - 1e9)
    weights = ops.softmax(scores, axis=-1)
    output = ops.bmm(weights, value)
    if query_mask is not None:
        present = query_mask.expand_dims(-1)
        if keras2:
            output = output * present.astype(output.dtype)
        else:
            output = ops.where(present, output, ops.zeros_like(output))
    return output, weights
'''

DOT_ATTENTION = '''
class DotAttention(nn.Cell):
    """Keras's Attention(score_mode="dot") at inference: S = scale * Q K^T (scale: a learned scalar with
    use_scale), then :func:`attend`."""

    def __init__(self, use_scale=False, causal=False, keras2=False):
        super().__init__()
        self.scale = Parameter(ops.ones((), mindspore.float32)) if use_scale else None
        self.causal = causal
        self.keras2 = keras2

    def construct(self, query, value, key=None, query_mask=None, value_mask=None):
        key = value if key is None else key
        scores = ops.bmm(query, key.swapaxes(-2, -1))
        if self.scale is not None:
            scores = scores * self.scale
        return attend(scores, value, query_mask, value_mask, self.causal, self.keras2)
'''

CONCAT_ATTENTION = '''
class ConcatAttention(nn.Cell):
    """Keras's Attention(score_mode="concat") at inference: S[b, i, j] = concat_score_weight *
    sum_d tanh(scale * (Q[b, i, d] + K[b, j, d])) (scale: a learned scalar with use_scale), then
    :func:`attend`."""

    def __init__(self, use_scale=False, causal=False, keras2=False):
        super().__init__()
        self.scale = Parameter(ops.ones((), mindspore.float32)) if use_scale else None
        self.concat_score_weight = Parameter(ops.ones((), mindspore.float32))
        self.causal = causal
        self.keras2 = keras2

    def construct(self, query, value, key=None, query_mask=None, value_mask=None):
        key = value if key is None else key
        summed = query.expand_dims(-2) + key.expand_dims(-3)  # (B, Tq, Tv, D)
        if self.scale is not None:
            summed = self.scale * summed
        scores = self.concat_score_weight * tanh(summed).sum(-1)
        return attend(scores, value, query_mask, value_mask, self.causal, self.keras2)
'''

ADDITIVE_ATTENTION = '''
class AdditiveAttention(nn.Cell):
    """Keras's AdditiveAttention at inference: S[b, i, j] = sum_d scale[d] tanh(Q[b, i, d] + K[b, j, d])
    (scale: a learned vector with use_scale, else 1), then :func:`attend`."""

    def __init__(self, scale_shape=None, causal=False, keras2=False):
        super().__init__()
        self.scale = None if scale_shape is None else Parameter(ops.ones(scale_shape, mindspore.float32))
        self.causal = causal
        self.keras2 = keras2

    def construct(self, query, value, key=None, query_mask=None, value_mask=None):
        key = value if key is None else key
        activated = tanh(query.expand_dims(-2) + key.expand_dims(-3))  # (B, Tq, Tv, D)
        if self.scale is not None:
            activated = self.scale * activated
        return attend(activated.sum(-1), value, query_mask, value_mask, self.causal, self.keras2)
'''

KERAS_LSTM = '''
class KerasLSTM(nn.Cell):
    """MindSpore's nn.LSTM (batch_first: the same parameters, call and results) with the activations a
    Keras LSTM may have, where nn.LSTM computes sigmoid gates and tanh only. Per direction and step, gates
    [i, f, g, o] of z = x W_ih^T + b_ih + h W_hh^T + b_hh: c = rec(f) c + rec(i) act(g), h = rec(o) act(c);
    a step at or past its sequence's seq_length leaves h and c as they are and outputs zeros (the
    reverse direction thus starts at the sequence's last valid step)."""

    ACTIVATIONS = {  # the Keras activations this model's LSTMs use
        "tanh": tanh,
        "sigmoid": ops.sigmoid,
        "relu": ops.relu,
        "linear": linear,
        "hard_sigmoid": hard_sigmoid,
        "hard_sigmoid_keras2": hard_sigmoid_keras2,
    }

    def __init__(self, input_size, hidden_size, has_bias=True, bidirectional=False, activation="tanh",
                 recurrent_activation="sigmoid"):
        super().__init__()
        self.hidden_size = hidden_size
        self.has_bias = has_bias
        self.activation = self.ACTIVATIONS[activation]
        self.recurrent_activation = self.ACTIVATIONS[recurrent_activation]
        self.suffixes = ("", "_reverse") if bidirectional else ("",)
        shapes = {"weight_ih": (4 * hidden_size, input_size), "weight_hh": (4 * hidden_size, hidden_size)}
        if has_bias:
            shapes.update(bias_ih=(4 * hidden_size,), bias_hh=(4 * hidden_size,))
        for suffix in self.suffixes:  # nn.LSTM's parameters, by its names
            for name, shape in shapes.items():
                setattr(self, f"{name}_l0{suffix}", Parameter(ops.zeros(shape, mindspore.float32)))

    def construct(self, x, hx=None, seq_length=None):
        batch, steps = x.shape[0], x.shape[1]
        if hx is None:
            zeros = ops.zeros((len(self.suffixes), batch, self.hidden_size), x.dtype)
            hx = (zeros, zeros)
        if seq_length is None:
            seq_length = ops.full((batch,), steps, dtype=mindspore.int32)
        outputs, h_n, c_n = [], [], []
        for direction, suffix in enumerate(self.suffixes):
            inputs = ops.matmul(x, getattr(self, f"weight_ih_l0{suffix}").T)
            if self.has_bias:
                inputs = inputs + getattr(self, f"bias_ih_l0{suffix}") + getattr(self, f"bias_hh_l0{suffix}")
            recurrent = getattr(self, f"weight_hh_l0{suffix}").T
            h, c = hx[0][direction], hx[1][direction]
            out = [None] * steps
            for t in range(steps) if direction == 0 else range(steps - 1, -1, -1):
                i, f, g, o = ops.split(inputs[:, t] + ops.matmul(h, recurrent), self.hidden_size, axis=-1)
                c_t = self.recurrent_activation(f) * c + self.recurrent_activation(i) * self.activation(g)
                h_t = self.recurrent_activation(o) * self.activation(c_t)
                valid = (seq_length > t).expand_dims(-1)
                c, h = ops.where(valid, c_t, c), ops.where(valid, h_t, h)
                out[t] = ops.where(valid, h_t, ops.zeros_like(h_t))
            outputs.append(ops.stack(out, 1))
            h_n.append(h)
            c_n.append(c)
        return ops.cat(outputs, -1), (ops.stack(h_n), ops.stack(c_n))
'''

LOG_SOFTMAX = '''
def log_softmax(x):
    """log_softmax over the last axis, shifted by its maximum: MindSpore 2.10's CPU ops.log_softmax is
    off by up to 3e-5."""
    shifted = x - ops.amax(x, -1, True)
    return shifted - ops.log(ops.exp(shifted).sum(-1, keepdims=True))
'''

LINEAR = '''
def linear(x):
    """Keras's linear activation (None)."""
    return x
'''

HARD_SIGMOID = '''
def hard_sigmoid(x):
    """Keras 3's hard_sigmoid: relu6(x + 3) / 6."""
    return ops.relu6(x + 3) / 6
'''

HARD_SIGMOID_KERAS2 = '''
def hard_sigmoid_keras2(x):
    """Keras 2's hard_sigmoid: clip(0.2 x + 0.5, 0, 1)."""
    return ops.clamp(0.2 * x + 0.5, 0.0, 1.0)
'''

#: helper -> the helpers it calls.
NEEDS = {
    "DotAttention": ("attend",),
    "ConcatAttention": ("attend", "tanh"),
    "AdditiveAttention": ("attend", "tanh"),
}


def keras_lstm_source(activations: set[str]) -> str:
    """``KerasLSTM`` with the entries of its ACTIVATIONS table the module uses."""
    lines = KERAS_LSTM.splitlines(keepends=True)
    return "".join(
        line for line in lines if not line.startswith('        "') or line.split('"')[1] in activations
    )


#: helper name -> its source, in the order a module lists them (``tanh`` first: the Cells use it).
HELPERS = {
    "tanh": TANH,
    "log_softmax": LOG_SOFTMAX,
    "linear": LINEAR,
    "hard_sigmoid": HARD_SIGMOID,
    "hard_sigmoid_keras2": HARD_SIGMOID_KERAS2,
    "present_first": PRESENT_FIRST,
    "forward_steps": FORWARD_STEPS,
    "backward_steps": BACKWARD_STEPS,
    "KerasLSTM": KERAS_LSTM,
    "attend": ATTEND,
    "DotAttention": DOT_ATTENTION,
    "ConcatAttention": CONCAT_ATTENTION,
    "AdditiveAttention": ADDITIVE_ATTENTION,
}
