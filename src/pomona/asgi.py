"""The server's ASGI entry, built from its settings (pomona.settings).

- ``pomona serve`` runs ``uvicorn pomona.asgi:create --factory`` in each worker process; the
  settings come from the hand-off it made (``Settings.handoff``).
- ``uvicorn pomona.asgi:app`` works as before: ``app`` is built from the environment when first
  looked up. Add ``--http pomona.http.server:BoundedHttpToolsProtocol`` to bound request heads (431) as
  ``pomona serve`` does.
"""

from __future__ import annotations

from pomona.app import create_app
from pomona.heap import bound_malloc_arenas
from pomona.http.middleware import ASGIApp, with_access_log
from pomona.i18n import set_process_lang
from pomona.logs import configure
from pomona.settings import Settings

__all__ = ["bound_malloc_arenas", "create"]


def create(settings: Settings | None = None) -> ASGIApp:
    """The server: logging configured (POMONA_LOG_*), the application, and the access log when it is on;
    malloc's arenas bounded before the server's threads start (:func:`pomona.heap.bound_malloc_arenas`).
    (SQLite's page slab, :func:`pomona.heap.give_sqlite_a_page_slab`, must come before this module's
    import: ``pomona serve`` sets it on SQLite; its worker processes run on PostgreSQL.)"""
    bound_malloc_arenas()
    settings = settings or Settings.from_env()
    configure(settings.log_format, settings.log_level or "info")
    set_process_lang(settings.lang)
    app: ASGIApp = create_app(settings)  # type: ignore[assignment]
    return with_access_log(app, settings.access_log)


_app: ASGIApp | None = None


def __getattr__(name: str) -> ASGIApp:
    """``pomona.asgi:app``: built from the environment on first use (importing the module builds nothing)."""
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        _app = create()
    return _app
