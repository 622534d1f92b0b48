"""The ABM client (ports.AbmClient) on httpx and oauthlib.

Apple's device assignment service (https://developer.apple.com/documentation/devicemanagement/device-assignment):

1. ``GET /session`` signed with OAuth 1.0a, HMAC-SHA1, from the server token's consumer and access keys,
   answers ``{"auth_session_token": ...}``;
2. every other call carries that token as ``X-ADM-Auth-Session`` and ``X-Server-Protocol-Version``;
   ABM may hand a fresh token back in the answer's ``X-ADM-Auth-Session``, which replaces ours;
3. a 401, or a 403 ``FORBIDDEN``, means the session is over: authenticate again, once, and repeat.

Apple's error codes become the typed errors of ``domain.errors`` (one table, :data:`ERRORS`); THROTTLED
(HTTP 429, or 503 with Retry-After) waits ``retry_after_seconds`` and tries again, up to
``throttle_retries`` times. The HTTP transport is injected (``httpx.MockTransport`` or the emulator's
ASGI app in tests); waiting is an injected ``sleep``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import httpx
from oauthlib import oauth1

from pomona.domain.errors import (
    AbmCursorExpiredError,
    AbmError,
    AbmProfileNotFoundError,
    AbmProfileRejectedError,
    AbmTermsNotAcceptedError,
    AbmThrottledError,
    AbmTokenExpiredError,
    AbmTokenInvalidError,
)
from pomona.protocol.dep import (
    PROFILE_FIELD_ERRORS,
    PROTOCOL_VERSION,
    AppleError,
    FetchPage,
    ServerToken,
    decode_fetch_page,
    error_code,
)
from pomona.protocol.errors import DepParseError

__all__ = ["ERRORS", "HttpAbmClient", "HttpAbmConnector", "error_for"]

#: Apple's code -> the typed error it is.
ERRORS: Final[dict[str, type[AbmError]]] = {
    AppleError.T_C_NOT_SIGNED: AbmTermsNotAcceptedError,
    AppleError.EXPIRED_CURSOR: AbmCursorExpiredError,
    AppleError.INVALID_CURSOR: AbmCursorExpiredError,
    AppleError.PROFILE_NOT_FOUND: AbmProfileNotFoundError,
    AppleError.TOKEN_EXPIRED: AbmTokenExpiredError,
    AppleError.TOKEN_REJECTED: AbmTokenInvalidError,
    AppleError.ACCESS_DENIED: AbmTokenInvalidError,
    AppleError.SIGNATURE_INVALID: AbmTokenInvalidError,
    **{code: AbmProfileRejectedError for code in PROFILE_FIELD_ERRORS},
}
MAX_WAIT_S: Final = 300.0


def error_for(status: int, body: bytes, path: str) -> AbmError:
    """The typed error of an ABM answer that is not a success."""
    code = error_code(body)
    cls = ERRORS.get(code)
    if cls is None and path == "/session" and status in (401, 403):
        cls = AbmTokenInvalidError  # Apple refuses the token itself
    return (cls or AbmError)(
        f"ABM answered {status} {code or '(no code)'} to {path}", code=code, status=status
    )


def _retry_after(r: httpx.Response) -> float | None:
    """How long ABM asks us to wait, or None when the answer is not THROTTLED."""
    code = error_code(r.content)
    if (
        r.status_code != 429
        and code != AppleError.THROTTLED
        and not (r.status_code == 503 and "retry-after" in r.headers)
    ):
        return None
    seconds: float = 1.0
    try:
        obj = json.loads(r.content)
        if isinstance(obj, dict) and isinstance(obj.get("retry_after_seconds"), int | float):
            seconds = float(obj["retry_after_seconds"])
    except ValueError:
        pass
    header = r.headers.get("retry-after")
    if header and header.strip().isdigit():
        seconds = float(header)
    return min(max(seconds, 0.0), MAX_WAIT_S)


class HttpAbmClient:
    """One server token's session with ABM."""

    def __init__(
        self,
        credentials: ServerToken,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        verify: bool | str = True,
        timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        throttle_retries: int = 3,
    ) -> None:
        self.credentials = credentials
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(transport=transport, verify=verify, timeout=timeout)
        self.sleep = sleep
        self.throttle_retries = throttle_retries
        self.session_token: str | None = None
        self.sessions = 0  # how many times /session was called (re-authentication shows here)

    def close(self) -> None:
        self.http.close()

    # --- the session -----------------------------------------------------------------------------
    def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return self.http.send(request)
        except httpx.HTTPError as exc:
            raise AbmError(f"cannot reach ABM at {self.base_url}: {type(exc).__name__}: {exc}") from None

    def authenticate(self) -> str:
        """GET /session, OAuth 1.0a HMAC-SHA1 signed; keeps and returns the session token."""
        c = self.credentials
        signer = oauth1.Client(
            c.consumer_key,
            client_secret=c.consumer_secret,
            resource_owner_key=c.access_token,
            resource_owner_secret=c.access_secret,
            signature_method=oauth1.SIGNATURE_HMAC_SHA1,
            signature_type=oauth1.SIGNATURE_TYPE_AUTH_HEADER,
        )
        url, headers, _ = signer.sign(self.base_url + "/session", http_method="GET")
        for attempt in range(self.throttle_retries + 1):
            r = self._send(self.http.build_request("GET", url, headers=headers))
            wait = _retry_after(r)
            if wait is None:
                break
            if attempt == self.throttle_retries:
                raise AbmThrottledError("ABM is throttling /session", code=AppleError.THROTTLED)
            self.sleep(wait)
        self.sessions += 1
        if r.status_code != 200:
            raise error_for(r.status_code, r.content, "/session")
        try:
            token = json.loads(r.content)["auth_session_token"]
        except (ValueError, KeyError, TypeError):
            raise AbmError("ABM's /session answer has no auth_session_token") from None
        if not isinstance(token, str) or not token:
            raise AbmError("ABM's /session answer has no auth_session_token")
        self.session_token = token
        return token

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: Mapping[str, str] | None = None,
    ) -> bytes:
        """One call with the session, re-authenticating once on 401 / 403 FORBIDDEN, waiting on
        THROTTLED; the answer's body, or the typed error of Apple's answer."""
        content = None if body is None else json.dumps(body).encode()
        reauthenticated = False
        throttled = 0
        while True:
            token = self.session_token or self.authenticate()
            headers = {
                "X-ADM-Auth-Session": token,
                "X-Server-Protocol-Version": PROTOCOL_VERSION,
                "Accept": "application/json",
            }
            if content is not None:
                headers["Content-Type"] = "application/json;charset=UTF8"
            r = self._send(
                self.http.build_request(
                    method, self.base_url + path, headers=headers, content=content, params=params
                )
            )
            if fresh := r.headers.get("x-adm-auth-session"):
                self.session_token = fresh
            if r.status_code == 200:
                return r.content
            code = error_code(r.content)
            expired = r.status_code == 401 or (
                r.status_code == 403 and code in (AppleError.FORBIDDEN, AppleError.UNAUTHORIZED, "")
            )
            if expired and not reauthenticated:
                reauthenticated = True
                self.session_token = None
                continue
            wait = _retry_after(r)
            if wait is not None:
                if throttled == self.throttle_retries:
                    raise AbmThrottledError(f"ABM is throttling {path}", code=AppleError.THROTTLED)
                throttled += 1
                self.sleep(wait)
                continue
            raise error_for(r.status_code, r.content, path)

    def _json(self, method: str, path: str, body: object = None, **kw: Any) -> dict[str, object]:
        raw = self._call(method, path, body=body, **kw)
        try:
            obj = json.loads(raw)
        except ValueError:
            raise AbmError(f"ABM's answer to {path} is not JSON") from None
        if not isinstance(obj, dict):
            raise AbmError(f"ABM's answer to {path} is not a JSON object")
        return obj

    # --- the calls -------------------------------------------------------------------------------
    def account(self) -> dict[str, object]:
        return self._json("GET", "/account")

    def _page(self, path: str, body: dict[str, object]) -> FetchPage:
        try:
            return decode_fetch_page(self._call("POST", path, body=body))
        except DepParseError as exc:
            raise AbmError(f"ABM's answer to {path} is not a device list: {exc}") from None

    def fetch_devices(self, cursor: str | None, limit: int) -> FetchPage:
        body: dict[str, object] = {"limit": limit}
        if cursor:
            body["cursor"] = cursor
        return self._page("/server/devices", body)

    def sync_devices(self, cursor: str, limit: int) -> FetchPage:
        return self._page("/devices/sync", {"cursor": cursor, "limit": limit})

    def define_profile(self, profile: Mapping[str, object]) -> str:
        obj = self._json("POST", "/profile", dict(profile))
        uuid = obj.get("profile_uuid")
        if not isinstance(uuid, str):
            raise AbmError("ABM's answer to /profile has no profile_uuid")
        return uuid

    def get_profile(self, profile_uuid: str) -> dict[str, object]:
        return self._json("GET", "/profile", params={"profile_uuid": profile_uuid})

    def _devices_answer(self, method: str, path: str, body: dict[str, object]) -> dict[str, str]:
        devices = self._json(method, path, body).get("devices")
        if not isinstance(devices, dict):
            return {}
        return {str(k): str(v) for k, v in devices.items()}

    def assign_profile(self, profile_uuid: str, serials: Sequence[str]) -> dict[str, str]:
        return self._devices_answer(
            "PUT", "/profile/devices", {"profile_uuid": profile_uuid, "devices": list(serials)}
        )

    def clear_profile(self, profile_uuid: str, serials: Sequence[str]) -> dict[str, str]:
        return self._devices_answer(
            "DELETE", "/profile/devices", {"profile_uuid": profile_uuid, "devices": list(serials)}
        )

    def disown(self, serials: Sequence[str]) -> dict[str, str]:
        return self._devices_answer("POST", "/devices/disown", {"devices": list(serials)})

    def device_status(self, serials: Sequence[str]) -> dict[str, str]:
        devices = self._json("POST", "/devices", {"devices": list(serials)}).get("devices")
        if not isinstance(devices, dict):
            return {}
        return {
            str(k): str(v.get("response_status", "")) if isinstance(v, dict) else str(v)
            for k, v in devices.items()
        }


class HttpAbmConnector:
    """Opens an :class:`HttpAbmClient` per token, at the server's ABM URL (POMONA_ABM_URL)."""

    def __init__(
        self,
        base_url: str,
        *,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url
        self.verify = verify
        self.transport = transport
        self.sleep = sleep

    def connect(self, credentials: ServerToken) -> HttpAbmClient:
        return HttpAbmClient(
            credentials, self.base_url, transport=self.transport, verify=self.verify, sleep=self.sleep
        )
