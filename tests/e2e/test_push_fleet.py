"""Push delivery end to end: a real `pomona serve` process (SQLite) pushing through the APNs emulator to
1,000 virtual devices that poll when woken, with injected APNs failures and a SIGKILL of the server."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from helpers import LiveServer, free_port, start_server
from pomona.app import Pomona, Settings, build
from pomona.storage import schema as s
from pomona.testing.apns_emulator import ApnsEmulator
from pomona.testing.keypool import KeyPool
from pomona.testing.virtual_device import VirtualDevice

DEVICES = 1000
CONCURRENCY = 8
WAIT = 90.0  # a guard against hanging, not a timing assertion


@dataclass
class Fleet:
    emu: ApnsEmulator
    server: LiveServer
    p: Pomona
    token: str
    devices: list[VirtualDevice]
    clients: list[httpx.Client]
    data_dir: Path
    port: int
    env: dict[str, str]

    def restart(self) -> None:
        self.server = _start(self.data_dir, self.port, self.env)


def _start(data_dir: Path, port: int, env: dict[str, str]) -> LiveServer:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return start_server(data_dir, None, port=port)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    data_dir = tmp_path_factory.mktemp("push-fleet")
    port = free_port()
    with ApnsEmulator.start(seed=7, delivery_workers=8) as emu:
        p = build(Settings(data_dir=data_dir, public_url=f"http://127.0.0.1:{port}", push_worker=False))
        p.admin.create_tenant("acme", "acme.example")
        cert, key = emu.issue_push_cert()
        p.apns.upload("acme", cert, key, apple_id="mdm@acme.example", canary=False)
        p.admin.set_authority("acme", "pomona")
        p.policy.set_seats("acme", 10)
        p.admin.create_user("acme", "fleet@acme.example")
        p.policy.licence("acme", "fleet@acme.example", assign=True)
        p.policy.set_user_flags("acme", "fleet@acme.example", is_dem=True)  # no per-user device limit
        enroll_url = p.enrollment.urls.enroll(
            p.admin.create_enrollment_token("acme", "fleet@acme.example", uses=DEVICES + 10).secret
        )
        token = p.admin.create_api_token("acme").secret
        env = {
            "POMONA_APNS_URL": emu.url,
            "POMONA_APNS_CA": str(emu.ca_path),
            "POMONA_PUSH_REPUSH": "2,4,8",
            "POMONA_PUSH_LEASE": "5",
            "POMONA_PUSH_RETRY_BASE": "0.5",
            "POMONA_PUSH_POLL": "0.2",
        }
        server = _start(data_dir, port, env)
        pool = KeyPool.load_or_create(None, DEVICES)
        clients = [httpx.Client(timeout=30) for _ in range(CONCURRENCY)]
        devices = [
            VirtualDevice(enroll_url, key=pool.take(), client=clients[i % CONCURRENCY])
            for i in range(DEVICES)
        ]
        with ThreadPoolExecutor(CONCURRENCY) as ex:
            list(ex.map(lambda d: d.enroll(), devices))
        for d in devices:
            assert d.push_token is not None
            emu.register(d.push_token, d.poll)
        f = Fleet(emu, server, p, token, devices, clients, data_dir, port, env)
        try:
            yield f
        finally:
            f.server.stop()
            for c in clients:
                c.close()
            p.close()


def _enqueue(f: Fleet) -> list[str]:
    r = httpx.post(
        f"{f.server.url}/api/v1/tenants/acme/commands",
        headers={"Authorization": f"Bearer {f.token}"},
        json={"request_type": "SecurityInfo", "devices": [d.udid for d in f.devices]},
        timeout=120,
    )
    assert r.status_code == 201, r.text
    return [c["command_uuid"] for c in r.json()["commands"]]


def _acknowledged(p: Pomona, uuids: list[str]) -> int:
    c = s.commands
    with p.db.unit_of_work(readonly=True) as uow:
        return int(
            uow.conn.execute(  # type: ignore[attr-defined]
                select(func.count()).where(c.c.command_uuid.in_(uuids), c.c.status == "Acknowledged")
            ).scalar_one()
        )


def _wait_all(f: Fleet, uuids: list[str], during: Any = None) -> int:
    deadline = time.monotonic() + WAIT
    done = 0
    while time.monotonic() < deadline:
        done = _acknowledged(f.p, uuids)
        if done == len(uuids):
            break
        if during is not None:
            during()
        time.sleep(0.25)
    return done


class TestPushFleet:
    def test_every_device_gets_its_command_through_pushes(self, fleet: Fleet) -> None:
        """1,000 enrolled devices, one command each: every command is pushed, fetched and acknowledged."""
        fleet.emu.reset_stats()
        uuids = _enqueue(fleet)
        assert _wait_all(fleet, uuids) == DEVICES
        assert fleet.emu.stats().accepted >= DEVICES

    def test_none_lost_when_apns_fails_transiently(self, fleet: Fleet) -> None:
        """503 for 20% of pushes and a GOAWAY every 500 streams lose no command."""
        fleet.emu.reset_stats()
        fleet.emu.configure(fail_rate=0.2, fail_status=503, goaway_every=500)
        try:
            uuids = _enqueue(fleet)
            assert _wait_all(fleet, uuids) == DEVICES
            st = fleet.emu.stats()
        finally:
            fleet.emu.reset_faults()
        assert st.rejected.get("ServiceUnavailable", 0) > 0
        assert st.goaways > 0

    def test_none_lost_when_the_server_is_killed_mid_run(self, fleet: Fleet) -> None:
        """SIGKILL of the server while pushing, then a restart: every command still arrives."""
        fleet.emu.reset_stats()
        uuids = _enqueue(fleet)
        deadline = time.monotonic() + WAIT
        while fleet.emu.stats().received < DEVICES // 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(fleet.server.process.pid, signal.SIGKILL)
        fleet.server.process.wait(10)
        acknowledged_at_kill = _acknowledged(fleet.p, uuids)
        restarter = threading.Timer(0.5, fleet.restart)
        restarter.start()
        restarter.join()
        assert acknowledged_at_kill < DEVICES  # the kill did land mid-run
        assert _wait_all(fleet, uuids) == DEVICES
