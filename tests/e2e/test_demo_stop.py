"""`pomona demo` runs its server in a thread and stops that thread before the main thread returns, even
with a request still open."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import uvicorn

from helpers import free_port
from pomona.cli.demo import _start_server, _stop_server


async def stuck_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app whose every request waits a minute before it answers (lifespan events are accepted)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await asyncio.sleep(60)


class TestDemoStop:
    def test_a_request_that_never_ends_does_not_keep_the_server_thread_alive(self) -> None:
        """A graceful stop that runs out of time turns into uvicorn's forced exit: the thread ends."""
        port = free_port()
        config = uvicorn.Config(stuck_app, host="127.0.0.1", port=port, log_level="critical", lifespan="on")
        server = uvicorn.Server(config)
        thread = _start_server(server)
        assert server.started
        client = socket.create_connection(("127.0.0.1", port))
        try:
            client.sendall(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")
            time.sleep(0.3)  # the request is in the app
            started = time.monotonic()
            _stop_server(server, thread, graceful=0.5)
            assert not thread.is_alive()
            assert time.monotonic() - started < 5
        finally:
            client.close()
