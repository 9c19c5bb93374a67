"""Structured logs: events and one access line per request.

JSON lines when stdout is not a terminal (journald, files), a readable
console rendering on one.  Events are written as they happen; access lines
are buffered and written a few times a second, because a write and flush per
request would cost the data plane more than the rest of the request.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
# Access lines kept in memory before a forced write, on top of the periodic one.
_FLUSH_LINES = 512


class BufferedLogger:
    """A structlog logger that appends lines to a list; `flush` writes them."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines: list[str] = []

    def msg(self, message: str) -> None:
        self._lines.append(message)
        if len(self._lines) >= _FLUSH_LINES:
            self.flush()

    info = debug = warning = error = critical = exception = log = msg

    def flush(self) -> None:
        if self._lines:
            self._lines.append("")
            try:
                self._stream.write("\n".join(self._lines))
                self._stream.flush()
            except (OSError, ValueError):
                pass  # a closed or full log sink must not take requests down
            self._lines.clear()


def _renderer(fmt: str, stream: TextIO):
    if fmt == "console" or (fmt == "auto" and stream.isatty()):
        return structlog.dev.ConsoleRenderer(colors=stream.isatty())
    return structlog.processors.JSONRenderer()


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog for events (written and flushed at once)."""
    stream = stream or sys.stdout
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _renderer(fmt, stream),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


class AccessLog:
    """One canonical line per request, through structlog, written in batches."""

    def __init__(self, fmt: str = "auto", stream: TextIO | None = None) -> None:
        stream = stream or sys.stdout
        self.sink = BufferedLogger(stream)
        # Only what an access line needs: no contextvars or exception hooks.
        self._log = structlog.wrap_logger(
            self.sink,
            processors=[
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _renderer(fmt, stream),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        )

    def record(self, req, status: int, pool: str | None, upstream, duration: float,
               sent: int, peer: str) -> None:
        self._log.info(
            "request",
            method=req.method.decode("latin-1"),
            path=req.target.decode("latin-1"),
            status=status,
            pool=pool,
            upstream=None if upstream is None else str(upstream),
            duration_ms=round(duration * 1000, 3),
            bytes=sent,
            request_id=None if req.request_id is None else req.request_id.decode("latin-1"),
            client=peer,
        )

    def flush(self) -> None:
        self.sink.flush()
