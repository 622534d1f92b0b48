"""Logging, configured once per process: every line goes through structlog, as console text or JSON.

Pomona's modules log through the standard library, as a library should (``logging.getLogger("pomona.<area>")``,
structured fields in ``extra=``); so do uvicorn and the other libraries. :func:`configure` puts one
handler on the root logger whose formatter is structlog's ``ProcessorFormatter``, so every line, ours or a
library's, gets the same processing: the context bound with ``structlog.contextvars`` (the request id,
bound per request by services/context.py ``bind_request_id``), the ``extra`` fields, level, logger name
and a UTC timestamp, then the renderer. structlog's own loggers (``structlog.stdlib.get_logger()``) are
routed to the same handler. Before ``configure`` nothing is set up: the standard library's defaults
apply (warnings and errors on stderr), as for any library.

The lines Pomona writes on purpose:

- ``refusal`` (logger ``pomona.refusal``, info): one per refusal, from ``ServiceBase.record_failure``,
  with ``reason``, ``step``, ``tenant``, ``udid``/``serial``/``upn`` when known, and ``request_id``;
- ``request`` (logger ``pomona.access``, info): one per HTTP request with ``method``, ``path``,
  ``status``, ``duration_ms``, ``request_id``, only when the access log is on (POMONA_ACCESS_LOG=1 or
  ``pomona serve --access-log``); when it is off the server is not wrapped at all
  (http/middleware.py ``AccessLog``). The path of an enrollment link is ``/enroll/[redacted]``: its
  token is a secret (and the SCEP challenge); queries and headers are never logged;
- ``serving`` (logger ``pomona.serve``, info) with ``url``, ``public_url``, ``database`` (its password
  hidden): `pomona serve`'s start-up banner when the format is JSON (console: the translated text), and
  ``plain_http_public_url`` (warning) for an http:// public URL off this machine.

A logged exception (``log.exception``, ``exc_info=``) is written with its traceback but never with
its frames' local variables, which hold secrets (:func:`_exception_formatter`; the JSON format's
``exception`` is the standard library's text, which has none).

structlog is imported when the first line is formatted with ``configure(..., lazy=True)`` (the CLI: most
commands write no log line, and importing structlog, with rich behind its console renderer, was a fifth
of `pomona tenant list`'s start-up; issue 14). The server configures eagerly.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from structlog.typing import EventDict, ExceptionRenderer, Processor, WrappedLogger

    from pomona.settings import LogFormat, LogLevel

__all__ = ["ACCESS_LOGGER", "QUIET", "REFUSAL_LOGGER", "configure", "log_serving", "reset"]

REFUSAL_LOGGER: Final = "pomona.refusal"
ACCESS_LOGGER: Final = "pomona.access"
#: Libraries whose info lines are noise in a server's log (one per outgoing HTTP request, per migration
#: plugin): warnings and up, unless the level is debug.
QUIET: Final = ("alembic", "httpx", "httpcore")


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when the line is written (click's test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # logging must never break the caller
            self.handleError(record)


_handler: logging.Handler | None = None
_level_before = logging.WARNING  # the root logger's level before the first configure()


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)  # uvicorn's ANSI copy of the message, in its extra
    return event_dict


class _FirstUseFormatter(logging.Formatter):
    """Sets up structlog (:func:`_structlog_formatter`) when the first line is formatted, then formats
    every line with it: the lines are the same as with an eager set-up."""

    def __init__(self, format: LogFormat) -> None:
        super().__init__()
        self._format: LogFormat = format
        self._formatter: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self._formatter is None:
            self._formatter = _structlog_formatter(self._format)
        return self._formatter.format(record)


def configure(format: LogFormat = "console", level: LogLevel | str = "info", *, lazy: bool = False) -> None:
    """Route every logger of this process through structlog, written to stderr. Calling it again
    replaces the previous set-up (the CLI configures, then `pomona serve` configures for itself).

    ``lazy``: structlog is imported and configured when the first line is written, not now (the CLI's
    start-up); the levels are set now either way."""
    global _handler, _level_before
    handler = _StderrHandler()
    handler.setFormatter(_FirstUseFormatter(format) if lazy else _structlog_formatter(format))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    else:
        _level_before = root.level
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.NOTSET if level.lower() == "debug" else logging.WARNING)
    _handler = handler


def _structlog_formatter(format: LogFormat) -> logging.Formatter:
    """structlog configured for this process, and the formatter of the one handler."""
    import structlog

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    tty = sys.stderr.isatty()
    if format == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=tty, exception_formatter=_exception_formatter(tty))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), _drop_color_message],
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )


def _exception_formatter(tty: bool) -> ExceptionRenderer:
    """How the console format writes a traceback: never with the frames' local variables (structlog's
    rich default shows them, and they hold what a server must not log: database URLs, keys, enrollment
    tokens, SCEP challenges, passwords; rendering them also cost a server with its database gone half a
    core). rich's boxes, without locals, on a terminal; elsewhere (journald, a file) the standard
    library's plain traceback, the cheapest to write and to read back."""
    import structlog

    if tty:
        return structlog.dev.RichTracebackFormatter(show_locals=False)
    return structlog.dev.plain_traceback


def reset() -> None:
    """Undo :func:`configure`: the handler removed, levels and structlog as they were (tests use it)."""
    global _handler
    if _handler is not None:
        root = logging.getLogger()
        root.removeHandler(_handler)
        root.setLevel(_level_before)
        for name in QUIET:
            logging.getLogger(name).setLevel(logging.NOTSET)
        _handler = None
    if "structlog" in sys.modules:  # not imported: nothing configured it
        import structlog

        structlog.reset_defaults()


def log_serving(url: str, public_url: str, database: str, *, plain_http: bool) -> None:
    """`pomona serve`'s banner as log lines (the JSON format: every line of stderr is one object)."""
    log = logging.getLogger("pomona.serve")
    if plain_http:
        log.warning("plain_http_public_url", extra={"public_url": public_url})
    log.info("serving", extra={"url": url, "public_url": public_url, "database": database})
