#!/usr/bin/env python3
"""Time per statement run on the raw driver (storage/hot_sql.py ``DriverStatement``), in process.

    .venv/bin/python bench/driver_statements.py [--db sqlite,postgres] [--calls 2000] [--rounds 7]

Each figure is one store or channel call repeated ``--calls`` times inside one open transaction (so no
BEGIN/COMMIT in it), the median round's microseconds per call, with the spread (min-max) of the rounds:

- in a unit of work (``Prepared``): a tenant's row by id (a dict); the stores' active enrollment by
  fingerprint (a join; SQLite's timestamp and boolean processors) and a device touched (an UPDATE);
- the command channel's transaction (``HotTx``): the enrollment bound to a fingerprint, the next command
  (none queued), a device touched;
- for scale, the tenant read through SQLAlchemy's ``Connection.execute`` (what ``Prepared`` avoids).

The machine is shared: compare runs made back to back at the same load (printed), not absolutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import drop_pg_database, fresh_pg_database, machine

from pomona.storage.sql import SqlDatabase
from pomona.storage.tenants_sql import _GET as TENANT_GET
from storage.test_prepared import NOW, seed  # the storage tests' tenant, user, device, active enrollment


def per_call(fn: Callable[[], object], calls: int, rounds: int) -> str:
    """The median round's microseconds per call, and the rounds' spread."""
    fn()  # compiled, prepared, processors worked out
    figures = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        figures.append((time.perf_counter_ns() - start) / calls / 1000)
    return f"{statistics.median(figures):7.2f} us (spread {min(figures):.2f}-{max(figures):.2f})"


def run(name: str, url: str, calls: int, rounds: int) -> None:
    db = SqlDatabase(url)
    db.create_all()
    try:
        t, _, e = seed(db)
        device_id = e.device_id or ""
        lines: list[tuple[str, str]] = []
        with db.unit_of_work() as uow:
            lines.append(
                (
                    "Prepared.first: tenant by id",
                    per_call(lambda: TENANT_GET.first(uow.conn, {"id": t.id}), calls, rounds),
                )
            )
            lines.append(
                (
                    "store: active enrollment by fp (join)",
                    per_call(lambda: uow.enrollments.active_by_fingerprint("fp1"), calls, rounds),
                )
            )
            lines.append(
                ("store: device touched", per_call(lambda: uow.devices.touch(device_id, NOW), calls, rounds))
            )
            lines.append(
                (
                    "SQLAlchemy execute: tenant by id",
                    per_call(lambda: uow.conn.execute(TENANT_GET.stmt, {"id": t.id}).first(), calls, rounds),
                )
            )
        with db.command_channel() as ch:
            lines.append(("channel: bound by fp (join)", per_call(lambda: ch.bound("fp1"), calls, rounds)))
            lines.append(
                (
                    "channel: next command (none queued)",
                    per_call(lambda: ch.next_command(e.id, skip_not_now=False), calls, rounds),
                )
            )
            lines.append(
                ("channel: device touched", per_call(lambda: ch.touch(device_id, NOW), calls, rounds))
            )
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        for what, figure in lines:
            print(f"[{name}] {what:40s} {figure}   | load {load}", flush=True)
    finally:
        db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--db", default="sqlite,postgres")
    ap.add_argument("--calls", type=int, default=2000, help="calls per round")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    print(f"machine: {machine()} | load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    pg_admin = os.environ.get("POMONA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    for name in args.db.split(","):
        if name == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                run(name, f"sqlite:///{Path(tmp) / 'bench.db'}", args.calls, args.rounds)
        else:
            url = fresh_pg_database(pg_admin)
            if url is None:
                continue
            try:
                run(name, url, args.calls, args.rounds)
            finally:
                drop_pg_database(pg_admin, url)


if __name__ == "__main__":
    main()
