"""Build script for the optional native CPU kernel; all metadata lives in pyproject.toml.

``optional=True``: where no C compiler is at hand the install still succeeds and the engine runs
its portable NumPy path (``python -m ssi_sparse info`` says which one is in use).
"""

import sys

from setuptools import Extension, setup

# complex products without C99's inf/NaN recovery branch (it blocks vectorization); the
# kernels refuse non-finite input and catch NaN in every block's condition estimate
compile_args = [] if sys.platform == "win32" else ["-O3", "-fcx-limited-range", "-fopenmp-simd"]

setup(
    ext_modules=[
        Extension(
            "ssi_sparse._engine._native_frontal",
            sources=["ssi_sparse/_engine/_csrc/frontal.c", "ssi_sparse/_engine/_csrc/stencil.c"],
            depends=["ssi_sparse/_engine/_csrc/frontal_impl.h", "ssi_sparse/_engine/_csrc/inline_impl.h", "ssi_sparse/_engine/_csrc/dense_impl.h", "ssi_sparse/_engine/_csrc/program_impl.h"],
            extra_compile_args=compile_args,
            optional=True,
        )
    ]
)
