"""Which steps of a call count: the one value every front door hands the canonical layer.

A front door says what it knows, once, and the value travels unchanged to
:func:`unilstm.kernels.dispatch.run_stack`, the one place that decides how to compute it:

* nothing: every step counts;
* lengths (B,): step t of sequence b counts when t < lengths[b] (torch's packed sequences, MindSpore's
  ``seq_length``, the canonical layer's ``lengths``), so kernels that take packed input need no search;
* a mask (T, B) of any pattern (Keras masks, the canonical layer's ``mask``);
* packed batch sizes (T,): the input is a PackedSequence's data (N, F), N = sum(batch_sizes), rows sorted by
  decreasing length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class CountedSteps:
    """Which steps count; at most one of ``lengths``, ``mask`` and ``batch_sizes`` is set.

    Attributes:
        lengths: (B,) integers in [0, T], on the input's device: a right-padded batch.
        mask: (T, B) bool, True where a step counts, any pattern (time-major, as the kernels read it).
        batch_sizes: (T,) int64 on the CPU, a PackedSequence's ``batch_sizes``: the input is packed data.
    """

    lengths: Tensor | None = None
    mask: Tensor | None = None
    batch_sizes: Tensor | None = None

    def __post_init__(self) -> None:
        given = sum(value is not None for value in (self.lengths, self.mask, self.batch_sizes))
        if given > 1:
            raise ValueError("CountedSteps: give at most one of lengths, mask and batch_sizes")

    @property
    def every_step(self) -> bool:
        """True when every step counts (nothing was said)."""
        return self.lengths is None and self.mask is None and self.batch_sizes is None

    @property
    def packed(self) -> bool:
        """True when the input is a PackedSequence's data."""
        return self.batch_sizes is not None

    def step_mask(self, steps: int, device: torch.device) -> Tensor | None:
        """The (T, B) bool mask of a padded input: None when every step counts."""
        if self.mask is not None:
            return self.mask
        if self.lengths is not None:
            return torch.arange(steps, device=device).unsqueeze(1) < self.lengths.to(device).unsqueeze(0)
        if self.batch_sizes is not None:
            raise ValueError("CountedSteps.step_mask: packed input has no padded steps; pad it first")
        return None


EVERY_STEP = CountedSteps()
