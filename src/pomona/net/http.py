"""The WellKnownFetcher port on httpx."""

from __future__ import annotations

import httpx


class HttpFetcher:
    def __init__(self, *, timeout: float = 3.0, verify: bool | str = True) -> None:
        self.timeout = timeout
        self.verify = verify

    def fetch(self, url: str) -> tuple[int, bytes]:
        try:
            r = httpx.get(url, timeout=self.timeout, verify=self.verify, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise OSError(f"{type(exc).__name__}: {exc}") from exc
        return r.status_code, r.content[:65536]
