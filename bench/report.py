"""Output: one JSON object per measurement on stdout, and a markdown table of them all."""

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

Record = dict[str, Any]

# Fields shown as the table's own columns; everything else goes to "details".
_COLUMNS = ("measurement", "result", "target", "met", "seconds")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def emit(record: Record) -> Record:
    print(json.dumps(record, sort_keys=False), flush=True)
    return record


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    return "" if value is None else str(value).replace("|", "/")


def table(records: Sequence[Record], headline: Mapping[str, str]) -> str:
    """A markdown table; `headline` names each measurement's main field ("result")."""
    lines = [
        "| " + " | ".join(_COLUMNS + ("details",)) + " |",
        "|" + "---|" * (len(_COLUMNS) + 1),
    ]
    for r in records:
        key = headline.get(r["measurement"])
        result = f"{_cell(r[key])} {key}" if key else _cell(r.get("result"))
        details = "; ".join(
            f"{k} {_cell(v)}" for k, v in r.items() if k not in _COLUMNS and k != key
        )
        cells = [r["measurement"], result, _cell(r.get("target")), _cell(r.get("met"))]
        cells += [_cell(r.get("seconds")), details]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
