"""An APNs emulator: a real HTTP/2 + TLS server with required client certificates, answering as Apple does.

No Apple service is reachable from tests or from a lab, so the emulator plays Apple: it has its own CA
("Pomona APNs emulator CA"), issues push certificates shaped like Apple's (subject UID =
``com.apple.mgmt.External.<uuid>``, CN ``APSP:<uuid>``, clientAuth), presents a TLS server certificate from
the same CA, and wakes registered virtual devices when a push to their token is accepted::

    with ApnsEmulator.start() as emu:
        cert_pem, key_pem = emu.issue_push_cert()
        emu.register(device.push_token, device.poll)          # a push makes the device connect
        client = ApnsClient(base_url=emu.url, verify=emu.ca_pem)
        client.set_identity(cert_pem, key_pem)

Requests are checked in Apple's order, with Apple's status codes and ``{"reason": ...}`` bodies
(https://developer.apple.com/documentation/usernotifications/handling-notification-responses-from-apns):

- method other than POST: 405 MethodNotAllowed; path not ``/3/device/<token>``: 404 BadPath;
  empty token: 400 MissingDeviceToken;
- certificate without a subject UID: 403 BadCertificate; ``apns-topic`` other than the certificate's UID:
  400 TopicDisallowed; a repeated header: 400 DuplicateHeaders; bad ``apns-push-type``, ``apns-priority``,
  ``apns-expiration``, ``apns-id``: 400 InvalidPushType, BadPriority, BadExpirationDate, BadMessageId;
- a token that is not 64 hex characters: 400 BadDeviceToken;
- empty body: 400 PayloadEmpty; over 4096 bytes: 413 PayloadTooLarge; a body that is not
  ``{"mdm": "<string>"}``: 400 BadMessage (Apple documents no reason for this; the emulator is stricter
  than Apple, which would deliver any JSON);
- accepted: 200 with an ``apns-id`` header (the request's, or a new UUID). 410 bodies add ``timestamp``.

An untrusted, expired or missing client certificate fails the TLS handshake, as with Apple.

Failure injection, settable at any time from any thread (:meth:`ApnsEmulator.configure`,
:meth:`ApnsEmulator.set_token_outcome`, :meth:`ApnsEmulator.set_topic_outcome`): a rate of transient
failures (``fail_rate=0.2, fail_status=503``, 429 and 500 too), a GOAWAY every N streams (the connection is
then closed, abandoning the streams still open on it), per-token outcomes (Unregistered,
BadDeviceToken, DeviceTokenNotForTopic), per-topic or server-wide tenant outcomes (BadCertificate,
BadCertificateEnvironment, TopicDisallowed), and ``down`` (the port refuses connections).

When run as a process (``pomona emulate apns``), ``GET /_emulator/stats`` and ``POST /_emulator/config``
(JSON with the :meth:`ApnsEmulator.configure` fields) read the counters and change the faults; they
need a client certificate issued by the emulator like every request, and Apple has no such paths.

Why not an ASGI server: the emulator must see each connection's client certificate and must send GOAWAY
at will, which ASGI servers do not expose; the ``h2`` state machine on an asyncio TLS server does both.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Final

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pomona.pki.apns_certs import decode_vendor_signed_request
from pomona.protocol.apns import push_topic_of

__all__ = ["CA_COMMON_NAME", "ApnsEmulator", "EmulatorStats", "Faults"]

CA_COMMON_NAME: Final = "Pomona APNs emulator CA"
MAX_PAYLOAD: Final = 4096
TOKEN_HEX_LEN: Final = 64
MAX_CONCURRENT_STREAMS: Final = 1000

TENANT_REASONS: Final = {"BadCertificate": 403, "BadCertificateEnvironment": 403, "TopicDisallowed": 400}
TOKEN_REASONS: Final = {"Unregistered": 410, "BadDeviceToken": 400, "DeviceTokenNotForTopic": 400}
TRANSIENT_REASONS: Final = {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}
_PUSH_TYPES: Final = frozenset(
    {
        "alert",
        "background",
        "location",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "pushtotalk",
        "widgets",
        "controls",
    }
)

Callback = Callable[[], object]


@dataclass(frozen=True, slots=True)
class Faults:
    """Failures the emulator injects. Replace them with :meth:`ApnsEmulator.configure`."""

    fail_rate: float = 0.0  # share of otherwise valid pushes answered with fail_status
    fail_status: int = 503  # 429, 500 or 503 (with Apple's reason for it)
    goaway_every: int = 0  # send GOAWAY and close the connection on every N-th stream (0: never)
    down: bool = False  # refuse connections
    tenant_outcome: str | None = None  # BadCertificate / BadCertificateEnvironment / TopicDisallowed for all


@dataclass(frozen=True, slots=True)
class EmulatorStats:
    """Counters since start (or the last :meth:`ApnsEmulator.reset_stats`)."""

    received: int
    accepted: int
    rejected: dict[str, int]
    delivered: int
    delivery_errors: int
    goaways: int
    connections: int


@dataclass
class _Counters:
    received: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    delivery_errors: int = 0
    goaways: int = 0
    connections: int = 0
    streams: int = 0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


class _EmulatorCa:
    """The emulator's CA, persisted in the state directory so issued certificates outlive a restart."""

    def __init__(self, state_dir: Path) -> None:
        cert_path, key_path = state_dir / "ca.pem", state_dir / "ca.key"
        if cert_path.exists() and key_path.exists():
            self.cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            assert isinstance(key, rsa.RSAPrivateKey)
            self.key = key
        else:
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            name = x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pomona"),
                ]
            )
            start = _now() - dt.timedelta(minutes=5)
            self.cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(self.key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start)
                .not_valid_after(start + dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
                )
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
                )
                .sign(self.key, hashes.SHA256())
            )
            _write_private(key_path, _pem_key(self.key))
            cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        subject: x509.Name,
        key: rsa.RSAPrivateKey | rsa.RSAPublicKey,
        eku: x509.ObjectIdentifier,
        *,
        sans: list[x509.GeneralName] | None = None,
        not_before: dt.datetime | None = None,
        days: int = 365,
    ) -> x509.Certificate:
        start = not_before or (_now() - dt.timedelta(minutes=5))
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key if isinstance(key, rsa.RSAPublicKey) else key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256())


class ApnsEmulator:
    """Apple's push service, on 127.0.0.1. See the module docstring.

    ``state_dir`` keeps the CA and the TLS server identity (a temporary directory when None, removed on
    stop). ``seed`` makes injected transient failures reproducible.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        delivery_workers: int = 8,
    ) -> None:
        self._tmp = None if state_dir is not None else tempfile.mkdtemp(prefix="pomona-apns-emu-")
        self.state_dir = Path(state_dir) if state_dir is not None else Path(str(self._tmp))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port
        self._ca = _EmulatorCa(self.state_dir)
        self.ca_pem: bytes = self._ca.pem
        self._faults = Faults()
        self._token_outcomes: dict[str, str] = {}
        self._topic_outcomes: dict[str, str] = {}
        self._callbacks: dict[str, Callback] = {}
        self._counters = _Counters()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._delivery = ThreadPoolExecutor(
            max_workers=delivery_workers, thread_name_prefix="apns-emu-device"
        )
        self._ssl = self._server_context()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[_Connection] = set()
        self._cert_topics: dict[bytes, str | None] = {}
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    # -- certificates -------------------------------------------------------------------------------
    @property
    def ca_path(self) -> Path:
        """The CA certificate file (what a client must trust)."""
        return self.state_dir / "ca.pem"

    def issue_push_cert(
        self,
        topic: str | None = None,
        *,
        days: int = 365,
        not_before: dt.datetime | None = None,
        with_uid: bool = True,
    ) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) of a push certificate shaped like Apple's, for ``topic``
        (default ``com.apple.mgmt.External.<new uuid>``). ``with_uid=False`` leaves the UID out."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = self._push_cert(key.public_key(), topic, days, not_before, with_uid)
        return cert, _pem_key(key)

    def sign_push_request(self, request: str | bytes, topic: str | None = None, *, days: int = 365) -> bytes:
        """Play Apple's Push Certificates Portal: the certificate (PEM) for a push certificate request.

        ``request`` is what ``pomona apns csr`` wrote: the vendor-signed request (base64 plist, whose
        vendor signature must verify) or, for labs without a vendor certificate, the CSR (PEM). The
        certificate is for the CSR's public key; ``topic`` the same as before renews, None makes a new one
        (what another Apple ID, or a new certificate instead of a renewal, gets)."""
        data = request.encode("ascii") if isinstance(request, str) else request
        if data.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(data)
        else:
            signed = decode_vendor_signed_request(data)
            if not signed.signature_valid:
                raise ValueError("the vendor signature of this push certificate request does not verify")
            csr = signed.csr
        public = csr.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            raise ValueError("a push certificate request must carry an RSA key")
        return self._push_cert(public, topic, days, None, True)

    def _push_cert(
        self,
        public: rsa.RSAPublicKey,
        topic: str | None,
        days: int,
        not_before: dt.datetime | None,
        with_uid: bool,
    ) -> bytes:
        topic = topic or f"com.apple.mgmt.External.{uuid.uuid4()}"
        attrs = [x509.NameAttribute(NameOID.USER_ID, topic)] if with_uid else []
        attrs += [
            x509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{topic.rsplit('.', 1)[-1]}"[:64]),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
        cert = self._ca.issue(
            x509.Name(attrs), public, ExtendedKeyUsageOID.CLIENT_AUTH, not_before=not_before, days=days
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def _server_context(self) -> ssl.SSLContext:
        cert_path, key_path = self.state_dir / "server.pem", self.state_dir / "server.key"
        if not (cert_path.exists() and key_path.exists()):
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            sans: list[x509.GeneralName] = [
                x509.DNSName("localhost"),
                x509.DNSName("api.push.apple.com"),
                x509.DNSName("api.sandbox.push.apple.com"),
                x509.IPAddress(ip_address("127.0.0.1")),
                x509.IPAddress(ip_address("::1")),
            ]
            cert = self._ca.issue(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api.push.apple.com (Pomona emulator)")]),
                key,
                ExtendedKeyUsageOID.SERVER_AUTH,
                sans=sans,
                days=3650,
            )
            _write_private(key_path, _pem_key(key))
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert_path, key_path)
        ctx.load_verify_locations(cadata=self.ca_pem.decode("ascii"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["h2"])
        return ctx

    # -- behaviour ----------------------------------------------------------------------------------
    @property
    def faults(self) -> Faults:
        return self._faults

    def configure(self, **changes: Any) -> Faults:
        """Change injected failures (fields of :class:`Faults`); returns the new set."""
        if "fail_status" in changes and changes["fail_status"] not in TRANSIENT_REASONS:
            raise ValueError(f"fail_status must be one of {sorted(TRANSIENT_REASONS)}")
        outcome = changes.get("tenant_outcome")
        if outcome is not None and outcome not in TENANT_REASONS:
            raise ValueError(f"tenant_outcome must be one of {sorted(TENANT_REASONS)} or None")
        with self._lock:
            old = self._faults
            self._faults = new = replace(old, **changes)
        if new.down != old.down and self._loop is not None:
            self._loop.call_soon_threadsafe(self._apply_down, new.down)
        return new

    def reset_faults(self) -> None:
        """No injected failure at all (per-token and per-topic outcomes included)."""
        self.configure(**asdict(Faults()))
        with self._lock:
            self._token_outcomes.clear()
            self._topic_outcomes.clear()

    def set_token_outcome(self, token_hex: str, reason: str | None) -> None:
        """Answer pushes to this token with Unregistered, BadDeviceToken or DeviceTokenNotForTopic
        (None: accept again)."""
        if reason is not None and reason not in TOKEN_REASONS:
            raise ValueError(f"reason must be one of {sorted(TOKEN_REASONS)} or None")
        with self._lock:
            if reason is None:
                self._token_outcomes.pop(token_hex.lower(), None)
            else:
                self._token_outcomes[token_hex.lower()] = reason

    def set_topic_outcome(self, topic: str, reason: str | None) -> None:
        """Answer every push for this topic with BadCertificate, BadCertificateEnvironment or
        TopicDisallowed (None: accept again)."""
        if reason is not None and reason not in TENANT_REASONS:
            raise ValueError(f"reason must be one of {sorted(TENANT_REASONS)} or None")
        with self._lock:
            if reason is None:
                self._topic_outcomes.pop(topic, None)
            else:
                self._topic_outcomes[topic] = reason

    def register(self, token_hex: str, callback: Callback) -> None:
        """Wake ``callback`` (in a worker thread) for every accepted push to this token."""
        with self._lock:
            self._callbacks[token_hex.lower()] = callback

    def unregister(self, token_hex: str) -> None:
        with self._lock:
            self._callbacks.pop(token_hex.lower(), None)

    def stats(self) -> EmulatorStats:
        with self._lock:
            c = self._counters
            return EmulatorStats(
                c.received,
                c.accepted,
                dict(c.rejected),
                c.delivered,
                c.delivery_errors,
                c.goaways,
                c.connections,
            )

    def reset_stats(self) -> None:
        with self._lock:
            self._counters = _Counters()

    def wait_delivered(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``count`` device callbacks have run (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats().delivered >= count:
                return True
            time.sleep(0.01)
        return self.stats().delivered >= count

    # -- running ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Serve until :meth:`stop` (the CLI runs this with ``asyncio.run``)."""
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        if not self._faults.down:
            await self._listen()
        elif self.port == 0:
            raise ValueError("an emulator started down needs a fixed port")
        if ready is not None:
            ready()
        try:
            await self._stopped.wait()
        finally:
            await self._close_listener()
            for conn in list(self._conns):
                conn.abort()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, ssl=self._ssl, reuse_address=True, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    def _apply_down(self, down: bool) -> None:
        loop = self._loop
        assert loop is not None
        if down:
            server, self._server = self._server, None
            if server is not None:
                server.close()
            for conn in list(self._conns):
                conn.abort()
        elif self._server is None:
            loop.create_task(self._listen())

    def stop(self) -> None:
        """Stop serving (thread-safe)."""
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopped.set)

    @classmethod
    @contextlib.contextmanager
    def start(cls, state_dir: Path | None = None, **kwargs: Any) -> Iterator[ApnsEmulator]:
        """Run an emulator in a background thread for the ``with`` block."""
        emu = cls(state_dir, **kwargs)
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(emu.serve(ready.set))
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                errors.append(exc)
                ready.set()

        emu._thread = threading.Thread(target=run, name="pomona-apns-emulator", daemon=True)
        emu._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        try:
            yield emu
        finally:
            emu.stop()
            emu._thread.join(10)
            emu.close()

    def close(self) -> None:
        """Release the delivery threads and the temporary state directory (if the emulator made one)."""
        self._delivery.shutdown(wait=True, cancel_futures=True)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    # -- request handling (event loop thread) -------------------------------------------------------
    def _topic_of(self, der: bytes) -> str | None:
        if der not in self._cert_topics:
            self._cert_topics[der] = push_topic_of(x509.load_der_x509_certificate(der))
        return self._cert_topics[der]

    def _next_stream(self) -> int:
        with self._lock:
            self._counters.streams += 1
            return self._counters.streams

    def _count_connection(self, delta: int) -> None:
        with self._lock:
            self._counters.connections += delta

    def _count_goaway(self) -> None:
        with self._lock:
            self._counters.goaways += 1

    def handle(
        self, cert_topic: str | None, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Apple's answer to one request: (status, headers, body)."""
        if path.startswith("/_emulator/"):
            return self._control(method, path, body)
        with self._lock:
            self._counters.received += 1
        status, reason, apns_id, token = self._check(cert_topic, method, path, headers, body)
        if status == 200:
            with self._lock:
                self._counters.accepted += 1
                callback = self._callbacks.get(token)
            if callback is not None:
                self._delivery.submit(self._deliver, callback)
            return 200, {"apns-id": apns_id}, b""
        assert reason is not None
        with self._lock:
            self._counters.rejected[reason] += 1
        payload: dict[str, object] = {"reason": reason}
        if status == 410:
            payload["timestamp"] = int(time.time() * 1000)
        return status, {"apns-id": apns_id, "content-type": "application/json"}, json.dumps(payload).encode()

    def _check(
        self, cert_topic: str | None, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str | None, str, str]:
        names = [k for k, _ in headers]
        hdr = dict(headers)
        apns_id = hdr.get("apns-id") or str(uuid.uuid4())
        if method != "POST":
            return 405, "MethodNotAllowed", apns_id, ""
        if not path.startswith("/3/device/"):
            return 404, "BadPath", apns_id, ""
        token = path[len("/3/device/") :].lower()
        if not token:
            return 400, "MissingDeviceToken", apns_id, ""
        if "/" in token:
            return 404, "BadPath", apns_id, ""
        if cert_topic is None:
            return 403, "BadCertificate", apns_id, token
        with self._lock:
            faults = self._faults
            tenant = self._topic_outcomes.get(cert_topic) or faults.tenant_outcome
            token_outcome = self._token_outcomes.get(token)
        if tenant is not None:
            return TENANT_REASONS[tenant], tenant, apns_id, token
        if len(names) != len(set(names)):
            return 400, "DuplicateHeaders", apns_id, token
        topic = hdr.get("apns-topic", cert_topic)
        if topic != cert_topic:
            return 400, "TopicDisallowed", apns_id, token
        if "apns-id" in hdr and not _is_uuid(hdr["apns-id"]):
            return 400, "BadMessageId", str(uuid.uuid4()), token
        if "apns-push-type" in hdr and hdr["apns-push-type"] not in _PUSH_TYPES:
            return 400, "InvalidPushType", apns_id, token
        if hdr.get("apns-priority", "10") not in ("1", "5", "10"):
            return 400, "BadPriority", apns_id, token
        if "apns-expiration" in hdr and not hdr["apns-expiration"].isdigit():
            return 400, "BadExpirationDate", apns_id, token
        if len(token) != TOKEN_HEX_LEN or any(c not in "0123456789abcdef" for c in token):
            return 400, "BadDeviceToken", apns_id, token
        if not body:
            return 400, "PayloadEmpty", apns_id, token
        if len(body) > MAX_PAYLOAD:
            return 413, "PayloadTooLarge", apns_id, token
        if not _is_mdm_payload(body):
            return 400, "BadMessage", apns_id, token
        if faults.fail_rate and self._rng.random() < faults.fail_rate:
            return faults.fail_status, TRANSIENT_REASONS[faults.fail_status], apns_id, token
        if token_outcome is not None:
            return TOKEN_REASONS[token_outcome], token_outcome, apns_id, token
        return 200, None, apns_id, token

    def _deliver(self, callback: Callback) -> None:
        try:
            callback()
        except Exception:  # noqa: BLE001 - a device's failure is counted, not raised into the emulator
            with self._lock:
                self._counters.delivery_errors += 1
        else:
            with self._lock:
                self._counters.delivered += 1

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        json_type = {"content-type": "application/json"}
        if path == "/_emulator/stats" and method == "GET":
            return 200, json_type, json.dumps(asdict(self.stats())).encode()
        if path == "/_emulator/config" and method == "POST":
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object")
                faults = self.configure(**changes)
            except (ValueError, TypeError) as exc:
                return 400, json_type, json.dumps({"reason": "BadConfig", "detail": str(exc)}).encode()
            return 200, json_type, json.dumps(asdict(faults)).encode()
        return 404, json_type, b'{"reason":"BadPath"}'


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


def _is_mdm_payload(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get("mdm"), str) and bool(data["mdm"])


class _Connection(asyncio.Protocol):
    """One client connection: the h2 state machine fed from the TLS transport, answered synchronously."""

    def __init__(self, emu: ApnsEmulator) -> None:
        self.emu = emu
        self.transport: asyncio.Transport | None = None
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.cert_topic: str | None = None
        self.requests: dict[int, tuple[list[tuple[str, str]], bytearray]] = {}
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der or ssl_object.selected_alpn_protocol() != "h2":
            transport.abort()
            return
        self.cert_topic = self.emu._topic_of(der)
        self.emu._conns.add(self)
        self.emu._count_connection(1)
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS},
        )
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.emu._conns:
            self.emu._conns.discard(self)
            self.emu._count_connection(-1)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.closing or self.transport is None:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.transport.write(self.conn.data_to_send())
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers = [(str(k), str(v)) for k, v in event.headers]
                self.requests[event.stream_id] = (headers, bytearray())
                every = self.emu.faults.goaway_every
                if every and self.emu._next_stream() % every == 0:
                    self._goaway(event.stream_id)
                    return
                if event.stream_ended is not None:
                    self._respond(event.stream_id)
            elif isinstance(event, h2.events.DataReceived):
                entry = self.requests.get(event.stream_id)
                if entry is not None:
                    entry[1].extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._respond(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.requests.pop(event.stream_id, None)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.transport.write(self.conn.data_to_send())
                self.transport.close()
                return
        data_out = self.conn.data_to_send()
        if data_out:
            self.transport.write(data_out)

    def _goaway(self, stream_id: int) -> None:
        """GOAWAY naming the streams before this one as processed; then close, abandoning open streams."""
        assert self.transport is not None
        self.closing = True
        self.emu._count_goaway()
        self.conn.close_connection(
            error_code=h2.errors.ErrorCodes.NO_ERROR,
            additional_data=b'{"reason":"Shutdown"}',
            last_stream_id=max(0, stream_id - 2),
        )
        self.transport.write(self.conn.data_to_send())
        self.transport.close()

    def _respond(self, stream_id: int) -> None:
        entry = self.requests.pop(stream_id, None)
        if entry is None:
            return
        headers, body = entry
        pseudo = {k: v for k, v in headers if k.startswith(":")}
        plain = [(k, v) for k, v in headers if not k.startswith(":")]
        status, out_headers, out_body = self.emu.handle(
            self.cert_topic, pseudo.get(":method", ""), pseudo.get(":path", ""), plain, bytes(body)
        )
        response = [(":status", str(status)), *out_headers.items()]
        if out_body:
            response.append(("content-length", str(len(out_body))))
        try:
            self.conn.send_headers(stream_id, response, end_stream=not out_body)
            if out_body:
                self.conn.send_data(stream_id, out_body, end_stream=True)
        except h2.exceptions.StreamClosedError:
            pass
