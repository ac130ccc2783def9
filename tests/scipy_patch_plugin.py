"""pytest plugin: bind ssi_sparse's spsolve and factorized in place of SciPy's.

SciPy's ``test_linsolve.py`` imports ``spsolve`` and ``factorized`` from
``scipy.sparse.linalg._dsolve``; rebinding those two names before the module is collected
runs SciPy's own tests against ssi_sparse.  ``SSI_ENGINE_MIN_SIZE`` lowers the size threshold so
that the engine, not the fallback, answers every grid-structured matrix in those tests.
"""

import os

import scipy.sparse.linalg._dsolve as dsolve

import ssi_sparse
import ssi_sparse._tuning as tuning

dsolve.spsolve = ssi_sparse.spsolve
dsolve.factorized = ssi_sparse.factorized
if "SSI_ENGINE_MIN_SIZE" in os.environ:  # (from the first matrix of a size on)
    tuning.ENGINE_MIN_SIZE = tuning.ENGINE_MIN_SIZE_FIRST = int(os.environ["SSI_ENGINE_MIN_SIZE"])
