"""Hostile documents, one at a time, through the project's own parse path: the time each
takes and the memory it needs must stay within the per-document bounds.

Each case runs in a fresh `python -m bench.hostile CASE_FILE` process, so its peak RSS
(the process and its guarded parse worker) is its own.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import Record
from tvdb_assets_tests.bombs import pdf_bomb

MIB = 1024 * 1024
# A shorter limit than the default 120 s, so the bench shows the limit at work sooner.
TIMEOUT_S = 30
MEMORY_MB = 1024


def cases() -> dict[str, tuple[str, bytes]]:
    """name -> (file name, bytes); made when run, never on import by a case's process."""
    return {
        "pdf_bomb_3mb_text": ("bomb.pdf", pdf_bomb(3 * MIB)),
        "pdf_bomb_30_pages_x_10mb": ("pages-bomb.pdf", pdf_bomb(10 * MIB, pages=30)),
        "pdf_bomb_40mb_one_page": ("big-bomb.pdf", pdf_bomb(40 * MIB)),
        "html_nested_50k": ("nested.html", b"<div>" * 50_000 + b"deep" + b"</div>" * 10),
        "heading_100k_spaces": ("heading.md", b"# a" + b" " * 100_000 + b"b\n\ntext\n"),
        "nul_bytes_text": ("nuls.txt", b"before\x00after\x00" * 1000),
        "empty_pdf": ("empty.pdf", b""),
        "one_line_101mb": ("one-line.txt", b"x" * (101 * MIB)),
    }


def run() -> Record:
    results = {}
    with tempfile.TemporaryDirectory(prefix="tvdb-hostile-") as folder:
        for name, (filename, data) in cases().items():
            path = Path(folder) / filename
            path.write_bytes(data)
            done = subprocess.run(
                [sys.executable, "-m", "bench.hostile", str(path)],
                capture_output=True,
                text=True,
                check=True,
                env={
                    **os.environ,
                    "TVDB_PARSE_TIMEOUT_S": str(TIMEOUT_S),
                    "TVDB_PARSE_MEMORY_MB": str(MEMORY_MB),
                },
            )
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            path.unlink()
    worst_seconds = max(r["seconds"] for r in results.values())
    worst_mib = max(r["peak_rss_mib"] for r in results.values())
    return {
        "measurement": "hostile_documents",
        "result": round(worst_seconds, 2),
        "target": f"each a document or one error within {TIMEOUT_S} s (+5) and {MEMORY_MB} MB",
        "met": worst_seconds < TIMEOUT_S + 5 and worst_mib < MEMORY_MB + 300,
        "peak_rss_mib": worst_mib,
        "cases": {
            k: f"{v['seconds']:.2f} s, worker {v['worker_peak_rss_mib']:.0f} MiB, "
            f"process {v['peak_rss_mib']:.0f} MiB: {v['outcome']}"
            for k, v in results.items()
        },
    }


def _one(path: Path) -> dict[str, object]:
    from tvdb_assets.lib import stages, workers
    from tvdb_assets.lib.ids import partition_key_for
    from tvdb_assets.lib.parsing import LocalParser
    from tvdb_assets.lib.store.inbox_files import InboxFile
    from tvdb_assets.lib.uploads import LocalInbox

    uploads = LocalInbox(path.parent)
    stat = path.stat()
    file = InboxFile(
        partition_key_for(path.name), path.name, stat.st_size, stat.st_mtime_ns,
        uploads.sha256(path.name),
    )  # fmt: skip
    started = time.perf_counter()
    (outcome,) = stages.parse_batch(uploads, LocalParser(), [file])
    seconds = time.perf_counter() - started
    workers.stop()  # the pool's workers are children only once they are reaped
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    said = (
        f"failed: {outcome.error.reason}"
        if outcome.error
        else f"{len(outcome.document.markdown):,} chars"
        if outcome.document
        else "?"
    )
    return {
        "seconds": seconds,
        "peak_rss_mib": max(own, worker) / 1024,
        "worker_peak_rss_mib": worker / 1024,  # 0: parsed in this process, no guard needed
        "outcome": said,
    }


if __name__ == "__main__":
    print(json.dumps(_one(Path(sys.argv[1]))))
