"""Fixtures shared by the format tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_intra_op_thread():
    """Tensors of a few hundred numbers: more intra-op threads only wait on each other (measured 2.5x slower
    with two threads on a busy two-core machine). A module asks for it with
    ``pytestmark = pytest.mark.usefixtures("one_intra_op_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
