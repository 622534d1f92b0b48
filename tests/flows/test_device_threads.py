"""Device messages that commit a durable write run on the device threads on PostgreSQL (http/root.py):
many devices reporting results at once each have every command recorded once, none lost or repeated."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from starlette.testclient import TestClient

from helpers import setup_tenant
from pomona.app import Pomona, create_app
from pomona.testing.virtual_device import HandledCommand, VirtualDevice

BASE = "https://pomona.test"
DEVICES = 12
COMMANDS = ("DeviceInformation", "SecurityInfo", "ProfileList")


def device_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pomona-device")]


class TestResultsOffTheLoop:
    def test_concurrent_results_recorded_once(self, pomona: Pomona) -> None:
        """Twelve devices poll at once, each answering three queued commands: every command is
        Acknowledged with one result event, none is sent twice or left pending; on PostgreSQL the results
        ran on at most POMONA_DEVICE_THREADS device threads, which end with the server; SQLite starts none."""
        app = create_app(pomona=pomona, eager=False)
        setup = setup_tenant(pomona, uses=DEVICES)
        before = set(device_threads())
        with TestClient(app, base_url=BASE) as client:  # type: ignore[arg-type]
            devices = [VirtualDevice(setup.enroll_url, client=client) for _ in range(DEVICES)]  # type: ignore[arg-type]
            for d in devices:
                d.enroll()
            udids = [d.udid for d in devices]
            queued = {
                c.command_uuid: c.enrollment_id
                for t in COMMANDS
                for c in pomona.commands.enqueue("acme", t, {}, udids, push=False)
            }

            start = threading.Barrier(DEVICES)

            def poll(d: VirtualDevice) -> list[HandledCommand]:
                start.wait()  # every device's Idle goes out together
                return d.poll()

            with ThreadPoolExecutor(DEVICES) as devices_pool:
                handled = list(devices_pool.map(poll, devices))
            mine = [t for t in device_threads() if t not in before]
        assert not any(t.is_alive() for t in mine)  # the server's lifespan ended them

        if pomona.db.is_sqlite:
            assert mine == []
        else:
            assert 1 <= len(mine) <= pomona.settings.device_threads
        for got in handled:
            assert sorted(h.request_type for h in got) == sorted(COMMANDS)
            assert {h.status for h in got} == {"Acknowledged"}
        sent = Counter(h.command_uuid for got in handled for h in got)
        assert set(sent) == set(queued) and set(sent.values()) == {1}
        for d in devices:
            view = pomona.commands.device("acme", d.udid)
            assert {c.status.value for c in view.commands} == {"Acknowledged"}
            assert len(view.commands) == len(COMMANDS)
            results = Counter(
                e.detail.get("command_uuid")
                for e in pomona.commands.events("acme", udid=d.udid, limit=1000)
                if e.detail.get("status") == "Acknowledged"
            )
            assert set(results) == {c.command_uuid for c in view.commands}
            assert set(results.values()) == {1}
