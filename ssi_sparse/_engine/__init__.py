"""Numeric phase: tree walks over a plan's levels (factor, up sweep, down sweep), the kernels
they run per class (portable array-API, native C, dense LAPACK/BLAS), their threads, buffers
and iterative refinement.
"""
