"""One guard per service for the whole deployment: runs in processes of their own share one
rate-limit window and one circuit per service, through Postgres."""

import os
from pathlib import Path

import pytest

from tvdb_assets_tests import recovery
from tvdb_assets_tests.conftest import Project
from tvdb_assets_tests.fakes.openai_fake import FakeOpenAI

MODEL = "text-embedding-3-small"
# Each run embeds about 3,400 tokens in one request: two runs fit in a minute, four do not.
TPM_LIMIT = 7_000


def write_notes(root: Path, count: int) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        body = " ".join(f"{root.name} note{i} remark{j} about tides" for j in range(110))
        (root / f"note{i}.md").write_text(f"# {root.name} {i}\n\n{body}\n")
    return root


def ingested(project: Project) -> tuple[int, int, int]:
    """(documents indexed, chunks, chunks with a vector of the real model)."""
    with project.connect() as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM documents WHERE indexed_at IS NOT NULL),
                      (SELECT count(*) FROM chunks),
                      (SELECT count(*) FROM embeddings WHERE model = %s AND NOT fallback)""",
            (MODEL,),
        ).fetchone()
    assert row is not None
    return row


def tokens_in_worst_window(fake: FakeOpenAI, seconds: float = 60.0) -> int:
    ok = sorted((r.time, r.tokens) for r in fake.successful_requests)
    return max(sum(n for t, n in ok if end - seconds < t <= end) for end, _ in ok)


@pytest.mark.slow
def test_four_concurrent_real_mode_runs_stay_within_one_rate_limit(
    project: Project, tmp_path: Path
) -> None:
    with FakeOpenAI(tpm_limit=TPM_LIMIT) as fake:
        env = {
            **os.environ,
            **fake.env(),
            "TVDB_EMBEDDER_MODE": "real",
            "TVDB_OPENAI_TPM": str(TPM_LIMIT),
        }
        sources = [write_notes(tmp_path / f"team{n}", 3) for n in range(4)]
        children = [recovery.start(["ingest", str(s)], tmp_path / "logs", env) for s in sources]
        for child in children:
            assert child.wait(timeout=300) == 0, child.stdout + child.stderr
        requests = fake.successful_requests

    # Four runs, four requests: their tokens together are more than one minute allows, and
    # yet not one request was refused for going over the limit.
    assert len(requests) == 4
    assert sum(r.tokens for r in requests) > TPM_LIMIT
    assert fake.over_limit_requests == 0
    assert tokens_in_worst_window(fake) <= TPM_LIMIT
    documents, chunks, vectors = ingested(project)
    assert documents == 12 and vectors == chunks > 0
    billed = project.scalar("SELECT sum(units) FROM cost_ledger WHERE status = 'billed'")
    assert billed == fake.billed_tokens
