"""The APNs client: wakes devices with MDM pushes over HTTP/2, authenticated by the tenant's push certificate.

Apple references:
https://developer.apple.com/documentation/devicemanagement/sending-mdm-commands-to-a-device
https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns
https://developer.apple.com/documentation/usernotifications/handling-notification-responses-from-apns

An MDM push is ``POST /3/device/<token hex>`` with body exactly ``{"mdm":"<PushMagic>"}`` and the headers
``apns-topic`` (the certificate's subject UID), ``apns-push-type: mdm``, ``apns-priority: 10`` and, when
given, ``apns-expiration``. The TLS client identity is the tenant's MDM push certificate.

Every answer is reduced by ONE function, :func:`classify`, to an outcome and a Pomona ``ReasonCode``:

==============================================================  ==================  =========================
Apple's answer                                                  outcome             reason_code
==============================================================  ==================  =========================
200                                                             delivered           None
410 Unregistered / ExpiredToken                                 device_permanent    PUSH_TOKEN_UNREGISTERED
400 BadDeviceToken, DeviceTokenNotForTopic, any other 4xx       device_permanent    PUSH_REJECTED
    (a request Apple calls malformed: not retried, never the
    reason to stop pushing for the whole tenant)
403 BadCertificate, BadCertificateEnvironment, Forbidden,       tenant_permanent    APNS_CERT_INVALID
400 TopicDisallowed, BadTopic, MissingTopic
no push certificate for the topic (checked locally)             tenant_permanent    APNS_CERT_MISSING
429 TooManyRequests                                             transient           PUSH_REJECTED
500, 503 ServiceUnavailable / Shutdown, IdleTimeout, other 5xx  transient           PUSH_UNREACHABLE
no answer: connect/TLS error, GOAWAY, reset, protocol error     transient           PUSH_UNREACHABLE
==============================================================  ==================  =========================

Transient failures are retried inside the client, with capped exponential backoff and full jitter, up to
``max_attempts`` times; only then is a push reported ``transient``. Resending is always safe: an MDM push
is an idempotent wake-up, so delivery is at least once: a stream cut off by a lost connection is resent
(it may have been delivered). A stream the server certainly did not process (above the ``last_stream_id``
of a GOAWAY, or refused with RST_STREAM REFUSED_STREAM) is resent at once on another connection, without
backoff and without counting an attempt (up to ``max_attempts`` such resends). The same ``apns-id`` is
sent on every attempt of one push.

Connections: one pool per topic, keyed by the SHA-256 fingerprint of the certificate; a new certificate
for a topic builds a new pool, and the old one is closed once its in-flight requests finish. A pool is up
to ``connections`` HTTP/2 connections (:mod:`pomona.push.h2conn`: the ``h2`` state machine on asyncio TLS
transports, writes batched once per event-loop turn), each carrying up to the server's
``SETTINGS_MAX_CONCURRENT_STREAMS`` streams (APNs: about 1000); ``max_streams`` bounds the requests in
flight per topic. The headers go in Apple's order: ``:method``, ``:path``, ``:scheme``, ``:authority``,
``apns-topic``, ``apns-push-type``, ``apns-expiration``, ``apns-priority``, ``apns-id``.

Event loops and threads: an :class:`ApnsClient` belongs to ONE event loop, the first one that calls
:meth:`ApnsClient.send` (using it from another raises ``RuntimeError``). Sync code calls
:meth:`ApnsClient.send_sync`, which runs the client on its own background loop thread and may be called
from any number of threads at once. A client is used either way, not both. Identities may be set from
any thread.

The module keeps no storage: certificates come from :meth:`ApnsClient.set_identity` or from an
:class:`IdentitySource` the caller provides (e.g. one reading the tenant store). Sending records nothing:
the caller turns :class:`PushResult` values into events and queue updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import ssl
import tempfile
import threading
import uuid
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Final, NamedTuple, Protocol, TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pomona.domain.reasons import ReasonCode
from pomona.ports import PushOutcome
from pomona.protocol.apns import push_topic_of
from pomona.push.h2conn import H2Error, H2Pool, unindexed

__all__ = [
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "ApnsClient",
    "ApnsReason",
    "Classification",
    "IdentitySource",
    "Outcome",
    "Push",
    "PushIdentity",
    "PushResult",
    "classify",
    "mdm_payload",
    "normalize_token",
]

PRODUCTION_URL: Final = "https://api.push.apple.com"
SANDBOX_URL: Final = "https://api.sandbox.push.apple.com"

Outcome = PushOutcome  # the port's enum: delivered | device_permanent | tenant_permanent | transient

T = TypeVar("T")


class ApnsReason(StrEnum):
    """Apple's ``reason`` strings (the JSON body of a failed request, or the data of a GOAWAY frame)."""

    # 400
    BAD_COLLAPSE_ID = "BadCollapseId"
    BAD_DEVICE_TOKEN = "BadDeviceToken"
    BAD_EXPIRATION_DATE = "BadExpirationDate"
    BAD_MESSAGE_ID = "BadMessageId"
    BAD_PRIORITY = "BadPriority"
    BAD_TOPIC = "BadTopic"
    DEVICE_TOKEN_NOT_FOR_TOPIC = "DeviceTokenNotForTopic"
    DUPLICATE_HEADERS = "DuplicateHeaders"
    IDLE_TIMEOUT = "IdleTimeout"
    INVALID_PUSH_TYPE = "InvalidPushType"
    MISSING_DEVICE_TOKEN = "MissingDeviceToken"
    MISSING_TOPIC = "MissingTopic"
    PAYLOAD_EMPTY = "PayloadEmpty"
    TOPIC_DISALLOWED = "TopicDisallowed"
    # 403
    BAD_CERTIFICATE = "BadCertificate"
    BAD_CERTIFICATE_ENVIRONMENT = "BadCertificateEnvironment"
    EXPIRED_PROVIDER_TOKEN = "ExpiredProviderToken"
    FORBIDDEN = "Forbidden"
    INVALID_PROVIDER_TOKEN = "InvalidProviderToken"
    MISSING_PROVIDER_TOKEN = "MissingProviderToken"
    # 404, 405
    BAD_PATH = "BadPath"
    METHOD_NOT_ALLOWED = "MethodNotAllowed"
    # 410
    EXPIRED_TOKEN = "ExpiredToken"
    UNREGISTERED = "Unregistered"
    # 413
    PAYLOAD_TOO_LARGE = "PayloadTooLarge"
    # 429
    TOO_MANY_PROVIDER_TOKEN_UPDATES = "TooManyProviderTokenUpdates"
    TOO_MANY_REQUESTS = "TooManyRequests"
    # 500, 503
    INTERNAL_SERVER_ERROR = "InternalServerError"
    SERVICE_UNAVAILABLE = "ServiceUnavailable"
    SHUTDOWN = "Shutdown"


#: Apple's HTTP status for each reason (what the emulator answers).
REASON_STATUS: Final[dict[ApnsReason, int]] = {
    **{
        r: 400
        for r in (
            ApnsReason.BAD_COLLAPSE_ID,
            ApnsReason.BAD_DEVICE_TOKEN,
            ApnsReason.BAD_EXPIRATION_DATE,
            ApnsReason.BAD_MESSAGE_ID,
            ApnsReason.BAD_PRIORITY,
            ApnsReason.BAD_TOPIC,
            ApnsReason.DEVICE_TOKEN_NOT_FOR_TOPIC,
            ApnsReason.DUPLICATE_HEADERS,
            ApnsReason.IDLE_TIMEOUT,
            ApnsReason.INVALID_PUSH_TYPE,
            ApnsReason.MISSING_DEVICE_TOKEN,
            ApnsReason.MISSING_TOPIC,
            ApnsReason.PAYLOAD_EMPTY,
            ApnsReason.TOPIC_DISALLOWED,
        )
    },
    **{
        r: 403
        for r in (
            ApnsReason.BAD_CERTIFICATE,
            ApnsReason.BAD_CERTIFICATE_ENVIRONMENT,
            ApnsReason.EXPIRED_PROVIDER_TOKEN,
            ApnsReason.FORBIDDEN,
            ApnsReason.INVALID_PROVIDER_TOKEN,
            ApnsReason.MISSING_PROVIDER_TOKEN,
        )
    },
    ApnsReason.BAD_PATH: 404,
    ApnsReason.METHOD_NOT_ALLOWED: 405,
    ApnsReason.EXPIRED_TOKEN: 410,
    ApnsReason.UNREGISTERED: 410,
    ApnsReason.PAYLOAD_TOO_LARGE: 413,
    ApnsReason.TOO_MANY_PROVIDER_TOKEN_UPDATES: 429,
    ApnsReason.TOO_MANY_REQUESTS: 429,
    ApnsReason.INTERNAL_SERVER_ERROR: 500,
    ApnsReason.SERVICE_UNAVAILABLE: 503,
    ApnsReason.SHUTDOWN: 503,
}

_UNREGISTERED: Final = frozenset({ApnsReason.UNREGISTERED, ApnsReason.EXPIRED_TOKEN})
_TENANT: Final = frozenset(
    {
        ApnsReason.BAD_CERTIFICATE,
        ApnsReason.BAD_CERTIFICATE_ENVIRONMENT,
        ApnsReason.FORBIDDEN,
        ApnsReason.TOPIC_DISALLOWED,
        ApnsReason.BAD_TOPIC,
        ApnsReason.MISSING_TOPIC,
    }
)
_TRANSIENT: Final = frozenset(
    {
        ApnsReason.TOO_MANY_REQUESTS,
        ApnsReason.INTERNAL_SERVER_ERROR,
        ApnsReason.SERVICE_UNAVAILABLE,
        ApnsReason.SHUTDOWN,
        ApnsReason.IDLE_TIMEOUT,
    }
)


class Classification(NamedTuple):
    outcome: Outcome
    reason_code: ReasonCode | None


def classify(status: int | None, reason: str | None) -> Classification:
    """What Apple's answer means for Pomona: the one place that says which failures are permanent.

    ``status`` is None when there was no HTTP answer (connect/TLS error, GOAWAY, reset).
    """
    if status is None:
        return Classification(PushOutcome.TRANSIENT, ReasonCode.PUSH_UNREACHABLE)
    if status == 200:
        return Classification(PushOutcome.DELIVERED, None)
    if reason in _UNREGISTERED or status == 410:
        return Classification(PushOutcome.DEVICE_PERMANENT, ReasonCode.PUSH_TOKEN_UNREGISTERED)
    if reason in _TENANT or status == 403:
        return Classification(PushOutcome.TENANT_PERMANENT, ReasonCode.APNS_CERT_INVALID)
    if status == 429:
        return Classification(PushOutcome.TRANSIENT, ReasonCode.PUSH_REJECTED)
    if reason in _TRANSIENT or status >= 500:
        return Classification(PushOutcome.TRANSIENT, ReasonCode.PUSH_UNREACHABLE)
    return Classification(PushOutcome.DEVICE_PERMANENT, ReasonCode.PUSH_REJECTED)


def normalize_token(token: bytes | str) -> str | None:
    """The lowercase hex form of a device token (raw bytes or hex), or None when it is not hex."""
    if isinstance(token, bytes):
        return token.hex() if token else None
    text = token.strip().lower()
    if not text or len(text) % 2:
        return None
    try:
        bytes.fromhex(text)
    except ValueError:
        return None
    return text


def mdm_payload(push_magic: str) -> bytes:
    """The body of an MDM push: exactly ``{"mdm":"<PushMagic>"}``."""
    return json.dumps({"mdm": push_magic}, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Push:
    """One wake-up for one device. ``token`` is the device's push token (raw bytes, or hex)."""

    token: bytes | str
    push_magic: str
    topic: str
    expiration: int | None = None  # UNIX seconds; None lets APNs store and forward as it does by default


@dataclass(frozen=True, slots=True)
class PushResult:
    """What happened to one push, after retries.

    ``status``/``reason`` are Apple's (None when APNs never answered, or when the push was refused
    locally); ``timestamp`` is Apple's time the token was last known valid (410 only); ``detail`` says
    what went wrong on the wire or locally, for events and troubleshooting.
    """

    token_hex: str
    status: int | None
    reason: str | None
    apns_id: str | None
    outcome: Outcome
    reason_code: ReasonCode | None
    timestamp: datetime | None = None
    topic: str = ""
    attempts: int = 1
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class PushIdentity:
    """A tenant's push certificate and key (PEM), with its topic and SHA-256 fingerprint."""

    cert_pem: bytes
    key_pem: bytes
    topic: str
    fingerprint: str

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes, topic: str | None = None) -> PushIdentity:
        """The identity for a certificate; the topic defaults to the certificate's subject UID."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        topic = topic or push_topic_of(cert)
        if not topic:
            raise ValueError("the push certificate has no subject UID (topic); pass topic= explicitly")
        fingerprint = hashlib.sha256(cert.public_bytes(_DER)).hexdigest()
        return cls(cert_pem, key_pem, topic, fingerprint)


class IdentitySource(Protocol):
    """Where the client finds the push certificate for a topic (e.g. the tenant store)."""

    def identity_for(self, topic: str) -> PushIdentity | None: ...


_DER: Final = Encoding.DER


def _secure_tmpdir() -> str | None:
    """A memory-backed directory for the moment the key must be a file (None: the default temp dir)."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def build_ssl_context(
    identity: PushIdentity, verify: ssl.SSLContext | str | bytes | bool = True
) -> ssl.SSLContext:
    """A TLS client context presenting ``identity``; ``verify`` is True (system CAs), a CA bundle path,
    CA PEM bytes, False (no verification: tests only) or a ready context to copy trust from."""
    if isinstance(verify, ssl.SSLContext):
        ctx = verify
    else:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if isinstance(verify, bytes):
            ctx.load_verify_locations(cadata=verify.decode("ascii"))
        elif isinstance(verify, str):
            ctx.load_verify_locations(cafile=verify)
        elif verify is False:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    # load_cert_chain reads files only: a private 0600 file, removed as soon as it is read.
    fd, path = tempfile.mkstemp(prefix="pomona-apns-", suffix=".pem", dir=_secure_tmpdir())
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(identity.cert_pem.rstrip(b"\n") + b"\n" + identity.key_pem)
        ctx.load_cert_chain(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
    ctx.set_alpn_protocols(["h2"])
    return ctx


_METHOD: Final = (b":method", b"POST")
_SCHEME: Final = (b":scheme", b"https")
_PUSH_TYPE: Final = (b"apns-push-type", b"mdm")
_PRIORITY: Final = (b"apns-priority", b"10")


@dataclass(eq=False)
class _Pool:
    """One topic's connections (an :class:`H2Pool`) and the certificate they present."""

    h2: H2Pool
    fingerprint: str
    topic: tuple[bytes, bytes]  # the apns-topic header
    retired: bool = False

    async def close_when_idle(self) -> None:
        while self.h2.inflight:
            await asyncio.sleep(0.05)
        await self.h2.aclose()


@dataclass
class _Identities:
    by_topic: dict[str, PushIdentity] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ApnsClient:
    """Sends MDM pushes to APNs (or to the emulator: pass its ``url`` and ``ca_pem``).

    ``max_streams`` bounds the requests in flight per topic; ``max_attempts`` is the number of tries per
    push (the first one included) for transient failures; backoff doubles from ``backoff`` up to
    ``max_backoff`` seconds, with full jitter. ``connections`` is the number of HTTP/2 connections per
    topic, opened as needed: each carries about ``max_streams / connections`` streams, more when another
    connection is not open yet, never more than the server's ``SETTINGS_MAX_CONCURRENT_STREAMS`` (APNs:
    about 1000). ``timeout`` bounds connecting (TCP, TLS and the HTTP/2 preface), each answer and the
    wait for a free stream.
    """

    def __init__(
        self,
        identities: IdentitySource | None = None,
        *,
        base_url: str = PRODUCTION_URL,
        verify: ssl.SSLContext | str | bytes | bool = True,
        max_streams: int = 500,
        max_attempts: int = 5,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        timeout: float = 10.0,
        connections: int = 5,
    ) -> None:
        if max_streams < 1 or max_attempts < 1 or connections < 1:
            raise ValueError("max_streams, max_attempts and connections must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.verify = verify
        self.max_streams = max_streams
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.connections = connections
        self.pools_built = 0  # how many pools were built: a new certificate for a topic builds one more
        self._source = identities
        self._identities = _Identities()
        self._pools: dict[str, _Pool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_lock = threading.Lock()
        self._closers: set[asyncio.Task[None]] = set()
        self._rng = random.Random()
        parsed = urlsplit(self.base_url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise ValueError(f"base_url must be https://host[:port], not {base_url!r}")
        self._host = parsed.hostname
        self._port = parsed.port or 443
        self._authority = (b":authority", parsed.netloc.encode("idna"))

    # -- identities ---------------------------------------------------------------------------------
    def set_identity(self, cert_pem: bytes, key_pem: bytes, topic: str | None = None) -> PushIdentity:
        """Use this certificate for its topic from now on (replacing any earlier one)."""
        identity = PushIdentity.from_pem(cert_pem, key_pem, topic)
        with self._identities.lock:
            self._identities.by_topic[identity.topic] = identity
        return identity

    def remove_identity(self, topic: str) -> None:
        with self._identities.lock:
            self._identities.by_topic.pop(topic, None)

    def identity_for(self, topic: str) -> PushIdentity | None:
        """The identity set for ``topic``, else the one the identity source gives."""
        found = self._identities.by_topic.get(topic)
        if found is None and self._source is not None:
            found = self._source.identity_for(topic)
        return found

    def pool_fingerprint(self, topic: str) -> str | None:
        """The certificate fingerprint of the topic's current connection pool (None: no pool yet)."""
        pool = self._pools.get(topic)
        return pool.fingerprint if pool else None

    # -- sending ------------------------------------------------------------------------------------
    async def send(self, pushes: Sequence[Push]) -> list[PushResult]:
        """Send every push (concurrently, retrying transient failures); one result per push, in order."""
        self._check_loop()
        results: list[PushResult | None] = [None] * len(pushes)
        by_topic: dict[str, list[int]] = {}
        for i, p in enumerate(pushes):
            by_topic.setdefault(p.topic, []).append(i)
        await asyncio.gather(
            *(self._send_topic(topic, idx, pushes, results) for topic, idx in by_topic.items())
        )
        return [r for r in results if r is not None]

    def send_sync(self, pushes: Sequence[Push], timeout: float | None = None) -> list[PushResult]:
        """:meth:`send` for sync code (CLI, worker threads): runs on the client's own loop thread."""
        return self._run_in_thread(self.send(pushes), timeout)

    async def aclose(self) -> None:
        """Close every connection pool (of the loop the client belongs to)."""
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.h2.aclose()
        for task in list(self._closers):
            await task

    def close(self) -> None:
        """Close the pools and stop the background loop thread, if :meth:`send_sync` started one."""
        with self._thread_lock:
            loop, thread = self._thread_loop, self._thread
            self._thread_loop = self._thread = None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    async def __aenter__(self) -> ApnsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> ApnsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------------
    def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("an ApnsClient belongs to the event loop that first used it")

    def _run_in_thread(self, coro: Coroutine[object, object, T], timeout: float | None) -> T:
        with self._thread_lock:
            if self._thread_loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="pomona-apns", daemon=True)
                thread.start()
                self._thread_loop, self._thread = loop, thread
            loop = self._thread_loop
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("send_sync called from the client's own loop thread: await send() instead")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def _pool_for(self, identity: PushIdentity) -> _Pool:
        pool = self._pools.get(identity.topic)
        if pool is not None and pool.fingerprint == identity.fingerprint:
            return pool
        ctx = build_ssl_context(identity, self.verify)
        new = _Pool(
            H2Pool(
                self._host,
                self._port,
                ctx,
                connections=self.connections,
                max_inflight=self.max_streams,
                timeout=self.timeout,
            ),
            identity.fingerprint,
            (b"apns-topic", identity.topic.encode()),
        )
        self._pools[identity.topic] = new
        self.pools_built += 1
        if pool is not None:
            pool.retired = True
            task = asyncio.get_running_loop().create_task(pool.close_when_idle())
            self._closers.add(task)
            task.add_done_callback(self._closers.discard)
        return new

    async def _send_topic(
        self, topic: str, indices: list[int], pushes: Sequence[Push], results: list[PushResult | None]
    ) -> None:
        identity = self.identity_for(topic)
        if identity is None:
            for i in indices:
                results[i] = _local_result(
                    pushes[i],
                    PushOutcome.TENANT_PERMANENT,
                    ReasonCode.APNS_CERT_MISSING,
                    None,
                    f"no push certificate for topic {topic}",
                )
            return
        queue = iter(indices)

        async def worker() -> None:
            for i in queue:
                results[i] = await self._send_one(identity, pushes[i])

        await asyncio.gather(*(worker() for _ in range(min(len(indices), self.max_streams))))

    async def _send_one(self, identity: PushIdentity, push: Push) -> PushResult:
        token = normalize_token(push.token)
        if token is None:
            return _local_result(
                push,
                PushOutcome.DEVICE_PERMANENT,
                ReasonCode.PUSH_REJECTED,
                ApnsReason.BAD_DEVICE_TOKEN.value,
                "the device token is not hex (checked locally, not sent)",
            )
        apns_id = str(uuid.uuid4())
        body = mdm_payload(push.push_magic)
        # Apple's order: pseudo-headers, then topic, push type, expiration, priority, id.
        tail: list[tuple[bytes, bytes]] = [_PUSH_TYPE, _PRIORITY, unindexed(b"apns-id", apns_id.encode())]
        if push.expiration is not None:
            tail.insert(1, (b"apns-expiration", str(push.expiration).encode()))
        path = unindexed(b":path", b"/3/device/" + token.encode())
        attempt = 0
        refusals = 0
        while True:
            attempt += 1
            status: int | None = None
            reason: str | None = None
            detail: str | None = None
            stamp: datetime | None = None
            answered_id = apns_id
            try:
                while True:
                    pool = self._pool_for(identity)
                    future = pool.h2.try_submit(
                        [_METHOD, path, _SCHEME, self._authority, pool.topic, *tail], body
                    )
                    if future is not None:
                        break
                    await pool.h2.wait()
                response = await future
                status = response.status
                for name, value in response.headers:
                    if name == b"apns-id":
                        answered_id = value.decode("ascii", "replace")
                if status != 200:
                    reason, stamp = _error_body(response.body)
            except H2Error as exc:
                detail = f"{type(exc).__name__}: {exc}"[:300]
                if exc.refused and refusals < self.max_attempts:
                    # Never processed (GOAWAY above its last stream, REFUSED_STREAM): resend at once,
                    # on another connection, without counting an attempt.
                    refusals += 1
                    attempt -= 1
                    continue
            outcome, code = classify(status, reason)
            if outcome is not PushOutcome.TRANSIENT or attempt >= self.max_attempts:
                return PushResult(
                    token, status, reason, answered_id, outcome, code, stamp, identity.topic, attempt, detail
                )
            delay = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
            await asyncio.sleep(self._rng.uniform(0, delay))


def _local_result(
    push: Push, outcome: Outcome, code: ReasonCode, reason: str | None, detail: str
) -> PushResult:
    token = normalize_token(push.token) or (push.token.hex() if isinstance(push.token, bytes) else push.token)
    return PushResult(token, None, reason, None, outcome, code, None, push.topic, 0, detail)


def _error_body(content: bytes) -> tuple[str | None, datetime | None]:
    """Apple's ``{"reason": ..., "timestamp": ms}`` error body (tolerating anything else)."""
    try:
        data = json.loads(content)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    reason = data.get("reason")
    stamp = data.get("timestamp")
    when = datetime.fromtimestamp(stamp / 1000, UTC) if isinstance(stamp, int | float) else None
    return (reason if isinstance(reason, str) else None), when


def send_pushes(
    pushes: Iterable[Push],
    identities: Iterable[tuple[bytes, bytes]],
    *,
    base_url: str = PRODUCTION_URL,
    verify: ssl.SSLContext | str | bytes | bool = True,
) -> list[PushResult]:
    """One-shot sync helper for the CLI: a client for these certificates, the pushes, then close."""
    with ApnsClient(base_url=base_url, verify=verify) as client:
        for cert_pem, key_pem in identities:
            client.set_identity(cert_pem, key_pem)
        return client.send_sync(list(pushes))
