"""Per-request context shared by services and adapters (the request id that ties logs, events and errors).

Adapters bind the request id once per request with :func:`bind_request_id` and reset it with
:func:`reset_request_id`; services read it with :func:`current_request_id` (events carry it). The same
id is bound in ``structlog.contextvars``, so every log line written while the request runs carries it as
``request_id`` (pomona/logs.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, NamedTuple

request_id_var: ContextVar[str | None] = ContextVar("pomona_request_id", default=None)


class RequestIdToken(NamedTuple):
    own: Token[str | None]
    log: Mapping[str, Token[Any]]


def current_request_id() -> str | None:
    return request_id_var.get()


def bind_request_id(request_id: str) -> RequestIdToken:
    """Make ``request_id`` the current request's id, for services (events) and for every log line.
    structlog is imported here, by the server's first request, not with this module: the CLI imports
    the services without serving a request (start-up time, issue 14)."""
    from structlog.contextvars import bind_contextvars

    return RequestIdToken(request_id_var.set(request_id), bind_contextvars(request_id=request_id))


def reset_request_id(token: RequestIdToken) -> None:
    """Back to the id bound before :func:`bind_request_id` (none, outside a request)."""
    from structlog.contextvars import reset_contextvars

    request_id_var.reset(token.own)
    reset_contextvars(**token.log)


# --- who is asking: the client address, and whether the request proved an identity ------------------
@dataclass
class Caller:
    """The client of the current device request (its address, after trusted proxies), and whether it
    proved an identity: a device certificate issued by the tenant's CA, or an enrollment token or SCEP
    challenge that exists. Refusals of a caller that proved none are rate-limited per tenant and address
    (services/throttle.py); those of an identified caller are always recorded."""

    address: str
    identified: bool = False


caller_var: ContextVar[Caller | None] = ContextVar("pomona_caller", default=None)


def bind_caller(address: str) -> Token[Caller | None]:
    """Bind the current device request's client address (http/root.py, once per request)."""
    return caller_var.set(Caller(address))


def reset_caller(token: Token[Caller | None]) -> None:
    caller_var.reset(token)


def current_caller() -> Caller | None:
    return caller_var.get()


def mark_identified() -> None:
    """The current request proved an identity (a known certificate, token or challenge)."""
    caller = caller_var.get()
    if caller is not None:
        caller.identified = True
