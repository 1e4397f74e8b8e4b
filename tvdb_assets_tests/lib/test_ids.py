import uuid

import dagster as dg
import pytest

from tvdb_assets.lib.ids import chunk_id, partition_key_for, sha256_text

NAMES = [
    "guides/getting started.md",
    "Résumé — final (2).pdf",
    "日本語のメモ.txt",
    'it\'s "quoted", [odd] | name.md',
    "a...b....c.md",
    "x" * 500 + ".md",
    "../up/../and/down.html",
    "/",
]


@pytest.mark.parametrize("path", NAMES)
def test_partition_keys_are_valid_readable_and_bounded(path):
    key = partition_key_for(path)
    for reserved in (",", "|", "[", "]", "..."):
        assert reserved not in key
    assert len(key) <= 91
    assert key == partition_key_for(path)
    # Dagster accepts it as a dynamic partition key.
    dg.DynamicPartitionsDefinition(name="documents").build_add_request([key])


def test_partition_keys_keep_words_and_stay_unique():
    assert partition_key_for("guides/getting started.md").startswith("guides-getting-started.md-")
    assert partition_key_for("日本語のメモ.txt").startswith("日本語のメモ.txt-")
    # Paths that fold to the same slug still get different keys.
    assert partition_key_for("a b.md") != partition_key_for("a-b.md")
    assert partition_key_for("x" * 300 + "1.md") != partition_key_for("x" * 300 + "2.md")


def test_chunk_ids_are_uuid5_of_document_position_and_text():
    text_hash = sha256_text("hello")
    first = chunk_id("doc-1", 0, text_hash)
    assert first.version == 5 and isinstance(first, uuid.UUID)
    assert first == chunk_id("doc-1", 0, text_hash)
    assert first != chunk_id("doc-1", 1, text_hash)
    assert first != chunk_id("doc-2", 0, text_hash)
    assert first != chunk_id("doc-1", 0, sha256_text("hello!"))
