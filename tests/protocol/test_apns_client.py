"""The APNs client against the APNs emulator: real HTTP/2, TLS with client certificates, Apple's answers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from pomona.domain.reasons import ReasonCode
from pomona.push.apns import ApnsClient, Push, PushResult
from pomona.testing.apns_emulator import ApnsEmulator


def token() -> str:
    return os.urandom(32).hex()


@pytest.fixture(scope="module")
def emu() -> Iterator[ApnsEmulator]:
    with ApnsEmulator.start(seed=7) as e:
        yield e


@pytest.fixture
def clean(emu: ApnsEmulator) -> Iterator[ApnsEmulator]:
    emu.reset_faults()
    emu.reset_stats()
    yield emu
    emu.reset_faults()


@pytest.fixture
def client(clean: ApnsEmulator) -> Iterator[tuple[ApnsClient, str]]:
    cert, key = clean.issue_push_cert()
    c = ApnsClient(base_url=clean.url, verify=clean.ca_pem, backoff=0.005, max_backoff=0.05, max_attempts=10)
    topic = c.set_identity(cert, key).topic
    yield c, topic
    c.close()


def one(c: ApnsClient, push: Push) -> PushResult:
    return c.send_sync([push])[0]


class TestDelivery:
    def test_accepted_push_is_delivered_with_apns_id(self, client: tuple[ApnsClient, str]) -> None:
        """A valid MDM push is answered 200 with an apns-id and reported delivered."""
        c, topic = client
        r = one(c, Push(token(), "magic", topic, expiration=0))
        assert (r.status, r.outcome, r.reason_code, r.attempts) == (200, "delivered", None, 1)
        assert r.apns_id and len(r.apns_id) == 36

    def test_accepted_push_wakes_the_registered_device(
        self, clean: ApnsEmulator, client: tuple[ApnsClient, str]
    ) -> None:
        """An accepted push to a registered token calls its callback, as an iPhone would connect."""
        c, topic = client
        tok = token()
        woken = threading.Event()
        clean.register(tok, woken.set)
        try:
            assert one(c, Push(bytes.fromhex(tok), "magic", topic)).outcome == "delivered"
            assert woken.wait(5)
            assert clean.wait_delivered(1)
        finally:
            clean.unregister(tok)

    def test_results_keep_the_order_of_the_pushes(self, client: tuple[ApnsClient, str]) -> None:
        """send() returns one result per push, in the order given."""
        c, topic = client
        toks = [token() for _ in range(50)]
        results = c.send_sync([Push(t, "m", topic) for t in toks])
        assert [r.token_hex for r in results] == toks


class TestFailures:
    @pytest.mark.parametrize(
        ("reason", "status", "outcome", "code"),
        [
            ("Unregistered", 410, "device_permanent", ReasonCode.PUSH_TOKEN_UNREGISTERED),
            ("BadDeviceToken", 400, "device_permanent", ReasonCode.PUSH_REJECTED),
            ("DeviceTokenNotForTopic", 400, "device_permanent", ReasonCode.PUSH_REJECTED),
        ],
    )
    def test_token_outcomes_are_device_permanent(
        self,
        clean: ApnsEmulator,
        client: tuple[ApnsClient, str],
        reason: str,
        status: int,
        outcome: str,
        code: ReasonCode,
    ) -> None:
        """Per-token rejections are classified device-permanent with their reason code, not retried."""
        c, topic = client
        tok = token()
        clean.set_token_outcome(tok, reason)
        r = one(c, Push(tok, "m", topic))
        assert (r.status, r.reason, r.outcome, r.reason_code, r.attempts) == (
            status,
            reason,
            outcome,
            code,
            1,
        )
        assert (r.timestamp is not None) == (status == 410)

    @pytest.mark.parametrize(
        ("reason", "status"),
        [("BadCertificate", 403), ("BadCertificateEnvironment", 403), ("TopicDisallowed", 400)],
    )
    def test_tenant_outcomes_are_tenant_permanent(
        self, clean: ApnsEmulator, client: tuple[ApnsClient, str], reason: str, status: int
    ) -> None:
        """Certificate and topic rejections are tenant-permanent APNS_CERT_INVALID."""
        c, topic = client
        clean.set_topic_outcome(topic, reason)
        r = one(c, Push(token(), "m", topic))
        assert (r.status, r.reason, r.outcome, r.reason_code) == (
            status,
            reason,
            "tenant_permanent",
            ReasonCode.APNS_CERT_INVALID,
        )

    @pytest.mark.parametrize(
        ("status", "code"),
        [
            (429, ReasonCode.PUSH_REJECTED),
            (500, ReasonCode.PUSH_UNREACHABLE),
            (503, ReasonCode.PUSH_UNREACHABLE),
        ],
    )
    def test_persistent_transient_failures_are_retried_then_reported(
        self, clean: ApnsEmulator, client: tuple[ApnsClient, str], status: int, code: ReasonCode
    ) -> None:
        """429/500/503 are retried max_attempts times, then reported transient."""
        c, topic = client
        clean.configure(fail_rate=1.0, fail_status=status)
        r = one(c, Push(token(), "m", topic))
        assert (r.status, r.outcome, r.reason_code, r.attempts) == (status, "transient", code, c.max_attempts)

    def test_certificate_without_uid_is_bad_certificate(self, clean: ApnsEmulator) -> None:
        """A client certificate without a subject UID is answered 403 BadCertificate."""
        cert, key = clean.issue_push_cert(with_uid=False)
        with ApnsClient(base_url=clean.url, verify=clean.ca_pem) as c:
            c.set_identity(cert, key, topic="com.apple.mgmt.External.x")
            r = one(c, Push(token(), "m", "com.apple.mgmt.External.x"))
        assert (r.status, r.reason, r.outcome) == (403, "BadCertificate", "tenant_permanent")

    def test_topic_other_than_the_certificate_uid_is_disallowed(self, clean: ApnsEmulator) -> None:
        """An apns-topic that is not the certificate's UID is answered 400 TopicDisallowed."""
        cert, key = clean.issue_push_cert()
        with ApnsClient(base_url=clean.url, verify=clean.ca_pem) as c:
            c.set_identity(cert, key, topic="com.apple.mgmt.External.other")
            r = one(c, Push(token(), "m", "com.apple.mgmt.External.other"))
        assert (r.status, r.reason, r.reason_code) == (400, "TopicDisallowed", ReasonCode.APNS_CERT_INVALID)

    def test_short_token_is_bad_device_token(self, client: tuple[ApnsClient, str]) -> None:
        """A token that is not 64 hex characters is answered 400 BadDeviceToken."""
        c, topic = client
        r = one(c, Push("abcd", "m", topic))
        assert (r.status, r.reason, r.reason_code) == (400, "BadDeviceToken", ReasonCode.PUSH_REJECTED)

    def test_unknown_topic_is_cert_missing_without_a_request(
        self, clean: ApnsEmulator, client: tuple[ApnsClient, str]
    ) -> None:
        """A push for a topic with no certificate is tenant-permanent APNS_CERT_MISSING and never sent."""
        c, _ = client
        r = one(c, Push(token(), "m", "com.apple.mgmt.External.none"))
        assert (r.outcome, r.reason_code, r.status) == (
            "tenant_permanent",
            ReasonCode.APNS_CERT_MISSING,
            None,
        )
        assert clean.stats().received == 0

    def test_untrusted_certificate_fails_tls_and_is_unreachable(self, clean: ApnsEmulator) -> None:
        """A certificate the emulator's CA did not issue fails the TLS handshake: transient PUSH_UNREACHABLE."""
        from pomona.testing.pushcert import make_standin_push_cert

        cert, key = make_standin_push_cert()
        with ApnsClient(base_url=clean.url, verify=clean.ca_pem, max_attempts=2, backoff=0.001) as c:
            topic = c.set_identity(cert, key).topic
            r = one(c, Push(token(), "m", topic))
        assert (r.status, r.outcome, r.reason_code) == (None, "transient", ReasonCode.PUSH_UNREACHABLE)

    def test_closed_port_is_unreachable(self, clean: ApnsEmulator) -> None:
        """Nothing listening: retried, then transient PUSH_UNREACHABLE with the error in detail."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cert, key = clean.issue_push_cert()
        with ApnsClient(
            base_url=f"https://127.0.0.1:{port}", verify=clean.ca_pem, max_attempts=3, backoff=0.001
        ) as c:
            topic = c.set_identity(cert, key).topic
            r = one(c, Push(token(), "m", topic))
        assert (r.outcome, r.reason_code, r.attempts) == ("transient", ReasonCode.PUSH_UNREACHABLE, 3)
        assert r.detail

    def test_down_emulator_refuses_then_recovers(
        self, clean: ApnsEmulator, client: tuple[ApnsClient, str]
    ) -> None:
        """While the emulator is down pushes are unreachable; once it is up again they are delivered."""
        c, topic = client
        assert one(c, Push(token(), "m", topic)).outcome == "delivered"
        clean.configure(down=True)
        try:
            r = one(c, Push(token(), "m", topic))
            assert (r.outcome, r.reason_code) == ("transient", ReasonCode.PUSH_UNREACHABLE)
        finally:
            clean.configure(down=False)
        assert one(c, Push(token(), "m", topic)).outcome == "delivered"


class TestResilience:
    def test_503_and_goaway_lose_no_push(self, clean: ApnsEmulator, client: tuple[ApnsClient, str]) -> None:
        """With 20% 503s and a GOAWAY every 500 streams, 2,000 pushes are all finally delivered."""
        c, topic = client
        clean.configure(fail_rate=0.2, fail_status=503, goaway_every=500)
        results = c.send_sync([Push(token(), "m", topic) for _ in range(2000)])
        assert [r.outcome for r in results].count("delivered") == 2000
        stats = clean.stats()
        assert stats.goaways >= 3
        assert stats.rejected.get("ServiceUnavailable", 0) > 0
        assert stats.accepted >= 2000  # at least once: streams cut off by GOAWAY are resent

    def test_new_certificate_rebuilds_the_pool(
        self, clean: ApnsEmulator, client: tuple[ApnsClient, str]
    ) -> None:
        """A renewed certificate for the same topic builds a new pool keyed by its fingerprint."""
        c, topic = client
        assert one(c, Push(token(), "m", topic)).outcome == "delivered"
        first = c.pool_fingerprint(topic)
        cert, key = clean.issue_push_cert(topic)
        renewed = c.set_identity(cert, key)
        assert one(c, Push(token(), "m", topic)).outcome == "delivered"
        assert c.pool_fingerprint(topic) == renewed.fingerprint != first
        assert c.pools_built == 2

    def test_async_send_belongs_to_one_loop(self, client: tuple[ApnsClient, str]) -> None:
        """A client used from its sync thread refuses to be awaited from another event loop."""
        c, topic = client
        one(c, Push(token(), "m", topic))
        with pytest.raises(RuntimeError):
            asyncio.run(c.send([Push(token(), "m", topic)]))


class TestEmulatorChecks:
    def test_wrong_method_and_path_are_answered_as_apple(self, clean: ApnsEmulator) -> None:
        """GET is 405 MethodNotAllowed, another path 404 BadPath, an empty body 400 PayloadEmpty."""
        assert clean.handle("t", "GET", "/3/device/" + "a" * 64, [], b"")[0] == 405
        assert clean.handle("t", "POST", "/2/device/x", [], b"")[0] == 404
        status, _, body = clean.handle("t", "POST", "/3/device/" + "a" * 64, [], b"")
        assert (status, body) == (400, b'{"reason": "PayloadEmpty"}')
        assert clean.handle("t", "POST", "/3/device/" + "a" * 64, [], b'{"aps":{}}')[0] == 400


# -- the HTTP/2 transport against a scripted server: GOAWAY, RST_STREAM, drops, flow control, timeouts ----


class _ScriptedConn(asyncio.Protocol):
    """A server connection that hands each complete request to the test's script."""

    def __init__(self, server: _Scripted) -> None:
        self.server = server
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.transport: asyncio.Transport | None = None
        self.index = 0
        self.bodies: dict[int, bytearray] = {}
        self.paths: dict[int, str] = {}
        self.gone = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.index = len(self.server.conns)
        self.server.conns.append(self)
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values=self.server.settings)
        self.h2.initiate_connection()
        transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        if self.gone:
            return
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                assert event.stream_id is not None
                headers = [(str(k), str(v)) for k, v in event.headers or []]
                self.server.header_names.append([k for k, _ in headers])
                self.paths[event.stream_id] = dict(headers)[":path"]
                self.bodies[event.stream_id] = bytearray()
                open_now = len(self.paths)
                self.server.max_open = max(self.server.max_open, open_now)
            elif isinstance(event, h2.events.DataReceived):
                assert event.stream_id is not None
                self.bodies[event.stream_id].extend(event.data or b"")
                if self.server.ack_data:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                sid = event.stream_id
                assert sid is not None
                token = self.paths[sid].rsplit("/", 1)[-1]
                self.server.requests.append((self.index, sid, token, bytes(self.bodies[sid])))
                self.server.script(self, sid, token)
                if self.gone:
                    return
        self.flush()

    def flush(self) -> None:
        if self.transport is not None and not self.gone:
            data = self.h2.data_to_send()
            if data:
                self.transport.write(data)

    def answer(self, sid: int, status: int = 200) -> None:
        self.paths.pop(sid, None)
        self.h2.send_headers(sid, [(":status", str(status)), ("apns-id", str(uuid.uuid4()))], end_stream=True)

    def reset(self, sid: int, code: h2.errors.ErrorCodes) -> None:
        self.paths.pop(sid, None)
        self.h2.reset_stream(sid, code)

    def goaway(self, last_stream_id: int) -> None:
        """GOAWAY; the streams up to ``last_stream_id`` may still be answered (h2 would refuse to)."""
        self.h2.close_connection(additional_data=b'{"reason":"Shutdown"}', last_stream_id=last_stream_id)
        self.flush()
        self.h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN

    def drop(self) -> None:
        self.gone = True
        assert self.transport is not None
        self.transport.abort()


Script = Callable[[_ScriptedConn, int, str], None]


class _Scripted:
    """An HTTP/2 TLS server (the emulator's CA and server identity) answering as the test's script says."""

    def __init__(
        self, emu: ApnsEmulator, script: Script, settings: dict[h2.settings.SettingCodes, int] | None = None
    ) -> None:
        self.script = script
        self.settings = settings or {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000}
        self.ack_data = True
        self.conns: list[_ScriptedConn] = []
        self.requests: list[tuple[int, int, str, bytes]] = []
        self.header_names: list[list[str]] = []
        self.max_open = 0
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(emu.state_dir / "server.pem", emu.state_dir / "server.key")
        self.ctx.load_verify_locations(cadata=emu.ca_pem.decode())
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.set_alpn_protocols(["h2"])
        self.loop = asyncio.new_event_loop()
        self.port = 0

    def __enter__(self) -> _Scripted:
        ready = threading.Event()

        async def serve() -> None:
            server = await self.loop.create_server(lambda: _ScriptedConn(self), "127.0.0.1", 0, ssl=self.ctx)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self.loop)
        assert ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self.conns:
            if conn.transport is not None:
                self.loop.call_soon_threadsafe(conn.transport.abort)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def sends_of(self, tok: str) -> int:
        return sum(1 for r in self.requests if r[2] == tok)


@pytest.fixture
def identity(clean: ApnsEmulator) -> tuple[bytes, bytes]:
    return clean.issue_push_cert()


def scripted_client(
    server: _Scripted, emu: ApnsEmulator, ident: tuple[bytes, bytes], **kw: Any
) -> tuple[ApnsClient, str]:
    options: dict[str, Any] = {"backoff": 0.001, "max_backoff": 0.01, "max_attempts": 5, **kw}
    c = ApnsClient(base_url=server.url, verify=emu.ca_pem, **options)
    return c, c.set_identity(*ident).topic


class TestTransport:
    def test_headers_go_in_apples_order(self, clean: ApnsEmulator, identity: tuple[bytes, bytes]) -> None:
        """Pseudo-headers, then apns-topic, apns-push-type, apns-expiration, apns-priority, apns-id."""
        with _Scripted(clean, lambda conn, sid, tok: conn.answer(sid)) as server:
            c, topic = scripted_client(server, clean, identity)
            with c:
                assert one(c, Push(token(), "m", topic, expiration=1700000000)).outcome == "delivered"
        assert server.header_names == [
            [":method", ":path", ":scheme", ":authority", "apns-topic", "apns-push-type"]
            + ["apns-expiration", "apns-priority", "apns-id"]
        ]

    def test_goaway_mid_stream_resends_only_the_unprocessed_streams(
        self, clean: ApnsEmulator, identity: tuple[bytes, bytes]
    ) -> None:
        """A graceful GOAWAY while streams are open: streams up to last_stream_id are still answered on
        the old connection, the later ones are resent on a new connection, none is lost or doubled."""
        held: list[int] = []

        def script(conn: _ScriptedConn, sid: int, tok: str) -> None:
            if conn.index > 0:
                conn.answer(sid)
                return
            held.append(sid)
            if len(held) == 40:  # 40 streams open: process the first 10, refuse the rest
                conn.goaway(last_stream_id=held[9])
                for s in held[:10]:
                    conn.answer(s)
                conn.flush()
                assert conn.transport is not None
                conn.transport.close()

        with _Scripted(clean, script) as server:
            c, topic = scripted_client(server, clean, identity, connections=1, max_streams=40)
            with c:
                toks = [token() for _ in range(40)]
                results = c.send_sync([Push(t, "m", topic) for t in toks])
        assert [r.outcome for r in results] == ["delivered"] * 40
        assert [r.attempts for r in results] == [1] * 40  # refused streams do not count as attempts
        assert len(server.conns) == 2
        assert all(server.sends_of(t) == (1 if i < 10 else 2) for i, t in enumerate(toks))

    def test_rst_stream_is_retried(self, clean: ApnsEmulator, identity: tuple[bytes, bytes]) -> None:
        """RST_STREAM REFUSED_STREAM is resent at once; another code is a transient failure, retried."""
        seen: set[str] = set()

        def script(conn: _ScriptedConn, sid: int, tok: str) -> None:
            if tok in seen:
                conn.answer(sid)
                return
            seen.add(tok)
            refused = int(tok[:2], 16) % 2 == 0
            conn.reset(
                sid, h2.errors.ErrorCodes.REFUSED_STREAM if refused else h2.errors.ErrorCodes.INTERNAL_ERROR
            )

        with _Scripted(clean, script) as server:
            c, topic = scripted_client(server, clean, identity)
            with c:
                toks = [token() for _ in range(100)]
                results = c.send_sync([Push(t, "m", topic) for t in toks])
        assert [r.outcome for r in results] == ["delivered"] * 100
        for t, r in zip(toks, results, strict=True):
            assert r.attempts == (1 if int(t[:2], 16) % 2 == 0 else 2)
            assert server.sends_of(t) == 2
        assert len(server.conns) == 1  # a reset stream leaves the connection up

    def test_connection_drop_is_retried_on_a_new_connection(
        self, clean: ApnsEmulator, identity: tuple[bytes, bytes]
    ) -> None:
        """The connection breaks with 50 streams open: all are resent (at least once), on a new one."""

        def script(conn: _ScriptedConn, sid: int, tok: str) -> None:
            if conn.index == 0 and len(server.requests) == 50:
                conn.drop()
            elif conn.index > 0:
                conn.answer(sid)

        with _Scripted(clean, script) as server:
            c, topic = scripted_client(server, clean, identity, connections=1)
            with c:
                results = c.send_sync([Push(token(), "m", topic) for _ in range(50)])
        assert [(r.outcome, r.attempts) for r in results] == [("delivered", 2)] * 50
        assert len(server.conns) == 2

    def test_flow_control_with_many_streams(self, clean: ApnsEmulator, identity: tuple[bytes, bytes]) -> None:
        """Tiny stream windows, bodies larger than the connection window in total and a server limit of
        50 streams: every body arrives whole, split to the windows, and the limit is never exceeded."""
        codes = h2.settings.SettingCodes
        settings = {codes.MAX_CONCURRENT_STREAMS: 50, codes.INITIAL_WINDOW_SIZE: 100}
        with _Scripted(clean, lambda conn, sid, tok: conn.answer(sid), settings) as server:
            c, topic = scripted_client(server, clean, identity, connections=1, max_streams=500)
            with c:
                magic = {token(): os.urandom(600).hex() for _ in range(300)}  # 300 x 1.2 KB > 64 KB
                results = c.send_sync([Push(t, m, topic) for t, m in magic.items()])
        assert [r.outcome for r in results] == ["delivered"] * 300
        assert server.max_open <= 50
        assert {tok: json.loads(body)["mdm"] for _, _, tok, body in server.requests} == magic

    def test_unanswered_stream_times_out_and_is_retried(
        self, clean: ApnsEmulator, identity: tuple[bytes, bytes]
    ) -> None:
        """A stream never answered times out (reset with CANCEL) and is sent again."""

        def script(conn: _ScriptedConn, sid: int, tok: str) -> None:
            if server.sends_of(tok) > 1:
                conn.answer(sid)

        with _Scripted(clean, script) as server:
            c, topic = scripted_client(server, clean, identity, timeout=0.3)
            with c:
                r = one(c, Push(token(), "m", topic))
        assert (r.outcome, r.attempts) == ("delivered", 2)

    def test_silent_connection_is_abandoned(self, clean: ApnsEmulator, identity: tuple[bytes, bytes]) -> None:
        """A connection that answers nothing, not even PING, fails its streams: transient, with detail."""
        with _Scripted(clean, lambda conn, sid, tok: setattr(conn, "gone", True)) as server:
            c, topic = scripted_client(server, clean, identity, timeout=0.4, max_attempts=2)
            with c:
                r = one(c, Push(token(), "m", topic))
        assert (r.status, r.outcome, r.reason_code, r.attempts) == (
            None,
            "transient",
            ReasonCode.PUSH_UNREACHABLE,
            2,
        )
        assert r.detail


class TestVolume:
    def test_10000_pushes_with_goaways_and_503s_lose_nothing(
        self, clean: ApnsEmulator, client: tuple[ApnsClient, str]
    ) -> None:
        """10,000 pushes through GOAWAYs every 1,500 streams and 5% 503s: every one is delivered, in order."""
        c, topic = client
        clean.configure(fail_rate=0.05, fail_status=503, goaway_every=1500)
        toks = [token() for _ in range(10_000)]
        results = c.send_sync([Push(t, "m", topic) for t in toks])
        assert [r.token_hex for r in results] == toks
        assert [r.outcome for r in results].count("delivered") == 10_000
        stats = clean.stats()
        assert stats.goaways >= 6
        assert stats.accepted >= 10_000


class TestGoawayInOneRead:
    def test_goaway_followed_by_answers_is_split_after_the_goaway(self) -> None:
        """A GOAWAY and the answers sent after it in one read are split right after the GOAWAY frame, so
        the client handles the GOAWAY before h2 would refuse the answers (it failed every stream)."""
        from pomona.push.h2conn import _after_goaway

        server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        server.initiate_connection()
        server.data_to_send()
        server.close_connection(last_stream_id=9)
        goaway = server.data_to_send()
        later = b"\x00\x00\x04\x01\x04\x00\x00\x00\x09" + b"\x88\x00\x00\x00"  # any frame after it
        assert _after_goaway(goaway + later) == len(goaway)
        assert _after_goaway(goaway) == 0  # nothing follows: one call, as before
        assert _after_goaway(later) == 0
