"""
Fixtures of the home-check tests: homes owned by real uids, and a reactor
running in a thread of its own for the module.
"""

import pytest

from tests.support.probes import Homes, ReactorThread


@pytest.fixture
def homes():
    """
    A L{Homes} for one test, removed after it.
    """
    h = Homes()
    yield h
    h.cleanup()


@pytest.fixture(scope="module")
def rt():
    """
    The reactor running in its background thread.
    """
    return ReactorThread.get()
