"""The ASGI entry: device endpoints are served by a lean raw-ASGI handler (they are the hot path:
every check-in of every device), everything else by the FastAPI admin application.

Device endpoints:
    GET       /enroll/{token}              the signed enrollment profile
    GET|POST  /scep/{tenant_id}            SCEP (GetCACaps, GetCACert, PKIOperation)
    PUT       /mdm/{tenant_id}/checkin     check-in messages (CheckInURL)
    PUT       /mdm/{tenant_id}/connect     the command channel (ServerURL)
Both MDM URLs route by Content-Type, as Apple's devices label their messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from pomona.app import Pomona
from pomona.domain.errors import PomonaError, UnenrollDeviceError
from pomona.domain.reasons import ReasonCode
from pomona.ports import StorageBusyError
from pomona.services.checkin import MAX_BODY
from pomona.services.context import request_id_var
from pomona.services.enrollment import PROFILE_CONTENT_TYPE

log = logging.getLogger("pomona.http")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

CHECKIN_TYPE = "application/x-apple-aspen-mdm-checkin"
COMMAND_TYPE = "application/x-apple-aspen-mdm"
MAX_SCEP_BODY = 256 * 1024


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
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
) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type:
        headers.append((b"content-type", content_type.encode()))
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_body(reason: str, message: str, request_id: str) -> bytes:
    return json.dumps({"reason": reason, "message": message, "request_id": request_id}).encode()


class RootApp:
    def __init__(self, pomona: Pomona) -> None:
        from pomona.http.api import create_api

        self.pomona = pomona
        from pomona.http.portal import create_portal

        self.api = create_api(pomona)
        self.portal = create_portal(pomona)
        self._scep: dict[str, object] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith("/mdm/"):
                return await self._mdm(scope, receive, send)
            if path.startswith("/scep/"):
                return await self._scep_endpoint(scope, receive, send)
            if path.startswith("/enroll/"):
                return await self._enroll(scope, receive, send)
            if path == "/portal" or path.startswith("/portal/"):
                return await self.portal(scope, receive, send)
        elif scope["type"] == "lifespan":
            return await self.api(scope, receive, send)
        await self.api(scope, receive, send)

    async def _run(self, send: Send, fn: Callable[[], tuple[int, bytes, str | None]]) -> None:
        rid = uuid.uuid4().hex[:16]

        def call(inline: bool) -> tuple[int, bytes, str | None]:
            token = request_id_var.set(rid)
            try:
                return fn()
            except StorageBusyError:
                if inline:
                    raise
                log.exception("database busy beyond the lock wait, request %s", rid)
                return 500, error_body(ReasonCode.INTERNAL_ERROR, "internal error", rid), "application/json"
            except UnenrollDeviceError as exc:
                body = {
                    "code": exc.apple_code,
                    "description": exc.detail,
                    "reason": str(exc.reason),
                    "request_id": rid,
                }
                return exc.http_status, json.dumps(body).encode(), "application/json"
            except PomonaError as exc:
                return (
                    exc.http_status,
                    error_body(exc.reason, exc.detail or exc.reason, rid),
                    "application/json",
                )
            except Exception:
                log.exception("internal error, request %s", rid)
                return 500, error_body(ReasonCode.INTERNAL_ERROR, "internal error", rid), "application/json"
            finally:
                request_id_var.reset(token)

        # Device requests run inline on the event loop. Each is one short, self-contained transaction,
        # and the hand-off to a worker thread cost more CPU than the whole check-in (bench/checkin.py:
        # 0.78 ms vs 0.42 ms per idle check-in on SQLite). Scale out with --workers on PostgreSQL.
        # On the loop a lock wait is bounded (storage/database.py, LOOP_LOCK_WAIT_MS): past it the
        # transaction rolled back and StorageBusyError comes out; the request then runs again in a
        # worker thread, where it may wait as long as the lock is held, while the loop serves others.
        try:
            status, body, ctype = call(inline=True)
        except StorageBusyError:
            status, body, ctype = await asyncio.to_thread(call, False)
        await respond(send, status, body, ctype, [(b"x-request-id", rid.encode())])

    async def _mdm(self, scope: Scope, receive: Receive, send: Send) -> None:
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
        except BodyTooLarge:
            step = "connect" if parts[2] == "connect" else "checkin"
            return await self._run(send, lambda: self.pomona.checkin.refuse_oversized(tenant_id, step))
        # Apple's devices label check-ins and command reports; the content type decides.
        if ctype == CHECKIN_TYPE or (not ctype and parts[2] == "checkin"):
            handler = self.pomona.checkin.checkin
        else:
            handler = self.pomona.checkin.connect

        def work() -> tuple[int, bytes, str | None]:
            out = handler(tenant_id, body, signature)
            return 200, out, ("application/xml" if out else None)

        await self._run(send, work)

    async def _enroll(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            return await respond(send, 405, b"", None)
        secret = scope["path"][len("/enroll/") :].strip("/")
        svc = self.pomona.enrollment
        ua = dict(scope["headers"]).get(b"user-agent", b"").decode("latin-1") or None

        def work() -> tuple[int, bytes, str | None]:
            return 200, svc.profile(secret, ua), PROFILE_CONTENT_TYPE

        await self._run(send, work)

    async def _scep_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        from pomona.http.scep import scep_request

        tenant_id = scope["path"][len("/scep/") :].strip("/")
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        try:
            body = await read_body(receive, MAX_SCEP_BODY)
        except BodyTooLarge:
            return await respond(send, 413, b"request too large\n", "text/plain")
        method = scope["method"]
        await self._run(send, lambda: scep_request(self.pomona, self._scep, tenant_id, method, query, body))
