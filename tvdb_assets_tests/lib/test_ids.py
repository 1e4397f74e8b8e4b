import hashlib
import uuid

import dagster as dg
import pytest

from tvdb_assets.lib.ids import chunk_id, partition_key_for, sha256_text, shown_path

NAMES = [
    "guides/getting started.md",
    "Résumé — final (2).pdf",
    "日本語のメモ.txt",
    'it\'s "quoted", [odd] | name.md',
    "a...b....c.md",
    "x" * 500 + ".md",
    "../up/../and/down.html",
    "/",
    b"caf\xe9 latin-1.md".decode("utf-8", "surrogateescape"),  # as os.listdir gives it
    "two\nlines.md",
    "-starts-with-dash.md",
    "\\",
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


def test_names_that_look_alike_are_distinct_documents():
    nfc, nfd = "caf\u00e9.md", "cafe\u0301.md"
    assert partition_key_for(nfc) != partition_key_for(nfd)
    assert partition_key_for("x\\y.md") != partition_key_for("x/y.md")
    # Names people type keep the keys they had before names were told apart by bytes.
    expected = hashlib.sha1(b"guides/getting started.md").hexdigest()[:10]
    assert partition_key_for("guides/getting started.md") == f"guides-getting-started.md-{expected}"


def test_names_are_shown_faithfully_and_escaped_where_needed():
    latin1 = b"caf\xe9.md".decode("utf-8", "surrogateescape")
    assert shown_path(latin1) == "caf\\xe9.md"
    assert shown_path("two\nlines\t.md") == "two\\nlines\\t.md"
    assert shown_path("Résumé — final.pdf") == "Résumé — final.pdf"
    assert shown_path(latin1).encode("utf-8")  # storable in Postgres
