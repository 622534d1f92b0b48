"""An Apple Business Manager emulator: the device assignment service, as Apple documents it, for tests,
labs and load tests (``pomona emulate abm``).

Apple's endpoints (https://developer.apple.com/documentation/devicemanagement/device-assignment):

==========================  ======================================================================
``GET /session``            OAuth 1.0a HMAC-SHA1, checked for real: ``{"auth_session_token": ...}``
``GET /account``            the MDM server's account (shape of micromdm's testdata)
``POST /server/devices``    full fetch, ``limit`` (max 1000) and ``cursor``; ``more_to_follow``
``POST /devices/sync``      the changes since a cursor (``op_type``, ``op_date``)
``POST /devices``           device details by serial (``response_status``)
``POST|GET /profile``       define a profile (fields checked as Apple does) / get one by UUID
``PUT|POST|DELETE``         ``/profile/devices``: assign / clear a profile
``POST /devices/disown``    disown devices
==========================  ======================================================================

Every call but ``/session`` wants ``X-ADM-Auth-Session`` and ``X-Server-Protocol-Version``. The emulator
issues server tokens as ABM does (:meth:`AbmEmulator.issue_token`: a ``.p7m`` encrypted to the admin's
certificate) and can be told to fail (:meth:`AbmEmulator.set_fault`, names in :data:`FAULTS`):
``profile-not-found`` makes ABM forget every profile defined so far (a profile defined afterwards is
known), ``profile-rejected`` answers every ``POST /profile`` with a field error (FLAGS_INVALID) until
cleared, ``assignment-fails --serial S`` answers FAILED to every assignment of S, and ``profile-removed
--serial S`` shows S's profile ``removed`` (what ABM reports after a re-assignment, fleetdm/fleet
#39871), and ``assigned-elsewhere --serial S`` gives S to another MDM server: it leaves this server's
list (a deletion), assigning it answers NOT_ACCESSIBLE, and its device details say
``response_status: NOT_ACCESSIBLE`` (an unknown serial's say NOT_FOUND). Beside
Apple's paths, ``/_emulator/...`` controls it over HTTP (token, add-device, fault), which the
``pomona emulate abm token|add-device|fault`` commands use.

``POST /_device/activation`` with ``{"serial_number": S}`` is what Apple's activation service tells a device
in Setup Assistant (the "cloud configuration" the ADE virtual device, :mod:`pomona.testing.ade_device`,
asks for): 200 with the assigned profile's JSON (Apple's profile fields plus ``profile_uuid``), 404
``{"error": "NOT_ASSIGNED"}`` for a listed serial with no profile, 404 ``{"error": "NOT_FOUND"}`` for a
serial ABM does not list. Serving it marks the device's profile ``pushed`` (with ``profile_push_time``),
as Apple does. With ``device-cannot-reach-apple --serial S`` the request of S gets no answer: the HTTP
server drops the connection, the in-process transport raises ``httpx.ConnectError`` (the device sees
XPC_TYPE_ERROR Connection invalid: DEP_NETWORK_ERROR).

Serve it in-process through :meth:`AbmEmulator.transport` (an ``httpx.MockTransport``), or over HTTP with
:meth:`AbmEmulator.serve_in_thread` / ``pomona emulate abm``.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Final
from urllib.parse import parse_qsl, urlsplit

import httpx
from oauthlib.oauth1.rfc5849 import signature

from pomona.pki.abm import Cipher, encrypt_token
from pomona.protocol.dep import (
    AbmDevice,
    AppleError,
    ServerToken,
    encode_device,
    encode_server_token,
    format_time,
)

__all__ = ["ACTIVATION_PATH", "FAULTS", "AbmEmulator", "AbmEmulatorServer", "ConnectionDropped"]

#: The faults ``pomona emulate abm fault --fault NAME`` accepts.
FAULTS: Final = (
    "terms-not-accepted",
    "token-expired",
    "token-revoked",
    "cursor-expired",
    "throttled",
    "profile-not-found",
    "profile-rejected",
    "assignment-fails",
    "profile-removed",
    "assigned-elsewhere",
    "device-cannot-reach-apple",
    "clear",
)
MAX_LIMIT: Final = 1000
#: Where a device asks for its activation record (not an Apple path of the device assignment service).
ACTIVATION_PATH: Final = "/_device/activation"
SESSION_TTL: Final = timedelta(minutes=5)
_PRODUCTS: Final = {
    "iPhone15,2": ("iPhone 14 Pro", "iPhone", "iOS"),
    "iPhone16,1": ("iPhone 15 Pro", "iPhone", "iOS"),
    "iPad14,1": ("iPad mini", "iPad", "iPadOS"),
    "iPad13,18": ("iPad", "iPad", "iPadOS"),
}
_PHONE_CHARS: Final = set("0123456789+-() ")

Answer = tuple[int, dict[str, str], bytes]


class ConnectionDropped(Exception):
    """The emulator gives this request no answer at all (``device-cannot-reach-apple``): the HTTP server
    closes the connection, the in-process transport raises ``httpx.ConnectError``."""


def _json(status: int, obj: object, headers: dict[str, str] | None = None) -> Answer:
    return (
        status,
        {"Content-Type": "application/json;charset=UTF8", **(headers or {})},
        json.dumps(obj).encode(),
    )


def _text(status: int, text: str) -> Answer:
    return status, {"Content-Type": "text/plain;charset=UTF8"}, text.encode()


@dataclass
class _Event:
    seq: int
    serial: str
    op_type: str  # added | modified | deleted
    op_date: datetime


@dataclass
class _State:
    devices: dict[str, AbmDevice] = field(default_factory=dict)  # current, ABM's view (not deleted)
    order: list[str] = field(default_factory=list)  # serials in the order ABM first listed them
    ordered: set[str] = field(default_factory=set)  # the serials in ``order``
    events: list[_Event] = field(default_factory=list)
    tokens: dict[str, tuple[ServerToken, bool]] = field(default_factory=dict)  # consumer_key -> (t, revoked)
    sessions: dict[str, datetime] = field(default_factory=dict)  # token -> expiry
    profiles: dict[str, dict[str, object]] = field(default_factory=dict)
    faults: set[str] = field(default_factory=set)
    elsewhere: set[str] = field(default_factory=set)  # serials ABM gives to another MDM server
    unreachable: set[str] = field(default_factory=set)  # serials whose device cannot reach Apple
    failing: set[str] = field(default_factory=set)  # serials every assignment of fails (FAILED)
    cursor_epoch: int = 0  # cursors of an older epoch are expired (the cursor-expired fault)


class AbmEmulator:
    """The emulated service. Thread-safe: the HTTP server answers from several threads."""

    def __init__(
        self,
        *,
        devices: int = 0,
        serial_prefix: str = "P0MN",
        clock: Callable[[], datetime] | None = None,
        state_dir: Path | None = None,
        server_name: str = "Pomona ABM emulator",
    ) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.server_name = server_name
        self.server_uuid = uuid.uuid4().hex.upper()
        self.state_dir = state_dir
        self._lock = threading.RLock()
        self.s = _State()
        self.calls: list[tuple[str, str]] = []  # (method, path) of every call, in order
        self.throttle_after_s = 1
        if state_dir is not None:
            self._load(state_dir)
        if devices:
            self.add_devices(devices, serial_prefix=serial_prefix)

    # --- state -------------------------------------------------------------------------------------
    def _seq(self) -> int:
        return len(self.s.events)

    def _event(self, serial: str, op_type: str, at: datetime) -> None:
        self.s.events.append(_Event(self._seq() + 1, serial, op_type, at))

    def add_devices(
        self,
        count: int,
        *,
        serial_prefix: str = "P0MN",
        product: str = "iPhone15,2",
        start: int | None = None,
    ) -> list[str]:
        """``count`` devices assigned to this MDM server (serials ``<prefix><number>``, 12 characters)."""
        with self._lock:
            first = len(self.s.order) if start is None else start
            width = max(12 - len(serial_prefix), 1)
            serials = [f"{serial_prefix}{n:0{width}d}"[:32] for n in range(first, first + count)]
            for i, serial in enumerate(serials):
                p = product if i % 4 else ("iPad14,1" if product == "iPhone15,2" else product)
                self._add(serial, p, "17.4")
            self._save_soon()
            return serials

    def add_device(
        self,
        serial: str,
        *,
        product: str = "iPhone15,2",
        os_version: str = "17.4",
        model: str | None = None,
        device_family: str | None = None,
        order_number: str = "",
    ) -> AbmDevice:
        """One device assigned to this MDM server (an order shipped, or a device added in ABM); ``model``
        and ``device_family`` (Apple's fields) default to the product's. ``order_number`` is not in
        Apple's device-assignment answers (protocol.dep.AbmDevice): given, the device's JSON carries it."""
        with self._lock:
            d = self._add(serial, product, os_version)
            if model is not None or device_family is not None or order_number:
                d = replace(
                    d,
                    model=model or d.model,
                    device_family=device_family or d.device_family,
                    order_number=order_number,
                )
                self.s.devices[serial] = d
            self._save_soon()
            return d

    def _add(self, serial: str, product: str, os_version: str) -> AbmDevice:
        now = self.clock()
        model, family, os = _PRODUCTS.get(product, (product, "iPhone", "iOS"))
        d = AbmDevice(
            serial,
            model=model,
            description=f"{model.upper()} 128GB-USA",
            color="BLACK",
            device_family=family,
            os=os,
            profile_status="empty",
            device_assigned_date=now,
            device_assigned_by="abm-admin@example.com",
        )
        if serial not in self.s.ordered:
            self.s.order.append(serial)
            self.s.ordered.add(serial)
        self.s.devices[serial] = d
        self.s.elsewhere.discard(serial)
        self._event(serial, "added", now)
        return d

    def _modify(self, serial: str, **changes: object) -> None:
        d = self.s.devices[serial]
        self.s.devices[serial] = replace(d, **changes)  # type: ignore[arg-type]
        self._event(serial, "modified", self.clock())

    def _remove(self, serial: str) -> None:
        if self.s.devices.pop(serial, None) is not None:
            self._event(serial, "deleted", self.clock())

    def device(self, serial: str) -> AbmDevice | None:
        with self._lock:
            return self.s.devices.get(serial)

    def issue_token(
        self,
        cert_pem: bytes,
        *,
        expires_in: timedelta = timedelta(days=365),
        cipher: Cipher = "aes256_cbc",
    ) -> bytes:
        """A server token (``.p7m``) encrypted to the admin's certificate, as ABM's "download token"."""
        token = ServerToken(
            "CK_" + secrets.token_hex(24),
            "CS_" + secrets.token_hex(20),
            "AT_" + secrets.token_hex(40),
            "AS_" + secrets.token_hex(20),
            (self.clock() + expires_in).replace(microsecond=0),
        )
        with self._lock:
            self.s.tokens[token.consumer_key] = (token, False)
            self._save_soon()
        return encrypt_token(encode_server_token(token), cert_pem, cipher)

    def set_fault(self, name: str, serial: str | None = None) -> None:
        """Fail as ABM can (:data:`FAULTS`); ``clear`` ends every fault."""
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; one of {', '.join(FAULTS)}")
        with self._lock:
            if name == "clear":
                self.s.faults.clear()
                self.s.unreachable.clear()
                self.s.failing.clear()
            elif name == "assigned-elsewhere":
                if serial is None:
                    raise ValueError("assigned-elsewhere needs a serial")
                self.s.elsewhere.add(serial)
                self._remove(serial)  # it leaves this MDM server's list
            elif name == "device-cannot-reach-apple":
                if serial is None:
                    raise ValueError("device-cannot-reach-apple needs a serial")
                self.s.unreachable.add(serial)
            elif name == "profile-not-found":
                self.s.profiles.clear()  # ABM no longer knows any profile defined so far
            elif name == "assignment-fails":
                if serial is None:
                    raise ValueError("assignment-fails needs a serial")
                self.s.failing.add(serial)
            elif name == "profile-removed":
                if serial is None or serial not in self.s.devices:
                    raise ValueError("profile-removed needs the serial of a listed device")
                self._modify(serial, profile_status="removed")
            elif name == "cursor-expired":
                self.s.cursor_epoch += 1  # every cursor handed out so far is now too old
            elif name == "token-revoked":
                self.s.tokens = {k: (t, True) for k, (t, _) in self.s.tokens.items()}
            else:
                self.s.faults.add(name)

    def expire_sessions(self) -> None:
        """End every session now (as ABM does after a few minutes): the next call gets 401."""
        with self._lock:
            self.s.sessions.clear()

    # --- persistence (--state-dir) ------------------------------------------------------------------
    def _save_soon(self) -> None:
        if self.state_dir is not None and len(self.s.devices) <= 10_000:
            self.save()

    def save(self) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            data = {
                "server_uuid": self.server_uuid,
                "devices": [encode_device(self.s.devices[s]) for s in self.s.order if s in self.s.devices],
                "tokens": [
                    {**json.loads(encode_server_token(t).split(b"-----")[2]), "revoked": revoked}
                    for t, revoked in self.s.tokens.values()
                ],
                "profiles": self.s.profiles,
            }
        (self.state_dir / "abm-state.json").write_text(json.dumps(data))

    def _load(self, state_dir: Path) -> None:
        from pomona.protocol.dep import decode_fetch_page, parse_time

        path = state_dir / "abm-state.json"
        if not path.exists():
            return
        data = json.loads(path.read_text())
        self.server_uuid = data.get("server_uuid", self.server_uuid)
        page = decode_fetch_page(
            json.dumps({"devices": data["devices"], "cursor": "", "more_to_follow": False}).encode()
        )
        for d in page.devices:
            self.s.devices[d.serial_number] = d
            self.s.order.append(d.serial_number)
            self.s.ordered.add(d.serial_number)
            self._event(d.serial_number, "added", d.device_assigned_date or self.clock())
        for t in data.get("tokens", []):
            expiry = parse_time(t["access_token_expiry"])
            assert expiry is not None
            tok = ServerToken(
                t["consumer_key"], t["consumer_secret"], t["access_token"], t["access_secret"], expiry
            )
            self.s.tokens[tok.consumer_key] = (tok, bool(t.get("revoked")))
        self.s.profiles = data.get("profiles", {})

    # --- cursors -----------------------------------------------------------------------------------
    def _cursor(self, kind: str, position: int, since: int) -> str:
        raw = f"{kind}:{position}:{since}:{self.s.cursor_epoch}:{int(self.clock().timestamp() * 1000)}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @staticmethod
    def _read_cursor(cursor: str) -> tuple[str, int, int, int] | None:
        """(kind, position, since, epoch) of a cursor of ours, or None."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            kind, position, since, epoch, _ = raw.split(":")
            if kind not in ("full", "sync"):
                return None
            return kind, int(position), int(since), int(epoch)
        except (ValueError, UnicodeDecodeError):
            return None

    # --- HTTP ----------------------------------------------------------------------------------------
    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Answer:
        """One request: Apple's endpoints and the /_emulator control endpoints."""
        parts = urlsplit(url)
        path = parts.path.rstrip("/") or "/"
        headers = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            self.calls.append((method, path))
            if path.startswith("/_emulator/"):
                return self._control(method, path, body)
            if path == ACTIVATION_PATH:
                return self._activation(method, body)
            if path == "/session":
                return self._session(method, url, headers)
            token = headers.get("x-adm-auth-session", "")
            expiry = self.s.sessions.get(token)
            if expiry is None or expiry <= self.clock():
                self.s.sessions.pop(token, None)
                return _text(401, "UNAUTHORIZED")
            if "x-server-protocol-version" not in headers:
                return _text(400, "MALFORMED_REQUEST_BODY")
            if "terms-not-accepted" in self.s.faults:
                return _text(403, AppleError.T_C_NOT_SIGNED)
            if "throttled" in self.s.faults:
                self.s.faults.discard("throttled")  # one THROTTLED answer, then served again
                return _json(
                    429,
                    {"code": AppleError.THROTTLED, "retry_after_seconds": self.throttle_after_s},
                    {"Retry-After": str(self.throttle_after_s)},
                )
            try:
                obj = json.loads(body) if body else {}
            except ValueError:
                return _text(400, "MALFORMED_REQUEST_BODY")
            if not isinstance(obj, dict):
                return _text(400, "MALFORMED_REQUEST_BODY")
            query = dict(parse_qsl(parts.query))
            route = {
                ("GET", "/account"): self._account,
                ("POST", "/server/devices"): self._fetch,
                ("POST", "/devices/sync"): self._sync,
                ("POST", "/devices"): self._details,
                ("POST", "/profile"): self._define,
                ("GET", "/profile"): self._get_profile,
                ("PUT", "/profile/devices"): self._assign,
                ("POST", "/profile/devices"): self._assign,
                ("DELETE", "/profile/devices"): self._clear,
                ("POST", "/devices/disown"): self._disown,
            }.get((method, path))
            if route is None:
                return _text(404, "NOT_FOUND")
            return route(obj, query)

    def _session(self, method: str, url: str, headers: dict[str, str]) -> Answer:
        if method != "GET":
            return _text(405, "METHOD_NOT_ALLOWED")
        auth = headers.get("authorization", "")
        if not auth.startswith("OAuth "):
            return _text(401, "oauth_problem_adv=signature_invalid")
        query = urlsplit(url).query
        try:
            given = dict(
                signature.collect_parameters(
                    uri_query=query, headers={"Authorization": auth}, exclude_oauth_signature=False
                )
            )
            signed = signature.collect_parameters(uri_query=query, headers={"Authorization": auth})
        except (ValueError, IndexError):
            return _text(401, "oauth_problem_adv=signature_invalid")
        if given.get("oauth_signature_method") != "HMAC-SHA1":
            return _text(401, "oauth_problem_adv=signature_method_rejected")
        entry = self.s.tokens.get(given.get("oauth_consumer_key", ""))
        if entry is None:
            return _text(401, "oauth_problem_adv=token_rejected")
        token, revoked = entry
        if revoked or given.get("oauth_token") != token.access_token:
            return _text(401, "oauth_problem_adv=token_rejected")
        base = signature.signature_base_string(
            "GET", signature.base_string_uri(url), signature.normalize_parameters(signed)
        )
        keys = SimpleNamespace(client_secret=token.consumer_secret, resource_owner_secret=token.access_secret)
        expected = signature.sign_hmac_sha1_with_client(base, keys)
        if not signature.safe_string_equals(expected, given.get("oauth_signature", "")):
            return _text(401, "oauth_problem_adv=signature_invalid")
        if "token-expired" in self.s.faults or token.access_token_expiry <= self.clock():
            return _text(401, "oauth_problem_adv=token_expired")
        session = secrets.token_hex(32)
        self.s.sessions[session] = self.clock() + SESSION_TTL
        return _json(200, {"auth_session_token": session})

    def _account(self, obj: dict[str, object], query: dict[str, str]) -> Answer:
        return _json(
            200,
            {
                "server_name": self.server_name,
                "server_uuid": self.server_uuid,
                "facilitator_id": "abm-admin@example.com",
                "admin_id": "abm-admin@example.com",
                "org_name": "Example Org",
                "org_email": "abm-admin@example.com",
                "org_phone": "+1 555 0100",
                "org_address": "1 Example Way",
                "org_id": "1000001",
                "org_id_hash": secrets.token_hex(26)[:52],
                "org_type": "org",
                "org_version": "v2",
                "urls": [
                    {"uri": u, "http_method": m}
                    for u, m in (
                        ("/session", ["GET"]),
                        ("/account", ["GET"]),
                        ("/server/devices", ["POST"]),
                        ("/devices/sync", ["POST"]),
                        ("/devices", ["POST"]),
                        ("/profile", ["POST", "GET"]),
                        ("/profile/devices", ["DELETE", "POST", "PUT"]),
                        ("/devices/disown", ["POST"]),
                    )
                ],
            },
        )

    def _limit(self, obj: dict[str, object]) -> int | None:
        limit = obj.get("limit", 100)
        if not isinstance(limit, int) or limit < 1:
            return None
        return min(limit, MAX_LIMIT)

    def _fetch(self, obj: dict[str, object], query: dict[str, str]) -> Answer:
        limit = self._limit(obj)
        if limit is None:
            return _text(400, "MALFORMED_REQUEST_BODY")
        cursor = obj.get("cursor")
        position, since = 0, self._seq()
        if cursor:
            read = self._read_cursor(str(cursor))
            if read is None or read[0] != "full":
                return _text(400, AppleError.INVALID_CURSOR)
            if read[3] < self.s.cursor_epoch:
                return _text(400, AppleError.EXPIRED_CURSOR)
            _, position, since, _ = read
        devices: list[dict[str, str]] = []
        order = self.s.order
        while position < len(order) and len(devices) < limit:
            d = self.s.devices.get(order[position])
            position += 1
            if d is not None:
                devices.append(encode_device(d))
        more = position < len(order)
        next_cursor = self._cursor("full", position, since) if more else self._cursor("sync", since, since)
        return _json(
            200,
            {
                "devices": devices,
                "cursor": next_cursor,
                "fetched_until": format_time(self.clock()),
                "more_to_follow": more,
            },
        )

    def _sync(self, obj: dict[str, object], query: dict[str, str]) -> Answer:
        limit = self._limit(obj)
        cursor = obj.get("cursor")
        if limit is None:
            return _text(400, "MALFORMED_REQUEST_BODY")
        if not isinstance(cursor, str) or not cursor:
            return _text(400, AppleError.CURSOR_REQUIRED)
        read = self._read_cursor(cursor)
        if read is None or read[0] != "sync":
            return _text(400, AppleError.INVALID_CURSOR)
        if read[3] < self.s.cursor_epoch:
            return _text(400, AppleError.EXPIRED_CURSOR)
        seq = read[1]
        events = self.s.events[seq : seq + limit]
        devices = []
        for e in events:
            d = self.s.devices.get(e.serial) or AbmDevice(e.serial, model="")
            devices.append(encode_device(replace(d, op_type=e.op_type, op_date=e.op_date), sync=True))
        last = seq + len(events)
        return _json(
            200,
            {
                "devices": devices,
                "cursor": self._cursor("sync", last, last),
                "fetched_until": format_time(self.clock()),
                "more_to_follow": last < len(self.s.events),
            },
        )

    def _serials(self, obj: dict[str, object]) -> list[str] | None:
        devices = obj.get("devices")
        if not isinstance(devices, list) or not all(isinstance(s, str) for s in devices):
            return None
        return [str(s) for s in devices]

    def _details(self, obj: dict[str, object], query: dict[str, str]) -> Answer:
        serials = self._serials(obj)
        if serials is None:
            return _text(400, "MALFORMED_REQUEST_BODY")
        out: dict[str, dict[str, str]] = {}
        for serial in serials:
            d = self.s.devices.get(serial)
            if serial in self.s.elsewhere:  # ABM knows it, but gives it to another MDM server
                out[serial] = {"serial_number": serial, "response_status": "NOT_ACCESSIBLE"}
            elif d is None:
                out[serial] = {"serial_number": serial, "response_status": "NOT_FOUND"}
            else:
                out[serial] = {**encode_device(d), "response_status": "SUCCESS"}
        return _json(200, {"devices": out})

    def _define(self, obj: dict[str, object], query: dict[str, str]) -> Answer:
        if "profile-rejected" in self.s.faults:
            return _text(400, AppleError.FLAGS_INVALID)
        name = obj.get("profile_name")
        if not isinstance(name, str) or not name:
            return _text(400, AppleError.CONFIG_NAME_REQUIRED)
        if len(name) > 255:
            return _text(400, AppleError.PROFILE_NAME_INVALID)
        url = obj.get("url")
        if not isinstance(url, str) or not url:
            return _text(400, AppleError.CONFIG_URL_REQUIRED)
        if not url.startswith("https://") and not url.startswith("http://"):
            return _text(400, AppleError.CONFIG_URL_INVALID)
        phone = obj.get("support_phone_number")
        if phone is not None and (not isinstance(phone, str) or not set(phone) <= _PHONE_CHARS):
            return _text(400, AppleError.SUPPORT_PHONE_INVALID)
        dept = obj.get("department")
        if dept is not None and (not isinstance(dept, str) or len(dept) > 125):
            return _text(400, AppleError.DEPARTMENT_INVALID)
        email = obj.get("support_email_address")
        if email is not None and (not isinstance(email, str) or "@" not in email):
            return _text(400, AppleError.SUPPORT_EMAIL_INVALID)
        if obj.get("is_mdm_removable") is False and obj.get("is_supervised") is False:
            return _text(400, AppleError.FLAGS_INVALID)
        profile_uuid = uuid.uuid4().hex.upper()
        profile = {k: v for k, v in obj.items() if k != "devices"}
        self.s.profiles[profile_uuid] = {
            **profile,
            "profile_uuid": profile_uuid,
            "org_magic": str(uuid.uuid4()).upper(),
            "is_mdm_removable": bool(obj.get("is_mdm_removable", True)),
        }
        assigned = self._assign_to(profile_uuid, self._serials(obj) or [])
        return _json(200, {"profile_uuid": profile_uuid, "devices": assigned})

    def _get_profile(self, obj: dict[str, object], query: dict[str, str]) -> Answer:
        profile = self.s.profiles.get(query.get("profile_uuid", ""))
        if profile is None:
            return _text(400, AppleError.PROFILE_NOT_FOUND)
        return _json(200, profile)

    def _assign_to(self, profile_uuid: str, serials: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        now = self.clock()
        for serial in serials:
            if serial not in self.s.devices:
                out[serial] = "NOT_ACCESSIBLE"
                continue
            if serial in self.s.failing:
                out[serial] = "FAILED"
                continue
            self._modify(
                serial, profile_uuid=profile_uuid, profile_status="assigned", profile_assign_time=now
            )
            out[serial] = "SUCCESS"
        return out

    def _assign(self, obj: dict[str, object], query: dict[str, str]) -> Answer:
        serials = self._serials(obj)
        profile_uuid = obj.get("profile_uuid")
        if serials is None or not isinstance(profile_uuid, str):
            return _text(400, "MALFORMED_REQUEST_BODY")
        if profile_uuid not in self.s.profiles:
            return _text(400, AppleError.PROFILE_NOT_FOUND)
        return _json(200, {"profile_uuid": profile_uuid, "devices": self._assign_to(profile_uuid, serials)})

    def _clear(self, obj: dict[str, object], query: dict[str, str]) -> Answer:
        serials = self._serials(obj)
        if serials is None:
            return _text(400, "MALFORMED_REQUEST_BODY")
        out: dict[str, str] = {}
        for serial in serials:
            if serial not in self.s.devices:
                out[serial] = "NOT_ACCESSIBLE"
                continue
            self._modify(serial, profile_uuid="", profile_status="empty", profile_assign_time=None)
            out[serial] = "SUCCESS"
        return _json(200, {"devices": out})

    def _disown(self, obj: dict[str, object], query: dict[str, str]) -> Answer:
        serials = self._serials(obj)
        if serials is None:
            return _text(400, "MALFORMED_REQUEST_BODY")
        out: dict[str, str] = {}
        for serial in serials:
            if serial in self.s.devices:
                self._remove(serial)
                out[serial] = "SUCCESS"
            else:
                out[serial] = "NOT_ACCESSIBLE"
        return _json(200, {"devices": out})

    # --- the device side: Apple's activation service ---------------------------------------------------
    def _activation(self, method: str, body: bytes) -> Answer:
        """A device's activation record: its assigned profile (see the module docstring)."""
        if method != "POST":
            return _text(405, "METHOD_NOT_ALLOWED")
        try:
            obj = json.loads(body) if body else {}
        except ValueError:
            return _text(400, "MALFORMED_REQUEST_BODY")
        serial = obj.get("serial_number") if isinstance(obj, dict) else None
        if not isinstance(serial, str) or not serial:
            return _text(400, "MALFORMED_REQUEST_BODY")
        if serial in self.s.unreachable:
            raise ConnectionDropped(serial)
        d = self.s.devices.get(serial)
        if d is None:
            return _json(404, {"error": "NOT_FOUND"})
        profile = self.s.profiles.get(d.profile_uuid) if d.profile_uuid else None
        if profile is None or d.profile_status not in ("assigned", "pushed"):
            return _json(404, {"error": "NOT_ASSIGNED"})
        self._modify(serial, profile_status="pushed", profile_push_time=self.clock())
        self._save_soon()
        return _json(200, profile)

    # --- control (pomona emulate abm token | add-device | fault) -------------------------------------
    def _control(self, method: str, path: str, body: bytes) -> Answer:
        try:
            obj = json.loads(body) if body else {}
        except ValueError:
            return _text(400, "bad JSON")
        try:
            if (method, path) == ("POST", "/_emulator/token"):
                days = int(obj.get("days", 365))
                p7m = self.issue_token(
                    str(obj["cert_pem"]).encode(),
                    expires_in=timedelta(days=days),
                    cipher=obj.get("cipher", "aes256_cbc"),
                )
                return 200, {"Content-Type": "application/pkcs7-mime"}, p7m
            if (method, path) == ("POST", "/_emulator/devices"):
                d = self.add_device(
                    str(obj["serial"]),
                    product=str(obj.get("product", "iPhone15,2")),
                    os_version=str(obj.get("os_version", "17.4")),
                )
                return _json(200, encode_device(d))
            if (method, path) == ("POST", "/_emulator/fault"):
                self.set_fault(str(obj["fault"]), obj.get("serial"))
                return _json(200, {"faults": sorted(self.s.faults)})
            if (method, path) == ("GET", "/_emulator/state"):
                return _json(200, {"devices": len(self.s.devices), "faults": sorted(self.s.faults)})
        except (KeyError, ValueError, TypeError) as exc:
            return _text(400, str(exc))
        return _text(404, "NOT_FOUND")

    def transport(self) -> httpx.MockTransport:
        """An httpx transport answering from this emulator in-process (tests, the benchmark)."""

        def answer(request: httpx.Request) -> httpx.Response:
            try:
                status, headers, body = self.handle(
                    request.method, str(request.url), dict(request.headers), request.read()
                )
            except ConnectionDropped as exc:
                raise httpx.ConnectError("XPC_TYPE_ERROR Connection invalid", request=request) from exc
            return httpx.Response(status, headers=headers, content=body)

        return httpx.MockTransport(answer)

    def serve_in_thread(
        self, host: str = "127.0.0.1", port: int = 0, *, tls_dir: Path | None = None
    ) -> AbmEmulatorServer:
        """Serve over HTTP on a thread (HTTPS with ``tls_dir``: its ``ca.pem`` is what a client trusts,
        POMONA_ABM_CA); stop with ``.close()``."""
        return AbmEmulatorServer(self, host, port, tls_dir=tls_dir)


def _tls_context(tls_dir: Path) -> ssl.SSLContext:
    """A server context whose certificate (localhost, 127.0.0.1, mdmenrollment.apple.com) is issued by
    the CA kept in ``tls_dir`` (``ca.pem``)."""
    from ipaddress import ip_address

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from pomona.testing.apns_emulator import _EmulatorCa, _pem_key, _write_private

    tls_dir.mkdir(parents=True, exist_ok=True)
    ca = _EmulatorCa(tls_dir)
    cert_path, key_path = tls_dir / "server.pem", tls_dir / "server.key"
    if not (cert_path.exists() and key_path.exists()):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sans: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.DNSName("mdmenrollment.apple.com"),
            x509.IPAddress(ip_address("127.0.0.1")),
        ]
        name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, "mdmenrollment.apple.com (Pomona emulator)")]
        )
        cert = ca.issue(name, key, ExtendedKeyUsageOID.SERVER_AUTH, sans=sans, days=3650)
        _write_private(key_path, _pem_key(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


class AbmEmulatorServer:
    """The emulator on a ThreadingHTTPServer (HTTPS with ``tls_dir``), in a daemon thread."""

    def __init__(self, emu: AbmEmulator, host: str, port: int, *, tls_dir: Path | None = None) -> None:
        outer = emu
        scheme = "http" if tls_dir is None else "https"

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                url = f"{scheme}://{self.headers.get('Host', host)}{self.path}"
                try:
                    status, headers, content = outer.handle(
                        self.command, url, dict(self.headers.items()), body
                    )
                except ConnectionDropped:
                    self.close_connection = True  # no status line: the client sees the connection drop
                    return
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.ca_path: Path | None = None
        if tls_dir is not None:
            ctx = _tls_context(tls_dir)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.ca_path = tls_dir / "ca.pem"
        self.url = f"{scheme}://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="abm-emulator", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
