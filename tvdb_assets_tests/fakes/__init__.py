"""Loopback fake servers for the paid APIs, driven through the real SDKs in tests.

    with FakeOpenAI() as fake:
        client = openai.OpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)

Pytest fixtures live in `tvdb_assets_tests.fakes.fixtures`.
"""

from tvdb_assets_tests.fakes.faults import Fault
from tvdb_assets_tests.fakes.llamaparse_fake import FakeLlamaParse, HttpRecord, ParseJob
from tvdb_assets_tests.fakes.openai_fake import EmbeddingRequest, FakeOpenAI

__all__ = [
    "EmbeddingRequest",
    "FakeLlamaParse",
    "FakeOpenAI",
    "Fault",
    "HttpRecord",
    "ParseJob",
]
