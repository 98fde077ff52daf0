"""The optional native cell (src/unilstm/kernels/native/_lstm_cell.c): plain C, no torch headers, so it
builds with any C compiler in seconds. ``optional=True``: without a compiler the install still succeeds and
unilstm uses its pure-torch kernels (``unilstm.kernels.native.available()`` says which).

The activation ids come from src/unilstm/kernels/activation_ids.py, executed here (not imported: the build
needs no torch) and passed to the compiler as macros."""

from pathlib import Path

from setuptools import Extension, setup

NATIVE = "src/unilstm/kernels/native"
ACTIVATION_IDS = "src/unilstm/kernels/activation_ids.py"

table: dict = {}
exec(compile(Path(ACTIVATION_IDS).read_text(), ACTIVATION_IDS, "exec"), table)

setup(
    ext_modules=[
        Extension(
            "unilstm.kernels.native._lstm_cell",
            [f"{NATIVE}/_lstm_cell.c"],
            depends=[f"{NATIVE}/_lstm_cell_body.h", f"{NATIVE}/_lstm_variant_body.h",
                     f"{NATIVE}/_lstm_variant_entry.h", f"{NATIVE}/_lstm_small_gemm.h",
                     ACTIVATION_IDS],
            define_macros=table["compiler_macros"](),
            extra_compile_args=["-O3", "-std=gnu11", "-fno-math-errno", "-fno-trapping-math"],
            optional=True,
        )
    ]
)
