"""Shared pieces of the diagnose scenario tests: a local DNS zone and a world of real objects."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from helpers import TenantSetup, setup_tenant
from pomona.app import Pomona, Settings, build, create_app
from pomona.testing.virtual_device import VirtualDevice

SERVER_HOST = "mdm.pomona.test"


class Zone:
    """A tiny authoritative DNS server on 127.0.0.1 (dnslib) with the CNAMEs a scenario needs."""

    def __init__(self) -> None:
        from dnslib import CNAME, QTYPE, RCODE, RR
        from dnslib.server import BaseResolver, DNSLogger, DNSServer

        zone = self

        class Resolver(BaseResolver):  # type: ignore[misc]
            def resolve(self, request, handler):  # type: ignore[no-untyped-def]
                reply = request.reply()
                name = str(request.q.qname).rstrip(".").lower()
                if name in zone.cnames:
                    reply.add_answer(
                        RR(request.q.qname, QTYPE.CNAME, rdata=CNAME(zone.cnames[name] + "."), ttl=5)
                    )
                else:
                    reply.header.rcode = RCODE.NXDOMAIN
                return reply

        self.cnames: dict[str, str] = {}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        quiet = DNSLogger(logf=lambda _line: None)  # its lines would land in a CLI test's captured output
        self.server = DNSServer(Resolver(), port=self.port, address="127.0.0.1", logger=quiet)
        # Its own thread rather than start_thread(): serve_forever's default poll interval (0.5 s) is what
        # shutdown() waits out, half a second of every test with a zone.
        self.thread = threading.Thread(
            target=self.server.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.server.shutdown()
        self.server.server.server_close()
        self.thread.join()


@pytest.fixture
def zone() -> Iterator[Zone]:
    z = Zone()
    yield z
    z.stop()


@pytest.fixture
def p(db_url: str, tmp_path: Path, zone: Zone) -> Iterator[Pomona]:
    pom = build(
        Settings(
            data_dir=tmp_path,
            database_url=db_url,
            public_url=f"https://{SERVER_HOST}",
            dns_server=f"127.0.0.1:{zone.port}",
        )
    )
    yield pom
    pom.close()


@pytest.fixture
def client(p: Pomona) -> Iterator[TestClient]:
    with TestClient(create_app(pomona=p, eager=False), base_url=f"https://{SERVER_HOST}") as c:  # type: ignore[arg-type]
        yield c


@dataclass
class World:
    p: Pomona
    client: TestClient
    zone: Zone
    s: TenantSetup
    devices: list[VirtualDevice] = field(default_factory=list)

    def device(self, url: str | None = None, **kw: object) -> VirtualDevice:
        d = VirtualDevice(url or self.s.enroll_url, client=self.client, **kw)  # type: ignore[arg-type]
        self.devices.append(d)
        return d

    def link(self, upn: str) -> str:
        return self.p.enrollment.urls.enroll(
            self.p.admin.create_enrollment_token(self.s.name, upn, uses=20).secret
        )

    def dns_ok(self) -> None:
        self.zone.cnames[f"enterpriseenrollment.{self.s.name}.example"] = SERVER_HOST
        self.zone.cnames[f"enterpriseregistration.{self.s.name}.example"] = SERVER_HOST


@pytest.fixture
def w(p: Pomona, client: TestClient, zone: Zone) -> World:
    world = World(p, client, zone, setup_tenant(p, uses=50))
    world.dns_ok()
    return world


def later_clock(minutes: int) -> object:
    """A clock `minutes` ahead of now (the services take their clock as a plain attribute)."""
    later = datetime.now(UTC) + timedelta(minutes=minutes)
    return type("LaterClock", (), {"now": staticmethod(lambda: later)})()
