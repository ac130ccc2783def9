"""The examples in the public docstrings run and give what they show."""

import doctest
import importlib

import pytest

MODULES = ["ssi_sparse._factor", "ssi_sparse._grid", "ssi_sparse._frontend", "ssi_sparse._adjoint",
           "ssi_sparse.problems"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
