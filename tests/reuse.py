"""The module's shared Envoy as a test module's own: a module that imports these fixtures
(``from reuse import envoy, upstream``) runs its tests on conftest's ``reused_envoy`` (one
Envoy per module, as fresh before each test) and its upstream, and its ``start_envoy``
Envoys sit in front of that upstream too."""

from __future__ import annotations

import pytest


@pytest.fixture
def envoy(reused_envoy):
    """The module's one Envoy, reset before each test (conftest's reused_envoy)."""
    return reused_envoy


@pytest.fixture
def upstream(reused_upstream):
    """The upstream behind the module's Envoy (and behind start_envoy's), at a count of 0."""
    reused_upstream.reset()
    return reused_upstream
