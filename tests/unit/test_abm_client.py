"""The ABM client (net/abm.py) against the ABM emulator in-process: OAuth1 sessions, re-authentication,
THROTTLED, and each Apple error as its typed error and reason code."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import httpx
import pytest

from pomona.domain.errors import (
    AbmError,
    AbmProfileNotFoundError,
    AbmProfileRejectedError,
    AbmTermsNotAcceptedError,
    AbmThrottledError,
    AbmTokenExpiredError,
    AbmTokenInvalidError,
)
from pomona.domain.reasons import ReasonCode as R
from pomona.net.abm import HttpAbmClient
from pomona.pki.abm import decrypt_token, make_keypair
from pomona.protocol.dep import ServerToken, decode_server_token
from pomona.testing.abm_emulator import AbmEmulator

URL = "http://abm.test"
Answer = Callable[[httpx.Request], httpx.Response | None]


@pytest.fixture
def emu() -> AbmEmulator:
    return AbmEmulator(devices=5)


@pytest.fixture
def creds(emu: AbmEmulator) -> ServerToken:
    cert, key = make_keypair("test")
    return decode_server_token(decrypt_token(emu.issue_token(cert), cert, key))


def client_for(
    emu: AbmEmulator, creds: ServerToken, before: Answer | None = None, sleeps: list[float] | None = None
) -> HttpAbmClient:
    """A client over the emulator; ``before`` may answer a request first (Apple's rarer answers)."""
    inner = emu.transport()

    def handle(request: httpx.Request) -> httpx.Response:
        if before is not None and (answer := before(request)) is not None:
            return answer
        return inner.handle_request(request)

    return HttpAbmClient(
        creds, URL, transport=httpx.MockTransport(handle), sleep=(sleeps if sleeps is not None else []).append
    )


@pytest.fixture
def client(emu: AbmEmulator, creds: ServerToken) -> Iterator[HttpAbmClient]:
    c = client_for(emu, creds)
    yield c
    c.close()


class TestSession:
    def test_signed_session_then_header_on_every_call(self, emu: AbmEmulator, client: HttpAbmClient) -> None:
        """One /session, then the session header on each call."""
        client.account()
        client.fetch_devices(None, 100)
        assert client.sessions == 1
        assert [c for c in emu.calls] == [
            ("GET", "/session"),
            ("GET", "/account"),
            ("POST", "/server/devices"),
        ]

    @pytest.mark.parametrize("field", ["consumer_secret", "access_secret"])
    def test_wrong_secret_fails_the_signature(self, emu: AbmEmulator, creds: ServerToken, field: str) -> None:
        """The emulator checks the HMAC-SHA1 signature for real: a wrong secret is DEP_TOKEN_INVALID."""
        c = client_for(emu, replace(creds, **{field: "wrong"}))
        with pytest.raises(AbmTokenInvalidError) as e:
            c.account()
        assert e.value.reason is R.DEP_TOKEN_INVALID and e.value.context["code"] == "signature_invalid"

    def test_reauthenticates_when_the_session_ends(self, emu: AbmEmulator, client: HttpAbmClient) -> None:
        """A 401 after the session expired: /session again, and the call is repeated once."""
        client.account()
        emu.expire_sessions()
        assert client.fetch_devices(None, 10).devices
        assert client.sessions == 2

    def test_reauthenticates_on_403_forbidden(self, emu: AbmEmulator, creds: ServerToken) -> None:
        """A 403 FORBIDDEN is an ended session too."""
        once = [True]

        def forbidden(r: httpx.Request) -> httpx.Response | None:
            if r.url.path == "/account" and once:
                once.pop()
                return httpx.Response(403, text="FORBIDDEN")
            return None

        c = client_for(emu, creds, forbidden)
        assert c.account()["server_name"]
        assert c.sessions == 2

    def test_expired_and_revoked_tokens(self, emu: AbmEmulator, creds: ServerToken) -> None:
        """/session refusing an expired token is DEP_TOKEN_EXPIRED; a revoked one DEP_TOKEN_INVALID."""
        emu.set_fault("token-expired")
        with pytest.raises(AbmTokenExpiredError):
            client_for(emu, creds).account()
        emu.set_fault("clear")
        emu.set_fault("token-revoked")
        with pytest.raises(AbmTokenInvalidError):
            client_for(emu, creds).account()


class TestAppleErrors:
    def test_terms_not_accepted(self, emu: AbmEmulator, client: HttpAbmClient) -> None:
        """T_C_NOT_SIGNED is DEP_TERMS_NOT_ACCEPTED."""
        emu.set_fault("terms-not-accepted")
        with pytest.raises(AbmTermsNotAcceptedError) as e:
            client.fetch_devices(None, 10)
        assert e.value.reason is R.DEP_TERMS_NOT_ACCEPTED

    def test_profile_not_found(self, emu: AbmEmulator, client: HttpAbmClient) -> None:
        """PROFILE_NOT_FOUND (get and assign) is DEP_PROFILE_NOT_FOUND."""
        with pytest.raises(AbmProfileNotFoundError):
            client.get_profile("NOPE")
        uuid = client.define_profile({"profile_name": "p", "url": "https://mdm.example/enroll"})
        emu.set_fault("profile-not-found")
        with pytest.raises(AbmProfileNotFoundError) as e:
            client.assign_profile(uuid, [emu.s.order[0]])
        assert e.value.reason is R.DEP_PROFILE_NOT_FOUND

    @pytest.mark.parametrize(
        ("profile", "code"),
        [
            (
                {"profile_name": "p", "url": "https://m.example/e", "support_phone_number": "call us"},
                "SUPPORT_PHONE_INVALID",
            ),
            (
                {"profile_name": "p", "url": "https://m.example/e", "department": "d" * 200},
                "DEPARTMENT_INVALID",
            ),
            ({"profile_name": "n" * 300, "url": "https://m.example/e"}, "PROFILE_NAME_INVALID"),
            ({"profile_name": "p"}, "CONFIG_URL_REQUIRED"),
            (
                {
                    "profile_name": "p",
                    "url": "https://m.example/e",
                    "is_mdm_removable": False,
                    "is_supervised": False,
                },
                "FLAGS_INVALID",
            ),
        ],
    )
    def test_field_errors_are_rejections(
        self, client: HttpAbmClient, profile: dict[str, object], code: str
    ) -> None:
        """Each field error of POST /profile is DEP_PROFILE_REJECTED, carrying Apple's code."""
        with pytest.raises(AbmProfileRejectedError) as e:
            client.define_profile(profile)
        assert (e.value.reason, e.value.context["code"]) == (R.DEP_PROFILE_REJECTED, code)

    def test_other_errors_are_plain_abm_errors(self, emu: AbmEmulator, client: HttpAbmClient) -> None:
        """An unknown cursor is DEP_CURSOR_EXPIRED; a code we do not know is an AbmError (INTERNAL_ERROR)."""
        from pomona.domain.errors import AbmCursorExpiredError

        with pytest.raises(AbmCursorExpiredError):
            client.sync_devices("bm90IG91cnM", 10)
        c = client_for(emu, client.credentials, lambda r: httpx.Response(500, text="SERVER_ERROR"))
        with pytest.raises(AbmError) as e:
            c.account()
        assert type(e.value) is AbmError and e.value.reason is R.INTERNAL_ERROR


class TestThrottled:
    def test_waits_retry_after_seconds_then_succeeds(self, emu: AbmEmulator, creds: ServerToken) -> None:
        """THROTTLED: the client waits what ABM asks (retry_after_seconds) and tries again."""
        sleeps: list[float] = []
        c = client_for(emu, creds, sleeps=sleeps)
        emu.throttle_after_s = 7
        emu.set_fault("throttled")
        assert c.fetch_devices(None, 10).devices
        assert sleeps == [7.0]

    def test_gives_up_after_its_retries(self, emu: AbmEmulator, creds: ServerToken) -> None:
        """ABM throttling every try: AbmThrottledError (503) after the retries, each one waited."""
        sleeps: list[float] = []

        def always(r: httpx.Request) -> httpx.Response | None:
            if r.url.path == "/session":
                return None
            return httpx.Response(429, json={"code": "THROTTLED", "retry_after_seconds": 2})

        c = client_for(emu, creds, always, sleeps)
        with pytest.raises(AbmThrottledError) as e:
            c.account()
        assert e.value.http_status == 503 and sleeps == [2.0, 2.0, 2.0]

    def test_unreachable_abm(self, creds: ServerToken) -> None:
        """A network failure is an AbmError naming the URL, never a traceback."""

        def down(r: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused")

        c = HttpAbmClient(creds, URL, transport=httpx.MockTransport(down))
        with pytest.raises(AbmError, match="cannot reach ABM"):
            c.account()
