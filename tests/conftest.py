import os
import pathlib

# The Triton cell kernels run through Triton's interpreter on the CPU in the tests (test_triton_cell.py);
# the switch is read when the kernels are defined, so it must be set before anything imports them.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Kernel choices measured at first use depend on timing; the suite runs the fixed policy so that every run
# takes the same kernels (tests/kernels/test_first_use.py measures on purpose).
os.environ.setdefault("UNILSTM_KERNEL_CHOICE", "policy")

import pytest
from hypothesis import settings

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures_dir() -> pathlib.Path:
    return FIXTURES


# CI runs every property test on the same examples (a red CI must mean a regression, not a new draw);
# developers' runs keep exploring new random examples.
if os.environ.get("CI"):
    settings.register_profile("ci", derandomize=True)
    settings.load_profile("ci")
