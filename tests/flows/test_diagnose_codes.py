"""One diagnose scenario per checkable reason code, reported as the code alone (as admins paste it),
each with its twin where the cause is absent. ABM codes come with the ADE issue."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from accuracy import enrolled, sql
from diag_helpers import World, later_clock
from pomona.protocol.checkin import CHECKIN_CONTENT_TYPE, encode_authenticate
from pomona.protocol.command import COMMAND_CONTENT_TYPE
from pomona.services.diagnose import DiagnoseSettings, to_json
from pomona.testing.pushcert import make_standin_push_cert
from pomona.testing.virtual_device import EnrollmentRefused, VirtualDevice

Scenario = Callable[[World, bool], dict[str, object]]  # (world, cause present?) -> diagnose() arguments


def refused(d: VirtualDevice) -> None:
    with pytest.raises(EnrollmentRefused):
        d.enroll()


def authority(w: World, present: bool) -> dict[str, object]:
    if present:
        sql(w, "UPDATE tenants SET mdm_authority = NULL WHERE name = :n", n=w.s.name)
    return {"upn": w.s.upn}


def expired_cert(w: World, present: bool) -> dict[str, object]:
    if present:
        sql(
            w,
            "UPDATE tenants SET push_not_after = :t WHERE name = :n",
            t=datetime.now(UTC) - timedelta(days=1),
            n=w.s.name,
        )
    return {"upn": w.s.upn}


def expiring_cert(w: World, present: bool) -> dict[str, object]:
    if present:
        cert, key = make_standin_push_cert(w.s.topic, days=10)
        w.p.apns.upload(w.s.name, cert, key, canary=False)
    return {"upn": w.s.upn}


def user_not_found(w: World, present: bool) -> dict[str, object]:
    return {"upn": "ghost@acme.example" if present else w.s.upn}


def user_disabled(w: World, present: bool) -> dict[str, object]:
    if present:
        w.p.policy.set_user_flags(w.s.name, w.s.upn, enabled=False)
    return {"upn": w.s.upn}


def exhausted(w: World, present: bool) -> dict[str, object]:
    w.p.admin.create_user(w.s.name, "bo@acme.example")
    if not present:
        w.p.policy.licence(w.s.name, "bo@acme.example", assign=True)
    else:
        w.p.policy.set_seats(w.s.name, 1)
    return {"upn": "bo@acme.example"}


def platform(w: World, present: bool) -> dict[str, object]:
    if present:
        w.p.policy.edit_restriction(w.s.name, type_="platform", default=True, ipados="block")
    d = w.device(product="iPad13,18")
    refused(d) if present else d.enroll()
    return {"upn": w.s.upn, "serial": d.serial}


def os_low(w: World, present: bool) -> dict[str, object]:
    w.p.policy.edit_restriction(w.s.name, type_="platform", default=True, min_os="17.0")
    d = w.device(os_version="16.7" if present else "17.4")
    refused(d) if present else d.enroll()
    return {"upn": w.s.upn, "serial": d.serial}


def os_high(w: World, present: bool) -> dict[str, object]:
    w.p.policy.edit_restriction(w.s.name, type_="platform", default=True, max_os="16")
    d = w.device(os_version="17.4" if present else "16.7")
    refused(d) if present else d.enroll()
    return {"upn": w.s.upn, "serial": d.serial}


def blocked(w: World, present: bool) -> dict[str, object]:
    d = w.device()
    if present:
        w.p.policy.block(w.s.name, serial=d.serial)
        refused(d)
    else:
        d.enroll()
    return {"upn": w.s.upn, "serial": d.serial}


def token_used(w: World, present: bool) -> dict[str, object]:
    url = w.p.enrollment.urls.enroll(w.p.admin.create_enrollment_token(w.s.name, w.s.upn, uses=1).secret)
    w.device(url).enroll()
    if present:
        refused(w.device(url))
    return {"upn": w.s.upn}


def abandoned(w: World, present: bool) -> dict[str, object]:
    if present:
        w.client.get(w.s.enroll_url)
        w.p.diagnose.clock = later_clock(40)  # type: ignore[assignment]
    else:
        w.device().enroll()
    return {"upn": w.s.upn}


def unsigned(w: World, present: bool) -> dict[str, object]:
    d = enrolled(w)
    if present:
        d.signed_put(d.check_in_url or "", d.authenticate_message(), CHECKIN_CONTENT_TYPE, signature="omit")
    return {"udid": d.udid}


def mismatch(w: World, present: bool) -> dict[str, object]:
    a, b = enrolled(w), enrolled(w)
    if present:
        a.signed_put(a.server_url or "", b.idle_message(), COMMAND_CONTENT_TYPE)
    return {"udid": b.udid}


def topic_mismatch(w: World, present: bool) -> dict[str, object]:
    d = enrolled(w)
    if present:
        body = encode_authenticate(udid=d.udid, topic="com.apple.mgmt.External.other", serial_number=d.serial)
        d.signed_put(d.check_in_url or "", body, CHECKIN_CONTENT_TYPE)
    return {"udid": d.udid}


def untrusted(w: World, present: bool) -> dict[str, object]:
    """A device of another tenant signs a check-in here (its identity is not from this tenant's CA)."""
    from helpers import setup_tenant

    other = setup_tenant(w.p, "other", uses=5)
    d = w.device(other.enroll_url)
    d.enroll()
    if present:
        body = encode_authenticate(udid=d.udid, topic=w.s.topic, serial_number=d.serial)
        d.signed_put(w.p.enrollment.urls.checkin(w.s.tenant_id), body, CHECKIN_CONTENT_TYPE)
    return {"udid": d.udid}


def malformed(w: World, present: bool) -> dict[str, object]:
    d = enrolled(w)
    if present:
        d.signed_put(d.check_in_url or "", b"<plist><dict><key>Mess", CHECKIN_CONTENT_TYPE)
    return {"udid": d.udid}


def unknown_enrollment(w: World, present: bool) -> dict[str, object]:
    d = enrolled(w)
    if present:
        cert, idle = d.identity_cert, d.idle_message()
        d.checkout()
        d.signed_put(w.p.enrollment.urls.server(w.s.tenant_id), idle, COMMAND_CONTENT_TYPE, cert=cert)
    return {"udid": d.udid}


def identity_ended(w: World, present: bool) -> dict[str, object]:
    d = enrolled(w)
    if present:
        cert, authenticate = d.identity_cert, d.authenticate_message()
        d.enroll()  # a new identity; the old one has ended, and a replay of it is refused
        d.signed_put(d.check_in_url or "", authenticate, CHECKIN_CONTENT_TYPE, cert=cert)
    return {"udid": d.udid}


def stuck(w: World, present: bool) -> dict[str, object]:
    d = enrolled(w)
    if present:
        sql(
            w,
            "UPDATE enrollments SET awaiting_configuration = :a, token_updated_at = :t WHERE udid = :u",
            a=True,
            t=datetime.now(UTC) - timedelta(hours=3),
            u=d.udid,
        )
    return {"udid": d.udid}


def cname_wrong(w: World, present: bool) -> dict[str, object]:
    if present:
        w.zone.cnames[f"enterpriseenrollment.{w.s.name}.example"] = "manage.microsoft.com"
    return {"upn": w.s.upn}


def registration_missing(w: World, present: bool) -> dict[str, object]:
    if present:
        del w.zone.cnames[f"enterpriseregistration.{w.s.name}.example"]
    return {"upn": w.s.upn}


class _WellKnown(http.server.BaseHTTPRequestHandler):
    good = True

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps(
            {"Servers": [{"Version": "mdm-byod", "BaseURL": "https://mdm.pomona.test/ade"}]}
        ).encode()
        self.send_response(200 if self.good else 404)
        self.end_headers()
        self.wfile.write(body if self.good else b"not here")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def well_known_server() -> Iterator[tuple[str, type[_WellKnown]]]:
    handler = type("H", (_WellKnown,), {"good": True})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield (
        f"http://127.0.0.1:{srv.server_address[1]}/{{domain}}/.well-known/com.apple.remotemanagement",
        handler,
    )
    srv.shutdown()


SCENARIOS: dict[str, Scenario] = {
    "MDM_AUTHORITY_NOT_SET": authority,
    "APNS_CERT_EXPIRED": expired_cert,
    "APNS_CERT_EXPIRING": expiring_cert,
    "USER_NOT_FOUND": user_not_found,
    "USER_DISABLED": user_disabled,
    "LICENSES_EXHAUSTED": exhausted,
    "PLATFORM_BLOCKED": platform,
    "OS_VERSION_TOO_LOW": os_low,
    "OS_VERSION_TOO_HIGH": os_high,
    "DEVICE_BLOCKED": blocked,
    "ENROLLMENT_TOKEN_INVALID": token_used,
    "ENROLLMENT_ABANDONED": abandoned,
    "SIGNATURE_INVALID": unsigned,
    "CERT_DEVICE_MISMATCH": mismatch,
    "TOPIC_MISMATCH": topic_mismatch,
    "MALFORMED_REQUEST": malformed,
    "CERT_NOT_TRUSTED": untrusted,
    "UNKNOWN_ENROLLMENT": unknown_enrollment,
    "IDENTITY_ENDED": identity_ended,
    "AWAITING_CONFIGURATION_STUCK": stuck,
    "DNS_ENROLLMENT_CNAME_WRONG": cname_wrong,
    "DNS_REGISTRATION_CNAME_MISSING": registration_missing,
}


# The funnel's stuck steps: the server saw where the attempt stopped, not why.
LIKELY = {"ENROLLMENT_ABANDONED": "likely"}


def run(w: World, code: str, kwargs: dict[str, object], lang: str) -> dict[str, object]:
    return to_json(w.p.diagnose.diagnose(w.s.name, message=code, **kwargs), lang)  # type: ignore[arg-type]


def verdict(r: dict[str, object], code: str) -> str:
    return next((str(f["verdict"]) for f in r["findings"] if f["code"] == code), "absent")  # type: ignore[attr-defined]


class TestEveryCode:
    @pytest.mark.parametrize("code", sorted(SCENARIOS))
    def test_cause_present(self, w: World, code: str) -> None:
        """The scenario's cause is ranked first, proven (likely for a stuck step), with text in both languages."""
        kwargs = SCENARIOS[code](w, True)
        d = w.p.diagnose.diagnose(w.s.name, message=code, **kwargs)  # type: ignore[arg-type]
        for lang in ("en", "zh-CN"):  # one diagnosis, read in both languages
            r = to_json(d, lang)
            first = r["findings"][0]  # type: ignore[index]
            assert (first["code"], first["verdict"]) == (code, LIKELY.get(code, "proven")), r["findings"]
            assert first["title"] and first["resolution"]

    @pytest.mark.parametrize("code", sorted(SCENARIOS))
    def test_cause_absent(self, w: World, code: str) -> None:
        """In the twin without the cause, the code is ruled out and not ranked first."""
        kwargs = SCENARIOS[code](w, False)
        r = run(w, code, kwargs, "en")
        assert verdict(r, code) == "ruled_out", r["findings"]
        assert r["findings"][0]["code"] != code  # type: ignore[index]

    def test_well_known(self, w: World, well_known_server: tuple[str, type[_WellKnown]]) -> None:
        """The account-driven discovery document is fetched: a 404 proves the cause, a good document rules it out."""
        url, handler = well_known_server
        s = w.p.diagnose.settings
        w.p.diagnose.settings = DiagnoseSettings(s.enrollment_target, s.registration_target, url)
        assert (
            verdict(
                run(w, "WELL_KNOWN_DISCOVERY_FAILED", {"upn": w.s.upn}, "en"), "WELL_KNOWN_DISCOVERY_FAILED"
            )
            == "ruled_out"
        )
        handler.good = False
        r = run(w, "WELL_KNOWN_DISCOVERY_FAILED", {"upn": w.s.upn}, "zh-CN")
        assert (r["findings"][0]["code"], r["findings"][0]["verdict"]) == (
            "WELL_KNOWN_DISCOVERY_FAILED",
            "proven",
        )  # type: ignore[index]
