"""Make the fakes' fixtures available to these tests (the lead imports them project-wide)."""

from tvdb_assets_tests.fakes.fixtures import fake_llamaparse, fake_openai  # noqa: F401
