"""Log lines as text or JSON (TVDB_LOG_FORMAT), carrying the run's ids and no secret.

`install` sets up, once per process:
- a record factory: a record of the project's loggers (`tvdb_assets.*`) is masked as it is
  made, before any handler sees it (Dagster's own handler copies it into the run's event
  log), and carries the ids of the call bound to the step that logs it (`bind`);
- with TVDB_LOG_FORMAT=json, a handler that prints those records as JSON lines on stderr:
  the terminal of a run worker (`tvdb dev`), or what a container's log shipper collects.

`tvdb` itself prints every record, its own and the libraries', through `JsonLinesHandler`
and `TerminalLines` (cli.py).
"""

import io
import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from tvdb_assets.lib import settings
from tvdb_assets.lib.costs.calls import CallContext
from tvdb_assets.lib.errors import REDACTED, redact

PROJECT = "tvdb_assets"

# Shapes of credentials whatever their source: keys of LlamaCloud and AWS, a password in a
# URL (`postgresql://user:password@host`) or in a libpq key/value string.
_SHAPES = re.compile(
    r"\bllx-[A-Za-z0-9_-]{16,}|\bAKIA[0-9A-Z]{16}\b"
    r"|(?<=://)(?P<user>[^:/@\s]*):[^@/\s]+(?=@)"
    r"|(?i:(?P<key>\bpassword\s*=\s*))[^\s&;]+"
)


def mask(text: str) -> str:
    """`text` without anything that looks like a configured secret or a credential."""
    return _SHAPES.sub(_masked, redact(text))


def _masked(match: re.Match[str]) -> str:
    if match.group("user") is not None:
        return f"{match.group('user')}:{REDACTED}"
    if match.group("key") is not None:
        return f"{match.group('key')}{REDACTED}"
    return REDACTED


def mask_record(record: logging.LogRecord) -> None:
    """Mask a record in place: its message, rendered, and its traceback, formatted."""
    try:
        record.msg, record.args = mask(record.getMessage()), ()
    except Exception:  # a bad format string: logging reports it when a handler formats it
        return
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = mask(record.exc_text)


class Masking(logging.Filter):
    """A handler's second line of defence: secrets are kept out of text that reaches a
    service's error message, a row or a log already (`errors.redact`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        mask_record(record)
        return True


@dataclass(frozen=True)
class _Binding:
    call: CallContext
    active: Callable[[], bool]


_bound: ContextVar[_Binding | None] = ContextVar("tvdb_log_binding", default=None)


def bind(call: CallContext, active: Callable[[], bool]) -> None:
    """The project's log lines carry `call`'s run id, correlation id and partition keys for
    as long as `active()` says (the step that bound it still runs: a process may run one
    run after another, `tvdb ingest`), in this thread and what copies its context."""
    install()
    _bound.set(_Binding(call, active))


def _ids() -> dict[str, Any]:
    binding = _bound.get()
    if binding is None:
        return {}
    try:
        if not binding.active():
            return {}
    except Exception:  # asked outside any step
        return {}
    call = binding.call
    ids: dict[str, Any] = {"run_id": call.run_id, "correlation_id": call.correlation_id}
    if call.partition_keys:
        ids["partition_keys"] = list(call.partition_keys)
    return {k: v for k, v in ids.items() if v}


# Set on the project's records by the factory: the masked message as it was logged (a
# handler ahead of ours, Dagster's, rewrites `msg` for its console), and the ids.
_MESSAGE = "tvdb_message"
_IDS = "tvdb_ids"


class JsonLines(JsonFormatter):
    """One JSON object a record: time, level, logger, message, and the run id, correlation
    id and partition keys when the record carries them; a traceback as `exc_info`."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = mask(getattr(record, _MESSAGE, None) or record.message)
        log_data.update(getattr(record, _IDS, None) or {})
        for key, value in message_dict.items():  # exc_info, stack_info
            log_data[key] = mask(record.exc_text or value) if key == "exc_info" else value


class JsonLinesHandler(logging.Handler):
    """Masked JSON lines on a stream; without one, on `sys.stderr` as it is at each line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._stream = stream
        self.setFormatter(JsonLines())
        self.addFilter(Masking())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = self._stream or sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


class TerminalLines(io.TextIOBase):
    """A stand-in for stderr that logs each line written to it, for a command whose stderr
    must hold JSON lines only: its progress bar and notices become records of `logger`."""

    def __init__(self, logger: str) -> None:
        self._log = logging.getLogger(logger)
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        # A progress bar redraws its line after "\r": each state of it is a line.
        *lines, self._pending = re.split(r"[\r\n]", self._pending + text)
        for line in lines:
            if line.strip():
                self._log.info(line.strip())
        return len(text)

    def flush(self) -> None:
        pending, self._pending = self._pending, ""
        if pending.strip():
            self._log.info(pending.strip())


_lock = threading.Lock()
_factory_installed = False
_printing: JsonLinesHandler | None = None


def install() -> None:
    """Mask and annotate the project's records from now on, and with TVDB_LOG_FORMAT=json
    print them as JSON lines. Once per process; a call after the first adds the JSON lines
    if the format changed to json since (tests set it per test)."""
    global _factory_installed, _printing
    with _lock:
        if not _factory_installed:
            previous = logging.getLogRecordFactory()

            def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                name = record.name or ""  # `logging.makeLogRecord` makes one without a name
                if name == PROJECT or name.startswith(PROJECT + "."):
                    mask_record(record)
                    setattr(record, _MESSAGE, record.msg)
                    setattr(record, _IDS, _ids())
                return record

            logging.setLogRecordFactory(make)
            _factory_installed = True
        if _printing is None and settings.log_format() == "json":
            _printing = JsonLinesHandler()
            _printing.addFilter(_print_here)
            logging.getLogger(PROJECT).addHandler(_printing)


def _print_here(record: logging.LogRecord) -> bool:
    # The format is read at each line, so a test that set it leaves no trace; where `tvdb`
    # prints every record itself (its root handler), the project's are printed once.
    # (no ValueError here for a mistyped format: a logging call must not raise).
    if os.environ.get("TVDB_LOG_FORMAT", "").strip().lower() != "json":
        return False
    return not any(isinstance(h, JsonLinesHandler) for h in logging.getLogger().handlers)
