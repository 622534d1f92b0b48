#!/usr/bin/env python3
"""Diagnose and failure-report latency on a large tenant (SQLite by default).

    .venv/bin/python bench/diagnose.py [--devices 200000] [--events 5000000] [--runs 300] [--db sqlite|postgres]

Seeds a tenant with users, devices and enrollments and an event log of the given size (bulk inserts;
the daily failure roll-up is built from the same rows, as appending them one by one would have built it),
then times `diagnose` for random users and devices with a reported message, and the 30-day failure
report grouped by reason, platform, type and day. Targets: diagnose p95 < 50 ms; report < 200 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import drop_pg_database, fresh_pg_database, machine
from sqlalchemy import insert

from pomona.app import Settings, build
from pomona.storage import schema as s
from pomona.testing.pushcert import make_standin_push_cert

CODES = [
    "DEVICE_LIMIT_REACHED",
    "USER_NOT_LICENSED",
    "PERSONAL_DEVICE_BLOCKED",
    "ENROLLMENT_TOKEN_INVALID",
    "OS_VERSION_TOO_LOW",
    "SIGNATURE_INVALID",
    "DEVICE_ENROLLED_TO_OTHER_USER",
    "PLATFORM_BLOCKED",
]
STEPS = ["portal", "profile", "scep", "authenticate", "tokenupdate", "command"]
MESSAGES = [
    "Device Cap Reached",
    "Profile Installation Failed. Connection to the server could not be established.",
    "User License Type Invalid",
    "配置文件安装失败。无法建立到服务器的连接。",
    "NoEnrollmentPolicy",
]


def seed(p, args: argparse.Namespace) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    rnd = random.Random(5)
    t = p.admin.create_tenant("big", "big.example")
    p.admin.set_authority("big", "pomona")
    cert, key = make_standin_push_cert()
    p.apns.upload("big", cert, key, canary=False)
    n_users = max(1, args.devices // 2)
    p.policy.set_seats("big", n_users)
    now = datetime.now(UTC)
    users = [f"user{i}@big.example" for i in range(n_users)]
    user_ids = [str(uuid.uuid4()) for _ in users]
    serials = [f"SN{i:010d}" for i in range(args.devices)]
    with p.db.unit_of_work() as uow:
        c = uow.conn  # type: ignore[attr-defined]
        c.execute(
            insert(s.users),
            [
                {
                    "id": uid,
                    "tenant_id": t.id,
                    "upn": u,
                    "email": u,
                    "display_name": u,
                    "enabled": True,
                    "created_at": now,
                    "licensed": i % 20 != 0,
                    "mfa_required": False,
                    "is_dem": False,
                }
                for i, (uid, u) in enumerate(zip(user_ids, users, strict=True))
            ],
        )
        for k in range(0, args.devices, 20000):
            drows, erows = [], []
            for i in range(k, min(args.devices, k + 20000)):
                did = str(uuid.uuid4())
                drows.append(
                    {
                        "id": did,
                        "tenant_id": t.id,
                        "udid": f"00008030-{i:016X}",
                        "serial": serials[i],
                        "product_name": "iPhone15,2" if i % 3 else "iPad13,18",
                        "os_version": "17.4",
                        "created_at": now,
                        "last_seen_at": now,
                    }
                )
                erows.append(
                    {
                        "id": str(uuid.uuid4()),
                        "tenant_id": t.id,
                        "device_id": did,
                        "udid": f"00008030-{i:016X}",
                        "user_id": user_ids[i % n_users],
                        "status": "active",
                        "type": "byod",
                        "cert_fingerprint": uuid.uuid4().hex * 2,
                        "topic": "com.apple.mgmt.x",
                        "started_at": now,
                        "awaiting_configuration": False,
                    }
                )
            c.execute(insert(s.devices), drows)
            c.execute(insert(s.enrollments), erows)
    rollup: Counter[tuple[str, str, str, str, str]] = Counter()
    batch = 100_000
    start = now - timedelta(days=90)
    cols = ["tenant_id", "at", "step", "outcome", "reason", "upn", "serial", "udid", "detail"]
    sqlite = p.db.is_sqlite
    # Bulk load: the event indexes are dropped during the load and built again after (as a restore would).
    indexes = list(s.events.indexes)
    with p.db.unit_of_work() as uow:
        for ix in indexes:
            ix.drop(uow.conn)  # type: ignore[attr-defined]
    for k in range(0, args.events, batch):
        rows = []
        for i in range(k, min(args.events, k + batch)):
            at = start + timedelta(seconds=rnd.randrange(90 * 86400))
            failed = rnd.random() < 0.2
            reason = rnd.choice(CODES) if failed else None
            step = rnd.choice(STEPS)
            product = "iPhone15,2" if i % 3 else "iPad13,18"
            rows.append(
                (
                    t.id,
                    at.strftime("%Y-%m-%d %H:%M:%S.000000") if sqlite else at,
                    step,
                    "failed" if failed else "ok",
                    reason,
                    users[rnd.randrange(n_users)],
                    serials[rnd.randrange(args.devices)],
                    None,
                    json.dumps({"product": product}),
                )
            )
            if failed:
                rollup[
                    (at.strftime("%Y-%m-%d"), str(reason), "ios" if i % 3 else "ipados", "byod", step)
                ] += 1
        with p.db.unit_of_work() as uow:
            raw = uow.conn.connection.driver_connection  # type: ignore[attr-defined]
            cur = raw.cursor()
            marks = ", ".join(["?" if sqlite else "%s"] * len(cols))
            cur.executemany(f"INSERT INTO events ({', '.join(cols)}) VALUES ({marks})", rows)
        print(f"  events {min(args.events, k + batch):>9}", end="\r", flush=True)
    t_ix = time.perf_counter()
    with p.db.unit_of_work() as uow:
        for ix in indexes:
            ix.create(uow.conn)  # type: ignore[attr-defined]
    print(f"\n  event indexes rebuilt in {time.perf_counter() - t_ix:.0f} s")
    with p.db.unit_of_work() as uow:
        uow.conn.execute(
            insert(s.failure_rollup),
            [  # type: ignore[attr-defined]
                {
                    "tenant_id": t.id,
                    "day": d,
                    "reason": r,
                    "platform": pl,
                    "enrollment_type": ty,
                    "step": st,
                    "count": n,
                }
                for (d, r, pl, ty, st), n in rollup.items()
            ],
        )
    print()
    return users, serials


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=200_000)
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--db", default="sqlite", choices=["sqlite", "postgres"])
    args = ap.parse_args()
    print(f"machine: {machine()}")
    pg_admin = os.environ.get("POMONA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    url = fresh_pg_database(pg_admin) if args.db == "postgres" else None
    # DNS look-ups go to a closed local port: they fail fast and count as "can't tell".
    p = build(
        Settings(
            data_dir=Path(tempfile.mkdtemp(prefix="pomona-bench-diag-")),
            database_url=url,
            dns_server="127.0.0.1:9",
        )
    )
    p.diagnose.resolver = None  # no network here; the DNS checks are timed by the tests, not the bench
    p.diagnose.fetcher = None
    try:
        t0 = time.perf_counter()
        users, serials = seed(p, args)
        print(f"seeded {args.devices} devices and {args.events} events in {time.perf_counter() - t0:.0f} s")
        rnd = random.Random(9)
        times = []
        for i in range(args.runs):
            kw = (
                {"upn": rnd.choice(users)}
                if i % 2
                else {"serial": rnd.choice(serials), "upn": rnd.choice(users)}
            )
            message = None if i % 3 == 0 else rnd.choice(MESSAGES)  # a third with no message: every cause
            t1 = time.perf_counter()
            p.diagnose.diagnose("big", message=message, **kw)  # type: ignore[arg-type]
            times.append((time.perf_counter() - t1) * 1000)
        times.sort()
        print(
            f"[{args.db}] diagnose: p50 {statistics.median(times):.1f} ms, p95 {times[int(len(times) * 0.95)]:.1f} ms "
            f"over {len(times)} runs   target p95 < 50 ms"
        )
        now = datetime.now(UTC)
        for group in ("reason", "platform", "type", "day"):
            t1 = time.perf_counter()
            r = p.reports.failures("big", since=now - timedelta(days=30), until=now, group_by=group)
            print(
                f"[{args.db}] failure report, 30 days, by {group}: {(time.perf_counter() - t1) * 1000:.1f} ms "
                f"({r['total']} failures, {len(r['groups'])} groups)   target < 200 ms"
            )  # type: ignore[arg-type]
    finally:
        p.close()
        if url:
            drop_pg_database(pg_admin, url)


if __name__ == "__main__":
    main()
