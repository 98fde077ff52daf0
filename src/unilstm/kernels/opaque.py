"""Kernels that ``torch.compile`` must treat as one opaque call.

Their time loops would otherwise be unrolled into huge graphs, and torch's fused LSTM op cannot be traced
(it silently gave wrong numbers under ``aot_eager``). ``torch._dynamo.disable`` does this, but importing
``torch._dynamo`` costs about 2 s, which every ``import unilstm`` would pay at start-up. So the decorator
here only reaches for it while torch.compile is tracing, when torch._dynamo is loaded anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


def opaque_to_compile(fn: F) -> F:
    """``fn`` unchanged in eager mode; under torch.compile, a call to ``torch._dynamo.disable(fn)``."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if torch.compiler.is_compiling():  # so torch._dynamo is imported: it is tracing this call
            return torch._dynamo.disable(fn)(*args, **kwargs)
        return fn(*args, **kwargs)

    return call  # type: ignore[return-value]
