"""TrustedProxies: X-Forwarded-For and -Proto believed from the configured proxies only."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pomona.http.middleware import TrustedProxies


def seen_client(networks: list[str], peer: str, xff: list[str], proto: str | None = None) -> tuple[Any, str]:
    """The client address and scheme the wrapped app sees."""
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)

    headers = [(b"x-forwarded-for", v.encode()) for v in xff]
    if proto:
        headers.append((b"x-forwarded-proto", proto.encode()))
    scope = {"type": "http", "client": (peer, 5000), "headers": headers, "scheme": "http"}
    asyncio.run(TrustedProxies(app, networks)(scope, None, None))  # type: ignore[arg-type]
    return seen["client"][0], seen["scheme"]


class TestTrustedProxies:
    def test_no_proxies_configured_ignores_the_headers(self) -> None:
        """By default the client is the peer, whatever X-Forwarded-For says."""
        assert seen_client([], "127.0.0.1", ["203.0.113.7"], "https") == ("127.0.0.1", "http")

    def test_untrusted_peer_headers_are_ignored(self) -> None:
        """A peer outside the configured networks cannot choose its address."""
        assert seen_client(["10.0.0.0/8"], "127.0.0.1", ["203.0.113.7"]) == ("127.0.0.1", "http")

    @pytest.mark.parametrize(
        ("xff", "client"),
        [
            (["203.0.113.7"], "203.0.113.7"),
            (["198.51.100.1, 203.0.113.7"], "203.0.113.7"),  # the client prepended a forged hop
            (["203.0.113.7, 10.0.0.9"], "203.0.113.7"),  # a second trusted proxy in the chain
            (["not-an-ip"], "10.0.0.2"),
        ],
    )
    def test_trusted_peer_reports_the_client(self, xff: list[str], client: str) -> None:
        """From a trusted proxy the client is the rightmost hop that is not itself a trusted proxy."""
        assert seen_client(["10.0.0.0/8"], "10.0.0.2", xff, "https") == (client, "https")
