"""The optional native cell (src/unilstm/kernels/_lstm_cell.c): plain C, no torch headers, so it builds with
any C compiler in seconds. ``optional=True``: without a compiler the install still succeeds and unilstm uses
its pure-torch kernels (``unilstm.kernels.native.available()`` says which)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "unilstm.kernels._lstm_cell",
            ["src/unilstm/kernels/_lstm_cell.c"],
            depends=["src/unilstm/kernels/_lstm_cell_body.h"],
            extra_compile_args=["-O3", "-std=gnu11", "-fno-math-errno", "-fno-trapping-math"],
            optional=True,
        )
    ]
)
