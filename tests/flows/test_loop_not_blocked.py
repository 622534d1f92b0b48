"""A device request that waits for a database lock does not freeze the server's event loop."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from helpers import setup_tenant
from pomona.app import Pomona, Settings, build, create_app
from pomona.protocol import cms
from pomona.testing.virtual_device import VirtualDevice

CHECKIN_TYPE = "application/x-apple-aspen-mdm-checkin"
BASE = "https://pomona.test"


@pytest.fixture
def pomona(tmp_path: Path) -> Iterator[Pomona]:
    p = build(Settings(data_dir=tmp_path, public_url=BASE))
    yield p
    p.close()


def hold_write_lock(path: str, seconds: float, held: threading.Event) -> None:
    """Another process's writer: BEGIN IMMEDIATE on the database file, kept for ``seconds``."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    held.set()
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()


class TestLockWaitOffTheLoop:
    def test_healthz_served_while_a_checkin_waits_for_a_lock(self, pomona: Pomona, tmp_path: Path) -> None:
        """While another writer holds SQLite's lock for 2 s, a TokenUpdate waits for it (off the loop) and
        succeeds once it is released, and /healthz keeps answering within 300 ms meanwhile."""
        app = create_app(pomona=pomona)
        s = setup_tenant(pomona)
        with TestClient(app, base_url=BASE) as client:  # type: ignore[arg-type]
            dev = VirtualDevice(s.enroll_url, client=client)
            dev.enroll()
        assert dev.identity_cert is not None and dev.check_in_url is not None
        body = dev.token_update_message()
        signature = base64.b64encode(cms.sign_detached(body, dev.identity_cert, dev.key)).decode()
        headers = {"Content-Type": CHECKIN_TYPE, "Mdm-Signature": signature}

        async def scenario() -> tuple[int, float, list[float]]:
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
                assert (await c.get("/healthz")).status_code == 200  # warm: the first request builds routes
                held = threading.Event()
                holder = threading.Thread(
                    target=hold_write_lock, args=(str(tmp_path / "pomona.db"), 2.0, held)
                )
                holder.start()
                held.wait()
                start = time.monotonic()
                checkin = asyncio.create_task(c.put(dev.check_in_url or "", content=body, headers=headers))
                latencies = []
                while not checkin.done():
                    t0 = time.monotonic()
                    r = await c.get("/healthz")
                    assert r.status_code == 200
                    latencies.append(time.monotonic() - t0)
                    await asyncio.sleep(0.05)
                response = await checkin
                took = time.monotonic() - start
                await asyncio.to_thread(holder.join)
                return response.status_code, took, latencies

        status, took, latencies = asyncio.run(scenario())
        assert status == 200
        assert took >= 1.5  # it did wait for the lock
        assert len(latencies) >= 5 and max(latencies) < 0.3, latencies
