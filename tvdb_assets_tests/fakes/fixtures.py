"""Pytest fixtures for the fakes; import them into a conftest.py:

    from tvdb_assets_tests.fakes.fixtures import fake_llamaparse, fake_openai  # noqa: F401

Each test gets a fresh server (own port, empty records, no faults), stopped afterwards.
"""

from collections.abc import Iterator

import pytest

from tvdb_assets_tests.fakes.llamaparse_fake import FakeLlamaParse
from tvdb_assets_tests.fakes.openai_fake import FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running FakeOpenAI: `fake_openai.base_url`, `fake_openai.api_key`."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_llamaparse() -> Iterator[FakeLlamaParse]:
    """A running FakeLlamaParse: `fake_llamaparse.base_url`, `fake_llamaparse.api_key`."""
    with FakeLlamaParse() as fake:
        yield fake
