"""Compile the fused cell-variant kernels (kernels/_triton_variant_kernels.py) for a Hopper GPU (sm_90)
without one: ``tools/gpu/compile_triton_variants.py``.

As tools/gpu/compile_triton_cell.py for the standard cell: Triton's interpreter, which the tests use on the
CPU, accepts code that the compiler refuses. This compiles the four variant kernels in two configurations
that together switch on every variant and every branch (layer normalisation, peepholes, both clips, coupled
gates, zoneout draws and weights, parametric activations, step mask, both masked-output modes, projection),
in float32, float64, float16 and bfloat16 (``--quick``: the first in float32, the second in float64), and
the standard cell's two kernels with ONNX's parametric activations (``--quick``: float32), to PTX and
machine code with the ptxas that ships in the Triton wheel. Needs Triton and TRITON_INTERPRET unset or 0.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "src"))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from unilstm.kernels import _triton_cell_kernels as cell_kernels  # noqa: E402
from unilstm.kernels import _triton_variant_kernels as kernels  # noqa: E402
from unilstm.kernels.activation_ids import ACTIVATION_IDS  # noqa: E402
from unilstm.kernels.triton_codes import PARAMETRIC_CODES  # noqa: E402


def compile_one(fn, dtype: str, constants: dict, sizes: tuple[str, ...] = ("H", "n", "P")) -> None:
    """Compile ``fn`` for sm_90: pointers of ``dtype`` (the step mask's uint8), int32 sizes, constexprs."""
    signature = {}
    for name in fn.arg_names:  # in the kernel's parameter order
        if name in constants:
            signature[name] = "constexpr"
        elif name in sizes:
            signature[name] = "i32"
        else:
            signature[name] = "*u8" if name == "Keep" else f"*{dtype}"
    indices = {name: position for position, name in enumerate(fn.arg_names)}
    constexprs = {(indices[name],): value for name, value in constants.items()}
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    triton.compile(source, target=GPUTarget("cuda", 90, 32))


def compile_standard(fn, dtype: str, constants: dict) -> None:
    """As compile_one, for the standard cell's kernels (their strides are int32 arguments too)."""
    compile_one(fn, dtype, constants, sizes=("n", "H", "gate_stride", "row_stride"))


def configurations(float64: bool) -> list[dict]:
    """Two cell-kernel configurations: (layer norm, draws for h, weight for c, mask with previous outputs,
    named activations) and (projection, coupled gates, weight for h, draws for c, zero outputs, ONNX's
    parametric activations)."""
    common = dict(PEEP=True, GATE_CLIP=True, GATE_BOUND=0.5, CELL_CLIP=True, CELL_BOUND=3.0, WH=0.3, WC=0.1,
                  EPS=1e-5, MASKED=True, FLOAT64=float64)
    named = dict(ACT=ACTIVATION_IDS["tanh"], ACT_A=0.0, ACT_B=0.0, RACT=ACTIVATION_IDS["sigmoid"], RACT_A=0.0,
                 RACT_B=0.0, OUT=ACTIVATION_IDS["softsign"], OUT_A=0.0, OUT_B=0.0)
    onnx = dict(ACT=PARAMETRIC_CODES["scaled_tanh"], ACT_A=1.5, ACT_B=0.7,
                RACT=PARAMETRIC_CODES["hard_sigmoid"], RACT_A=0.2, RACT_B=0.5,
                OUT=PARAMETRIC_CODES["leaky_relu"], OUT_A=0.01, OUT_B=0.0)
    return [
        {**common, **named, "COUPLED": False, "ZONE_H": 2, "ZONE_C": 1, "LN": True, "ZERO_OUT": False,
         "PROJECTED": False, "BLOCK": 64},
        {**common, **onnx, "COUPLED": True, "ZONE_H": 1, "ZONE_C": 2, "LN": False, "ZERO_OUT": True,
         "PROJECTED": True, "BLOCK": 32},
    ]


def main() -> int:
    if os.environ.get("TRITON_INTERPRET", "0") == "1" or kernels.INTERPRETED:
        print("unset TRITON_INTERPRET: this compiles the kernels for the GPU", file=sys.stderr)
        return 2
    start = time.time()
    count = 0
    quick = "--quick" in sys.argv[1:]
    for dtype in ("fp32", "fp64") if quick else ("fp32", "fp64", "fp16", "bf16"):
        for index, flags in enumerate(configurations(dtype == "fp64")):
            if quick and index != (dtype == "fp64"):
                continue  # the first configuration in float32, the second in float64
            compile_one(kernels.variant_forward_step, dtype, flags)
            compile_one(kernels.variant_backward_step, dtype, flags)
            small = {name: flags[name] for name in ("ZONE_H", "WH", "MASKED", "ZERO_OUT", "FLOAT64")}
            small.update(PROJ_CLIP=True, PROJ_BOUND=0.4, BLOCK=256)
            compile_one(kernels.variant_projected_step, dtype, small)
            compile_one(kernels.variant_backward_prelude, dtype, small)
            count += 4
        if quick and dtype == "fp64":
            continue
        # the standard cell's kernels with ONNX's parametric activations (the fast kernel's standard body)
        parametric = dict(ACT=PARAMETRIC_CODES["scaled_tanh"], ACT_A=1.5, ACT_B=0.7,
                          RACT=PARAMETRIC_CODES["hard_sigmoid"], RACT_A=0.2, RACT_B=0.5, MASKED=True,
                          ZERO_OUT=False, PROJECTED=False, FLOAT64=dtype == "fp64", BLOCK=256)
        compile_standard(cell_kernels.forward_step, dtype, {**parametric, "STORE_ACTIVATIONS": False,
                                                             "H_MASKS": 4})
        compile_standard(cell_kernels.backward_step, dtype, {**parametric, "STORED_ACTIVATIONS": False})
        count += 2
    print(f"compiled {count} Triton variant kernels for sm_90 in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
