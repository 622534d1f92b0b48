"""Per-request context shared by services and adapters (the request id that ties logs, events and errors)."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("pomona_request_id", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()
