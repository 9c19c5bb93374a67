"""Structured logs: events and one access line per request.

JSON lines when stdout is not a terminal (journald, files), a readable
console rendering on one.  Events are written as they happen; access lines
are buffered and written a few times a second, because a write and flush per
request would cost the data plane more than the rest of the request.
"""

from __future__ import annotations

import json
import logging
import sys
from time import time as wall_clock
from typing import TextIO

import structlog

try:  # the same lines formatted in C, built with the compiled data plane (setup.py)
    from ._accessline import render_lines as _render_compiled
except ImportError:
    _render_compiled = None

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
# Access lines kept in memory before a forced write, on top of the periodic one.
_FLUSH_LINES = 512


# With several processes writing one sink (`workers` > 1), each write is whole
# lines of at most this many characters (so at most 4000 bytes: a byte past
# ASCII in a path is two in UTF-8).  A pipe takes up to PIPE_BUF (4096) bytes in
# one piece, a file opened for appending any write, and journald's stream
# socket a write this small whole in practice: another process's lines never
# land in the middle of one of ours.
SHARED_WRITE = 2000


class SafeWriteLogger:
    """A structlog logger that writes each message (a batch of access lines) and
    flushes it; a closed or full log sink must not take requests down."""

    def __init__(self, stream: TextIO, shared: bool = False) -> None:
        self._stream = stream
        self._shared = shared

    def msg(self, message: str) -> None:
        try:
            if self._shared and len(message) >= SHARED_WRITE:
                for piece in _whole_lines(message, SHARED_WRITE):
                    self._stream.write(piece)
                    self._stream.flush()
                return
            self._stream.write(message + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass

    info = debug = warning = error = critical = exception = log = msg


def _whole_lines(text: str, most: int):
    """`text` and a final newline, in pieces that end at a newline and are at
    most `most` characters long (a longer line is a piece of its own)."""
    start, end = 0, len(text)
    while start < end:
        if end - start < most:
            cut = end
        else:
            cut = text.rfind("\n", start, start + most)
            if cut < 0:  # no newline within reach: this line alone, however long
                cut = text.find("\n", start + most)
                cut = end if cut < 0 else cut
        yield text[start:cut] + "\n"
        start = cut + 1


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


_escape = json.encoder.encode_basestring  # a JSON string literal, quotes included
_FIELDS = ("timestamp", "method", "path", "status", "pool", "upstream", "duration_ms",
           "bytes", "request_id", "client", "error")


class _JsonNames(dict):
    """JSON literals of values that repeat line after line (methods, pool and upstream
    names), escaped once each: a dict hit costs a fraction of decoding and escaping."""

    def __missing__(self, value: bytes | str | None) -> str:
        if value is None:
            text = "null"
        else:
            text = _escape(value.decode("latin-1") if isinstance(value, bytes) else value)
        if len(self) < 4096:  # methods and names are few; anything else is not kept
            self[value] = text
        return text


def _render_lines(_logger, _name, event: dict) -> str:
    """A batch of access lines as JSON, formatted directly.

    structlog's TimeStamper and JSONRenderer cost ~8 us a line, as much as
    the rest of the request; the fields here are fixed and mostly ours, so
    only the client-supplied ones (path, request id) need escaping per line.
    """
    names = _NAMES
    # An f-string, not a %-template: its literal parts are copied, not parsed
    # (measured: ~5% of the line's cost).
    return "\n".join([
        f'{{"event":"request","timestamp":{ts:.3f},"method":{names[method]},'
        f'"path":{_escape(path.decode("latin-1"))},"status":{status},"pool":{names[pool]},'
        f'"upstream":{names[upstream]},"duration_ms":{duration * 1000:.3f},"bytes":{sent},'
        f'"request_id":{_escape(rid.decode("latin-1"))},"client":"{client}"'
        f'{"}" if error is None else f",{_ERROR}{names[error]}}}"}'
        for ts, method, path, status, pool, upstream, duration, sent, rid, client, error
        in event["lines"]])


def _render_lines_compiled(_logger, _name, event: dict) -> str:
    """_render_lines in C (_accessline.pyx): the same bytes at a fraction of the cost."""
    return _render_compiled(event["lines"])


# An answer the proxy cut or could not finish (after its head went out, the
# client left, a drain ran out) has "error": the event that ended it.
_ERROR = '"error":'



_NAMES = _JsonNames()


def _console_lines(renderer):
    """For a terminal: each line of the batch as named fields, through `renderer`."""
    def render(logger, name, event: dict) -> str:
        out = []
        for line in event["lines"]:
            fields = dict(zip(_FIELDS, line), event="request")
            if fields["error"] is None:
                del fields["error"]
            for key in ("method", "path", "request_id"):
                fields[key] = fields[key].decode("latin-1")
            fields["duration_ms"] *= 1000
            out.append(renderer(logger, name, fields))
        return "\n".join(out)
    return render


class AccessFile:
    """The access log's file when `log.access_file` is set: appended to, and
    reopened by `reopen()` (SIGUSR1) after logrotate moved it away."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file = self._open()

    def _open(self) -> TextIO:
        return open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open on purpose

    def write(self, text: str) -> int:
        return self.file.write(text)

    def flush(self) -> None:
        self.file.flush()

    def isatty(self) -> bool:
        return False

    def reopen(self) -> None:
        old, self.file = self.file, self._open()
        old.close()

    def close(self) -> None:
        self.file.close()


class AccessLog:
    """One canonical line per request, rendered through structlog in batches.

    `record` only keeps the line's values; `flush` (a few times a second, or
    every `_FLUSH_LINES` lines) passes the batch through structlog as one
    event whose processor renders every line.  Going through structlog once
    per line cost ~13k instructions of wrapper and processor-chain overhead,
    about a tenth of a request; once per batch it costs nothing per line.
    """

    def __init__(self, fmt: str = "auto", stream: TextIO | None = None,
                 shared: bool = False) -> None:
        stream = stream or sys.stdout
        self.sink = SafeWriteLogger(stream, shared)
        self._pending: list[tuple] = []
        console = fmt == "console" or (fmt == "auto" and stream.isatty())
        processor = _console_lines(structlog.dev.ConsoleRenderer(colors=stream.isatty())) \
            if console else _render_lines_compiled if _render_compiled else _render_lines
        # bind() once: the lazy proxy wrap_logger returns would rebuild the
        # bound logger on every call.
        self._log = structlog.wrap_logger(
            self.sink, processors=[processor],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        ).bind()

    def record(self, req, status: int, pool: str | None, upstream: str | None,
               duration: float, sent: int, peer: str, error: str | None = None) -> None:
        """Keep one request's line; `duration` in seconds."""
        pending = self._pending
        pending.append((wall_clock(), req.method, req.target, status, pool, upstream, duration,
                        sent, req.request_id or b"", peer, error))
        if len(pending) >= _FLUSH_LINES:
            self.flush()

    def record_exchange(self, exchange, status: int, now: float, error: str | None) -> None:
        """`record` for an exchange.Exchange that ended at `now` (monotonic)."""
        req, pool, target = exchange.request, exchange.pool, exchange.target
        pending = self._pending
        pending.append((wall_clock(), req.method, req.target, status,
                        pool.name if pool else None, target.label if target else None,
                        now - req.started, exchange.sent_bytes, req.request_id or b"",
                        exchange.client.peer, error))
        if len(pending) >= _FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            lines, self._pending = self._pending, []
            self._log.info("request", lines=lines)
