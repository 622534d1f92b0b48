"""The pure rules behind `pomona doctor`, the access log's redaction and the metrics' route labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pomona.domain.checks import (
    UrlProbe,
    clock_findings,
    key_file_findings,
    migration_findings,
    public_url_findings,
)
from pomona.domain.reasons import ReasonCode
from pomona.http.middleware import loggable_path, route_template

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class TestDoctorRules:
    @pytest.mark.parametrize(("minutes", "skewed"), [(4, False), (-4, False), (6, True), (-6, True)])
    def test_clock_skew_past_five_minutes(self, minutes: int, skewed: bool) -> None:
        """CLOCK_SKEW only when the server's Date is more than 5 minutes off, either way."""
        found = clock_findings(NOW + timedelta(minutes=minutes), NOW)
        assert [f.code for f in found] == ([ReasonCode.CLOCK_SKEW] if skewed else [])

    def test_plain_http_off_loopback(self) -> None:
        """An http:// public URL off this machine is PUBLIC_URL_NOT_HTTPS even when it answers."""
        probe = UrlProbe("http://mdm.example", reached=True, status=200, server_date=NOW)
        found = public_url_findings(probe, NOW, plain_http_remote=True)
        assert [f.code for f in found] == [ReasonCode.PUBLIC_URL_NOT_HTTPS]

    def test_an_expired_certificate_without_a_verify_error_is_invalid(self) -> None:
        """A certificate past its expiry is TLS_CERT_INVALID (expired), never merely expiring."""
        probe = UrlProbe("https://x", reached=True, status=200, cert_not_after=NOW - timedelta(hours=1))
        (f,) = public_url_findings(probe, NOW, plain_http_remote=False)
        assert f.code is ReasonCode.TLS_CERT_INVALID

    def test_healthz_not_200_is_unreachable(self) -> None:
        """A public URL whose /healthz answers another status (a proxy's 502) is PUBLIC_URL_UNREACHABLE."""
        probe = UrlProbe("https://x", reached=True, status=502, cert_not_after=NOW + timedelta(days=90))
        (f,) = public_url_findings(probe, NOW, plain_http_remote=False)
        assert f.code is ReasonCode.PUBLIC_URL_UNREACHABLE and "502" in str(f.facts["error"])

    @pytest.mark.parametrize(
        ("mode", "exposed"), [(0o600, False), (0o700, False), (0o640, True), (0o755, True)]
    )
    def test_key_file_modes(self, mode: int, exposed: bool) -> None:
        """Any permission for group or others exposes the server key."""
        found = key_file_findings("/data/server.key", mode)
        assert [f.code for f in found] == ([ReasonCode.SERVER_KEY_EXPOSED] if exposed else [])

    def test_migrations(self) -> None:
        """MIGRATIONS_PENDING unless the revision is the head (an empty database has none)."""
        assert migration_findings("0009", "0009") == []
        assert [f.code for f in migration_findings(None, "0009")] == [ReasonCode.MIGRATIONS_PENDING]


def _scope(path: str, route: Any = None) -> dict[str, Any]:
    scope: dict[str, Any] = {"type": "http", "path": path, "method": "GET", "headers": []}
    if route is not None:
        scope["route"] = route
    return scope


class _Route:
    path = "/api/v1/tenants/{tenant}/devices"


class TestLabelsAndRedaction:
    @pytest.mark.parametrize(
        ("path", "template"),
        [
            ("/mdm/6f1c/checkin", "/mdm/{tenant}/checkin"),
            ("/mdm/6f1c/connect", "/mdm/{tenant}/connect"),
            ("/mdm/6f1c/other", "unmatched"),
            ("/scep/6f1c", "/scep/{tenant}"),
            ("/enroll/s3cret", "/enroll/{token}"),
            ("/ade/6f1c/enroll", "/ade/{tenant}/enroll"),
            ("/wp-login.php", "unmatched"),
        ],
    )
    def test_route_templates(self, path: str, template: str) -> None:
        """Device paths map to their templates; a path no route matched is `unmatched`."""
        assert route_template(_scope(path)) == template

    def test_a_matched_route_gives_its_template(self) -> None:
        """A request the API's router matched is labelled with the route's path template."""
        assert route_template(_scope("/api/v1/tenants/acme/devices", _Route())) == _Route.path

    def test_the_link_secret_is_redacted(self) -> None:
        """The enrollment link's token never reaches the access log; other paths are kept."""
        assert loggable_path("/enroll/AbCdEf123") == "/enroll/[redacted]"
        assert loggable_path("/mdm/6f1c/connect") == "/mdm/6f1c/connect"
