import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tvdb_assets.lib import workers
from tvdb_assets.lib.embedding import Embedder, InputRejected, MockEmbedder
from tvdb_assets.lib.tokens import count_tokens

REPO = Path(__file__).resolve().parents[2]


class RecordingEmbedder(Embedder):
    """A test double of the abstract hook: row i encodes the text's number, unnormalised."""

    model = "recording"
    dims = 4

    def __init__(self, inputs: int = 2048, tokens: int = 300_000, per_input: int = 8192) -> None:
        super().__init__()
        self.max_inputs_per_request = inputs
        self.max_tokens_per_request = tokens
        self.max_tokens_per_input = per_input
        self.batches: list[list[str]] = []

    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.float64]:
        self.batches.append(texts)
        return np.array([[float(t.split()[0]), 1.0, 0.0, 0.0] for t in texts]) * 3.0


def numbered(n: int, words: int = 1) -> list[str]:
    return [" ".join([str(i)] + ["word"] * (words - 1)) for i in range(n)]


def test_batches_respect_the_input_limit_and_keep_order() -> None:
    embedder = RecordingEmbedder(inputs=3)
    texts = numbered(10)
    vectors = embedder.embed(texts)
    assert [len(b) for b in embedder.batches] == [3, 3, 3, 1]
    assert [t for b in embedder.batches for t in b] == texts
    assert embedder.calls == 4
    assert embedder.texts_embedded == 10
    # Row i still belongs to text i after packing and concatenation.
    expected = np.array([[i, 1.0, 0, 0] for i in range(10)])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, rtol=1e-6)


def test_batches_respect_the_token_limit_with_given_counts() -> None:
    embedder = RecordingEmbedder(tokens=10)
    counts = [4, 4, 4, 4, 10, 1, 9, 2]
    embedder.embed(numbered(len(counts)), token_counts=counts)
    sizes = [len(b) for b in embedder.batches]
    assert sizes == [2, 2, 1, 2, 1]
    at = 0
    for size in sizes:
        assert sum(counts[at : at + size]) <= 10
        at += size


def test_batches_respect_the_token_limit_with_real_counts() -> None:
    texts = numbered(30, words=20)
    per_text = count_tokens(texts[5])
    embedder = RecordingEmbedder(tokens=per_text * 4 + 1)
    embedder.embed(texts)
    assert embedder.calls > 1
    for batch in embedder.batches:
        assert sum(count_tokens(t) for t in batch) <= embedder.max_tokens_per_request


def test_an_over_long_input_is_split_and_gets_one_vector() -> None:
    embedder = MockEmbedder(dims=64)
    embedder.max_tokens_per_input = 40
    long_text = " ".join(f"walrus{i % 7} tusk" for i in range(60))
    assert count_tokens(long_text) > 40
    vectors = embedder.embed(["short text", long_text])
    assert vectors.shape == (2, 64)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert embedder.texts_embedded > 2  # the long text went as several pieces
    assert all(count_tokens(t) <= 40 for t in embedder_pieces(embedder, long_text))


def embedder_pieces(embedder: Embedder, text: str) -> list[str]:
    return embedder._pieces([text], [count_tokens(text)])[0]


class PickyEmbedder(RecordingEmbedder):
    """Refuses any request that contains the word POISON, as a validating API would."""

    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.float64]:
        if any("POISON" in t for t in texts):
            raise InputRejected(self.model, "input failed validation")
        return super()._embed_batch(texts)


def test_a_rejected_text_is_isolated_and_the_others_still_embed() -> None:
    embedder = PickyEmbedder()
    texts = numbered(8)
    texts[5] = "5 POISON"
    result = embedder.embed_texts(texts)
    assert result.rejected == {5: "input failed validation"}
    kept = [i for i in range(8) if i != 5]
    assert np.allclose(np.linalg.norm(result.vectors[kept], axis=1), 1.0)
    assert embedder.texts_embedded == 7
    with pytest.raises(InputRejected, match="text 5 rejected"):
        PickyEmbedder().embed(texts)


def test_mismatched_token_counts_raise() -> None:
    with pytest.raises(ValueError, match="token counts"):
        RecordingEmbedder().embed(["0", "1"], token_counts=[1])


def test_no_texts_means_no_calls() -> None:
    embedder = MockEmbedder(dims=8)
    vectors = embedder.embed([])
    assert vectors.shape == (0, 8)
    assert vectors.dtype == np.float32
    assert embedder.calls == 0
    assert embedder.texts_embedded == 0


def test_a_wrong_shape_from_the_provider_is_an_error() -> None:
    class Broken(RecordingEmbedder):
        def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.float64]:
            return np.ones((len(texts), 3))

    with pytest.raises(ValueError, match="shape"):
        Broken().embed(["0"])


def test_a_zero_vector_from_the_provider_is_an_error() -> None:
    class Zero(RecordingEmbedder):
        def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.float64]:
            return np.zeros((len(texts), 4))

    with pytest.raises(ValueError, match="zero"):
        Zero().embed(["0"])


def test_mock_vectors_are_unit_float32_rows() -> None:
    texts = ["Hello world", "", "   ", "!!! ???", "Ünïcödé 漢字", "a " * 5000]
    vectors = MockEmbedder().embed(texts)
    assert vectors.shape == (len(texts), 1536)
    assert vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # Punctuation-only text gets its own direction rather than the blank-text one.
    assert vectors[1] @ vectors[3] < 0.5


@pytest.mark.parametrize("dims", [2, 64, 384, 1536, 3072])
def test_mock_dims_are_configurable(dims: int) -> None:
    embedder = MockEmbedder(dims=dims)
    assert embedder.dims == dims
    assert embedder.embed(["some text here"]).shape == (1, dims)


def test_mock_rejects_nonsense_dims() -> None:
    with pytest.raises(ValueError, match="dims"):
        MockEmbedder(dims=0)


def test_mock_similar_texts_are_closer_than_unrelated_ones() -> None:
    query, near, far = MockEmbedder().embed(
        [
            "How do I install the pipeline on Linux?",
            "Installing the pipeline on Linux takes two commands.",
            "Quarterly revenue grew by eleven percent in Europe.",
        ]
    )
    assert query @ near > 0.2
    assert query @ near > query @ far + 0.2


def test_mock_is_case_insensitive_and_batch_independent() -> None:
    embedder = MockEmbedder(dims=256)
    alone = embedder.embed(["The Cat sat"])
    together = embedder.embed(["other text first", "the cat SAT", "and after"])
    np.testing.assert_array_equal(alone[0], together[1])


def test_mock_vectors_are_the_same_spread_over_the_worker_pool() -> None:
    texts = [f"batch {n} of words, the same words, word {n % 7}" for n in range(1200)]
    texts[5:8] = ["", "!!! ???", "x"]  # no words, punctuation only, one word
    embedder = MockEmbedder(dims=64)
    workers.map_in_order(str, ["start"] * workers.MIN_ITEMS_FOR_POOL)  # the pool runs
    spread = embedder.embed(texts)
    one_by_one = np.vstack([MockEmbedder(dims=64).embed([t]) for t in texts])
    np.testing.assert_array_equal(spread, one_by_one)


DIGEST = """
import hashlib
from tvdb_assets.lib.embedding import MockEmbedder
texts = ["alpha beta gamma", "", "Ünïcödé 漢字 😀", "the pipeline " * 300]
print(hashlib.sha256(MockEmbedder(dims=512).embed(texts).tobytes()).hexdigest())
"""


def test_mock_is_deterministic_across_processes() -> None:
    digests = set()
    for seed in ("0", "12345"):
        # A different PYTHONHASHSEED changes hash(); the vectors must not change with it.
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", DIGEST],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        digests.add(out.stdout.strip())
    texts = ["alpha beta gamma", "", "Ünïcödé 漢字 😀", "the pipeline " * 300]
    here = hashlib.sha256(MockEmbedder(dims=512).embed(texts).tobytes()).hexdigest()
    assert digests == {here}
