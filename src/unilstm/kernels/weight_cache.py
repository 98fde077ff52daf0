"""Copies of weights in the layout a kernel's GEMMs want, made once per weight value.

Streaming inference calls a kernel once per step with unchanged weights: re-making a transposed or
row-permuted copy each call would cost more than the step. A copy is reused while the weight is the same
tensor with the same version counter (an optimizer step or any in-place change bumps it) and storage.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable

from torch import Tensor

#: (id(weight), kind) -> (weak reference to the weight, its version, its data pointer, the copy)
_COPIES: dict[tuple[int, str], tuple[weakref.ref, int, int, Tensor]] = {}
_LIMIT = 64


def derived_weight(weight: Tensor, kind: str, make: Callable[[Tensor], Tensor]) -> Tensor:
    """``make(weight.detach())``, cached under ``kind`` until ``weight`` changes. Under autograd the copy is
    a constant: only kernels with a hand-written backward (which return the gradient of ``weight``
    itself) may use it."""
    key = (id(weight), kind)
    hit = _COPIES.get(key)
    version = weight._version
    if hit is not None and hit[0]() is weight and hit[1] == version and hit[2] == weight.data_ptr():
        return hit[3]
    copy = make(weight.detach())
    if len(_COPIES) > _LIMIT:
        stale = [k for k, v in _COPIES.items() if v[0]() is None] or list(_COPIES)[: _LIMIT // 2]
        for k in stale:
            _COPIES.pop(k, None)
    with contextlib.suppress(TypeError):  # tensors that take no weak references are not cached
        _COPIES[key] = (weakref.ref(weight), version, weight.data_ptr(), copy)
    return copy
