"""The fakes, driven through the real SDKs: what the SDKs see and what the fakes record.

These also pin the SDK behaviour the pipeline relies on (exception types, retries), so an SDK
upgrade that changes it fails here first. Quirks found:

openai (3.57):
- Sends `encoding_format: "base64"` unless told otherwise and decodes float32 itself.
- Retries 408/409/429/5xx and connection errors (`max_retries`, default 2), sleeping
  `retry-after-ms` / `Retry-After` when 0 < value <= 120 s, else 0.5 s * 2^n (max 8 s) with
  jitter. Sends `x-stainless-retry-count` on each attempt.

llama-cloud (2.19), the maintained LlamaParse SDK:
- `files.create(file=..., purpose="parse")` posts multipart to /api/v1/beta/files;
  `parsing.create(tier=, version=, file_id=)` posts JSON to /api/v2/parse (or, with
  `upload_file=`, multipart with a `configuration` JSON field to /api/v2/parse/upload);
  `parsing.get(job_id, expand=[...])` reads /api/v2/parse/{id}, `expand` repeated in the query.
  `parsing.parse(...)` is create + `wait_for_completion` + get.
- Retries 408/409/429/5xx and connection errors itself, `max_retries` (default 5, not 2 like
  openai), honouring Retry-After up to 60 s; sends `x-stainless-retry-count` on each try. With
  `max_retries=0` every error reaches the caller at once.
- `wait_for_completion` sleeps `polling_interval` before each read, raises `PollingError`
  (its own sentence, no job fields) for FAILED/CANCELLED and `PollingTimeoutError` after
  `timeout`; an HTTP error on a read is raised, not swallowed (the 0.6 SDK swallowed them).
- An answer cut short raises json's ValueError from the call, not an SDK error.
- The fast tier writes no markdown: `expand=["markdown"]` gives `markdown=None`, text only.
"""

import asyncio
import math
import time
from typing import Any

import llama_cloud
import openai
import pytest
from llama_cloud import LlamaCloud
from llama_cloud.types import ParsingGetResponse

from tvdb_assets.lib.tokens import count_tokens, get_encoding
from tvdb_assets_tests.corpus import pdf_bytes
from tvdb_assets_tests.fakes import FakeLlamaParse, FakeOpenAI, Fault
from tvdb_assets_tests.fakes.multipart import parse_form

MODEL = "text-embedding-3-small"


def _client(fake: FakeOpenAI, **kwargs: Any) -> openai.OpenAI:
    options: dict[str, Any] = {"api_key": fake.api_key, "base_url": fake.base_url}
    options.setdefault("max_retries", 0)
    options.update(kwargs)
    return openai.OpenAI(**options)


# --- FakeOpenAI ----------------------------------------------------------------------


def test_embeddings_match_vectors_and_billing(fake_openai: FakeOpenAI) -> None:
    texts = ["hello world", "a second, longer input about pgvector", "ünïcödé"]
    response = _client(fake_openai).embeddings.create(
        input=texts, model=MODEL, extra_headers={"x-correlation-id": "doc-42"}
    )

    assert [len(d.embedding) for d in response.data] == [1536] * 3
    assert [d.embedding for d in response.data] == [fake_openai.vector_for(t) for t in texts]
    assert math.isclose(sum(x * x for x in response.data[0].embedding), 1.0, rel_tol=1e-5)
    expected = sum(count_tokens(t) for t in texts)
    assert response.usage.prompt_tokens == expected == fake_openai.billed_tokens
    (record,) = fake_openai.requests
    assert (record.status, record.n_inputs, record.tokens, record.model) == (
        200,
        3,
        expected,
        MODEL,
    )
    assert record.encoding_format == "base64"  # the SDK's default
    assert record.headers["x-correlation-id"] == "doc-42"
    assert "authorization" not in record.headers


def test_dimensions_float_format_and_token_arrays(fake_openai: FakeOpenAI) -> None:
    client = _client(fake_openai)
    large = client.embeddings.create(
        input="shorten me", model="text-embedding-3-large", dimensions=256, encoding_format="float"
    )
    assert large.data[0].embedding == fake_openai.vector_for(
        "shorten me", "text-embedding-3-large", 256
    )

    tokens = get_encoding().encode("token arrays embed like their text")
    arrays = client.embeddings.create(input=[tokens, tokens[:3]], model=MODEL)
    assert arrays.data[0].embedding == fake_openai.vector_for("token arrays embed like their text")
    assert arrays.usage.prompt_tokens == len(tokens) + 3
    assert fake_openai.billed_tokens == large.usage.prompt_tokens + len(tokens) + 3


def test_scripted_429_surfaces_retry_after(fake_openai: FakeOpenAI) -> None:
    fake_openai.script([Fault(status=429, retry_after=1.5)])
    client = _client(fake_openai)
    with pytest.raises(openai.RateLimitError) as caught:
        client.embeddings.create(input="x", model=MODEL)
    assert caught.value.response.headers["retry-after"] == "1.5"
    assert caught.value.code == "rate_limit_exceeded"
    assert fake_openai.billed_tokens == 0

    client.embeddings.create(input="x", model=MODEL)  # the script is used up
    assert fake_openai.billed_tokens == 1
    assert [r.status for r in fake_openai.requests] == [429, 200]


def test_sdk_retries_scripted_faults_and_bills_once(fake_openai: FakeOpenAI) -> None:
    fake_openai.script([Fault(status=429, retry_after_ms=20), Fault(status=500, retry_after=0.05)])
    response = _client(fake_openai, max_retries=2).embeddings.create(input="retry me", model=MODEL)

    assert [r.status for r in fake_openai.requests] == [429, 500, 200]
    assert [r.headers["x-stainless-retry-count"] for r in fake_openai.requests] == ["0", "1", "2"]
    assert fake_openai.billed_tokens == response.usage.prompt_tokens == count_tokens("retry me")
    assert len(fake_openai.successful_requests) == 1


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ("", "empty string"),
        (["ok", ""], "empty string"),
        (["x"] * 2049, "2048"),
        ([list(range(1000, 1000 + 8193))], "maximum context length"),
        ([list(range(1000, 1000 + 8000))] * 38, "max 300000 tokens per request"),
    ],
    ids=["empty", "empty-in-batch", "too-many-inputs", "input-too-long", "request-too-big"],
)
def test_limits_are_bad_requests(fake_openai: FakeOpenAI, inputs: Any, message: str) -> None:
    with pytest.raises(openai.BadRequestError, match=message):
        _client(fake_openai).embeddings.create(input=inputs, model=MODEL)
    assert fake_openai.billed_tokens == 0
    assert [r.outcome for r in fake_openai.requests] == ["invalid"]


def test_wrong_key_is_authentication_error(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        _client(fake_openai, api_key="sk-wrong").embeddings.create(input="x", model=MODEL)
    assert caught.value.code == "invalid_api_key"
    assert [r.outcome for r in fake_openai.requests] == ["auth"]


def test_outage_then_recover(fake_openai: FakeOpenAI) -> None:
    client = _client(fake_openai)
    fake_openai.outage(503)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.embeddings.create(input="x", model=MODEL)
    fake_openai.recover()
    client.embeddings.create(input="x", model=MODEL)
    assert [r.status for r in fake_openai.requests] == [503, 503, 200]


def test_reject_inputs_containing(fake_openai: FakeOpenAI) -> None:
    fake_openai.reject_inputs_containing("POISON")
    client = _client(fake_openai)
    with pytest.raises(openai.BadRequestError, match="Input 1 was rejected"):
        client.embeddings.create(input=["fine", "has POISON in it"], model=MODEL)
    client.embeddings.create(input=["fine", "also fine"], model=MODEL)
    assert [r.outcome for r in fake_openai.requests] == ["rejected", "ok"]


def test_server_side_rate_limits() -> None:
    with FakeOpenAI(rpm_limit=2, tpm_limit=10, window_seconds=0.5) as fake:
        client = _client(fake)
        client.embeddings.create(input=[list(range(4))], model=MODEL)
        client.embeddings.create(input=[list(range(4))], model=MODEL)
        with pytest.raises(openai.RateLimitError) as rpm:
            client.embeddings.create(input=[list(range(1))], model=MODEL)
        assert 0 < int(rpm.value.response.headers["retry-after-ms"]) <= 500
        time.sleep(0.55)
        client.embeddings.create(input=[list(range(6))], model=MODEL)
        with pytest.raises(openai.RateLimitError, match="TPM"):
            client.embeddings.create(input=[list(range(6))], model=MODEL)
        # The SDK sleeps the advertised retry-after-ms, then gets through.
        _client(fake, max_retries=2).embeddings.create(input=[list(range(6))], model=MODEL)
        assert fake.over_limit_requests == 3
        assert fake.billed_tokens == 4 + 4 + 6 + 6


def test_delay_fault_times_out_client_but_server_still_bills(fake_openai: FakeOpenAI) -> None:
    fake_openai.script([Fault(delay=0.6)])
    with pytest.raises(openai.APITimeoutError):
        _client(fake_openai, timeout=0.2).embeddings.create(input="slow", model=MODEL)
    assert fake_openai.wait_idle(5)
    # Like the real API: the work was done, so it is billed though nobody got the answer.
    assert fake_openai.billed_tokens == count_tokens("slow")


async def _async_embed(fake: FakeOpenAI) -> int:
    async with openai.AsyncOpenAI(
        api_key=fake.api_key, base_url=fake.base_url, max_retries=0
    ) as client:
        response = await client.embeddings.create(input=["a", "b"], model=MODEL)
        return len(response.data)


def test_async_client(fake_openai: FakeOpenAI) -> None:
    assert asyncio.run(_async_embed(fake_openai)) == 2


# --- FakeLlamaParse ------------------------------------------------------------------

PAGES = ["First page about alpaca farming.", "Second page about llama wool."]


def _cloud(fake: FakeLlamaParse, **overrides: Any) -> LlamaCloud:
    options: dict[str, Any] = {"api_key": fake.api_key, "base_url": fake.base_url}
    options.setdefault("max_retries", 0)
    options.update(overrides)
    return LlamaCloud(**options)


def _parse(
    client: LlamaCloud, data: bytes, name: str = "two.pdf", tier: str = "cost_effective"
) -> ParsingGetResponse:
    upload = client.files.create(file=(name, data, "application/pdf"), purpose="parse")
    return client.parsing.parse(
        tier=tier,
        version="latest",
        file_id=upload.id,
        expand=["markdown", "usage"],
        polling_interval=0,
        timeout=10,
    )


def test_parse_two_page_pdf_and_bill_it_by_tier(fake_llamaparse: FakeLlamaParse) -> None:
    result = _parse(_cloud(fake_llamaparse), pdf_bytes(PAGES), tier="agentic")

    assert result.job.status == "COMPLETED" and result.job.tier == "agentic"
    assert result.markdown is not None
    assert [page.markdown for page in result.markdown.pages] == PAGES  # type: ignore[union-attr]
    assert result.job.usage is not None and result.job.usage.credits == 2 * 10
    assert fake_llamaparse.billed_pages == 2
    assert fake_llamaparse.bill() == {"agentic": (2, pytest.approx(20 * 1.25 / 1000))}
    (job,) = fake_llamaparse.jobs
    assert (job.file_name, job.pages, job.status, job.tier) == (
        "two.pdf",
        2,
        "COMPLETED",
        "agentic",
    )
    assert job.content_type == "application/pdf"
    assert "authorization" not in job.headers
    routes = [r.route for r in fake_llamaparse.requests]
    assert routes == ["upload", "parse", "status", "result"]


def test_one_shot_upload_and_expand_options(fake_llamaparse: FakeLlamaParse) -> None:
    client = _cloud(fake_llamaparse)
    result = client.parsing.parse(
        tier="cost_effective",
        version="2026-09-28",
        upload_file=("two.pdf", pdf_bytes(PAGES), "application/pdf"),
        page_ranges={"target_pages": "2"},
        expand=["text_full", "markdown_full"],
        polling_interval=0,
    )
    assert result.text_full == PAGES[1] and result.markdown_full == PAGES[1]
    assert result.markdown is None and result.job.usage is None  # only what was asked
    (job,) = fake_llamaparse.jobs
    assert (job.version, job.pages, job.request["page_ranges"]) == (
        "2026-09-28",
        1,
        {"target_pages": "2"},
    )
    assert [r.route for r in fake_llamaparse.requests] == ["parse", "status", "result"]


def test_fast_tier_gives_text_not_markdown(fake_llamaparse: FakeLlamaParse) -> None:
    client = _cloud(fake_llamaparse)
    upload = client.files.create(file=("note.md", b"plain *markdown* text"), purpose="parse")
    job = client.parsing.create(tier="fast", version="latest", file_id=upload.id)
    client.parsing.wait_for_completion(job.id, polling_interval=0)
    result = client.parsing.get(job.id, expand=["markdown", "text", "usage"])
    assert result.markdown is None
    assert result.text is not None and [p.text for p in result.text.pages] == [
        "plain *markdown* text"
    ]
    assert result.job.usage is not None and result.job.usage.credits == 1
    assert fake_llamaparse.bill() == {"fast": (1, pytest.approx(1.25 / 1000))}


def test_unknown_tier_or_version_is_refused(fake_llamaparse: FakeLlamaParse) -> None:
    client = _cloud(fake_llamaparse)
    upload = client.files.create(file=("a.md", b"text"), purpose="parse")
    with pytest.raises(llama_cloud.UnprocessableEntityError, match="tier must be one of"):
        client.parsing.create(tier="premium", version="latest", file_id=upload.id)
    with pytest.raises(llama_cloud.UnprocessableEntityError, match="version must be"):
        client.parsing.create(tier="fast", version="yesterday", file_id=upload.id)
    assert fake_llamaparse.jobs == []


def test_failed_job_raises_polling_error_without_its_reason(
    fake_llamaparse: FakeLlamaParse,
) -> None:
    fake_llamaparse.fail_next_jobs(1, error="the model fell over")
    client = _cloud(fake_llamaparse)
    upload = client.files.create(file=("a.pdf", pdf_bytes(PAGES)), purpose="parse")
    job = client.parsing.create(tier="agentic", version="latest", file_id=upload.id)
    with pytest.raises(llama_cloud.PollingError):
        client.parsing.wait_for_completion(job.id, polling_interval=0)
    # The reason is the job's: read it once more.
    failed = client.parsing.get(job.id).job
    assert (failed.status, failed.error_message) == ("FAILED", "the model fell over")
    assert fake_llamaparse.billed_pages == 0 and fake_llamaparse.bill() == {}


def test_unreadable_pdf_fails_the_job(fake_llamaparse: FakeLlamaParse) -> None:
    with pytest.raises(llama_cloud.PollingError):
        _parse(_cloud(fake_llamaparse), b"%PDF-1.7\n garbage", "x.pdf")
    (job,) = fake_llamaparse.jobs
    assert (job.status, job.error_code) == ("FAILED", "UNREADABLE_FILE")


def test_pending_reads_and_query_params(fake_llamaparse: FakeLlamaParse) -> None:
    fake_llamaparse.pending_polls = 3
    client = _cloud(fake_llamaparse)
    upload = client.files.create(file=("a.pdf", pdf_bytes(PAGES)), purpose="parse")
    job = client.parsing.create(
        tier="fast", version="latest", file_id=upload.id, organization_id="org-1", project_id="p-1"
    )
    assert job.status == "PENDING"
    done = client.parsing.wait_for_completion(
        job.id, polling_interval=0, backoff="constant", timeout=10
    )
    assert done.status == "COMPLETED"
    (record,) = fake_llamaparse.jobs
    assert record.polls == 4  # three RUNNING, then COMPLETED
    assert record.query == {"organization_id": "org-1", "project_id": "p-1"}


def test_status_read_errors_are_raised_not_swallowed(fake_llamaparse: FakeLlamaParse) -> None:
    fake_llamaparse.script([Fault(status=500)], route="status")
    client = _cloud(fake_llamaparse)
    upload = client.files.create(file=("a.pdf", pdf_bytes(PAGES)), purpose="parse")
    job = client.parsing.create(tier="fast", version="latest", file_id=upload.id)
    with pytest.raises(llama_cloud.InternalServerError):
        client.parsing.wait_for_completion(job.id, polling_interval=0)
    # Reading again is harmless: the job goes on, and is billed once.
    assert client.parsing.wait_for_completion(job.id, polling_interval=0).status == "COMPLETED"
    assert fake_llamaparse.billed_pages == 2


def test_wrong_key_is_an_authentication_error(fake_llamaparse: FakeLlamaParse) -> None:
    client = _cloud(fake_llamaparse, api_key="llx-wrong", max_retries=3)
    with pytest.raises(llama_cloud.AuthenticationError):
        client.files.create(file=("a.pdf", pdf_bytes(PAGES)), purpose="parse")
    assert fake_llamaparse.uploads == 1  # 401 is not retried
    assert all("llx-wrong" not in str(r) for r in fake_llamaparse.requests)


def test_sdk_retries_429_after_retry_after(fake_llamaparse: FakeLlamaParse) -> None:
    """Why the client runs the SDK with max_retries=0: it retries on its own (5 times by
    default), so a retry layer of ours on top would multiply attempts."""
    fake_llamaparse.script([Fault(status=429, retry_after=0.3)])
    started = time.monotonic()
    _cloud(fake_llamaparse, max_retries=1).files.create(
        file=("a.pdf", pdf_bytes(PAGES)), purpose="parse"
    )
    assert time.monotonic() - started >= 0.3
    uploads = [r for r in fake_llamaparse.requests if r.route == "upload"]
    assert [r.status for r in uploads] == [429, 200]
    assert [r.headers.get("x-stainless-retry-count") for r in uploads] == ["0", "1"]
    assert llama_cloud.DEFAULT_MAX_RETRIES == 5


def test_outage_with_no_sdk_retries_is_one_request(fake_llamaparse: FakeLlamaParse) -> None:
    fake_llamaparse.outage(503)
    with pytest.raises(llama_cloud.InternalServerError):
        _parse(_cloud(fake_llamaparse), pdf_bytes(PAGES))
    assert fake_llamaparse.uploads == 1
    assert fake_llamaparse.jobs == []


def test_job_start_timeout_leaves_a_job_that_bills(fake_llamaparse: FakeLlamaParse) -> None:
    fake_llamaparse.script([Fault(delay=1.15)], route="parse")
    client = _cloud(fake_llamaparse, timeout=1.0)
    upload = client.files.create(file=("a.pdf", pdf_bytes(PAGES)), purpose="parse")
    with pytest.raises(llama_cloud.APITimeoutError):
        client.parsing.create(tier="cost_effective", version="latest", file_id=upload.id)
    assert fake_llamaparse.wait_idle(5)
    # The client gave up, the service did not: a job it will bill, unseen by the client.
    assert fake_llamaparse.billed_pages == 0 and fake_llamaparse.billable_pages == 2
    assert [job.status for job in fake_llamaparse.jobs] == ["PENDING"]


def test_a_result_cut_short_raises_value_error(fake_llamaparse: FakeLlamaParse) -> None:
    fake_llamaparse.malformed_results = True
    with pytest.raises(ValueError):
        _parse(_cloud(fake_llamaparse), pdf_bytes(PAGES))
    assert fake_llamaparse.billed_pages == 2  # the job itself completed


# --- helpers -------------------------------------------------------------------------


def test_multipart_keeps_binary_and_quoted_names() -> None:
    boundary = "b0undary"
    payload = bytes(range(256)) + b"\r\n--not-the-boundary\r\n"
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="language"\r\n\r\nen\r\n'
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="my %22odd%22 \\\\ file.pdf"\r\n'
            "Content-Type: application/pdf\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    form = parse_form(f"multipart/form-data; boundary={boundary}", body)
    assert form.fields == {"language": "en"}
    part = form.files["file"]
    assert (part.filename, part.content_type, part.data) == (
        'my "odd" \\ file.pdf',
        "application/pdf",
        payload,
    )


def test_fault_headers() -> None:
    assert Fault(status=429, retry_after=2).response_headers() == {"Retry-After": "2"}
    assert Fault(retry_after=0.25, retry_after_ms=250).response_headers() == {
        "Retry-After": "0.25",
        "retry-after-ms": "250",
    }
