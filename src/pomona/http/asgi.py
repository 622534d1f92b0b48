"""`uvicorn pomona.http.asgi:app`: the server built from the environment (POMONA_* settings)."""

from __future__ import annotations

from pomona.app import Settings, create_app

app = create_app(Settings.from_env())
