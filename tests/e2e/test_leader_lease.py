"""The leader lease across real processes (issue 14): two `pomona serve` on one PostgreSQL, one holds the
lease of the health schedule; SIGKILLed, it stops renewing and the other takes the lease over."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from pathlib import Path

from helpers import LiveServer, start_server
from pomona.services.jobs import LEASE_RENEW, LEASE_TTL
from pomona.storage.sql import SqlDatabase


def holder_pid(db: SqlDatabase, name: str) -> int | None:
    holder = db.lease_holder(name, datetime.now(UTC))
    return None if holder is None else int(holder.split(":")[-2])


def wait_for_holder(db: SqlDatabase, name: str, pids: set[int], within: float) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pid = holder_pid(db, name)
        if pid in pids:
            return pid
        time.sleep(0.2)
    raise AssertionError(f"no process of {pids} took the lease {name} (holder: {holder_pid(db, name)})")


def test_sigkilled_leader_is_replaced_within_seconds(tmp_path: Path, pg_url: str) -> None:
    """Of two servers on one PostgreSQL, one leads every singleton job; SIGKILLed, the other leads within
    the lease's lifetime and a renewal."""
    servers: list[LiveServer] = []
    db = SqlDatabase(pg_url)
    try:
        servers = [start_server(tmp_path, pg_url), start_server(tmp_path, pg_url)]
        by_pid = {s.process.pid: s for s in servers}
        first = wait_for_holder(db, "health", set(by_pid), within=10)
        for name in ("shared-state-cleanup", "ade-release-watch"):  # every singleton job has its lease
            assert wait_for_holder(db, name, set(by_pid), within=10) in by_pid
        time.sleep(LEASE_RENEW * 2)  # the other process has tried to take it since: it is still held
        assert holder_pid(db, "health") == first
        by_pid[first].process.send_signal(signal.SIGKILL)
        by_pid[first].process.wait(10)
        killed_at = time.monotonic()
        (other,) = set(by_pid) - {first}
        assert wait_for_holder(db, "health", {other}, within=LEASE_TTL + 3 * LEASE_RENEW) == other
        assert time.monotonic() - killed_at <= LEASE_TTL + 3 * LEASE_RENEW
        assert by_pid[other].process.poll() is None
    finally:
        for s in servers:
            s.stop()
        db.dispose()


def test_stopped_leader_hands_over_at_once(tmp_path: Path, pg_url: str) -> None:
    """A leader stopped cleanly (SIGTERM) releases its leases: the other server leads at its next renewal."""
    servers: list[LiveServer] = []
    db = SqlDatabase(pg_url)
    try:
        servers = [start_server(tmp_path, pg_url), start_server(tmp_path, pg_url)]
        by_pid = {s.process.pid: s for s in servers}
        first = wait_for_holder(db, "health", set(by_pid), within=10)
        by_pid[first].stop()
        (other,) = set(by_pid) - {first}
        assert wait_for_holder(db, "health", {other}, within=3 * LEASE_RENEW) == other
    finally:
        for s in servers:
            s.stop()
        db.dispose()
