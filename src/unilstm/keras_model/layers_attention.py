"""Keras's dot-product and additive attention: Attention (Luong) and AdditiveAttention (Bahdanau).

Called on ``[query, value]`` or ``[query, value, key]`` (key = value when absent): query ``(B, Tq, D)``,
value ``(B, Tv, Dv)``, key ``(B, Tv, D)``, with masks ``[query_mask (B, Tq), value_mask (B, Tv)]`` (a third,
the key's, is ignored). The scores ``S (B, Tq, Tv)`` are

- Attention, ``score_mode="dot"``: ``S = scale * Q K^T`` (``scale`` a learned scalar with ``use_scale``,
  else 1);
- Attention, ``score_mode="concat"``: ``S[b, i, j] = w * sum_d tanh(scale * (Q[b, i, d] + K[b, j, d]))``
  (``w``: the scalar weight ``concat_score_weight``);
- AdditiveAttention: ``S[b, i, j] = sum_d scale[d] tanh(Q[b, i, d] + K[b, j, d])`` (``scale`` a learned
  ``(D,)`` vector with ``use_scale``, else 1).

Then the steps a query may not see (masked values; with ``use_causal_mask``, or Keras 2's ``causal``
argument, the values after the query's own index ``j > i``) get ``S - 1e9`` (65504 in float16), exactly as
both Kerases do, so a query that may see no value attends to all of them equally (in float32 every
``S - 1e9`` rounds to the same number); ``W = softmax_j(S)``, dropout on W in training only, output ``W V``
``(B, Tq, Dv)``, zero at masked queries. ``return_attention_scores=True`` also returns ``W``.

Masks (measured on Keras 3.15.1 and tf-keras 2.21, the same in both): the output carries the query's
mask (None without one); the attention scores carry none.

Differences between the generations: Keras 2 sizes AdditiveAttention's ``scale`` by the value's last axis
(tf-keras then fails unless it equals the query's or is 1), Keras 3 by the query's; Keras 2 configs of
tf.keras 2.4-2.9 may hold ``causal`` (Keras 3 has no such argument).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import KerasLayer, LayerSpec, Masks, Shape, Tensors, parameter, register

_CALL_ARGUMENTS = ("return_attention_scores", "use_causal_mask", "training")


@register("Attention")
class Attention(KerasLayer):
    """Dot-product (``score_mode="dot"``) or concat attention; see the module docstring for the maths."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self.use_scale = spec.get("use_scale", self._default_use_scale())
        if not isinstance(self.use_scale, bool):
            raise spec.error(f"use_scale must be a boolean, got {self.use_scale!r}")
        self.score_mode = self._score_mode()
        dropout = spec.get("dropout", 0.0)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise spec.error(f"dropout must be a number in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        causal = spec.get("causal", False)
        if causal and not spec.keras2:
            raise spec.error("causal=True is a Keras 2 argument; Keras 3 takes use_causal_mask in the call")
        if not isinstance(causal, bool):
            raise spec.error(f"causal must be a boolean, got {causal!r}")
        self.causal = causal
        self._check_shapes(spec.input_shapes)
        self.weight_names = self._weight_names()
        self.scale: nn.Parameter | None = None
        self.concat_score_weight: nn.Parameter | None = None

    def _default_use_scale(self) -> bool:
        return False

    def _score_mode(self) -> str:
        mode = self.spec.get("score_mode", "dot")
        if mode not in ("dot", "concat"):
            raise self.spec.error(f"score_mode must be 'dot' or 'concat', got {mode!r}")
        return str(mode)

    def _weight_names(self) -> list[str]:
        names = ["scale"] if self.use_scale else []
        return names + (["concat_score_weight"] if self.score_mode == "concat" else [])

    def weight_shapes(self) -> list[Shape]:
        return [() for _ in self.weight_names]

    def load(self, arrays: Sequence[np.ndarray]) -> None:
        for name, array in zip(self.weight_names, arrays, strict=True):
            setattr(self, name, parameter(array))

    def _check_shapes(self, shapes: Sequence[Shape]) -> None:
        if not 2 <= len(shapes) <= 3:
            raise self.spec.error(
                f"is called on [query, value] or [query, value, key], got {len(shapes)} inputs"
            )
        query, value = shapes[0], shapes[1]
        key = shapes[2] if len(shapes) > 2 else value
        for name, shape in (("query", query), ("value", value), ("key", key)):
            if len(shape) < 3:
                raise self.spec.error(f"the {name} must have rank 3 or more (batch, steps, dim), got {shape}")
        if value[-2] is not None and key[-2] is not None and value[-2] != key[-2]:
            raise self.spec.error(f"value and key must have the same steps, got shapes {value} and {key}")
        if query[-1] is not None and key[-1] is not None and query[-1] != key[-1]:
            raise self.spec.error(f"query and key must have the same last axis, got shapes {query} and {key}")

    def output_shape(
        self, input_shapes: Sequence[Shape], return_attention_scores: bool = False, **call_kwargs: Any
    ) -> Shape | list[Shape]:
        """``(*query[:-1], Dv)``; with ``return_attention_scores`` (a call argument) also the scores'
        ``(*query[:-1], Tv)``."""
        self._check_shapes(input_shapes)
        query, value = input_shapes[0], input_shapes[1]
        key = input_shapes[2] if len(input_shapes) > 2 else value
        output = (*query[:-1], value[-1])
        return [output, (*query[:-1], key[-2])] if return_attention_scores else output

    def _scores(self, query: Tensor, key: Tensor) -> Tensor:
        if self.score_mode == "dot":
            scores = torch.matmul(query, key.transpose(-2, -1))
            return scores * self.scale.to(scores.dtype) if self.scale is not None else scores
        summed = query.unsqueeze(-2) + key.unsqueeze(-3)  # (B, Tq, Tv, D)
        if self.scale is not None:
            summed = self.scale.to(summed.dtype) * summed
        assert self.concat_score_weight is not None
        return self.concat_score_weight.to(summed.dtype) * torch.tanh(summed).sum(dim=-1)

    def _check_loaded(self) -> None:
        if len(self.weight_names) and getattr(self, self.weight_names[0]) is None:
            raise self.spec.error("called before its weights were loaded")

    def call(self, inputs: Tensors, mask: Masks = None, **kwargs: Any) -> tuple[Tensors, Masks]:
        unknown = sorted(set(kwargs) - set(_CALL_ARGUMENTS))
        if unknown:
            raise self.spec.error(f"unsupported call arguments: {', '.join(unknown)}")
        if not isinstance(inputs, list) or not 2 <= len(inputs) <= 3:
            raise self.spec.error("is called on a list [query, value] or [query, value, key]")
        self._check_loaded()
        masks = self._masks(inputs, mask)
        query, value = inputs[0], inputs[1]
        key = inputs[2] if len(inputs) > 2 else value
        q_mask, v_mask = masks[0], masks[1]
        training = kwargs.get("training")
        training = self.training if training is None else bool(training)
        scores = self._scores(query, key)
        allowed = None if v_mask is None else v_mask.to(torch.bool).unsqueeze(-2)  # (B, 1, Tv)
        if kwargs.get("use_causal_mask", False) or self.causal:
            rows, cols = scores.shape[-2], scores.shape[-1]
            i = torch.arange(rows, device=scores.device).unsqueeze(-1)
            j = torch.arange(cols, device=scores.device)
            causal = (i >= j).unsqueeze(0)  # (1, Tq, Tv)
            allowed = causal if allowed is None else torch.logical_and(allowed, causal)
        if allowed is not None:
            big = 65504.0 if scores.dtype == torch.float16 else 1.0e9
            scores = torch.where(allowed, scores, scores - big)
        weights = torch.softmax(scores, dim=-1)
        if training and self.dropout > 0:
            weights = F.dropout(weights, self.dropout, training=True)
        output = torch.matmul(weights, value)
        if q_mask is not None:
            present = q_mask.to(torch.bool).unsqueeze(-1)
            if self.spec.keras2:
                output = output * present.to(output.dtype)
            else:
                output = torch.where(
                    present, output, torch.zeros((), dtype=output.dtype, device=output.device)
                )
        out_mask = None if q_mask is None else q_mask.to(torch.bool)
        if kwargs.get("return_attention_scores", False):
            return [output, weights], [out_mask, None]
        return output, out_mask

    def _masks(self, inputs: list[Tensor], mask: Masks) -> list[Tensor | None]:
        if mask is None:
            return [None, None]
        if not isinstance(mask, list):
            raise self.spec.error("the mask is a list [query_mask, value_mask]")
        most = len(inputs) if self.spec.keras2 else 3
        if not 2 <= len(mask) <= most:
            raise self.spec.error(f"the mask is a list of 2 to {most} masks, got {len(mask)}")
        return list(mask)


@register("AdditiveAttention")
class AdditiveAttention(Attention):
    """Additive (Bahdanau) attention; ``scale`` is a ``(D,)`` vector (module docstring)."""

    def _default_use_scale(self) -> bool:
        return True

    def _score_mode(self) -> str:
        # Keras 3's AdditiveAttention inherits score_mode but computes its own scores whatever it says
        mode = self.spec.get("score_mode", "dot")
        if mode not in ("dot", "concat"):
            raise self.spec.error(f"score_mode must be 'dot' or 'concat', got {mode!r}")
        return "additive"

    def _weight_names(self) -> list[str]:
        return ["scale"] if self.use_scale else []

    def _check_shapes(self, shapes: Sequence[Shape]) -> None:
        super()._check_shapes(shapes)
        if self.use_scale and self._scale_size(shapes) is None:
            raise self.spec.error("the last axis of the input that sizes `scale` must be known")
        if self.spec.keras2 and self.use_scale:
            query_dim, value_dim = shapes[0][-1], shapes[1][-1]
            if value_dim not in (query_dim, 1):
                raise self.spec.error(
                    f"tf-keras sizes `scale` by the value's last axis ({value_dim}), which does not "
                    f"broadcast against the query's ({query_dim}): tf-keras fails on this call"
                )

    def _scale_size(self, shapes: Sequence[Shape]) -> int | None:
        return shapes[1][-1] if self.spec.keras2 else shapes[0][-1]

    def weight_shapes(self) -> list[Shape]:
        return [(self._scale_size(self.spec.input_shapes),)] if self.use_scale else []

    def _scores(self, query: Tensor, key: Tensor) -> Tensor:
        activated = torch.tanh(query.unsqueeze(-2) + key.unsqueeze(-3))  # (B, Tq, Tv, D)
        if self.scale is not None:
            activated = self.scale.to(activated.dtype) * activated
        return activated.sum(dim=-1)
