"""The ASGI entry: device endpoints are served by a lean raw-ASGI handler (they are the hot path:
every check-in of every device), everything else by the FastAPI admin application.

Device endpoints:
    GET       /enroll/{token}              the signed enrollment profile (a refusal: the device answer,
                                           or for a browser a page, http/link_pages.py)
    GET|POST  /scep/{tenant_id}            SCEP (GetCACaps, GetCACert, PKIOperation)
    POST      /ade/{tenant_id}/enroll      an ADE device's signed MachineInfo -> its enrollment profile
                                           (services/ade.py; the web view /ade/{tenant_id}/web is
                                           http/ade.py's, behind RequestLimits like the portal)
    PUT       /mdm/{tenant_id}/checkin     check-in messages (CheckInURL)
    PUT       /mdm/{tenant_id}/connect     the command channel (ServerURL)
Both MDM URLs route by Content-Type, as Apple's devices label their messages.

Operations:
    GET       /metrics                     Prometheus text (pomona/metrics.py): for the addresses of
                                           POMONA_METRICS_ALLOW (loopback by default), else with a
                                           server-wide API token; anyone else gets 401 API_AUTH_FAILED
                                           after an address check and, with a bearer token, one indexed
                                           read (no work before that: a refusal costs microseconds).
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import cached_property
from os import urandom
from typing import Any
from urllib.parse import parse_qsl

from pomona.domain.errors import (
    BodyTooLargeError,
    ErrorResponse,
    ForbiddenError,
    StorageBusyError,
    describe,
)
from pomona.http.link_pages import PAGE_HEADERS, PAGE_TYPE, LinkRefusalPage, wants_page
from pomona.http.middleware import (
    API_BODY_LIMITS,
    METHODS,
    PORTAL_BODY_LIMITS,
    ASGIApp,
    RequestLimits,
    RequestMetrics,
    TrustedProxies,
    is_local_caller,
    log_internal,
    route_template,
)
from pomona.services.ade import MAX_MACHINE_INFO, AdeAnswer, AdeAnswerKind
from pomona.services.checkin import MAX_BODY
from pomona.services.container import Services
from pomona.services.context import bind_caller, bind_request_id, reset_caller, reset_request_id
from pomona.services.enrollment import PROFILE_CONTENT_TYPE

log = logging.getLogger("pomona.http")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Answer = tuple[int, bytes, str | None]  # status, body, content type
ErrorAnswer = Callable[[BaseException, str], Answer]  # the answer to an error, given the request id

CHECKIN_TYPE = "application/x-apple-aspen-mdm-checkin"
COMMAND_TYPE = "application/x-apple-aspen-mdm"
MAX_SCEP_BODY = 256 * 1024
INLINE_BODY = 64 * 1024  # a check-in or command report larger than this is handled off the event loop
_IDLE = re.compile(rb"<key>Status</key>\s*<string>Idle</string>")


def looks_idle(body: bytes) -> bool:
    """Whether a command-channel body reads as an Idle report (``Status`` ``Idle``, as devices write
    their XML plists), without decoding it: every other report carries a result. It decides only where
    the request runs (RootApp._run): a body it misjudges is handled alike, inline or on a thread."""
    return _IDLE.search(body) is not None


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request body, or BodyTooLargeError as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"body larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str | None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> int:
    """Send a whole response; its status comes back (the device endpoints count it for /metrics)."""
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type:
        headers.append((b"content-type", content_type.encode()))
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status


def described(exc: BaseException, request_id: str) -> ErrorResponse:
    """``domain.errors.describe``, and an internal error logged with its traceback (never shown)."""
    e = describe(exc)
    if e.internal:
        log_internal(log, exc, request_id)
    return e


def device_error(exc: BaseException, request_id: str) -> Answer:
    """The device endpoints' answer to an error: the status its class says, with Apple's error body where
    Apple defines one (403 com.apple.unrecognized.device makes the device unenroll), else
    ``{reason, message, request_id}``."""
    e = described(exc, request_id)
    body: dict[str, object]
    if e.apple_code is not None:
        body = {
            "code": e.apple_code,
            "description": e.detail,
            "reason": e.reason.value,
            "request_id": request_id,
        }
    else:
        body = {"reason": e.reason.value, "message": e.message, "request_id": request_id}
    return e.status, json.dumps(body).encode(), "application/json"


def ade_error(exc: BaseException, request_id: str) -> Answer:
    """The ADE endpoint's refusal: ``{code, message}`` (the contract) with the reason and request id."""
    e = described(exc, request_id)
    body = {"code": e.reason.value, "message": e.message, "reason": e.reason.value, "request_id": request_id}
    return e.status, json.dumps(body).encode(), "application/json"


def ade_answer(answer: AdeAnswer, headers: list[tuple[bytes, bytes]]) -> Answer:
    """The HTTP answer to an ADE device: the profile, 401 Basic (legacy sign-in), Apple's 403
    com.apple.softwareupdate.required body, or 429 (too many wrong passwords)."""
    kind = answer.kind
    if kind is AdeAnswerKind.PROFILE:
        return 200, answer.body, PROFILE_CONTENT_TYPE
    if kind is AdeAnswerKind.CREDENTIALS:
        realm = answer.realm.replace("\\", "").replace('"', "")
        headers.append((b"www-authenticate", f'Basic realm="{realm}", charset="UTF-8"'.encode()))
        return 401, b"", None
    if kind is AdeAnswerKind.SOFTWARE_UPDATE:
        return 403, json.dumps(answer.update, ensure_ascii=False).encode(), "application/json"
    headers.append((b"retry-after", str(answer.retry_after).encode()))
    return 429, b"", None


class RootApp:
    def __init__(
        self,
        pomona: Services,
        *,
        trusted_proxies: Sequence[str] = (),
        metrics_allow: Sequence[str] = ("127.0.0.0/8", "::1/128"),
        eager: bool = True,
        device_threads: int = 0,
    ) -> None:
        """``eager`` (the server): the admin API, portal, console and ADE web view are built now, not on a
        request's thread; otherwise each is built on its first request (tests that use one of them).
        ``device_threads``: worker threads for the device messages that commit a durable write (0: all
        inline; the composition root gives PostgreSQL POMONA_DEVICE_THREADS, 4 by default; see
        :meth:`_run`). Each keeps a raw PostgreSQL connection of its own (storage/hot_sql.py HotReads)
        and takes its unit of work's from the engine's pool."""
        self.pomona = pomona
        self.link_page = LinkRefusalPage(pomona.clock)
        self._large_bodies = asyncio.Semaphore(1)  # device requests over INLINE_BODY, off the loop
        self.device_threads = device_threads
        self._device_slots = asyncio.Semaphore(max(device_threads, 1))  # in flight on the threads
        self._device_pool: ThreadPoolExecutor | None = None  # started on first use, ended with the server
        self.metrics = pomona.metrics
        self.metrics_allow = [ipaddress.ip_network(n, strict=False) for n in metrics_allow]
        # The background tasks run while the server serves (the ASGI lifespan), whether or not the admin
        # API has been built.
        from starlette.applications import Starlette

        self._lifespan = Starlette(lifespan=self._background)
        if eager:
            for name in ("api", "portal", "console", "ade_web"):
                getattr(self, name)
        # X-Forwarded-For is believed from the configured proxies only (POMONA_TRUSTED_PROXIES).
        self._entry = TrustedProxies(self._dispatch, trusted_proxies)

    @asynccontextmanager
    async def _background(self, _app: object) -> AsyncIterator[None]:
        await self.pomona.background.start()
        try:
            yield
        finally:
            await self.pomona.background.stop()
            pool, self._device_pool = self._device_pool, None
            if pool is not None:  # the server answered its last request: the threads end, idle
                await asyncio.to_thread(pool.shutdown)

    # The admin API and the portal read bodies through FastAPI/Starlette, after no check of ours:
    # RequestLimits bounds them first (http/middleware.py).
    @cached_property
    def api(self) -> ASGIApp:
        from pomona.http.api import create_api

        return RequestMetrics(RequestLimits(create_api(self.pomona), API_BODY_LIMITS), self.metrics)

    @cached_property
    def portal(self) -> ASGIApp:
        from pomona.http.portal import create_portal

        return RequestMetrics(RequestLimits(create_portal(self.pomona), PORTAL_BODY_LIMITS), self.metrics)

    @cached_property
    def console(self) -> ASGIApp:
        from pomona.http.console import create_console

        return RequestMetrics(RequestLimits(create_console(self.pomona), PORTAL_BODY_LIMITS), self.metrics)

    @cached_property
    def ade_web(self) -> ASGIApp:
        from pomona.http.ade import create_ade_web

        return RequestMetrics(RequestLimits(create_ade_web(self.pomona), PORTAL_BODY_LIMITS), self.metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            # The device endpoints and /metrics are counted here, from the status they answered (no
            # wrapper on the hot path); the admin API and the portal by RequestMetrics around them.
            device = self._device_endpoint(path)
            if device is not None:
                start = time.perf_counter()
                status = await device(scope, receive, send)
                method = scope["method"] if scope["method"] in METHODS else "other"
                self.metrics.request(route_template(scope), method, status, time.perf_counter() - start)
                return None
            if path == "/portal" or path.startswith("/portal/"):
                return await self.portal(scope, receive, send)
            if path.startswith("/ade/"):
                return await self.ade_web(scope, receive, send)
            if path == "/console" or path.startswith("/console/"):
                return await self.console(scope, receive, send)
            if path == "/" and scope["method"] in ("GET", "HEAD"):
                # An admin who types the server's address lands on the console's sign-in (a device never
                # asks for "/"); nothing is read or looked up for it.
                await send(
                    {
                        "type": "http.response.start",
                        "status": 303,
                        "headers": [(b"location", b"/console/"), (b"content-length", b"0")],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
                return None
        elif scope["type"] == "lifespan":
            return await self._lifespan(scope, receive, send)
        await self.api(scope, receive, send)

    def _device_endpoint(self, path: str) -> Callable[[Scope, Receive, Send], Awaitable[int]] | None:
        if path.startswith("/mdm/"):
            return self._mdm
        if path.startswith("/scep/"):
            return self._scep_endpoint
        if path.startswith("/enroll/"):
            return self._enroll
        if path.startswith("/ade/") and path.rstrip("/").endswith("/enroll"):
            return self._ade_enroll
        if path == "/metrics":
            return self._metrics
        return None

    async def _run(
        self,
        scope: Scope,
        send: Send,
        fn: Callable[[], Answer],
        *,
        inline: bool = True,
        durable: bool = False,
        error: ErrorAnswer = device_error,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        """Run ``fn`` (or ``error`` on its exception) and send its answer, with ``headers`` as ``fn`` or
        ``error`` left them (the ADE endpoint's WWW-Authenticate and Retry-After). ``durable``: ``fn``
        commits a write that must survive a crash (a command result, a check-in message)."""
        rid = urandom(8).hex()  # 16 hex digits, as uuid4().hex[:16] gave, for a third of its cost
        client = scope.get("client")
        address = str(client[0]) if client else "?"  # after trusted proxies (http/middleware.py)

        def call(inline: bool) -> Answer:
            token = bind_request_id(rid)
            caller = bind_caller(address)  # refusals of unidentified callers are rate-limited per address
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - every error gets the device answer its class says
                if inline and isinstance(exc, StorageBusyError):
                    raise  # run again in a worker thread, where the lock wait is long
                return error(exc, rid)
            finally:
                reset_caller(caller)
                reset_request_id(token)

        # Device requests run inline on the event loop (on PostgreSQL, all but those below). Each is one
        # short, self-contained transaction, and the hand-off to a worker thread cost more CPU than the
        # whole check-in (bench/checkin.py: 0.78 ms vs 0.42 ms per idle check-in on SQLite). Scale out
        # with --workers on PostgreSQL.
        # On the loop a lock wait is bounded (storage/database.py, LOOP_LOCK_WAIT_MS): past it the
        # transaction rolled back and StorageBusyError comes out; the request then runs again in a
        # worker thread, where it may wait as long as the lock is held, while the loop serves others.
        # A large body (past INLINE_BODY) is decoded in a worker thread from the start, one at a time:
        # a check-in is a few KiB, and a 1 MiB body of garbage cost ~8 ms of decoding on the loop; and
        # every busy thread competes with the loop for the GIL. A few clients sending such bodies held
        # /healthz past 100 ms (tests/e2e/test_request_limits_live.py).
        #
        # PostgreSQL (``device_threads``): a durable commit waits for the WAL flush, a few ms, and on the
        # loop every other device would wait with it (fan-out of one command: ~100 results a second per
        # process). Those requests run on the device threads instead, at most ``device_threads`` at a
        # time (the rest wait their turn on the loop, first come first served): the loop keeps serving
        # Idle reports meanwhile, and PostgreSQL flushes the concurrent commits together. An Idle report
        # stays inline: it reads, or takes its command with a commit that does not wait for the flush
        # (storage/hot_channel.py). SQLite commits in microseconds, one writer at a time: all inline.
        if not inline:
            async with self._large_bodies:
                status, body, ctype = await asyncio.to_thread(call, False)
        elif durable and self.device_threads:
            async with self._device_slots:
                context = contextvars.copy_context()
                loop = asyncio.get_running_loop()
                status, body, ctype = await loop.run_in_executor(self._devices(), context.run, call, False)
        else:
            try:
                status, body, ctype = call(inline=True)
            except StorageBusyError:
                status, body, ctype = await asyncio.to_thread(call, False)
        extra = [(b"x-request-id", rid.encode()), *(headers or [])]
        if ctype == PAGE_TYPE:
            extra += PAGE_HEADERS
        return await respond(send, status, body, ctype, extra)

    def _devices(self) -> ThreadPoolExecutor:
        pool = self._device_pool
        if pool is None:
            pool = self._device_pool = ThreadPoolExecutor(self.device_threads, "pomona-device")
        return pool

    async def _mdm(self, scope: Scope, receive: Receive, send: Send) -> int:
        parts = scope["path"].strip("/").split("/")
        if len(parts) != 3 or parts[2] not in ("checkin", "connect"):
            return await respond(send, 404, b"", None)
        if scope["method"] != "PUT":
            return await respond(send, 405, b"", None)
        tenant_id = parts[1]
        headers = dict(scope["headers"])
        signature = headers.get(b"mdm-signature", b"").decode("ascii", "replace") or None
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().decode("ascii", "replace")
        try:
            body = await read_body(receive, MAX_BODY)
        except BodyTooLargeError:
            step = "connect" if parts[2] == "connect" else "checkin"
            return await self._run(scope, send, lambda: self.pomona.checkin.refuse_oversized(tenant_id, step))
        # Apple's devices label check-ins and command reports; the content type decides.
        if ctype == CHECKIN_TYPE or (not ctype and parts[2] == "checkin"):
            handler = self.pomona.checkin.checkin
            durable = True  # Authenticate, TokenUpdate, CheckOut: each commits what it changes
        else:
            handler = self.pomona.checkin.connect
            durable = self.device_threads > 0 and not looks_idle(body)  # a result

        def work() -> Answer:
            out = handler(tenant_id, body, signature)
            return 200, out, ("application/xml" if out else None)

        return await self._run(scope, send, work, inline=len(body) <= INLINE_BODY, durable=durable)

    async def _enroll(self, scope: Scope, receive: Receive, send: Send) -> int:
        if scope["method"] not in ("GET", "HEAD"):
            return await respond(send, 405, b"", None)
        secret = scope["path"][len("/enroll/") :].strip("/")
        svc = self.pomona.enrollment
        headers = dict(scope["headers"])
        ua = headers.get(b"user-agent", b"").decode("latin-1") or None
        languages = headers.get(b"accept-language", b"").decode("latin-1")

        def work() -> Answer:
            return 200, svc.profile(secret, ua), PROFILE_CONTENT_TYPE

        def page(exc: BaseException, request_id: str) -> Answer:
            """A browser's answer: the same status, a page in its language (http/link_pages.py)."""
            e = described(exc, request_id)
            return e.status, self.link_page.render(e, request_id, languages), PAGE_TYPE

        # The user opened the link in a browser; the profile installer and scripts get the device answer.
        browser = wants_page(headers.get(b"accept", b"").decode("latin-1"))
        return await self._run(scope, send, work, error=page if browser else device_error)

    async def _ade_enroll(self, scope: Scope, receive: Receive, send: Send) -> int:
        """An ADE device's MachineInfo (services/ade.py): the body is cut off past MAX_MACHINE_INFO
        before anything is parsed; refusals of callers that proved nothing are rate-limited as /enroll's
        and /scep's are (services/throttle.py)."""
        parts = scope["path"].strip("/").split("/")
        if len(parts) != 3:
            return await respond(send, 404, b"", None)
        if scope["method"] != "POST":
            return await respond(send, 405, b"", None)
        tenant_id = parts[1]
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1") or None
        client = scope.get("client")
        address = str(client[0]) if client else "?"
        ade = self.pomona.ade
        extra: list[tuple[bytes, bytes]] = []
        try:
            body = await read_body(receive, MAX_MACHINE_INFO)
        except BodyTooLargeError:
            body = b""  # refused as malformed, with its (rate-limited) event
            too_large = True
        else:
            too_large = False

        def work() -> Answer:
            answer = ade.enroll(tenant_id, b"" if too_large else body, authorization, address)
            return ade_answer(answer, extra)

        # A password (legacy sign-in) is checked with argon2: off the event loop, one at a time.
        return await self._run(
            scope, send, work, inline=authorization is None, error=ade_error, headers=extra
        )

    async def _scep_endpoint(self, scope: Scope, receive: Receive, send: Send) -> int:
        tenant_id = scope["path"][len("/scep/") :].strip("/")
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        try:
            body = await read_body(receive, MAX_SCEP_BODY)
        except BodyTooLargeError as exc:
            return await respond(send, exc.http_status, b"request too large\n", "text/plain")
        method = scope["method"]
        scep = self.pomona.scep

        def work() -> Answer:
            answer = scep.request(tenant_id, method, query, body)
            return answer.status, answer.body, answer.content_type

        return await self._run(scope, send, work)

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> int:
        """The metrics, for a caller POMONA_METRICS_ALLOW names or with a server-wide API token."""
        if scope["method"] not in ("GET", "HEAD"):
            return await respond(send, 405, b"", None)
        if not is_local_caller(scope, self.metrics_allow):
            rid = uuid.uuid4().hex[:16]
            refusal = self._metrics_refusal(scope)
            if refusal is not None:
                status, body, ctype = device_error(refusal, rid)
                return await respond(send, status, body, ctype, [(b"x-request-id", rid.encode())])
        body, ctype = await asyncio.to_thread(self.pomona.metrics.exposition)  # reads two gauges
        return await respond(send, 200, b"" if scope["method"] == "HEAD" else body, ctype)

    def _metrics_refusal(self, scope: Scope) -> Exception | None:
        """None when the request carries a server-wide API token, else why it is refused."""
        auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, secret = auth.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return ForbiddenError("/metrics: not an allowed address (POMONA_METRICS_ALLOW) and no token")
        try:
            token = self.pomona.admin.authenticate_api_token(secret.strip())
        except Exception as exc:  # noqa: BLE001 - the refusal its class says (unknown, revoked, expired)
            return exc
        if token.tenant_id is not None:
            return ForbiddenError("/metrics needs a server-wide token (pomona token create --server)")
        return None
