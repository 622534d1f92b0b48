"""A small HTTP/2 client for APNs: the ``h2`` state machine over an asyncio TLS transport.

Made for one job, many small POSTs to one origin with TLS client certificates, at little CPU per request:

- :class:`H2ClientConnection` is an :class:`asyncio.Protocol`: a request is ``send_headers`` plus
  ``send_data`` into h2's buffer and a future; what h2 has to send is written once per event-loop turn
  (one ``transport.write`` for every request, acknowledgement and WINDOW_UPDATE of that turn).
- A connection carries up to the server's ``SETTINGS_MAX_CONCURRENT_STREAMS`` streams (APNs: ~1000).
  h2 counts open streams by walking every stream on each new one (quadratic at 1000 streams), so the
  connection counts them itself and lets h2 prune closed streams only every :data:`_PRUNE_EVERY` streams.
- Flow control: a body larger than the stream's or the connection's send window waits, in order, for
  the server's WINDOW_UPDATE; received data is acknowledged as it is read.
- GOAWAY: the connection takes no new stream; streams above ``last_stream_id`` fail at once with
  :class:`Refused` (the server did not process them: resend them elsewhere); streams at or below it may
  still be answered, until the server closes the connection (:class:`ConnectionLost`).
- RST_STREAM fails that stream (:class:`Refused` when the code is REFUSED_STREAM); a timeout fails a
  stream (:class:`Timeout`, and the stream is reset with CANCEL); a connection silent for half the
  timeout while streams wait is PINGed, and aborted when the PING is not answered within the other half.

:class:`H2Pool` holds up to ``connections`` connections to one origin with one TLS context, opened as
needed, and bounds the requests in flight. Every failure without an HTTP answer is an :class:`H2Error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack

__all__ = [
    "ConnectError",
    "ConnectionLost",
    "H2ClientConnection",
    "H2Error",
    "H2Pool",
    "ProtocolFailure",
    "Refused",
    "Response",
    "StreamReset",
    "Timeout",
    "unindexed",
]

Header = tuple[bytes, bytes]


def unindexed(name: bytes, value: bytes) -> Header:
    """A header whose value changes with every request: never added to the HPACK table (where it
    would only push out the headers that repeat)."""
    return hpack.NeverIndexedHeaderTuple(name, value)


#: h2 prunes its closed streams every this many new streams (see the module docstring).
_PRUNE_EVERY: Final = 256
#: What the client lets the server send before a WINDOW_UPDATE (answers are tiny; this is plenty).
_RECEIVE_WINDOW: Final = 1 << 20
_DEFAULT_MAX_STREAMS: Final = 100  # until the server's SETTINGS say otherwise (RFC 9113 suggests >= 100)


class H2Error(Exception):
    """No HTTP answer. ``refused``: the server certainly did not process the request (safe to resend
    at once, elsewhere)."""

    refused: bool = False


class ConnectError(H2Error):
    """Connecting, the TLS handshake or the HTTP/2 preface failed."""


class ConnectionLost(H2Error):
    """The connection closed (or broke) before the answer came."""


class Refused(H2Error):
    """The server did not process the request (GOAWAY above its last stream id, REFUSED_STREAM)."""

    refused = True


class StreamReset(H2Error):
    """The server reset the stream (RST_STREAM)."""


class Timeout(H2Error):
    """No answer in time."""


class ProtocolFailure(H2Error):
    """The server broke the HTTP/2 protocol; the connection is dropped."""


@dataclass(slots=True)
class Response:
    status: int
    headers: list[Header]
    body: bytes


class _Encoder(hpack.Encoder):
    """HPACK without Huffman coding: the repeated headers are indexed after the first request, so only
    the never-indexed ones (path, id) are literals, and Huffman-coding them in Python costs more CPU
    than the bytes it saves."""

    def encode(self, headers: Any, huffman: bool = False) -> bytes:
        return super().encode(headers, huffman=False)


class _H2(h2.connection.H2Connection):
    """h2's state machine, with an O(1) count of open outbound streams (h2 walks them all)."""

    inflight: int = 0
    _since_prune: int = 0

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        self.encoder = _Encoder()

    @property
    def open_outbound_streams(self) -> int:
        self._since_prune += 1
        if self._since_prune >= _PRUNE_EVERY:
            self._since_prune = 0
            return super().open_outbound_streams  # walks the streams once, dropping the closed ones
        return self.inflight


class _Stream:
    __slots__ = ("body", "deadline", "future", "headers", "status")

    def __init__(self, future: asyncio.Future[Response], deadline: float) -> None:
        self.future = future
        self.deadline = deadline
        self.status = 0
        self.headers: list[Header] = []
        self.body = b""


_CONFIG: Final = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    validate_outbound_headers=False,  # built here, from fixed names and checked values
    normalize_outbound_headers=False,
    validate_inbound_headers=False,
)


class H2ClientConnection(asyncio.Protocol):
    """One HTTP/2 connection (see the module docstring). Use :meth:`open`, then :meth:`submit`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, pool: H2Pool | None = None) -> None:
        self.loop = loop
        self.timeout = timeout
        self.pool = pool
        self.h2 = _H2(config=_CONFIG)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.max_streams = _DEFAULT_MAX_STREAMS
        self.usable = False  # preface exchanged, no GOAWAY, not closed
        self.closed = False
        self.ready: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self._blocked: dict[int, memoryview] = {}  # bodies waiting for send window, in order
        self._flush_handle: asyncio.Handle | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._last_received = loop.time()
        self._ping_sent: float | None = None
        self._error: H2Error | None = None

    # -- opening and closing ------------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        *,
        timeout: float,
        server_hostname: str | None = None,
        pool: H2Pool | None = None,
    ) -> H2ClientConnection:
        """Connect, handshake and exchange SETTINGS (a client certificate refused by the server surfaces
        here too, as TLS 1.3 reports it after the handshake): :class:`ConnectError` on any failure."""
        loop = asyncio.get_running_loop()
        conn = cls(loop, timeout, pool)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: conn,
                    host,
                    port,
                    ssl=ssl_context,
                    server_hostname=server_hostname or host,
                    ssl_handshake_timeout=timeout,
                )
                await conn.ready
        except H2Error as exc:
            conn.abort()
            raise ConnectError(str(exc)) from exc
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            conn.abort()
            text = str(exc) or ("no answer in time" if isinstance(exc, TimeoutError) else "")
            raise ConnectError(f"{type(exc).__name__}: {text}") from exc
        except BaseException:
            conn.abort()
            raise
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            self._fail_connection(ProtocolFailure("the server did not negotiate HTTP/2 (ALPN h2)"))
            return
        h2c = self.h2
        h2c.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _RECEIVE_WINDOW,
            },
        )
        h2c.initiate_connection()
        h2c.increment_flow_control_window(_RECEIVE_WINDOW)
        self.transport.write(h2c.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._error is None:
            text = f"{type(exc).__name__}: {exc}" if exc else "the server closed the connection"
            self._error = ConnectionLost(text)
        self._closed(self._error)
        if not self.lost.done():
            self.lost.set_result(None)

    def close(self) -> None:
        """Say GOAWAY and close (streams still open fail with :class:`ConnectionLost`)."""
        if self.transport is None or self.closed:
            self._closed(ConnectionLost("the client closed the connection"))
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection()
            self.transport.write(self.h2.data_to_send())
        self._error = self._error or ConnectionLost("the client closed the connection")
        self.transport.close()
        self._closed(self._error)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._closed(self._error or ConnectionLost("the connection was aborted"))

    async def wait_closed(self, timeout: float = 1.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self.lost)
        except TimeoutError:
            self.abort()

    def _fail_connection(self, error: H2Error) -> None:
        if self._error is None:
            self._error = error
        if self.transport is not None:
            with contextlib.suppress(Exception):
                data = self.h2.data_to_send()
                if data:
                    self.transport.write(data)
            self.transport.abort()
        self._closed(self._error)

    def _closed(self, error: H2Error) -> None:
        """Fail every waiting stream; idempotent."""
        first = not self.closed
        self.closed = True
        self.usable = False
        for handle in (self._flush_handle, self._sweep_handle):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._sweep_handle = None
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved: nobody may be waiting
        streams, self.streams = self.streams, {}
        self._blocked.clear()
        self.h2.inflight = 0
        for stream in streams.values():
            if not stream.future.done():
                stream.future.set_exception(error)
        if first and self.pool is not None:
            self.pool._connection_closed(self, len(streams))
        if self.transport is None and not self.lost.done():
            self.lost.set_result(None)  # never connected (connection_lost sets it otherwise)

    # -- requests -----------------------------------------------------------------------------------
    @property
    def free(self) -> int:
        """How many more streams the connection takes now (0 when it takes none)."""
        return self.max_streams - len(self.streams) if self.usable else 0

    def submit(self, headers: Sequence[Header], body: bytes) -> asyncio.Future[Response]:
        """Start a request (headers in the caller's order); the future gets the :class:`Response`, or an
        :class:`H2Error`. The caller checks :attr:`free` first."""
        if not self.usable:
            raise self._error or ConnectionLost("the connection is not open")
        h2c = self.h2
        sid = h2c.get_next_available_stream_id()
        try:
            h2c.send_headers(sid, headers, end_stream=not body)
        except h2.exceptions.TooManyStreamsError as exc:
            raise Refused(f"{type(exc).__name__}: {exc}") from exc
        except h2.exceptions.ProtocolError as exc:
            self._fail_connection(ProtocolFailure(f"{type(exc).__name__}: {exc}"))
            raise Refused(f"{type(exc).__name__}: {exc}") from exc
        future: asyncio.Future[Response] = self.loop.create_future()
        self.streams[sid] = _Stream(future, self.loop.time() + self.timeout)
        h2c.inflight = len(self.streams)
        if body:
            if self._blocked or len(body) > h2c.local_flow_control_window(sid):
                self._blocked[sid] = memoryview(body)
                self._send_blocked()
            else:
                h2c.send_data(sid, body, end_stream=True)
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)
        if self._sweep_handle is None:
            self._sweep_handle = self.loop.call_at(self.loop.time() + self._sweep_every(), self._sweep)
        return future

    def _sweep_every(self) -> float:
        return max(0.01, self.timeout / 4)

    def _flush(self) -> None:
        self._flush_handle = None
        if self.transport is not None and not self.closed:
            data = self.h2.data_to_send()
            if data:
                self.transport.write(data)

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and not self.closed:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _send_blocked(self) -> None:
        """Send what the windows allow of the bodies waiting for them, oldest first."""
        h2c = self.h2
        for sid, rest in list(self._blocked.items()):
            window = h2c.local_flow_control_window(sid)
            if window <= 0:
                if h2c.outbound_flow_control_window <= 0:
                    return  # the connection window is shut: nothing else can go either
                continue
            while rest and window > 0:
                size = min(len(rest), window, h2c.max_outbound_frame_size)
                h2c.send_data(sid, rest[:size].tobytes(), end_stream=size == len(rest))
                rest = rest[size:]
                window -= size
            if rest:
                self._blocked[sid] = rest
            else:
                del self._blocked[sid]

    def _finish(self, sid: int) -> _Stream | None:
        stream = self.streams.pop(sid, None)
        self.h2.inflight = len(self.streams)
        if self._blocked:
            self._blocked.pop(sid, None)
        if stream is not None and self.pool is not None:
            self.pool._stream_done()
        if not self.usable and not self.streams and self.transport is not None:
            self.transport.close()  # drained after a GOAWAY
        return stream

    # -- receiving ----------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._last_received = self.loop.time()
        self._ping_sent = None
        cut = _after_goaway(data)
        if cut:
            # A GOAWAY and the answers sent after it arrived in one read: h2 would refuse the answers
            # (its connection is closed once it has read the GOAWAY), so the GOAWAY is handled first.
            self.data_received(data[:cut])
            self.data_received(data[cut:])
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail_connection(ProtocolFailure(f"{type(exc).__name__}: {exc}"))
            return
        streams = self.streams
        for event in events:
            if type(event) is h2.events.ResponseReceived:
                stream = streams.get(event.stream_id or 0)
                if stream is not None:
                    for key, value in event.headers or ():
                        if key == b":status":
                            stream.status = int(value)
                        else:
                            stream.headers.append((bytes(key), bytes(value)))
            elif type(event) is h2.events.DataReceived:
                sid = event.stream_id
                assert sid is not None
                stream = streams.get(sid)
                if stream is not None and event.data:
                    stream.body += event.data
                if event.flow_controlled_length:
                    with contextlib.suppress(h2.exceptions.StreamClosedError):
                        self.h2.acknowledge_received_data(event.flow_controlled_length, sid)
            elif type(event) is h2.events.StreamEnded:
                sid = event.stream_id
                assert sid is not None
                if self._blocked and sid in self._blocked:  # answered before the body was all sent
                    with contextlib.suppress(h2.exceptions.ProtocolError):
                        self.h2.reset_stream(sid, h2.errors.ErrorCodes.NO_ERROR)
                done = self._finish(sid)
                if done is not None and not done.future.done():
                    done.future.set_result(Response(done.status, done.headers, done.body))
            elif type(event) is h2.events.StreamReset:
                assert event.stream_id is not None
                done = self._finish(event.stream_id)
                if done is not None and not done.future.done():
                    code = event.error_code
                    label = code.name if isinstance(code, h2.errors.ErrorCodes) else str(code)
                    if code == h2.errors.ErrorCodes.REFUSED_STREAM:
                        done.future.set_exception(Refused(f"RST_STREAM {label}"))
                    else:
                        done.future.set_exception(StreamReset(f"RST_STREAM {label}"))
            elif type(event) is h2.events.WindowUpdated:
                if self._blocked:
                    self._send_blocked()
            elif type(event) is h2.events.RemoteSettingsChanged:
                self.max_streams = self.h2.remote_settings.max_concurrent_streams
                if not self.ready.done():
                    self.usable = True
                    self.ready.set_result(None)
                if self._blocked:
                    self._send_blocked()
                if self.pool is not None:
                    self.pool._wake()
            elif type(event) is h2.events.ConnectionTerminated:
                self._goaway(event)
            # PING is acknowledged by h2 itself; a PING ACK only proves the connection alive (above).
        self._schedule_flush()

    def _goaway(self, event: h2.events.ConnectionTerminated) -> None:
        code = event.error_code
        name = code.name if isinstance(code, h2.errors.ErrorCodes) else str(code)
        extra = (event.additional_data or b"").decode("utf-8", "replace")[:200]
        text = f"GOAWAY {name}" + (f" {extra}" if extra else "")
        last = event.last_stream_id or 0
        self.usable = False
        self._error = ConnectionLost(f"{text}; then the connection closed")
        for sid in [s for s in self.streams if s > last]:
            stream = self._finish(sid)
            if stream is not None and not stream.future.done():
                stream.future.set_exception(Refused(f"{text} (stream {sid} > last stream {last})"))
        if not self.ready.done():
            self.ready.set_exception(ConnectError(text))
        if self.streams and code == h2.errors.ErrorCodes.NO_ERROR:
            # A graceful GOAWAY: the streams up to ``last`` may still be answered, but h2 refuses every
            # frame after a GOAWAY. Let it read them (no new stream is opened: usable is False).
            machine = getattr(self.h2, "state_machine", None)
            if machine is not None and hasattr(machine, "state"):
                machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        elif self.streams or code != h2.errors.ErrorCodes.NO_ERROR:
            self._fail_connection(self._error)
            return
        if not self.streams and self.transport is not None:
            self.transport.close()
        if self.pool is not None:
            self.pool._wake()

    # -- timeouts -----------------------------------------------------------------------------------
    def _sweep(self) -> None:
        self._sweep_handle = None
        if self.closed:
            return
        now = self.loop.time()
        if self._ping_sent is not None and now - self._ping_sent > self.timeout / 2:
            self._fail_connection(ConnectionLost(f"no PING answer within {self.timeout / 2:g}s"))
            return
        expired = []
        for sid, stream in self.streams.items():  # in order of their deadlines
            if stream.deadline > now:
                break
            expired.append(sid)
        for sid in expired:
            gone = self._finish(sid)
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            if gone is not None and not gone.future.done():
                gone.future.set_exception(Timeout(f"no answer within {self.timeout:g}s"))
        if self.streams and self._ping_sent is None and now - self._last_received > self.timeout / 2:
            self._ping_sent = now
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.ping(os.urandom(8))
        if expired or self._ping_sent is not None:
            self._schedule_flush()
        if self.streams:
            self._sweep_handle = self.loop.call_at(now + self._sweep_every(), self._sweep)
        if not self.usable and not self.streams and self.transport is not None:
            self.transport.close()  # drained after a GOAWAY


class H2Pool:
    """Up to ``connections`` HTTP/2 connections to one origin, opened when needed (see the module
    docstring). At most ``max_inflight`` requests are in flight; the streams are spread over the
    connections, about ``max_inflight / connections`` each, and never more than a server allows."""

    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        *,
        server_hostname: str | None = None,
        connections: int = 1,
        max_inflight: int = 1000,
        timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.connections = connections
        self.max_inflight = max_inflight
        self.timeout = timeout
        self.target = max(1, -(-max_inflight // connections))  # streams per connection before another
        self.conns: list[H2ClientConnection] = []
        self.inflight = 0
        self.connects_started = 0
        self._connecting: asyncio.Task[H2ClientConnection] | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def _pick(self) -> H2ClientConnection | None:
        if self.inflight >= self.max_inflight:
            return None
        best: H2ClientConnection | None = None
        least = 1 << 30
        live = 0
        for conn in self.conns:
            if conn.usable:
                live += 1
                n = len(conn.streams)
                if n < least:
                    best, least = conn, n
        if (best is None or least >= self.target) and self._connecting is None and not self._closed:
            if live < self.connections:
                self._start_connect()
        if best is not None and least < best.max_streams:
            return best
        return None

    def try_submit(self, headers: Sequence[Header], body: bytes) -> asyncio.Future[Response] | None:
        """The request's future, or None when no connection can take it now (then :meth:`wait`)."""
        conn = self._pick()
        if conn is None:
            return None
        future = conn.submit(headers, body)
        self.inflight += 1
        return future

    async def wait(self) -> None:
        """Wait until a request may fit (raises the connect error when no connection could be opened)."""
        if self._closed:
            raise ConnectionLost("the connection pool is closed")
        connecting = self._connecting
        if connecting is not None and not any(c.usable for c in self.conns):
            await asyncio.shield(connecting)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.timeout):
                await waiter
        except TimeoutError:
            raise Timeout(f"no free stream within {self.timeout:g}s") from None
        finally:
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _start_connect(self) -> None:
        self.connects_started += 1
        task = asyncio.get_running_loop().create_task(self._connect())
        self._connecting = task
        task.add_done_callback(self._connected)

    async def _connect(self) -> H2ClientConnection:
        conn = await H2ClientConnection.open(
            self.host,
            self.port,
            self.ssl_context,
            timeout=self.timeout,
            server_hostname=self.server_hostname,
            pool=self,
        )
        if self._closed:
            conn.close()
            raise ConnectionLost("the connection pool is closed")
        self.conns.append(conn)
        return conn

    def _connected(self, task: asyncio.Task[H2ClientConnection]) -> None:
        self._connecting = None
        if not task.cancelled():
            task.exception()  # retrieved here; waiters get it from the task
        self._wake(all_of_them=True)

    def _stream_done(self) -> None:
        self.inflight -= 1
        if self._waiters:
            self._wake()

    def _connection_closed(self, conn: H2ClientConnection, streams: int) -> None:
        self.inflight -= streams
        with contextlib.suppress(ValueError):
            self.conns.remove(conn)
        self._wake(all_of_them=True)

    def _wake(self, all_of_them: bool = False) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not all_of_them:
                    return

    async def aclose(self) -> None:
        """Close every connection (requests still in flight fail with :class:`ConnectionLost`)."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        conns, self.conns = list(self.conns), []
        for conn in conns:
            conn.close()
        for conn in conns:
            await conn.wait_closed()
        self._wake(all_of_them=True)


_GOAWAY_HEAD = b"\x07\x00\x00\x00\x00\x00"  # frame type GOAWAY, no flags, stream 0


def _after_goaway(data: bytes) -> int:
    """Where a GOAWAY frame in ``data`` ends, when more bytes follow it; 0 otherwise.

    A match inside another frame's payload only splits the read in two, which h2 accepts anyway (it
    buffers partial frames), so a false match costs nothing but a second call."""
    i = data.find(_GOAWAY_HEAD, 3)
    if i < 0:
        return 0
    end = i + 6 + int.from_bytes(data[i - 3 : i], "big")
    return end if end < len(data) else 0
