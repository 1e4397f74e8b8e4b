"""Pathological lines through parsing and chunking: time must grow linearly with length.

Each case is fed at two lengths; a quadratic regex or loop shows as a time ratio near 4 for
twice the input, a linear one near 2.
"""

import time

from bench.report import Record
from tvdb_assets.lib.chunking import chunk_markdown
from tvdb_assets.lib.parsing import LocalParser

LENGTHS = (100_000, 200_000)


def cases(n: int) -> dict[str, tuple[str, str]]:
    """name -> (file name, text) of about n characters."""
    return {
        "spaces": ("spaces.md", " " * n),
        "hashes": ("hashes.md", "#" * n),
        "nested_brackets": ("brackets.md", "[" * (n // 2) + "]" * (n // 2)),
        "heading_of_spaces": ("heading.md", "# a" + " " * n + "b"),
        "heading_closing_run": ("closing.md", "# a" + " #" * (n // 2)),
        "setext_underline": ("setext.md", "title\n" + "=" * n + "x"),
        "backticks": ("ticks.md", "`" * n),
        "nested_html": ("nested.html", "<div>" * (n // 5)),
    }


# Each time is the best of this many: a single run of a few hundredths of a second moves
# by half with whatever else the machine does, enough to fake a ratio.
REPEATS = 5


def _seconds(name: str, text: str) -> float:
    return min(_once(name, text) for _ in range(REPEATS))


def _once(name: str, text: str) -> float:
    started = time.perf_counter()
    try:
        parsed = LocalParser().parse(name, text.encode()).markdown
    except Exception:  # a parse failure is an outcome too; the time is what counts here
        parsed = text
    chunk_markdown(parsed, max_tokens=512, overlap_tokens=64)
    return time.perf_counter() - started


def run() -> Record:
    short, long = (cases(n) for n in LENGTHS)
    times = {name: (_seconds(*short[name]), _seconds(*long[name])) for name in short}
    worst = max(t for t, _ in times.values())
    ratio = max(b / max(a, 1e-3) for a, b in times.values())
    return {
        "measurement": "pathological_lines",
        "result": round(worst, 3),
        "target": "each < 1 s at 100k chars; 2x the line <= 3x the time",
        "met": worst < 1.0 and ratio <= 3.0,
        "worst_ratio_2x": round(ratio, 2),
        "seconds_100k_200k": {k: f"{a:.3f}/{b:.3f}" for k, (a, b) in times.items()},
    }
