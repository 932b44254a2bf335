"""Fixtures shared by the integration tests (the general ones live in tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.integration.stream_harness import delete_internal_topics


@pytest.fixture
def stream_internal_topics(settings, unique):
    """Stream workers create internal topics per app id (t<unique>, r<unique>): drop them after.
    Stream test modules use it with `pytest.mark.usefixtures("stream_internal_topics")`."""
    yield
    delete_internal_topics(settings, f"t{unique}", f"r{unique}")
