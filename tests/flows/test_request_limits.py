"""What one request may send and what it may ask, through the real ASGI app on SQLite and PostgreSQL:
bodies are bounded before authentication, the User-Agent is read in bounded time and kept bounded, and
out-of-range admin API inputs are refused with a reason code instead of answered with a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from starlette.testclient import TestClient

from helpers import TenantSetup, events, setup_tenant
from pomona.app import Pomona, create_app
from pomona.domain.policy import MAX_USER_AGENT
from pomona.http.middleware import API_BODY_LIMITS

IPHONE_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


@pytest.fixture
def client(pomona: Pomona) -> Iterator[TestClient]:
    app = create_app(pomona=pomona, eager=False)
    with TestClient(app, base_url="https://pomona.test", raise_server_exceptions=False) as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    return setup_tenant(pomona)


def _asgi_post(app: Any, path: str, chunks: int, chunk_size: int, *, content_length: bool) -> tuple[int, int]:
    """POST ``chunks`` chunks without a token straight to the ASGI app: (status, chunks the app pulled)."""
    pulled = 0
    status = 0

    async def receive() -> MutableMapping[str, Any]:
        nonlocal pulled
        if pulled >= chunks:
            return {"type": "http.disconnect"}
        pulled += 1
        return {"type": "http.request", "body": b"x" * chunk_size, "more_body": pulled < chunks}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    headers = [(b"host", b"pomona.test"), (b"content-type", b"application/json")]
    if content_length:
        headers.append((b"content-length", str(chunks * chunk_size).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("pomona.test", 443),
    }
    asyncio.run(app(scope, receive, send))
    return status, pulled


class TestBodiesBeforeAuthentication:
    def test_declared_oversized_body_is_refused_unread(self, pomona: Pomona, client: TestClient) -> None:
        """A 50 MB body with no token is answered 413 MALFORMED_REQUEST without the app reading any of it."""
        status, pulled = _asgi_post(
            create_app(pomona=pomona, eager=False), "/api/v1/tenants", 50, 1 << 20, content_length=True
        )
        assert (status, pulled) == (413, 0)

    def test_chunked_oversized_body_stops_at_the_limit(self, pomona: Pomona) -> None:
        """A chunked body (no Content-Length) is read only until it passes the route's limit."""
        status, pulled = _asgi_post(
            create_app(pomona=pomona, eager=False), "/api/v1/tenants", 50, 1 << 20, content_length=False
        )
        assert status == 413
        assert pulled <= API_BODY_LIMITS.default // (1 << 20) + 1

    def test_413_has_the_error_shape(self, client: TestClient) -> None:
        """The refusal is {reason, message, request_id} with MALFORMED_REQUEST, like every admin API error."""
        r = client.post("/api/v1/tenants", content=b"{" + b" " * (API_BODY_LIMITS.default + 1) + b"}")
        assert r.status_code == 413
        assert r.json()["reason"] == "MALFORMED_REQUEST"
        assert r.json()["request_id"] == r.headers["x-request-id"]

    def test_route_limits(self) -> None:
        """Commands and corporate identifiers may send more than the other routes; the default applies else."""
        assert API_BODY_LIMITS.limit_for("POST", "/api/v1/tenants/a/commands") > API_BODY_LIMITS.default
        assert API_BODY_LIMITS.limit_for("GET", "/api/v1/tenants/a/commands") == API_BODY_LIMITS.default

    def test_body_within_the_limit_still_reaches_the_app(self, client: TestClient, acme: TenantSetup) -> None:
        """A normal request goes through unchanged (the body is replayed to the application)."""
        h = {"Authorization": f"Bearer {acme.admin_token}"}
        r = client.post(f"/api/v1/tenants/{acme.name}/groups", headers=h, json={"name": "sales"})
        assert r.status_code == 201, r.text

    def test_portal_body_is_bounded(self, client: TestClient) -> None:
        """The portal's forms are bounded the same way."""
        r = client.post("/portal/acme/signin", content=b"x" * (1 << 20))
        assert r.status_code == 413
        assert r.json()["reason"] == "MALFORMED_REQUEST"


class TestUserAgent:
    def test_kept_user_agent_is_bounded(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """A 64 KB User-Agent on a profile download is kept (and read again later) as its first 1,024 characters."""
        ua = IPHONE_UA + "(iPhone" * (65536 // 7)
        r = client.get(acme.enroll_url.replace("https://pomona.test", ""), headers={"User-Agent": ua})
        assert r.status_code == 200, r.text
        kept = [e.detail["user_agent"] for e in events(pomona, acme.name) if "user_agent" in e.detail]
        assert kept and all(len(str(u)) <= MAX_USER_AGENT for u in kept)

    def test_unknown_link_with_a_huge_user_agent_is_refused(self, client: TestClient) -> None:
        """An unknown link is refused ENROLLMENT_TOKEN_INVALID whatever the User-Agent."""
        r = client.get("/enroll/anything", headers={"User-Agent": "(iPhone" * 9362})
        assert r.status_code == 403
        assert r.json()["reason"] == "ENROLLMENT_TOKEN_INVALID"


class TestAdminInputBounds:
    """Each of these was answered with a 500 (or accepted) before."""

    @pytest.fixture
    def api(self, client: TestClient, acme: TenantSetup) -> Any:
        h = {"Authorization": f"Bearer {acme.admin_token}"}

        def call(method: str, path: str, **kw: Any) -> Any:
            return client.request(
                method, path.replace("{t}", f"/api/v1/tenants/{acme.name}"), headers=h, **kw
            )

        return call

    def test_naive_times_are_utc(self, api: Any) -> None:
        """`since`/`until` without a time zone on the failure report are read as UTC."""
        r = api(
            "GET", "/api/v1/reports/enrollment-failures?since=2026-01-01T00:00:00&until=2026-02-01T00:00:00"
        )
        assert r.status_code == 200, r.text
        assert r.json()["since"].startswith("2026-01-01T00:00:00+00:00")

    @pytest.mark.parametrize("path", ["{t}/users", "{t}/devices", "{t}/corporate-identifiers"])
    def test_huge_offset(self, api: Any, path: str) -> None:
        """An offset above 2^63 is INVALID_INPUT."""
        r = api("GET", f"{path}?offset={2**64}")
        assert (r.status_code, r.json()["reason"]) == (422, "INVALID_INPUT")

    def test_huge_expiry(self, api: Any, acme: TenantSetup) -> None:
        """An enrollment link expiring in 1e18 seconds is INVALID_INPUT."""
        r = api("POST", "{t}/enrollment-tokens", json={"upn": acme.upn, "expires_in_seconds": 10**18})
        assert (r.status_code, r.json()["reason"]) == (422, "INVALID_INPUT")

    def test_invalid_p12_base64(self, api: Any) -> None:
        """A p12_base64 that is not base64 is INVALID_INPUT."""
        r = api("PUT", "{t}/apns", json={"p12_base64": "!!!x"})
        assert (r.status_code, r.json()["reason"]) == (422, "INVALID_INPUT")

    @pytest.mark.parametrize("at", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
    def test_diagnose_at_far_out(self, api: Any, acme: TenantSetup, at: str) -> None:
        """A diagnose `at` in year 1 or 9999 is INVALID_INPUT."""
        r = api("POST", "{t}/diagnose", json={"upn": acme.upn, "at": at})
        assert (r.status_code, r.json()["reason"]) == (422, "INVALID_INPUT")

    def test_empty_serial_cannot_be_blocked(self, api: Any) -> None:
        """Blocking an empty serial is INVALID_INPUT, the first time and the second."""
        for _ in range(2):
            r = api("POST", "{t}/blocked-devices", json={"serial": ""})
            assert (r.status_code, r.json()["reason"]) == (422, "INVALID_INPUT")

    @pytest.mark.parametrize(
        "upn", ["a\x00b@acme.example", "a" * 100_000 + "@acme.example", "a\tb@acme.example"]
    )
    def test_bad_upns_are_refused(self, api: Any, upn: str) -> None:
        """A UPN with a NUL or a control character, or of 100 KB, is refused."""
        r = api("POST", "{t}/users", json={"upn": upn})
        assert (r.status_code, r.json()["reason"]) == (422, "INVALID_INPUT")

    def test_nul_in_the_url(self, api: Any) -> None:
        """A NUL in a path or query parameter is INVALID_INPUT (PostgreSQL cannot even look it up)."""
        assert api("GET", "{t}/devices/a%00b").json()["reason"] == "INVALID_INPUT"
        assert api("GET", "{t}/events?upn=a%00b").json()["reason"] == "INVALID_INPUT"

    def test_huge_priority(self, api: Any) -> None:
        """An integer no column can hold is INVALID_INPUT."""
        r = api("DELETE", f"{{t}}/restrictions/device_type/{2**70}")
        assert (r.status_code, r.json()["reason"]) == (422, "INVALID_INPUT")

    @pytest.mark.parametrize("csv", ["C02XL0AAJGH5\rC02XL0AAJGH6\n", "serial\n" + "A" * 200_000 + "\n"])
    def test_corporate_csv_the_csv_module_refuses(self, api: Any, csv: str) -> None:
        """A lone CR or a field over the csv module's limit is an answer (imported or INVALID_INPUT), not a 500."""
        r = api("POST", "{t}/corporate-identifiers", json={"csv": csv})
        assert r.status_code in (200, 422), r.text
        if r.status_code == 422:
            assert r.json()["reason"] == "INVALID_INPUT"


def test_a_storage_conflict_shows_no_database_text(pomona: Pomona) -> None:
    """A unique-key clash is a ConflictError whose message names no table, column or constraint."""
    import uuid
    from datetime import UTC, datetime

    from pomona.domain.errors import ConflictError
    from pomona.domain.models import User

    s = setup_tenant(pomona, "clash")
    twin = User(str(uuid.uuid4()), s.tenant_id, s.upn, s.upn, "Twin", created_at=datetime.now(UTC))
    with pytest.raises(ConflictError) as err:
        with pomona.db.unit_of_work() as uow:
            uow.users.add(twin)
    text = str(err.value).lower()
    assert "unique" not in text and "constraint" not in text and "users" not in text, text
