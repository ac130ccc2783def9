"""Build script for the optional native CPU kernel; all metadata lives in pyproject.toml.

``optional=True``: where no C compiler is at hand the install still succeeds and the engine runs
its portable NumPy path (``python -m ssi_sparse info`` says which one is in use).
"""

import sys

from setuptools import Extension, setup

compile_args = [] if sys.platform == "win32" else ["-O3"]

setup(
    ext_modules=[
        Extension(
            "ssi_sparse._native_frontal",
            sources=["ssi_sparse/_csrc/frontal.c", "ssi_sparse/_csrc/stencil.c"],
            depends=["ssi_sparse/_csrc/frontal_impl.h", "ssi_sparse/_csrc/dense_impl.h"],
            extra_compile_args=compile_args,
            optional=True,
        )
    ]
)
