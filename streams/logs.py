"""Log formatting for the API and the worker: nothing a client or an event sends can forge a log line.

Messages are escaped: control characters (CR, LF, ESC, NUL, ...), DEL, the C1 range and the Unicode line
separators become ``\\xNN`` / ``\\uNNNN``. The only raw newlines left in a text record are those of a
traceback, and every line after the first is indented, so a record always starts at column 0 with its
timestamp and nothing else does. ``LOG_FORMAT=json`` writes one JSON object per line instead.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """``text`` with every control character written as an escape sequence (one line, printable)."""
    return _CONTROL.sub(_escape_char, text)


def _message(record: logging.LogRecord) -> str:
    try:
        return escape_control(record.getMessage())
    except Exception:  # a bad %-format must not lose the record
        return escape_control(f"{record.msg!r} {record.args!r}")


class SafeTextFormatter(logging.Formatter):
    """The usual text format, with the message escaped and continuation lines indented."""

    def format(self, record: logging.LogRecord) -> str:
        msg, args = record.msg, record.args
        record.msg, record.args = _message(record), None
        try:
            text = super().format(record)
        finally:
            record.msg, record.args = msg, args
        return text.replace("\r", "\\r").replace("\n", "\n    ")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``{"ts", "level", "logger", "message", "exc"?}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=True)  # ensure_ascii: no raw separators survive either


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else SafeTextFormatter(TEXT_FORMAT)


def install(log_format: str, logger: logging.Logger | None = None) -> None:
    """Put the safe formatter on every handler of ``logger`` (the root logger by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        handler.setFormatter(formatter(log_format))
