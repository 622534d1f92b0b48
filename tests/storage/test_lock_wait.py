"""Lock waits are short on the event loop's thread and long elsewhere (storage/database.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from pomona.domain.errors import StorageBusyError
from pomona.domain.models import Tenant
from pomona.storage.database import LOOP_LOCK_WAIT_MS, SqlDatabase

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@contextmanager
def write_lock(sql: SqlDatabase, release_after: float | None = None) -> Iterator[None]:
    """Another connection holds the lock a tenant insert needs (released on exit, or after a delay)."""
    if sql.is_sqlite:
        holder: object = sqlite3.connect(
            sql.engine.url.database or "", isolation_level=None, check_same_thread=False
        )
        holder.execute("BEGIN IMMEDIATE")  # type: ignore[attr-defined]
    else:
        import psycopg

        holder = psycopg.connect(sql.url.replace("postgresql+psycopg://", "postgresql://"))
        holder.execute("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE")  # type: ignore[attr-defined]
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            holder.rollback()  # type: ignore[attr-defined]
            holder.close()  # type: ignore[attr-defined]

    timer = None if release_after is None else threading.Timer(release_after, release)
    if timer is not None:
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.join()
        release()


def add_tenant(sql: SqlDatabase, name: str) -> None:
    t = Tenant(str(uuid.uuid4()), name, f"{name}.example", NOW, b"c")
    with sql.unit_of_work() as uow:
        uow.tenants.add(t, b"k")


def names(sql: SqlDatabase) -> list[str]:
    with sql.unit_of_work(readonly=True) as uow:
        return [t.name for t in uow.tenants.list()]


class TestLockWait:
    def test_loop_thread_gives_up_after_its_bound(self, sql: SqlDatabase) -> None:
        """A transaction begun on an event loop's thread raises StorageBusyError after the short bound and
        leaves nothing behind."""

        async def on_loop() -> float:
            start = time.monotonic()
            with pytest.raises(StorageBusyError):
                add_tenant(sql, "acme")
            return time.monotonic() - start

        with write_lock(sql):
            waited = asyncio.run(on_loop())
        assert LOOP_LOCK_WAIT_MS / 1000 * 0.5 <= waited < 1.0
        assert names(sql) == []

    def test_worker_thread_waits_for_the_lock(self, sql: SqlDatabase) -> None:
        """Off the loop (a worker thread, after the loop used the same pooled connection) a transaction
        waits until the lock is released, then succeeds."""

        async def scenario() -> float:
            with pytest.raises(StorageBusyError):
                add_tenant(sql, "first")  # on the loop: the pooled connection gets the short bound
            start = time.monotonic()
            await asyncio.to_thread(add_tenant, sql, "acme")
            return time.monotonic() - start

        with write_lock(sql, release_after=2.0):  # a loaded CI reaches the lock well before 2 s
            waited = asyncio.run(scenario())
        assert waited >= 0.6
        assert names(sql) == ["acme"]

    def test_loop_thread_without_contention(self, sql: SqlDatabase) -> None:
        """With no lock held elsewhere, a loop-thread transaction commits as usual."""

        async def on_loop() -> None:
            add_tenant(sql, "acme")

        asyncio.run(on_loop())
        assert names(sql) == ["acme"]
