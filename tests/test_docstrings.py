"""The examples in the public docstrings run and give what they show."""

import doctest
import importlib

import pytest

try:
    import mpi4py  # noqa: F401
except ImportError:  # the mpi extra is optional
    mpi4py = None

MODULES = ["ssi_sparse._api.factor", "ssi_sparse._structure.grid", "ssi_sparse._api.frontend", "ssi_sparse._api.adjoint",
           "ssi_sparse.problems", "ssi_sparse._api.from_stencil"] + (["ssi_sparse.mpi"] if mpi4py else [])


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
