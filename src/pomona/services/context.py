"""Per-request context shared by services and adapters (the request id that ties logs, events and errors).

Adapters bind the request id once per request with :func:`bind_request_id` and reset it with
:func:`reset_request_id`; services read it with :func:`current_request_id` (events carry it). The same
id is bound in ``structlog.contextvars``, so every log line written while the request runs carries it as
``request_id`` (pomona/logs.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import Any, NamedTuple

from structlog.contextvars import bind_contextvars, reset_contextvars

request_id_var: ContextVar[str | None] = ContextVar("pomona_request_id", default=None)


class RequestIdToken(NamedTuple):
    own: Token[str | None]
    log: Mapping[str, Token[Any]]


def current_request_id() -> str | None:
    return request_id_var.get()


def bind_request_id(request_id: str) -> RequestIdToken:
    """Make ``request_id`` the current request's id, for services (events) and for every log line."""
    return RequestIdToken(request_id_var.set(request_id), bind_contextvars(request_id=request_id))


def reset_request_id(token: RequestIdToken) -> None:
    """Back to the id bound before :func:`bind_request_id` (none, outside a request)."""
    request_id_var.reset(token.own)
    reset_contextvars(**token.log)
