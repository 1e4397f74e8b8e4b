"""Real-mode throughput under a TPM limit: the OpenAI embedder against a loopback fake.

The fake enforces the same tokens-per-minute limit on a sliding window and counts every
request over it (which it answers 429). Our client's rate limiter should keep to the
limit, never over it, while using at least 90% of it.
"""

import time

from bench.report import Record
from tvdb_assets.lib.embedding.openai_embedder import OpenAIEmbedder
from tvdb_assets.lib.resilience import CircuitBreaker, RateLimiter
from tvdb_assets.lib.tokens import count_tokens
from tvdb_assets_tests.fakes.openai_fake import FakeOpenAI

TPM_LIMIT = 100_000
REQUEST_TOKENS = 10_000  # a tenth of a minute's budget per request
TARGET_SHARE = 0.9


def _texts(count: int, offset: int) -> list[str]:
    # ~500 tokens each, all distinct so nothing is deduplicated before it is sent.
    return [
        " ".join(f"term{(n * 31 + j) % 9973} item{n}" for j in range(160))
        for n in range(offset, offset + count)
    ]


def run(seconds: float = 120.0) -> Record:
    with FakeOpenAI(tpm_limit=TPM_LIMIT) as fake:
        embedder = OpenAIEmbedder(
            api_key=fake.api_key,
            base_url=fake.base_url,
            limiter=RateLimiter(None, TPM_LIMIT),
            breaker=CircuitBreaker("openai-bench"),
            ledger=None,
        )
        embedder.max_tokens_per_request = REQUEST_TOKENS
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < seconds:
            batch = _texts(100, sent)
            embedder.embed(batch, [count_tokens(t) for t in batch])
            sent += len(batch)
        ok = fake.successful_requests
        first = min(r.time for r in ok)
        in_window = sum(r.tokens for r in ok if r.time < first + seconds)
        share = in_window / (seconds / 60) / TPM_LIMIT
        return {
            "measurement": "openai_tpm",
            "tpm_limit": TPM_LIMIT,
            "seconds": seconds,
            "requests": len(ok),
            "tokens_in_window": in_window,
            "achieved_share": round(share, 3),
            "over_limit_requests": fake.over_limit_requests,
            "target": f">= {TARGET_SHARE:.0%} of the TPM limit, 0 requests over it",
            "met": share >= TARGET_SHARE and fake.over_limit_requests == 0,
        }
