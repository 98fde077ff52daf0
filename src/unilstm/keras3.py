"""Genuine Keras 3 LSTM layers on the torch backend, computed by unilstm's engine.

``unilstm.keras3.LSTM`` is a subclass of ``keras.layers.LSTM``: the same signature, config, weights (the
cell's ``kernel`` (F, 4H), ``recurrent_kernel`` (H, 4H) and ``bias`` (4H,) Keras variables, gate blocks
[i, f, c, o], created by Keras's own ``build``), states, masks and return values. Only the time loop
changes: Keras's ``RNN.call`` prepares the initial states, the dropout masks, the mask and the stateful
bookkeeping as always, then calls :meth:`LSTM.inner_loop`, which hands the torch tensors the backend gives it
to :func:`unilstm.layer.compute_stack` instead of stepping a Python loop. Per step (Keras's cell)::

    z = (x_t * m_x) K + (h_{t-1} * m_h) R + b;   i, f, o = sigma(z_i), sigma(z_f), sigma(z_o)
    c_t = f * c_{t-1} + i * g(z_c);   h_t = o * g(c_t)

with ``g = activation``, ``sigma = recurrent_activation`` and dropout masks m_x, m_h only when training.
A masked step keeps h and c and outputs the previous output (zeros with ``zero_output_for_mask``).

The variables stay Keras's: the engine reads torch-layout views of them (differentiable transposes), so
gradients reach them through torch autograd, which the torch backend's trainer uses, and Keras's optimizers,
``get_weights``, ``model.save`` and ``keras.models.load_model`` work unchanged. The class is registered as
``"unilstm>LSTM"``: after ``import unilstm.keras3`` a saved model loads with this layer.

Usage (``keras.layers.Bidirectional``, ``Embedding(mask_zero=True)``, ``Masking``, ``fit`` all work)::

    import unilstm.keras3        # before keras: sets KERAS_BACKEND=torch unless it is set
    import keras
    model = keras.Sequential([keras.Input((None, 8)), unilstm.keras3.LSTM(32), keras.layers.Dense(1)])

Dropout: a shared input mask (the default ``implementation=2``) is Keras's own mask, so training equals
``keras.layers.LSTM`` number for number; the per-gate masks of ``implementation=1`` (which any
``recurrent_dropout`` forces) are drawn by the engine with Keras's distribution (4 independent inverted
Bernoulli masks per call), from the cell's seed generator when the layer has a seed, else from torch's global
generator as Keras's unseeded dropout. What the engine cannot compute as Keras does (activations outside
unilstm's registry, ``use_cudnn=True`` with a mask, which Keras refuses) runs Keras's own loop.

Importing this module under another Keras backend raises ImportError.
"""

from __future__ import annotations

import os
import sys
from typing import Any

if "keras" not in sys.modules:
    # keras reads its backend once, at its first import: make this import choose torch unless the user chose
    os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # type: ignore[import-untyped, import-not-found]  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from .formats.layout import torch_views_from_keras  # noqa: E402
from .keras_names import activation_from_keras  # noqa: E402
from .layer import DirectionWeights, compute_stack  # noqa: E402
from .spec import LSTMSpec  # noqa: E402
from .steps import EVERY_STEP, CountedSteps  # noqa: E402

if keras.backend.backend() != "torch":
    raise ImportError(
        f"unilstm.keras3 runs Keras 3 layers on the torch backend, but keras was imported with the "
        f"{keras.backend.backend()!r} backend; set KERAS_BACKEND=torch before keras is first imported "
        "(or import unilstm.keras3 first). On other backends use keras.layers.LSTM, or unilstm.keras for "
        "plain torch modules."
    )

__all__ = ["LSTM"]

_ENGINE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _engine_activation(function: Any) -> str | None:
    """unilstm's registry name for one of Keras's activation functions, or None when unilstm has none (the
    layer then runs Keras's own loop)."""
    name = keras.activations.serialize(function)
    if not isinstance(name, str):
        return None
    try:
        found = activation_from_keras(name, "activation", keras2=False)
    except ValueError:
        return None
    return found if isinstance(found, str) else None


@keras.saving.register_keras_serializable(package="unilstm")
class LSTM(keras.layers.LSTM):
    """``keras.layers.LSTM`` (Keras 3, torch backend) whose time loop is unilstm's engine.

    Same arguments as ``keras.layers.LSTM``. Shapes: inputs (B, T, F); mask (B, T) bool, True where a step
    counts; output (B, T, H) with ``return_sequences`` (in processing order, i.e. reversed time with
    ``go_backwards``, as Keras), else (B, H); with ``return_state`` also h (B, H) and c (B, H).
    """

    # Under model.compile(jit_compile=True) Keras's torch trainer runs torch.compile: the engine (C loops, its
    # own autograd Functions, kernel choices made on tensor values) stays one opaque call there, a graph break
    @torch.compiler.disable
    def inner_loop(
        self, sequences: Tensor, initial_state: list[Tensor], mask: Any, training: Any = False
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """One layer's whole sequence on the engine (Keras's RNN contract).

        sequences (B, T, F); initial_state [h0 (B, H), c0 (B, H)]; mask (B, T) bool or None (Keras may nest
        it: the first is the input's). Returns last_output (B, H), outputs (B, T, H) in processing order, and
        [h_T (B, H), c_T (B, H)]."""
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        training = bool(training)
        cell = self.cell
        activation = _engine_activation(cell.activation)
        recurrent_activation = _engine_activation(cell.recurrent_activation)
        x = keras.ops.convert_to_tensor(sequences)
        if (
            activation is None
            or recurrent_activation is None
            or (self.use_cudnn is True and mask is not None)
            or x.dtype not in _ENGINE_DTYPES
        ):
            return super().inner_loop(sequences, initial_state, mask=mask, training=training)

        kernel = cell.kernel.value  # .value: the torch Parameter, cast under a mixed-precision policy
        bias = cell.bias.value if cell.use_bias else None
        w_ih, w_hh, b_ih, b_hh = torch_views_from_keras(kernel, cell.recurrent_kernel.value, bias)
        per_gate = cell.implementation == 1
        input_rate = cell.dropout if training and 0.0 < cell.dropout < 1.0 else 0.0
        recurrent_rate = (
            cell.recurrent_dropout if training and 0.0 < cell.recurrent_dropout < 1.0 else 0.0
        )
        if input_rate and not per_gate:
            # one mask (B, F) for every step: Keras's own, drawn by RNN.call before this loop
            x = x * cell.get_dropout_mask(x[:, 0, :]).unsqueeze(1)
            input_rate = 0.0
        x_tm = x.transpose(0, 1).contiguous()  # (T, B, F)
        h0, c0 = (keras.ops.convert_to_tensor(s) for s in initial_state)
        spec = LSTMSpec(
            input_size=x_tm.shape[-1],
            hidden_size=self.units,
            bias=cell.use_bias,
            activation=activation,
            recurrent_activation=recurrent_activation,
            input_dropout=input_rate,
            recurrent_dropout=recurrent_rate,
            per_gate_dropout=per_gate,
            go_backwards=self.go_backwards,
            masked_output="zero" if self.zero_output_for_mask else "previous",
        )
        steps = EVERY_STEP
        if mask is not None:
            steps = CountedSteps(mask=keras.ops.convert_to_tensor(mask).to(torch.bool).t())
        out, h_n, c_n = compute_stack(
            spec,
            x_tm,
            h0.unsqueeze(0),
            c0.unsqueeze(0),
            [[DirectionWeights(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)]],
            steps,
            training=training,
            generator=self._dropout_generator(x_tm.device) if input_rate or recurrent_rate else None,
        )
        return out[-1], out.transpose(0, 1), [h_n[0], c_n[0]]

    def _dropout_generator(self, device: torch.device) -> torch.Generator | None:
        """The engine's source for per-gate dropout masks: a generator seeded from the cell's Keras seed
        generator for a seeded layer (a new seed each call, as Keras's seeded dropout), else None, i.e.
        torch's global generator, which Keras's unseeded dropout also uses (``keras.utils.set_random_seed``
        seeds it)."""
        if self.cell.seed is None:
            return None
        first, second = (int(v) for v in keras.ops.convert_to_numpy(self.cell.seed_generator.next()))
        return torch.Generator(device=device).manual_seed((first + second) & 0xFFFFFFFF)
