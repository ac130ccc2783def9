"""pytest configuration: Hypothesis profiles (helpers live in tests/helpers.py).

Profiles: ``default`` (loaded here) and ``ci`` (more examples, derandomized); select one with
``pytest --hypothesis-profile=ci``.
"""

import os
import sys

from hypothesis import HealthCheck, settings

# make ``import helpers`` work however pytest was invoked (rootdir, PYTHONPATH, ...)
sys.path.insert(0, os.path.dirname(__file__))

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "default", max_examples=40, deadline=None, suppress_health_check=_SUPPRESS
)
settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=_SUPPRESS,
)
settings.load_profile("default")


import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _engine_from_the_first_matrix():
    """Tests check what the engine does with a matrix of a size it meets for the first
    time: the routing rule that sends such a first small matrix to SciPy
    (``ENGINE_MIN_SIZE_FIRST``, tested in test_frontend.py) is off."""
    from unittest import mock

    from ssi_sparse import _tuning

    with mock.patch.object(_tuning, "ENGINE_MIN_SIZE_FIRST", _tuning.ENGINE_MIN_SIZE):
        yield
