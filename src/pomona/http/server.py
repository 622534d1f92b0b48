"""The server's HTTP/1.1 connection: uvicorn's httptools protocol with the request head bounded.

uvicorn bounds a request's head only with h11 (``h11_max_incomplete_event_size``); with httptools, the
parser it picks, a client could send an endless header and the server would keep it. Here the bytes a
connection sends between the start of a request and the end of its headers are counted, and past
``MAX_HEAD`` the request is answered 431 (HeadersTooLargeError, MALFORMED_REQUEST, in the admin API's error
shape) and the connection closed. ``pomona serve`` runs it (``--http`` is this class); a server started
with ``uvicorn pomona.asgi:app`` should pass ``--http pomona.http.server:BoundedHttpToolsProtocol``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pomona.domain.errors import HeadersTooLargeError, describe

__all__ = ["MAX_HEAD", "BoundedHttpToolsProtocol"]

# The request line and every header together. A device's largest header is Mdm-Signature (a CMS
# signature with its certificate, a few KiB); browsers stay under 16 KiB; nginx's default is 32 KiB.
MAX_HEAD = 64 * 1024


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over ``MAX_HEAD`` bytes with a 431."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Still in a request's head after this data: all of it was head (or what came before it).
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._in_head = False
                self._refuse_head()

    def _refuse_head(self) -> None:
        e = describe(HeadersTooLargeError(f"request head over {MAX_HEAD} bytes"))
        rid = uuid.uuid4().hex[:16]
        body = json.dumps(
            {"reason": e.reason.value, "message": e.message, "request_id": rid}, separators=(",", ":")
        ).encode()
        head = (
            f"HTTP/1.1 {e.status} Request Header Fields Too Large\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            f"x-request-id: {rid}\r\n"
            "connection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()
