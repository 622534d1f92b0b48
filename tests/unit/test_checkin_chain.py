"""The check-in chain without a database: dispatch, the middleware, CertAuth, RecordRefusals, result hooks.

The next handler is a fake that records what reaches it; the database behind RecordRefusals is a fake
that keeps the appended events in a list.
"""

from __future__ import annotations

import base64
import plistlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from pomona.domain.errors import (
    CertNotTrustedError,
    MalformedRequestError,
    PolicyError,
    PomonaError,
    SignatureInvalidError,
    TopicMismatchError,
)
from pomona.domain.models import Event, Outcome, Step, Tenant
from pomona.domain.reasons import ReasonCode
from pomona.pki.ca import CertificateAuthority, generate_key
from pomona.protocol import cms
from pomona.protocol.checkin import CheckinMessage, decode_checkin
from pomona.protocol.command import COMMAND_TYPES, CommandReport, decode_report, encode_report
from pomona.protocol.errors import CheckinParseError, UnrecognizedMessageTypeError
from pomona.services.checkin import (
    BodyTooLargeError,
    CertAuth,
    CheckinHandler,
    MessageTypeUnsupportedError,
    Middleware,
    RecordRefusals,
    Refused,
    Request,
    UserChannelDeclinedError,
    dispatch_checkin,
)
from pomona.services.checkin.results import RESULT_HOOKS, result_hook
from pomona.services.checkin.service import _decode_refusal

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
UDID = "00008110-000A1C3E0C38801E"
TOPIC = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"
HANDLER_METHODS = sorted(n for n in vars(CheckinHandler) if not n.startswith("_"))

BODIES: dict[str, dict[str, object]] = {
    "authenticate": {"MessageType": "Authenticate", "Topic": TOPIC, "SerialNumber": "F2LXK0ABCD12"},
    "token_update": {"MessageType": "TokenUpdate", "Topic": TOPIC, "Token": b"t", "PushMagic": "m"},
    "check_out": {"MessageType": "CheckOut", "Topic": TOPIC},
    "user_authenticate": {"MessageType": "UserAuthenticate", "UserID": "U-1"},
    "get_bootstrap_token": {"MessageType": "GetBootstrapToken"},
    "set_bootstrap_token": {"MessageType": "SetBootstrapToken", "BootstrapToken": b"b"},
    "declarative_management": {"MessageType": "DeclarativeManagement", "Endpoint": "tokens"},
    "get_token": {"MessageType": "GetToken", "TokenServiceType": "com.apple.maid"},
}
STEPS = {
    "authenticate": Step.AUTHENTICATE,
    "token_update": Step.TOKENUPDATE,
    "check_out": Step.CHECKOUT,
    "command_and_report_results": Step.COMMAND,
}


def message(method: str, **extra: object) -> CheckinMessage | CommandReport:
    """A decoded message that dispatches to ``method``."""
    if method == "command_and_report_results":
        return decode_report(encode_report(udid=UDID, status="Idle"))
    return decode_checkin(plistlib.dumps({"UDID": UDID, **BODIES[method], **extra}))


def call(handler: object, method: str, req: Request, msg: object) -> bytes:
    out: bytes = getattr(handler, method)(req, msg)
    return out


class FixedClock:
    def __init__(self, now: datetime = NOW) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


class FakeHandler:
    """A next handler: records each call, answers ``answer`` or raises ``error``."""

    def __init__(self, answer: bytes = b"", error: Exception | None = None) -> None:
        self.answer = answer
        self.error = error
        self.calls: list[tuple[str, Request, object]] = []

    def __getattr__(self, name: str) -> object:
        if name not in HANDLER_METHODS:
            raise AttributeError(name)

        def handle(req: Request, msg: object) -> bytes:
            self.calls.append((name, req, msg))
            if self.error is not None:
                raise self.error
            return self.answer

        return handle


@dataclass
class FakeDatabase:
    """What RecordRefusals uses of the database: event appends, and no enrollment for any identity."""

    events: list[Event] = field(default_factory=list)

    @contextmanager
    def unit_of_work(self, *, readonly: bool = False) -> Iterator[object]:
        yield SimpleNamespace(
            events=SimpleNamespace(append=self.events.append),
            enrollments=SimpleNamespace(by_fingerprint=lambda fingerprint: None),
        )


@dataclass
class CountingCa:
    """A CaCertificate port that counts issuer checks."""

    ca: CertificateAuthority
    checks: int = 0

    def is_issuer_of(self, cert: x509.Certificate) -> bool:
        self.checks += 1
        return self.ca.is_issuer_of(cert)


@dataclass
class FakePki:
    """Loads every tenant CA certificate as the one given; it has no way to load a CA's key."""

    ca: CountingCa

    def load_ca_certificate(self, cert_pem: bytes) -> CountingCa:
        return self.ca


def tenant(ca: CertificateAuthority) -> Tenant:
    return Tenant("t-1", "acme", "acme.example", NOW, ca.to_pem()[0], push_topic=TOPIC)


@dataclass
class Pki:
    ca: CertificateAuthority
    key: object
    cert: x509.Certificate

    def signed(self, body: bytes, cert: x509.Certificate | None = None) -> str:
        return base64.b64encode(cms.sign_detached(body, cert or self.cert, self.key)).decode()  # type: ignore[arg-type]

    def issue(
        self, ca: CertificateAuthority | None = None, *, days: int = 30, now: datetime = NOW
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, UDID)])
        return (ca or self.ca).issue(self.key.public_key(), name, days=days, now=now)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = CertificateAuthority.generate("Tenant CA", "p256", now=NOW - timedelta(days=1))
    key = generate_key("p256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, UDID)])
    return Pki(ca, key, ca.issue(key.public_key(), name, days=30, now=NOW - timedelta(days=1)))  # type: ignore[arg-type]


class TestDispatch:
    @pytest.mark.parametrize("method", sorted(BODIES))
    def test_each_message_type_reaches_its_method(self, method: str, pki: Pki) -> None:
        """A decoded check-in goes to the handler method of its MessageType, with the request as given."""
        handler = FakeHandler(answer=b"answer")
        req = Request(tenant(pki.ca), b"body", None)
        msg = message(method)
        assert dispatch_checkin(handler, req, msg) == b"answer"  # type: ignore[arg-type]
        assert handler.calls == [(method, req, msg)]

    def test_every_check_in_method_has_a_message_type(self) -> None:
        """Every handler method but the command channel's is reached by some check-in MessageType."""
        assert sorted([*BODIES, "command_and_report_results"]) == HANDLER_METHODS


class TestMiddleware:
    @pytest.mark.parametrize("method", HANDLER_METHODS)
    def test_wraps_every_handler_method(self, method: str, pki: Pki) -> None:
        """The base middleware has every handler method and passes the call to the next handler."""
        assert method in vars(Middleware)
        nxt = FakeHandler(answer=b"next")
        req, msg = Request(tenant(pki.ca), b"", None), message(method)
        assert call(Middleware(nxt), method, req, msg) == b"next"  # type: ignore[arg-type]
        assert nxt.calls == [(method, req, msg)]


class TestCertAuth:
    def chain(self, pki: Pki) -> tuple[CertAuth, FakeHandler, CountingCa]:
        nxt, ca = FakeHandler(), CountingCa(pki.ca)
        return CertAuth(nxt, FakePki(ca), FixedClock()), nxt, ca  # type: ignore[arg-type]

    def test_a_signed_message_passes_with_its_signer(self, pki: Pki) -> None:
        """A body signed by an identity of the tenant's CA reaches the next handler with that identity."""
        auth, nxt, _ = self.chain(pki)
        body = b"<plist/>"
        req = Request(tenant(pki.ca), body, pki.signed(body))
        call(auth, "command_and_report_results", req, message("command_and_report_results"))
        ((_, passed, _),) = nxt.calls
        assert passed.signer.fingerprint == pki.cert.fingerprint(hashes.SHA256()).hex()
        assert (passed.tenant, passed.body) == (req.tenant, body) and req.identity is None

    @pytest.mark.parametrize(
        "signature", [None, "", "%%%not base64", base64.b64encode(b"\x30\x03\x02\x01\x01").decode()]
    )
    def test_missing_or_garbage_signature(self, pki: Pki, signature: str | None) -> None:
        """No Mdm-Signature, or one that is not CMS, is SIGNATURE_INVALID and goes no further."""
        auth, nxt, _ = self.chain(pki)
        with pytest.raises(SignatureInvalidError):
            call(auth, "authenticate", Request(tenant(pki.ca), b"body", signature), message("authenticate"))
        assert nxt.calls == []

    def test_signature_over_another_body(self, pki: Pki) -> None:
        """A signature over other bytes is SIGNATURE_INVALID."""
        auth, nxt, _ = self.chain(pki)
        with pytest.raises(SignatureInvalidError):
            call(
                auth,
                "check_out",
                Request(tenant(pki.ca), b"body", pki.signed(b"other")),
                message("check_out"),
            )
        assert nxt.calls == []

    def test_another_ca(self, pki: Pki) -> None:
        """A signer issued by another CA is CERT_NOT_TRUSTED."""
        auth, nxt, _ = self.chain(pki)
        other = pki.issue(CertificateAuthority.generate("Other CA", "p256", now=NOW - timedelta(days=1)))
        with pytest.raises(CertNotTrustedError):
            call(
                auth,
                "token_update",
                Request(tenant(pki.ca), b"b", pki.signed(b"b", other)),
                message("token_update"),
            )
        assert nxt.calls == []

    @pytest.mark.parametrize(
        ("issued_at", "days", "passes"),
        [
            (NOW - timedelta(days=10), 5, False),  # expired
            (NOW + timedelta(minutes=20), 5, False),  # valid from 15 minutes ahead (the CA backdates 5)
            (NOW + timedelta(minutes=9), 5, True),  # valid from 4 minutes ahead: within the clock skew
        ],
        ids=["expired", "not-yet-valid", "skew"],
    )
    def test_validity_window(self, pki: Pki, issued_at: datetime, days: int, passes: bool) -> None:
        """A signer outside its validity (beyond five minutes of skew) is CERT_NOT_TRUSTED."""
        auth, nxt, _ = self.chain(pki)
        cert = pki.issue(days=days, now=issued_at)
        req = Request(tenant(pki.ca), b"b", pki.signed(b"b", cert))
        if passes:
            call(auth, "check_out", req, message("check_out"))
        else:
            with pytest.raises(CertNotTrustedError):
                call(auth, "check_out", req, message("check_out"))
        assert len(nxt.calls) == int(passes)

    def test_issuer_check_is_cached(self, pki: Pki) -> None:
        """The CA's issuer check runs once per identity; the next messages skip it."""
        auth, nxt, ca = self.chain(pki)
        req = Request(tenant(pki.ca), b"b", pki.signed(b"b"))
        for _ in range(3):
            call(auth, "command_and_report_results", req, message("command_and_report_results"))
        assert (ca.checks, len(nxt.calls)) == (1, 3)


class TestRecordRefusals:
    def chain(self, pki: Pki, error: Exception | None = None) -> tuple[RecordRefusals, FakeDatabase]:
        db = FakeDatabase()
        return RecordRefusals(FakeHandler(answer=b"ok", error=error), db, FixedClock()), db  # type: ignore[arg-type]

    def test_an_answer_leaves_no_event(self, pki: Pki) -> None:
        """A message the next handler answers passes its answer back and records nothing."""
        rec, db = self.chain(pki)
        assert call(rec, "authenticate", Request(tenant(pki.ca), b"", None), message("authenticate")) == b"ok"
        assert db.events == []

    @pytest.mark.parametrize("method", HANDLER_METHODS)
    def test_a_refusal_leaves_one_event(self, pki: Pki, method: str) -> None:
        """A refusal leaves one FAILED event with its reason, its step, the UDID claimed, and is raised as is."""
        error = TopicMismatchError("wrong topic")
        rec, db = self.chain(pki, error)
        with pytest.raises(TopicMismatchError) as raised:
            call(rec, method, Request(tenant(pki.ca), b"", None), message(method))
        assert raised.value is error
        (e,) = db.events
        assert (e.tenant_id, e.outcome, e.reason, e.udid, e.detail["error"]) == (
            "t-1",
            Outcome.FAILED,
            "TOPIC_MISMATCH",
            UDID,
            "wrong topic",
        )
        assert e.step is STEPS.get(method, Step.CHECKIN)
        assert e.serial == ("F2LXK0ABCD12" if method == "authenticate" else None)

    @pytest.mark.parametrize("method", ["user_authenticate", "get_token"])
    def test_the_other_types_name_their_message_type(self, pki: Pki, method: str) -> None:
        """A refused message of the other types is filed under the step checkin with its MessageType."""
        rec, db = self.chain(pki, MessageTypeUnsupportedError("no"))
        with pytest.raises(MessageTypeUnsupportedError):
            call(rec, method, Request(tenant(pki.ca), b"", None), message(method))
        (e,) = db.events
        assert (e.step, e.reason, e.detail["message_type"]) == (
            Step.CHECKIN,
            "MESSAGE_TYPE_UNSUPPORTED",
            BODIES[method]["MessageType"],
        )

    def test_a_described_refusal_is_recorded_as_described(self, pki: Pki) -> None:
        """A handler's Refused becomes one event with its user and facts, and its error is what is raised."""
        error = PolicyError("blocked", reason=ReasonCode.PLATFORM_BLOCKED)
        rec, db = self.chain(
            pki, Refused(error, user_id="u-1", upn="ana@acme.example", detail={"product": "iPhone"})
        )
        with pytest.raises(PolicyError) as raised:
            call(rec, "authenticate", Request(tenant(pki.ca), b"", None), message("authenticate"))
        assert raised.value is error
        (e,) = db.events
        assert (e.reason, e.user_id, e.upn, e.serial, e.udid) == (
            "PLATFORM_BLOCKED",
            "u-1",
            "ana@acme.example",
            "F2LXK0ABCD12",
            UDID,
        )
        assert e.detail == {"error": "blocked", "product": "iPhone"}

    def test_no_udid_and_no_signer(self, pki: Pki) -> None:
        """A refused message naming no device, with no verifiable signer, is recorded with no UDID."""
        rec, db = self.chain(pki, MessageTypeUnsupportedError("no"))
        msg = decode_checkin(plistlib.dumps({"MessageType": "GetBootstrapToken"}))
        body = plistlib.dumps({"MessageType": "GetBootstrapToken"})
        with pytest.raises(MessageTypeUnsupportedError):
            call(rec, "get_bootstrap_token", Request(tenant(pki.ca), body, "garbage"), msg)
        assert db.events[0].udid is None

    def test_other_exceptions_are_not_refusals(self, pki: Pki) -> None:
        """A fault that is not a refusal passes through unrecorded (the HTTP boundary logs it)."""
        rec, db = self.chain(pki, RuntimeError("bug"))
        with pytest.raises(RuntimeError):
            call(rec, "check_out", Request(tenant(pki.ca), b"", None), message("check_out"))
        assert db.events == []


class TestDecodeRefusal:
    def test_unknown_message_type(self) -> None:
        """A MessageType Pomona does not know is MESSAGE_TYPE_UNSUPPORTED, under the step checkin."""
        exc, step, detail = _decode_refusal(UnrecognizedMessageTypeError("Bogus", raw=b""), Step.AUTHENTICATE)
        assert (exc.reason, exc.http_status, step, detail) == (
            "MESSAGE_TYPE_UNSUPPORTED",
            400,
            Step.CHECKIN,
            {"message_type": "Bogus"},
        )

    @pytest.mark.parametrize(
        "cause",
        [UnrecognizedMessageTypeError(None, raw=b""), CheckinParseError("bad", raw=b"")],
        ids=["none", "parse"],
    )
    def test_no_message_type_or_bad_body(self, cause: Exception) -> None:
        """No MessageType at all, or a body that does not parse, is MALFORMED_REQUEST under the given step."""
        exc, step, _ = _decode_refusal(cause, Step.COMMAND)  # type: ignore[arg-type]
        assert isinstance(exc, MalformedRequestError) and step is Step.COMMAND


class TestErrors:
    @pytest.mark.parametrize(
        ("error", "reason", "status"),
        [
            (MessageTypeUnsupportedError(), "MESSAGE_TYPE_UNSUPPORTED", 400),
            (UserChannelDeclinedError(), "MESSAGE_TYPE_UNSUPPORTED", 410),
            (BodyTooLargeError(), "MALFORMED_REQUEST", 413),
        ],
        ids=lambda v: type(v).__name__ if isinstance(v, PomonaError) else str(v),
    )
    def test_the_class_decides_reason_and_status(self, error: PomonaError, reason: str, status: int) -> None:
        """Each check-in refusal class carries its reason code and its HTTP status."""
        assert (error.reason, error.http_status) == (reason, status)


class TestRequest:
    def test_signer_requires_cert_auth(self, pki: Pki) -> None:
        """A handler reached without CertAuth in front has no signer to read: a wiring fault, not a refusal."""
        with pytest.raises(RuntimeError):
            _ = Request(tenant(pki.ca), b"", None).signer


class TestResultHooks:
    def test_every_hook_is_for_a_registered_command(self) -> None:
        """Each result hook is keyed by a command class that COMMAND_TYPES registers."""
        assert RESULT_HOOKS and set(RESULT_HOOKS) <= set(COMMAND_TYPES.values())

    def test_hooks_are_found_by_request_type(self) -> None:
        """A stored command's RequestType finds its class's hook; a command without one finds none."""
        for cls, hook in RESULT_HOOKS.items():
            assert result_hook(cls.request_type) is hook
        assert result_hook("SecurityInfo") is None and result_hook("NoSuchCommand") is None
