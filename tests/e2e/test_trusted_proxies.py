"""X-Forwarded-For is believed from configured proxies only: through the real server (uvicorn)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import LiveServer, free_port, setup_tenant, start_server
from pomona.app import Settings, build

PASSWORD = "portal-pass-1"
UPN = "pia@acme.example"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    port = free_port()
    p = build(Settings(data_dir=tmp_path, public_url=f"http://127.0.0.1:{port}"))
    try:
        s = setup_tenant(p, "acme", push=False)
        p.admin.create_user(s.name, UPN, password=PASSWORD)
        p.policy.licence(s.name, UPN, assign=True)
    finally:
        p.close()
    live = start_server(tmp_path, None, port=port)
    yield live
    live.stop()


def sign_in(url: str, password: str, forwarded_for: str) -> int:
    """One sign-in as a browser makes it (the page, its session cookie and CSRF token, the POST)."""
    with httpx.Client(base_url=url, headers={"X-Forwarded-For": forwarded_for}) as c:
        page = c.get("/portal/acme/signin")
        cookie = page.headers["set-cookie"].split(";", 1)[0]  # Secure: sent by hand over http
        m = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
        assert m, page.text[:300]
        r = c.post(
            "/portal/acme/signin",
            data={"csrf": m.group(1), "upn": UPN, "password": password},
            headers={"Cookie": cookie},
        )
        return r.status_code


class TestTrustedProxies:
    def test_rotating_forwarded_for_does_not_bypass_the_lockout(self, server: LiveServer) -> None:
        """From a peer that is not a configured proxy (none by default), a new X-Forwarded-For on every
        try does not make a new client: after ten failures the right password is refused (429)."""
        for i in range(10):
            assert sign_in(server.url, "wrong-password", f"198.51.100.{i}") == 401
        assert sign_in(server.url, PASSWORD, "198.51.100.200") == 429
