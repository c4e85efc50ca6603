"""Log lines as text for people or as JSON for log pipelines, with the ids that tie them up.

`configure_logging(level, "json")` makes every record one JSON object on one line:

    {"time": "2026-12-07T02:00:05.123Z", "level": "INFO", "logger": "modelferry.edge.agent",
     "message": "...", "device_id": "dev-001", "delivery_id": "d-42"}

The ids come from `log_context(device_id=..., delivery_id=...)`, which binds them for the
current thread or asyncio task and the tasks it starts (context variables: a thousand
simulated devices in one event loop each log under their own id), and from `extra=` of a
logging call. A message is always a JSON string, so a device id or payload holding a
newline cannot forge a second line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Literal

__all__ = [
    "CONTEXT_FIELDS",
    "LOG_FORMATS",
    "JsonLogFormatter",
    "LogFormat",
    "configure_logging",
    "log_context",
]

LogFormat = Literal["text", "json"]
#: The values `--log-format` takes.
LOG_FORMATS: Final = ("text", "json")
#: Ids a record carries when they are bound or passed with `extra=`.
CONTEXT_FIELDS: Final = (
    "device_id",
    "delivery_id",
    "package",
    "request_id",
    "deployment",
    "endpoint",
    "model_name",
    "model_version",
)
# Fields a request line passes with `extra=` (modelferry.serving.request_log).
_EXTRA_FIELDS: Final = (*CONTEXT_FIELDS, "status", "rows", "latency_ms")

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "modelferry_log_context", default=MappingProxyType({})
)


@contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Bind ids (None ones are skipped) to every record logged inside the block.

    Nested blocks add to the outer ids; leaving a block restores them.
    """
    bound = {**_context.get(), **{k: str(v) for k, v in ids.items() if v is not None}}
    token = _context.set(bound)
    try:
        yield
    finally:
        _context.reset(token)


def bound_ids() -> Mapping[str, str]:
    """The ids bound in this thread or task right now."""
    return _context.get()


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record, with the bound ids and known `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update(_context.get())
        for field in _EXTRA_FIELDS:
            value = record.__dict__.get(field)
            if isinstance(value, float) and not math.isfinite(value):
                value = str(value)  # JSON has no NaN or infinity
            if value is not None:
                document[field] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        # default=str: an odd value in `extra=` must not lose the whole line.
        return json.dumps(document, default=str, ensure_ascii=False, allow_nan=False)


class _TextWithIds(logging.Formatter):
    """The text format, with bound ids appended as `key=value` so people see them too."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = _context.get()
        if not ids:
            return line
        return line + " " + " ".join(f"{key}={value}" for key, value in ids.items())


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to what `sys.stderr` is when a record comes, not when it was configured.

    A command run in-process (tests, an embedding program) may swap `sys.stderr` and close
    the old one afterwards; a handler holding that stream would then fail on every record.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        return  # always the current sys.stderr


def configure_logging(level: int | str = logging.INFO, log_format: LogFormat = "text") -> None:
    """Send the root logger's records to stderr in `log_format`, as `logging.basicConfig`.

    Like `basicConfig`, it leaves a root logger that something else configured alone (a
    program embedding the command, a test runner); calling it again replaces what an
    earlier call installed.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")
    root = logging.getLogger()
    if any(not isinstance(handler, _StderrHandler) for handler in root.handlers):
        return
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = _StderrHandler()
    formatter = JsonLogFormatter() if log_format == "json" else _TextWithIds(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)
