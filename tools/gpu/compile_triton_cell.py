"""Compile the Triton cell kernels for a Hopper GPU (sm_90) without one: ``tools/gpu/compile_triton_cell.py``.

Triton's interpreter, which the tests use on the CPU, accepts code that the compiler refuses (globals that
are not constexpr, float64 in float32-only functions, libdevice calls it skips). This compiles every
activation code forward and backward, in every dtype, with and without a step mask, to PTX and machine code
with the ptxas that ships in the Triton wheel (``--quick``: float32 and float64 only). Needs Triton and
TRITON_INTERPRET unset or 0.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "src"))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from unilstm.kernels import _triton_cell_kernels as kernels  # noqa: E402
from unilstm.kernels.triton_cell import ACTIVATION_CODES  # noqa: E402

POINTERS_BY_DTYPE = ("Z", "C_prev", "C_new", "H_prev", "H_new", "Out", "Out_prev", "Dout", "Dh", "Dc",
                     "Dh_pass", "Carry", "Dh_new", "Dh4", "Mask", "Pass", "Mh", "Hm")


def compile_one(fn, dtype: str, constants: dict) -> None:
    """Compile ``fn`` for sm_90 with its pointers of ``dtype`` and the given constexpr arguments."""
    signature = {}
    for name in fn.arg_names:  # in the kernel's parameter order
        if name in constants:
            signature[name] = "constexpr"
        elif name in POINTERS_BY_DTYPE:
            signature[name] = f"*{dtype}"
        else:
            signature[name] = "*u8" if name == "Keep" else "i32"
    indices = {name: position for position, name in enumerate(fn.arg_names)}
    constexprs = {(indices[name],): value for name, value in constants.items()}
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    triton.compile(source, target=GPUTarget("cuda", 90, 32))


def main() -> int:
    if os.environ.get("TRITON_INTERPRET", "0") == "1" or kernels.INTERPRETED:
        print("unset TRITON_INTERPRET: this compiles the kernels for the GPU", file=sys.stderr)
        return 2
    start = time.time()
    codes = sorted(set(ACTIVATION_CODES.values()))
    dtypes = ("fp32", "fp64") if "--quick" in sys.argv[1:] else ("fp32", "fp64", "fp16", "bf16")
    count = 0
    for dtype, (position, code) in itertools.product(dtypes, enumerate(codes)):
        masked, zero_out, stored = position % 2 == 0, position % 4 == 0, position % 3 != 0
        act, ract = code, codes[(position * 7 + 1) % len(codes)]
        flags = dict(ACT=act, ACT_A=0.0, ACT_B=0.0, RACT=ract, RACT_A=0.0, RACT_B=0.0, MASKED=masked,
                     ZERO_OUT=zero_out, PROJECTED=position % 5 == 1, FLOAT64=dtype == "fp64", BLOCK=256)
        h_masks = 0 if flags["PROJECTED"] else (0, 1, 4)[position % 3]
        compile_one(kernels.forward_step, dtype, {**flags, "STORE_ACTIVATIONS": stored, "H_MASKS": h_masks})
        compile_one(kernels.backward_step, dtype, {**flags, "STORED_ACTIVATIONS": stored})
        count += 2
    for dtype, masked, zero_out in itertools.product(dtypes, (False, True), (False, True)):
        flags = dict(MASKED=masked, ZERO_OUT=zero_out, FLOAT64=dtype == "fp64", BLOCK=256)
        compile_one(kernels.projected_backward_prelude, dtype, flags)
        count += 1
    for dtype, mask_kind, with_pass in itertools.product(dtypes, (0, 1, 2), (False, True)):
        flags = dict(MASK=mask_kind, PASS=with_pass, FLOAT64=dtype == "fp64", BLOCK=256)
        compile_one(kernels.combine_gate_products, dtype, flags)
        count += 1
    print(f"compiled {count} Triton cell kernels for sm_90 in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
