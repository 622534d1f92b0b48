"""The diagnose accuracy matrix, shared by tests/flows/test_diagnose_accuracy.py and
bench/diagnose_accuracy.py.

For every refusal code a device can hit: reproduce the refusal through virtual devices, then diagnose it
with every message iOS or the portal could show for it (the generic ones included), with no message, in
English and Chinese, by user, by serial and by both. The true code must come first, proven. Its twin
(the same steps with the cause absent) must never answer with the code. For every founding-document row
whose cause is on the device, with the server side clean, the device-side cause must come first, likely.

A device refused before it told the server its serial number (at the portal, the profile download or
SCEP) cannot be found by serial: those cells are reported as not applicable, never counted as right.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from diag_helpers import World, later_clock
from pomona import knowledge
from pomona.i18n import catalogue, t
from pomona.protocol.checkin import CHECKIN_CONTENT_TYPE, encode_authenticate
from pomona.protocol.command import COMMAND_CONTENT_TYPE
from pomona.protocol.plist import dumps as plist_encode
from pomona.services.diagnose import to_json
from pomona.testing.virtual_device import EnrollmentRefused, VirtualDevice

GENERIC = ("profile_connection_failed", "profile_network_error")  # what iOS shows for almost anything


@dataclass
class Subject:
    """Who the helpdesk asks about: the user and the device the scenario used."""

    upn: str
    serial: str | None = None

    def lookups(self, serial_known: bool) -> Iterator[tuple[str, dict[str, str] | None]]:
        yield "user", {"upn": self.upn}
        for label, kw in (("serial", {}), ("both", {"upn": self.upn})):
            if self.serial and serial_known:
                yield label, {**kw, "serial": self.serial}
            else:
                yield label, None  # not applicable: the server never saw the serial


Reproduce = Callable[[World, bool], Subject]  # (world, cause present?) -> the subject


def sql(w: World, statement: str, **params: object) -> None:
    with w.p.db.unit_of_work() as uow:
        uow.conn.execute(text(statement), params)  # type: ignore[attr-defined]


def _try(d: VirtualDevice, present: bool) -> None:
    """Enroll; with the cause present the server must refuse."""
    if present:
        try:
            d.enroll()
        except EnrollmentRefused:
            return
        raise AssertionError("the server did not refuse")
    d.enroll()


def enrolled(w: World) -> VirtualDevice:
    d = w.device()
    d.enroll()
    return d


# -- refusals: one scenario per code ---------------------------------------------------------------------
def user_disabled(w: World, present: bool) -> Subject:
    d = w.device()
    if present:
        w.p.policy.set_user_flags(w.s.name, w.s.upn, enabled=False)
    _try(d, present)
    return Subject(w.s.upn, d.serial)


def user_not_licensed(w: World, present: bool) -> Subject:
    d = w.device()
    if present:
        w.p.policy.licence(w.s.name, w.s.upn, assign=False)
    _try(d, present)
    return Subject(w.s.upn, d.serial)


def licenses_exhausted(w: World, present: bool) -> Subject:
    upn = f"bo@{w.s.name}.example"
    w.p.admin.create_user(w.s.name, upn)
    if present:
        w.p.policy.set_seats(w.s.name, 1)
    else:
        w.p.policy.licence(w.s.name, upn, assign=True)
    d = w.device(w.link(upn))
    _try(d, present)
    return Subject(upn, d.serial)


def user_not_found(w: World, present: bool) -> Subject:
    """A sign-in name the directory does not know, typed at the portal (the twin: the user exists)."""
    upn = f"cy@{w.s.name}.example"
    if present:
        tenant = w.p.portal.tenant(w.s.name)
        w.p.portal.sign_in_password(tenant, upn, "not-known", "198.51.100.7")
        return Subject(upn, None)
    w.p.admin.create_user(w.s.name, upn)
    w.p.policy.licence(w.s.name, upn, assign=True)
    d = w.device(w.link(upn))
    d.enroll()
    return Subject(upn, d.serial)


def authority(w: World, present: bool) -> Subject:
    if present:
        sql(w, "UPDATE tenants SET mdm_authority = NULL WHERE name = :n", n=w.s.name)
    d = w.device()
    _try(d, present)
    return Subject(w.s.upn, d.serial)


def cert_expired(w: World, present: bool) -> Subject:
    if present:
        sql(
            w,
            "UPDATE tenants SET push_not_after = :t WHERE name = :n",
            t=datetime.now(UTC) - timedelta(days=1),
            n=w.s.name,
        )
    d = w.device()
    _try(d, present)
    return Subject(w.s.upn, d.serial)


def platform(w: World, present: bool) -> Subject:
    if present:
        w.p.policy.edit_restriction(w.s.name, type_="platform", default=True, ipados="block")
    d = w.device(product="iPad13,18")
    _try(d, present)
    return Subject(w.s.upn, d.serial)


def personal(w: World, present: bool) -> Subject:
    if present:
        w.p.policy.edit_restriction(w.s.name, type_="platform", default=True, personal="block")
    d = w.device()
    _try(d, present)
    return Subject(w.s.upn, d.serial)


def os_low(w: World, present: bool) -> Subject:
    w.p.policy.edit_restriction(w.s.name, type_="platform", default=True, min_os="17.0")
    d = w.device(os_version="16.7" if present else "17.4")
    _try(d, present)
    return Subject(w.s.upn, d.serial)


def os_high(w: World, present: bool) -> Subject:
    w.p.policy.edit_restriction(w.s.name, type_="platform", default=True, max_os="17.0")
    d = w.device(os_version="17.4" if present else "16.7")
    _try(d, present)
    return Subject(w.s.upn, d.serial)


def device_limit(w: World, present: bool) -> Subject:
    w.p.policy.edit_restriction(w.s.name, type_="limit", default=True, limit=2 if present else 5)
    enrolled(w)
    enrolled(w)
    d = w.device()
    _try(d, present)
    return Subject(w.s.upn, d.serial)


def device_blocked(w: World, present: bool) -> Subject:
    d = w.device()
    if present:
        w.p.policy.block(w.s.name, serial=d.serial)
    _try(d, present)
    return Subject(w.s.upn, d.serial)


def other_user(w: World, present: bool) -> Subject:
    """The device is still enrolled under Bo when Ana enrolls it (the twin: Bo's enrollment is retired)."""
    bo = f"bo@{w.s.name}.example"
    w.p.admin.create_user(w.s.name, bo)
    w.p.policy.licence(w.s.name, bo, assign=True)
    first = w.device(w.link(bo))
    first.enroll()
    if not present:
        w.p.policy.retire(w.s.name, serial=first.serial)
    again = w.device(w.s.enroll_url, serial=first.serial, udid=first.udid)
    _try(again, present)
    return Subject(w.s.upn, first.serial)


def token_used(w: World, present: bool) -> Subject:
    url = w.p.enrollment.urls.enroll(w.p.admin.create_enrollment_token(w.s.name, w.s.upn, uses=1).secret)
    if present:
        w.device(url).enroll()
    d = w.device(url)
    _try(d, present)
    return Subject(w.s.upn, d.serial)


def token_expired(w: World, present: bool) -> Subject:
    issued = w.p.admin.create_enrollment_token(w.s.name, w.s.upn, uses=5, expires_in=timedelta(hours=1))
    if present:
        sql(
            w,
            "UPDATE enrollment_tokens SET expires_at = :t WHERE id = :i",
            t=datetime.now(UTC) - timedelta(minutes=5),
            i=issued.token.id,
        )
    d = w.device(w.p.enrollment.urls.enroll(issued.secret))
    _try(d, present)
    return Subject(w.s.upn, d.serial)


def unsigned(w: World, present: bool) -> Subject:
    d = enrolled(w)
    if present:
        d.signed_put(d.check_in_url or "", d.authenticate_message(), CHECKIN_CONTENT_TYPE, signature="omit")
    return Subject(w.s.upn, d.serial)


def cert_mismatch(w: World, present: bool) -> Subject:
    a, b = enrolled(w), enrolled(w)
    if present:
        a.signed_put(a.server_url or "", b.idle_message(), COMMAND_CONTENT_TYPE)
    return Subject(w.s.upn, b.serial)


def topic_mismatch(w: World, present: bool) -> Subject:
    d = enrolled(w)
    if present:
        body = encode_authenticate(udid=d.udid, topic="com.apple.mgmt.External.other", serial_number=d.serial)
        d.signed_put(d.check_in_url or "", body, CHECKIN_CONTENT_TYPE)
    return Subject(w.s.upn, d.serial)


def malformed(w: World, present: bool) -> Subject:
    d = enrolled(w)
    if present:
        d.signed_put(d.check_in_url or "", b"<plist><dict><key>Mess", CHECKIN_CONTENT_TYPE)
    return Subject(w.s.upn, d.serial)


def unknown_enrollment(w: World, present: bool) -> Subject:
    d = enrolled(w)
    if present:
        cert, idle = d.identity_cert, d.idle_message()
        d.checkout()
        d.signed_put(w.p.enrollment.urls.server(w.s.tenant_id), idle, COMMAND_CONTENT_TYPE, cert=cert)
    return Subject(w.s.upn, d.serial)


def message_type(w: World, present: bool) -> Subject:
    d = enrolled(w)
    if present:
        body = plist_encode({"MessageType": "SetBootstrapToken", "UDID": d.udid, "BootstrapToken": b"x"})
        d.signed_put(d.check_in_url or "", body, CHECKIN_CONTENT_TYPE)
    return Subject(w.s.upn, d.serial)


def identity_ended(w: World, present: bool) -> Subject:
    """The old identity's Authenticate replayed after the device enrolled again (the twin: no replay)."""
    d = enrolled(w)
    cert, body = d.identity_cert, d.authenticate_message()
    d.enroll()  # a new SCEP identity replaces the old one
    if present:
        d.signed_put(d.check_in_url or "", body, CHECKIN_CONTENT_TYPE, cert=cert)
    return Subject(w.s.upn, d.serial)


REFUSALS: dict[str, Reproduce] = {
    "USER_NOT_FOUND": user_not_found,
    "USER_DISABLED": user_disabled,
    "USER_NOT_LICENSED": user_not_licensed,
    "LICENSES_EXHAUSTED": licenses_exhausted,
    "MDM_AUTHORITY_NOT_SET": authority,
    "APNS_CERT_EXPIRED": cert_expired,
    "PLATFORM_BLOCKED": platform,
    "PERSONAL_DEVICE_BLOCKED": personal,
    "OS_VERSION_TOO_LOW": os_low,
    "OS_VERSION_TOO_HIGH": os_high,
    "DEVICE_LIMIT_REACHED": device_limit,
    "DEVICE_BLOCKED": device_blocked,
    "DEVICE_ENROLLED_TO_OTHER_USER": other_user,
    "ENROLLMENT_TOKEN_INVALID": token_used,
    "ENROLLMENT_TOKEN_EXPIRED": token_expired,
    "SIGNATURE_INVALID": unsigned,
    "CERT_DEVICE_MISMATCH": cert_mismatch,
    "TOPIC_MISMATCH": topic_mismatch,
    "MALFORMED_REQUEST": malformed,
    "UNKNOWN_ENROLLMENT": unknown_enrollment,
    "MESSAGE_TYPE_UNSUPPORTED": message_type,
    "IDENTITY_ENDED": identity_ended,
}


# -- device-side rows of the founding document -----------------------------------------------------------
def stalled_after_profile(w: World, present: bool) -> Subject:
    """The device downloaded the profile and never came back (the twin: refused for its platform)."""
    if present:
        d = w.device()
        d.fetch_profile(w.s.enroll_url)
        w.p.diagnose.clock = later_clock(40)  # type: ignore[assignment]
        return Subject(w.s.upn, None)
    return platform(w, True)


def nothing_reached(w: World, present: bool) -> Subject:
    """A healthy user whose device never reached the server (the twin: refused for its platform)."""
    return Subject(w.s.upn, None) if present else platform(w, True)


def downloaded_again(w: World, present: bool) -> Subject:
    """An enrolled device downloads the profile again (the twin: refused for its platform)."""
    if present:
        d = enrolled(w)
        d.fetch_profile(w.s.enroll_url)
        return Subject(w.s.upn, d.serial)
    return platform(w, True)


@dataclass(frozen=True)
class DeviceRow:
    message: str  # the messages.yaml id of the founding document's row
    code: str  # its device-side cause
    reproduce: Reproduce


DEVICE_ROWS = (
    DeviceRow("profile_network_error", "PROFILE_INSTALL_FAILED", stalled_after_profile),
    DeviceRow("profile_network_error", "PROFILE_INSTALL_FAILED", nothing_reached),
    DeviceRow("profile_connection_failed", "ENROLLED_WITH_OTHER_MDM", stalled_after_profile),
    DeviceRow("mdm_payload_mismatch", "MDM_PROFILE_ALREADY_INSTALLED", downloaded_again),
    DeviceRow("xpc_connection_invalid", "DEP_NETWORK_ERROR", nothing_reached),
)


# -- the messages ------------------------------------------------------------------------------------------
def _wordings(message_id: str) -> list[tuple[str, str]]:
    m = next(x for x in knowledge.messages() if x.id == message_id)
    out = [(f"{message_id}:{lang}", w) for lang in knowledge.LANGS for w in m.wording[lang]]
    return out + [(f"{message_id}:key", k) for k in m.keys if not k.isdigit()]


def messages_for(code: str) -> list[tuple[str, str | None]]:
    """Every message a user or admin could report for a refusal with `code`: none, the code itself, the
    document's and device messages that name it, the portal's refusal title, and the generic ones."""
    out: list[tuple[str, str | None]] = [("none", None), ("code", code)]
    for m in knowledge.messages():
        if code in m.codes or code in m.also:
            out += _wordings(m.id)
    for lang in knowledge.LANGS:
        key = f"portal.reason.{code}.title"
        if key in catalogue(lang):
            out.append((f"portal:{lang}", t(key, lang, platform="iPadOS")))
    for g in GENERIC:
        out += [w for w in _wordings(g) if w not in out]
    return out


# -- running -----------------------------------------------------------------------------------------------
@dataclass
class Cell:
    case: str  # the code or the device row
    present: bool
    message: str
    lookup: str
    lang: str
    answer: str
    verdict: str
    right: bool
    applicable: bool = True


@dataclass
class Matrix:
    cells: list[Cell] = field(default_factory=list)

    @property
    def applicable(self) -> list[Cell]:
        return [c for c in self.cells if c.applicable]

    @property
    def wrong(self) -> list[Cell]:
        return [c for c in self.applicable if not c.right]


def serial_known(w: World, subject: Subject) -> bool:
    """Whether the server has seen the device's serial number (from its Authenticate on)."""
    if not subject.serial:
        return False
    return bool(w.p.commands.events(w.s.name, serial=subject.serial))


def judge(
    w: World,
    matrix: Matrix,
    case: str,
    code: str,
    present: bool,
    subject: Subject,
    messages: list[tuple[str, str | None]],
    expect: str,
) -> None:
    """Diagnose the subject with every message, lookup and language; record each cell."""
    known = serial_known(w, subject)
    for label, msg in messages:
        for lookup, kw in subject.lookups(known):
            # The diagnosis does not depend on the reader's language; its rendering does.
            d = None if kw is None else w.p.diagnose.diagnose(w.s.name, message=msg, **kw)  # type: ignore[arg-type]
            for lang in knowledge.LANGS:
                if d is None:
                    matrix.cells.append(Cell(case, present, label, lookup, lang, "", "", False, False))
                    continue
                r = to_json(d, lang)
                ans = r["answer"]  # type: ignore[index]
                got = (str(ans["code"]), str(ans["verdict"]))
                right = got == (code, expect) if present else got[0] != code
                matrix.cells.append(Cell(case, present, label, lookup, lang, got[0], got[1], right))


def run_refusal(w: World, matrix: Matrix, code: str, present: bool) -> None:
    subject = REFUSALS[code](w, present)
    judge(w, matrix, code, code, present, subject, messages_for(code), "proven")


def run_device_row(w: World, matrix: Matrix, row: DeviceRow, present: bool) -> None:
    subject = row.reproduce(w, present)
    messages: list[tuple[str, str | None]] = [(lbl, m) for lbl, m in _wordings(row.message)]
    case = f"{row.message}/{row.reproduce.__name__}"
    judge(w, matrix, case, row.code, present, subject, messages, "likely")
