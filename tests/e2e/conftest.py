"""End-to-end fixtures: a live SCEP endpoint on uvicorn (127.0.0.1, free port, background thread).

The lead will later point `scep_endpoint` at the real server; tests must only use what it yields.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import pytest
import uvicorn

from pomona.pki.ca import CertificateAuthority
from pomona.pki.scep import ScepRefusal, ScepResponder, handle_scep_http
from pomona.protocol.scep import CsrInfo, FailInfo, PkiMessage

GOOD_CHALLENGE = "good-challenge"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _scep_asgi(responder: ScepResponder) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        status, payload, ctype = handle_scep_http(responder, scope["method"], query, body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype.encode()),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


@pytest.fixture(scope="session")
def scep_endpoint() -> Iterator[tuple[str, str]]:
    """A live SCEP endpoint; yields (url, good challenge). Wrong challenges are refused with badRequest."""
    ca = CertificateAuthority.generate("Pomona e2e SCEP CA")

    def on_request(csr: CsrInfo, msg: PkiMessage) -> Any:
        if csr.challenge_password != GOOD_CHALLENGE:
            raise ScepRefusal(FailInfo.BAD_REQUEST, "ENROLLMENT_TOKEN_INVALID")
        return ca.issue(csr.public_key, csr.subject)

    responder = ScepResponder(ca, on_request)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(_scep_asgi(responder), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the SCEP test endpoint did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/scep/e2e", GOOD_CHALLENGE
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
