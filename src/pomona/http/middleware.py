"""ASGI middleware: the request id of the admin API and the portal (the device endpoints bind theirs in
http/root.py), the request limits of the admin API and the portal (a body's size before the application
reads it), the access log around the whole server (on only when asked; see pomona/logs.py), the request
metrics (RequestMetrics, by route template), the client address behind trusted proxies
(TrustedProxies), and the log line of an internal error (:func:`log_internal`)."""

from __future__ import annotations

import ipaddress
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from pomona.domain.errors import (
    BodyTooLargeError,
    InvalidInputError,
    PomonaError,
    StorageUnavailableError,
    describe,
)
from pomona.i18n import msg
from pomona.ports import Metrics
from pomona.services.context import bind_request_id, reset_request_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("pomona.access")


def log_internal(log: logging.Logger, exc: BaseException, request_id: object) -> None:
    """The log line of a request answered with an internal error (the client sees no cause): a database
    that did not answer is one warning line with the driver's reason (no bug of ours: the background
    loops say when it answers again), anything else an error with its traceback."""
    if isinstance(exc, StorageUnavailableError):
        log.warning("request %s: the database did not answer (%s)", request_id, exc)
    else:
        log.error("internal error, request %s", request_id, exc_info=exc)


class RequestId:
    """A request id per request, bound before the app runs (so services, events and log lines see it,
    sync endpoints and dependencies included: their threads copy the bound context), kept in the request
    state (``request.state.request_id``) and sent back as ``x-request-id``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        token = bind_request_id(rid)
        try:
            await self.app(scope, receive, wrapped)
        finally:
            reset_request_id(token)


#: Path prefixes whose next segment is a secret: an enrollment link's token is also the SCEP challenge.
SECRET_PATHS: tuple[str, ...] = ("/enroll/",)
REDACTED = "[redacted]"


def loggable_path(path: str) -> str:
    """The path as it may be written to a log: the secret of an enrollment link replaced by
    ``[redacted]`` (``/enroll/[redacted]``). No other path of Pomona carries a secret: the admin API's
    token is a header, the portal's session a cookie, and queries are not logged."""
    for prefix in SECRET_PATHS:
        if path.startswith(prefix):
            return prefix + REDACTED
    return path


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The route a request matched, as a template (``/mdm/{tenant}/checkin``), for the metrics' label:
    never the raw path (one series per tenant, token or scanned path would grow without bound). Paths
    that matched no route are ``unmatched``."""
    path: str = scope["path"]
    if path.startswith("/mdm/"):
        channel = path.rstrip("/").rsplit("/", 1)[-1]
        return f"/mdm/{{tenant}}/{channel}" if channel in ("checkin", "connect") else "unmatched"
    if path.startswith("/scep/"):
        return "/scep/{tenant}"
    if path.startswith("/enroll/"):
        return "/enroll/{token}"
    if path.startswith("/ade/") and path.rstrip("/").endswith("/enroll"):
        return "/ade/{tenant}/enroll"
    if path == "/metrics":
        return path
    route = scope.get("route")  # Starlette's router records the route it matched
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else "unmatched"


class RequestMetrics:
    """Counts every HTTP request (route template, method, status) and its duration (Metrics.request)
    of the app it wraps: the admin API and the portal (http/root.py counts the device endpoints itself,
    without a wrapper: the wrapper's frames cost more than the counting, about 5 µs a request)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 0

        async def wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.request(route_template(scope), method, status or 500, time.perf_counter() - start)


class AccessLog:
    """One ``request`` line per HTTP request: method, path, status, duration_ms, request_id. The path
    is :func:`loggable_path`'s: an enrollment link's secret is never written.

    The request id is the one the request was answered with (the ``x-request-id`` header: the device
    endpoints set it, and RequestId for the admin API and the portal). Wrap the app only when the access
    log is on: when it is off, requests do not pass through here at all.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 0
        request_id: str | None = None

        async def wrapped(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-request-id":
                        request_id = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            access_log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": loggable_path(str(scope.get("path", ""))),
                    "status": status or 500,
                    "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                    "request_id": request_id,
                },
            )


def with_access_log(app: ASGIApp, enabled: bool) -> ASGIApp:
    """``app`` itself when the access log is off (nothing added on the hot path), else wrapped."""
    return AccessLog(app) if enabled else app


#: Set in the scope of a request whose peer is a trusted proxy (its client is then the one it reported).
VIA_TRUSTED_PROXY = "pomona.via_trusted_proxy"
FORWARDING_HEADERS = frozenset({b"x-forwarded-for", b"forwarded", b"x-real-ip"})


def is_local_caller(scope: Scope, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """The client is in ``networks`` and reached us directly or through a trusted proxy. A request that
    carries forwarding headers from a peer that is not a trusted proxy came through a proxy we do not
    know: its peer address (often the proxy's loopback) says nothing of the client, so it is not local."""
    client = scope.get("client")
    if not client:
        return False
    if not scope.get(VIA_TRUSTED_PROXY) and any(k in FORWARDING_HEADERS for k, _ in scope["headers"]):
        return False
    try:
        ip = ipaddress.ip_address(str(client[0]))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


class TrustedProxies:
    """The client's address (and scheme) as the configured reverse proxies report them, from no one else.

    ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only when the connection's peer is in
    ``networks`` (POMONA_TRUSTED_PROXIES, default none): the client is then the rightmost address of the
    chain that is not itself a trusted proxy. From any other peer the headers are ignored, so a client
    cannot choose the address the sign-in limiter and the event throttle count it under.
    """

    def __init__(self, app: ASGIApp, networks: Sequence[str]) -> None:
        self.app = app
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.networks:
            client = scope.get("client")
            if client and self.trusted(str(client[0])):
                scope = dict(scope)
                scope[VIA_TRUSTED_PROXY] = True
                hops = [
                    hop.strip()
                    for k, v in scope["headers"]
                    if k == b"x-forwarded-for"
                    for hop in v.decode("latin-1").split(",")
                    if hop.strip()
                ]
                address = str(client[0])
                for hop in reversed(hops):
                    if not _is_ip(hop):
                        break
                    address = hop
                    if not self.trusted(hop):
                        break
                scope["client"] = (address, 0)
                protos = [v for k, v in scope["headers"] if k == b"x-forwarded-proto"]
                proto = protos[-1].decode("latin-1").split(",")[-1].strip().lower() if protos else ""
                if proto in ("http", "https"):
                    scope["scheme"] = (
                        proto if scope["type"] == "http" else ("wss" if proto == "https" else "ws")
                    )
        await self.app(scope, receive, send)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --- request limits ------------------------------------------------------------------------------------
# What one request may send to the admin API and the portal, checked BEFORE the application sees the
# request (and so before authentication, which is the application's): an unauthenticated client can make
# the server hold at most one limit's worth of bytes. The device endpoints have their own limits
# (http/root.py: MAX_BODY, MAX_SCEP_BODY); the request line and headers are bounded for every endpoint by
# the server's HTTP protocol (http/server.py).
KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """A body size limit per route: the first rule whose method matches and whose path ends with its
    suffix wins, else ``default``."""

    default: int
    rules: tuple[tuple[str, str, int], ...] = ()  # (method, path suffix, limit)

    def limit_for(self, method: str, path: str) -> int:
        for m, suffix, limit in self.rules:
            if m == method and path.rstrip("/").endswith(suffix):
                return limit
        return self.default


API_BODY_LIMITS = BodyLimits(
    default=256 * KiB,  # every JSON body of the API but two is a few hundred bytes; a .p12 a few KiB
    rules=(
        ("POST", "/commands", 4 * MiB),  # a command may carry a profile or an app manifest
        ("POST", "/corporate-identifiers", 2 * MiB),  # at most 5,000 rows
    ),
)
PORTAL_BODY_LIMITS = BodyLimits(
    default=64 * KiB,  # sign-in and small forms only
    rules=(("POST", "/corporate", 512 * KiB),),  # the console's corporate identifiers CSV (5,000 rows)
)


class RequestLimits:
    """Refuses, before the application runs, a body over the route's limit (413: by its Content-Length
    without reading it, or while streaming a chunked body), and a NUL byte in the path or the query (422:
    no name, reference or filter of ours contains one, and PostgreSQL cannot store it). The answer has
    the admin API's error shape: ``{reason, message, request_id}``. A body within the limit is read once
    here and handed to the application as it came."""

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path: str = scope["path"]
        if "\x00" in path or b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
            return await _refuse(send, InvalidInputError(msg("error.http.nul")))
        limit = self.limits.limit_for(scope["method"], path)
        length = _content_length(scope)
        if length is not None and length > limit:
            return await _refuse(
                send, BodyTooLargeError(msg("error.http.body_size", length=length, limit=limit))
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _refuse(send, BodyTooLargeError(msg("error.http.body_over", limit=limit)))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: bytes | None = b"".join(chunks)

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message: Message = {"type": "http.request", "body": body, "more_body": False}
                body = None
                return message
            return await receive()

        await self.app(scope, replay, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            # An unreadable length counts as too large: uvicorn refuses it before we run anyway.
            return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else 1 << 62
    return None


async def _refuse(send: Send, exc: PomonaError) -> None:
    """Answer an error of the tree in the admin API's shape, with a fresh request id."""
    rid = uuid.uuid4().hex[:16]
    e = describe(exc)
    body = json.dumps(
        {"reason": e.reason.value, "message": e.message, "request_id": rid}, separators=(",", ":")
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": e.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
