"""The public objects' implementation: SciPy's ``spsolve`` / ``factorized`` contract, the
fallback to SciPy, ``patch_scipy``, the factor objects (single, batch, stencil front door) and
their adjoint.
"""
