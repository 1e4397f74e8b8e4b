"""Imported once by the worker pool's fork server (`workers.start`): every worker forked
from it starts with the pipeline's stages imported and the tokenizer loaded."""

from tvdb_assets.lib import chunking, stages  # noqa: F401 - imported for the workers

chunking.warm()
