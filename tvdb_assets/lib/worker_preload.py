"""Imported once by the worker pool's fork server (`workers.start`): every worker forked
from it starts with what the pipeline sends it imported and the tokenizer loaded.

Only the modules of the work itself (`parsing.upload`, `chunking.rows`, the mock embedder):
they take and return plain values, so no database code (psycopg) or service client is
imported, which kept the fork server, and so the first parse, ~0.3 s later.
"""

from tvdb_assets.lib import chunking
from tvdb_assets.lib.chunking import rows  # noqa: F401 - imported for the workers
from tvdb_assets.lib.embedding import mock  # noqa: F401 - imported for the workers
from tvdb_assets.lib.parsing import local, upload  # noqa: F401 - imported for the workers

chunking.warm()
