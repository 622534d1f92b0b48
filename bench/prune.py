#!/usr/bin/env python3
"""History retention (services/retention.py): the first prune of a large history, batched as the server
does it, against one DELETE of the same rows, on SQLite and PostgreSQL.

    .venv/bin/python bench/prune.py [--n 200000] [--pg postgresql://postgres@127.0.0.1:5432/postgres]

Each run seeds one tenant with ``n`` events and ``n`` answered commands 100 days old (and a tenth as many
recent events and queued commands, which stay), then deletes what is older than 30 days:

- batched: ``RetentionService.prune`` (5,000 rows a transaction; a tenant with nothing old costs one
  transaction a kind): the wall time, the rows a second, the
  longest and the median batch (what a writer may wait behind: SQLite's write lock, PostgreSQL's row
  locks), and on PostgreSQL the WAL of the largest batch's commit;
- one DELETE: the same rows in one transaction per table, as a prune without batches would: the time that
  transaction holds the write lock, and its WAL;
- idle: a second prune when nothing is old (the hourly job's usual round).

Figures are wall times in this process, one run each; the machine is shared: the load average is
printed before and after. A scratch PostgreSQL database is made and dropped for each run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import machine
from sqlalchemy import text

from pomona.services.retention import Retention, RetentionService
from pomona.storage.sql import SqlDatabase

CHUNK = 10_000


class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def seed(db: SqlDatabase, n: int) -> None:
    """acme: ``n`` events and answered commands 100 days old, n/10 recent events and queued commands."""
    now = datetime.now(UTC)
    old = now - timedelta(days=100)
    with db.engine.begin() as conn:
        for t in ("acme", "bolt"):
            conn.execute(
                text(
                    "INSERT INTO tenants (id, name, domain, created_at, ca_cert_pem, ca_key_pem, licence_seats, "
                    "policy_version) VALUES (:i, :i, 'x.example', :c, :p, :p, 0, 0)"
                ),
                {"i": t, "c": old, "p": b"p"},
            )
        conn.execute(
            text("INSERT INTO devices (id, tenant_id, udid, created_at) VALUES ('d', 'acme', 'u', :c)"),
            {"c": old},
        )
        conn.execute(
            text(
                "INSERT INTO enrollments (id, tenant_id, device_id, udid, status, type, cert_fingerprint, topic, "
                "started_at, awaiting_configuration) VALUES ('e', 'acme', 'd', 'u', 'active', 'byod', 'fp', 't', "
                ":c, false)"
            ),
            {"c": old},
        )
    rows = [(old + timedelta(seconds=i), "Acknowledged", True) for i in range(n)]
    rows += [(now - timedelta(seconds=i), "Queued", False) for i in range(n // 10)]
    event = text(
        "INSERT INTO events (tenant_id, at, step, outcome, reason, serial, detail) "
        "VALUES ('acme', :at, 'command', 'ok', NULL, 'SERIAL0001', :detail)"
    )
    command = text(
        "INSERT INTO commands (tenant_id, command_uuid, enrollment_id, device_id, request_type, body, status, "
        "created_at, result_at, result) VALUES ('acme', :u, 'e', 'd', 'DeviceInformation', :b, :s, :at, :r, :res)"
    )
    body, result = b"x" * 600, b"y" * 1500  # about a DeviceInformation command and its answer
    detail = '{"request_type": "DeviceInformation", "status": "Acknowledged"}'
    for i in range(0, len(rows), CHUNK):
        part = rows[i : i + CHUNK]
        with db.engine.begin() as conn:
            conn.execute(event, [{"at": at, "detail": detail} for at, _, _ in part])
            conn.execute(
                command,
                [
                    {
                        "u": f"c{i + k}",
                        "b": body,
                        "s": s,
                        "at": at,
                        "r": at if done else None,
                        "res": result if done else None,
                    }
                    for k, (at, s, done) in enumerate(part)
                ],
            )
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


def wal(db: SqlDatabase) -> int | None:
    if db.is_sqlite:
        return None
    with db.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").scalar_one())


def batched(db: SqlDatabase, n: int) -> None:
    service = RetentionService(db, Clock(), Retention(30, 30))
    marks: list[tuple[float, int | None]] = []
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        marks.append((time.perf_counter(), wal(db)))

    marks.append((start, wal(db)))
    report = service.prune(progress=progress)
    wall = time.perf_counter() - start
    assert (report.events, report.commands) == (n, n), report
    steps = [(b[0] - a[0]) * 1000 for a, b in zip(marks, marks[1:], strict=False)][
        :-1
    ]  # the last is the end call
    wals = [
        b[1] - a[1] for a, b in zip(marks, marks[1:], strict=False) if a[1] is not None and b[1] is not None
    ]
    print(
        f"  batched      {2 * n:>9,} rows  {wall:7.2f} s  {2 * n / wall:>9,.0f} rows/s  {len(steps)} transactions: "
        f"longest {max(steps):6.1f} ms, median {statistics.median(steps):6.1f} ms"
        + (f"; largest batch WAL {max(wals) / 1e6:6.1f} MB, all {sum(wals) / 1e6:7.1f} MB" if wals else "")
    )
    t0 = time.perf_counter()
    again = service.prune()
    assert again.tenants == []
    print(f"  idle round   nothing old: {(time.perf_counter() - t0) * 1000:.1f} ms")


def one_delete(db: SqlDatabase, n: int) -> None:
    cut = datetime.now(UTC) - timedelta(days=30)
    before = wal(db)
    t0 = time.perf_counter()
    with db.engine.begin() as conn:
        a = conn.execute(text("DELETE FROM events WHERE tenant_id = 'acme' AND at < :c"), {"c": cut}).rowcount
        b = conn.execute(
            text(
                "DELETE FROM commands WHERE tenant_id = 'acme' AND result_at < :c "
                "AND status IN ('Acknowledged', 'Error', 'CommandFormatError')"
            ),
            {"c": cut},
        ).rowcount
    wall = time.perf_counter() - t0
    after = wal(db)
    assert (a, b) == (n, n)
    shown = (
        "" if before is None or after is None else f"; its WAL {(after - before) / 1e6:7.1f} MB in one commit"
    )
    print(f"  one DELETE   {2 * n:>9,} rows  {wall:7.2f} s  the write lock held {wall * 1000:,.0f} ms{shown}")


@contextmanager
def database(kind: str, pg: str) -> Iterator[SqlDatabase]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as d:
            db = SqlDatabase(f"sqlite:///{Path(d) / 'pomona.db'}")
            db.create_all()
            try:
                yield db
            finally:
                db.dispose()
        return
    import psycopg

    scratch = f"bench_prune_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{scratch}"')
    db = SqlDatabase(f"{pg.rsplit('/', 1)[0]}/{scratch}")
    try:
        db.create_all()
        yield db
    finally:
        db.dispose()
        with psycopg.connect(pg, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{scratch}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000, help="old events, and as many old answered commands")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--db", default="sqlite,postgres")
    args = ap.parse_args()
    print(machine())
    print(f"load average before: {load()}")
    for kind in args.db.split(","):
        print(
            f"[{kind}] {args.n:,} old events + {args.n:,} old answered commands (and a tenth as many recent)"
        )
        run: Callable[[SqlDatabase, int], None]
        for run in (batched, one_delete):
            with database(kind, args.pg) as db:
                seed(db, args.n)
                run(db, args.n)
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
