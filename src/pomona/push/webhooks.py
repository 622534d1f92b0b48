"""The webhook poster (ports.WebhookPoster) over httpx."""

from __future__ import annotations

import httpx


class HttpWebhookPoster:
    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        try:
            with httpx.Client(timeout=timeout, follow_redirects=False) as client:
                return client.post(url, content=body, headers=headers).status_code
        except httpx.HTTPError as exc:
            raise OSError(f"{type(exc).__name__}: {exc}") from exc
