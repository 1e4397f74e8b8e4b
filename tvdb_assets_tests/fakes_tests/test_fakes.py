"""The fakes, driven through the real SDKs: what the SDKs see and what the fakes record.

These also pin the SDK behaviour the pipeline relies on (exception types, retries), so an SDK
upgrade that changes it fails here first. Quirks found:

openai (3.57):
- Sends `encoding_format: "base64"` unless told otherwise and decodes float32 itself.
- Retries 408/409/429/5xx and connection errors (`max_retries`, default 2), sleeping
  `retry-after-ms` / `Retry-After` when 0 < value <= 120 s, else 0.5 s * 2^n (max 8 s) with
  jitter. Sends `x-stainless-retry-count` on each attempt.

llama_cloud_services.LlamaParse (0.6.94):
- `check_interval`/`max_timeout` are ints (0.1 fails validation). check_interval=0 with
  backoff_pattern="constant" polls back to back; the default linear backoff adds 1 s a poll.
- Upload: tenacity, 5 attempts, on 429/500/502/503/504 and connection errors/timeouts;
  waits >= 4 s between attempts and ignores Retry-After. Exhausted retries raise
  `tenacity.RetryError`; other statuses (401, 400) raise a bare `Exception("Failed to parse
  the file: <body>")`.
- Status polls swallow every HTTP error (even 401/404) and keep polling until max_timeout,
  then raise bare `Exception("Timeout while parsing the file: <job id>")`.
- A job with status ERROR/CANCELED raises `llama_cloud_services.parse.base.JobFailedException`
  (error_code / error_message attributes) when ignore_errors=False, from parse() and
  load_data() alike. With ignore_errors=True, parse() returns a JobResult with status/error
  set and no pages, and load_data() prints the error and returns [].
- The result fetch does not check the HTTP status.
- parse() always fetches the *json* result (pages[].md), whatever result_type says;
  load_data() fetches result_type and splits it on page_separator ("\\n---\\n").
- Sync calls (parse/load_data/JobResult.get_markdown) reuse one cached httpx.AsyncClient
  across per-call event loops: the second sync call on the same parser can fail with
  "Event loop is closed" (raised as RuntimeError "Detected nested async"). Use one parser
  per sync call, or the async API in a single loop.
"""

import asyncio
import math
import time
from typing import Any

import openai
import pytest
import tenacity
from llama_cloud_services import LlamaParse
from llama_cloud_services.parse.base import JobFailedException
from llama_cloud_services.parse.types import JobResult

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


def _parser(fake: FakeLlamaParse, **overrides: Any) -> LlamaParse:
    options: dict[str, Any] = {
        "api_key": fake.api_key,
        "base_url": fake.base_url,
        "result_type": "markdown",
        "ignore_errors": False,
        "check_interval": 0,  # an int field: fractions fail validation
        "backoff_pattern": "constant",
        "max_timeout": 10,
        "verbose": False,
        "show_progress": False,
    }
    options.update(overrides)
    return LlamaParse(**options)


def test_parse_two_page_pdf(fake_llamaparse: FakeLlamaParse) -> None:
    result = _parser(fake_llamaparse).parse(pdf_bytes(PAGES), extra_info={"file_name": "two.pdf"})

    assert isinstance(result, JobResult)
    markdown = result.get_markdown_documents()[0].text
    assert all(page in markdown for page in PAGES)
    assert [page.md for page in result.pages] == PAGES
    assert result.job_metadata.job_pages == 2
    assert fake_llamaparse.billed_pages == 2
    (job,) = fake_llamaparse.jobs
    assert (job.file_name, job.pages, job.status) == ("two.pdf", 2, "SUCCESS")
    assert job.content_type == "application/pdf"
    assert "authorization" not in job.headers


async def _aparse_and_raw_markdown(parser: LlamaParse, data: bytes) -> str:
    result = await parser.aparse(data, extra_info={"file_name": "two.pdf"})
    assert isinstance(result, JobResult)
    return await result.aget_markdown()  # the /api/v1/.../result/raw/markdown route


def test_async_parse_and_raw_markdown(fake_llamaparse: FakeLlamaParse) -> None:
    # One event loop for the whole conversation: see test_reusing_a_parser_across_sync_calls.
    markdown = asyncio.run(_aparse_and_raw_markdown(_parser(fake_llamaparse), pdf_bytes(PAGES)))
    assert markdown == "\n---\n".join(PAGES)


def test_reusing_a_parser_across_sync_calls_breaks(fake_llamaparse: FakeLlamaParse) -> None:
    """SDK quirk: sync calls run `asyncio.run` per call once the thread has no current loop
    (true after any asyncio.run), but the parser caches one httpx.AsyncClient whose pooled
    keep-alive connections belong to the first, now closed, loop. The second call fails with
    "Event loop is closed", re-raised as RuntimeError("Detected nested async ..."); load_data
    (ignore_errors=True) would instead swallow it and return []. Use a fresh LlamaParse per
    sync call, or the async API inside one loop.
    """
    asyncio.set_event_loop(None)  # the state any earlier asyncio.run leaves behind
    parser = _parser(fake_llamaparse)
    parser.parse(pdf_bytes(PAGES), extra_info={"file_name": "a.pdf"})
    with pytest.raises(RuntimeError, match="nested async"):
        parser.parse(pdf_bytes(PAGES), extra_info={"file_name": "b.pdf"})


def test_load_data_splits_markdown_by_page(fake_llamaparse: FakeLlamaParse) -> None:
    docs = _parser(fake_llamaparse).load_data(pdf_bytes(PAGES), extra_info={"file_name": "two.pdf"})
    assert [doc.text for doc in docs] == PAGES
    text = _parser(fake_llamaparse, split_by_page=False).load_data(
        b"plain *markdown* text", extra_info={"file_name": "note.md"}
    )
    assert [doc.text for doc in text] == ["plain *markdown* text"]
    assert fake_llamaparse.billed_pages == 2 + 1
    assert fake_llamaparse.uploads == 2


def test_failed_job_raises_job_failed_exception(fake_llamaparse: FakeLlamaParse) -> None:
    fake_llamaparse.fail_next_jobs(2, error="the model fell over")
    with pytest.raises(JobFailedException) as caught:
        _parser(fake_llamaparse).parse(pdf_bytes(PAGES), extra_info={"file_name": "a.pdf"})
    assert caught.value.status == "ERROR"
    assert caught.value.error_message == "the model fell over"
    with pytest.raises(JobFailedException):
        _parser(fake_llamaparse).load_data(pdf_bytes(PAGES), extra_info={"file_name": "a.pdf"})
    assert fake_llamaparse.billed_pages == 0
    assert [job.status for job in fake_llamaparse.jobs] == ["ERROR", "ERROR"]


def test_ignore_errors_swallows_failed_jobs(fake_llamaparse: FakeLlamaParse) -> None:
    fake_llamaparse.fail_next_jobs(2)
    result = _parser(fake_llamaparse, ignore_errors=True).parse(
        pdf_bytes(PAGES), extra_info={"file_name": "a.pdf"}
    )
    assert isinstance(result, JobResult)
    assert (result.status, result.pages) == ("ERROR", [])
    docs = _parser(fake_llamaparse, ignore_errors=True).load_data(
        pdf_bytes(PAGES), extra_info={"file_name": "a.pdf"}
    )
    assert docs == []
    assert [job.status for job in fake_llamaparse.jobs] == ["ERROR", "ERROR"]


def test_unreadable_pdf_fails_the_job(fake_llamaparse: FakeLlamaParse) -> None:
    with pytest.raises(JobFailedException) as caught:
        _parser(fake_llamaparse).parse(b"%PDF-1.7\n garbage", extra_info={"file_name": "x.pdf"})
    assert caught.value.error_code == "UNREADABLE_FILE"


def test_pending_polls_and_query_params(fake_llamaparse: FakeLlamaParse) -> None:
    fake_llamaparse.pending_polls = 3
    parser = _parser(fake_llamaparse, organization_id="org-1", project_id="proj-1")
    parser.parse(pdf_bytes(PAGES), extra_info={"file_name": "a.pdf"})
    (job,) = fake_llamaparse.jobs
    assert job.polls == 4
    assert job.query == {"organization_id": "org-1", "project_id": "proj-1"}


def test_status_poll_errors_are_swallowed(fake_llamaparse: FakeLlamaParse) -> None:
    fake_llamaparse.script([Fault(status=500), Fault(status=401)], route="status")
    parser = _parser(fake_llamaparse)
    result = parser.parse(pdf_bytes(PAGES), extra_info={"file_name": "a.pdf"})
    assert isinstance(result, JobResult) and result.job_metadata.job_pages == 2
    statuses = [r.status for r in fake_llamaparse.requests if r.route == "status"]
    assert statuses == [500, 401, 200]


def test_wrong_key_upload_raises_plain_exception(fake_llamaparse: FakeLlamaParse) -> None:
    parser = _parser(fake_llamaparse, api_key="llx-wrong")
    with pytest.raises(Exception, match="Failed to parse the file") as caught:
        parser.parse(pdf_bytes(PAGES), extra_info={"file_name": "a.pdf"})
    assert type(caught.value) is Exception
    assert fake_llamaparse.uploads == 1  # 401 is not retried


def _no_upload_backoff(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Skip the SDK's upload backoff (>= 4 s); returns the wait_exponential kwargs it used.

    make_api_request builds its tenacity policy per call from this module global.
    """
    built: list[dict[str, Any]] = []

    def no_wait(**kwargs: Any) -> Any:
        built.append(kwargs)
        return tenacity.wait_none()

    monkeypatch.setattr("llama_cloud_services.parse.utils.wait_exponential", no_wait)
    return built


def test_upload_429_is_retried_ignoring_retry_after(
    fake_llamaparse: FakeLlamaParse, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits = _no_upload_backoff(monkeypatch)
    fake_llamaparse.script([Fault(status=429, retry_after=0.1)])
    result = _parser(fake_llamaparse).parse(pdf_bytes(PAGES), extra_info={"file_name": "a.pdf"})
    assert isinstance(result, JobResult)
    assert [r.status for r in fake_llamaparse.requests if r.route == "upload"] == [429, 200]
    # Unpatched, that retry sleeps exponential backoff with a 4 s floor; no header is read.
    assert waits == [{"multiplier": 1, "min": 4, "max": 10}]
    assert fake_llamaparse.billed_pages == 2


def test_upload_outage_exhausts_retries(
    fake_llamaparse: FakeLlamaParse, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_upload_backoff(monkeypatch)
    fake_llamaparse.outage(503)
    with pytest.raises(tenacity.RetryError):
        _parser(fake_llamaparse).parse(pdf_bytes(PAGES), extra_info={"file_name": "a.pdf"})
    assert fake_llamaparse.uploads == 5
    assert fake_llamaparse.jobs == []


def test_upload_timeout_leaves_an_abandoned_job(
    fake_llamaparse: FakeLlamaParse, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_upload_backoff(monkeypatch)
    fake_llamaparse.script([Fault(delay=1.15)])
    parser = _parser(fake_llamaparse, max_timeout=1)
    parser.parse(pdf_bytes(PAGES), extra_info={"file_name": "a.pdf"})
    assert fake_llamaparse.wait_idle(5)
    # The retry succeeded and was billed; the timed-out upload was accepted server-side.
    assert fake_llamaparse.billed_pages == 2
    assert fake_llamaparse.billable_pages == 4
    assert sorted(job.status for job in fake_llamaparse.jobs) == ["PENDING", "SUCCESS"]


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
