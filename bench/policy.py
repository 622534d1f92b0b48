#!/usr/bin/env python3
"""Policy decision time for a large tenant (what Authenticate and the portal pay per request).

    .venv/bin/python bench/policy.py [--users 100000] [--groups 500] [--restrictions 50] [--devices 200000]
                                     [--decisions 2000] [--db sqlite|postgres]

Builds the tenant with bulk inserts, then times `decide(policy_input(...))` at the Authenticate stage for
random users and random devices (each decision in its own read transaction, as the server does).
Target on the 2-core machine: p95 under 5 ms per decision on SQLite.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import drop_pg_database, fresh_pg_database, machine
from sqlalchemy import insert

from pomona.app import Settings, build
from pomona.domain.policy import Platform, Stage, decide
from pomona.storage import schema as s
from pomona.testing.pushcert import make_standin_push_cert


def populate(p, args: argparse.Namespace) -> tuple[str, list[str], list[tuple[str, str]]]:  # type: ignore[no-untyped-def]
    rnd = random.Random(7)
    t = p.admin.create_tenant("big", "big.example")
    p.admin.set_authority("big", "pomona")
    cert, key = make_standin_push_cert()
    p.apns.upload("big", cert, key, canary=False)
    p.policy.set_seats("big", args.users)
    now = datetime.now(UTC)
    user_ids = [str(uuid.uuid4()) for _ in range(args.users)]
    group_ids = [str(uuid.uuid4()) for _ in range(args.groups)]
    devices: list[tuple[str, str]] = []
    with p.db.unit_of_work() as uow:
        c = uow.conn  # type: ignore[attr-defined]
        c.execute(
            insert(s.users),
            [
                {
                    "id": u,
                    "tenant_id": t.id,
                    "upn": f"user{i}@big.example",
                    "email": f"user{i}@big.example",
                    "display_name": f"User {i}",
                    "enabled": True,
                    "created_at": now,
                    "licensed": i % 50 != 0,
                    "mfa_required": False,
                    "is_dem": False,
                }
                for i, u in enumerate(user_ids)
            ],
        )
        c.execute(
            insert(s.groups),
            [
                {"id": g, "tenant_id": t.id, "name": f"group{i}", "created_at": now}
                for i, g in enumerate(group_ids)
            ],
        )
        members = {(rnd.choice(group_ids), u) for u in user_ids for _ in range(3)}
        c.execute(insert(s.group_members), [{"group_id": g, "user_id": u} for g, u in members])
        rows, assigns = [], []
        for i in range(args.restrictions):
            rid = str(uuid.uuid4())
            kind = "platform" if i % 2 == 0 else "limit"
            rows.append(
                {
                    "id": rid,
                    "tenant_id": t.id,
                    "name": f"r{i}",
                    "type": kind,
                    "priority": i + 1,
                    "is_default": False,
                    "ios_allowed": True,
                    "ipados_allowed": i % 4 != 0,
                    "ios_personal_allowed": True,
                    "ipados_personal_allowed": True,
                    "ios_min_os": "15.0" if kind == "platform" else None,
                    "device_limit": 5 + i % 10,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            assigns += [{"restriction_id": rid, "group_id": g} for g in rnd.sample(group_ids, 10)]
        c.execute(insert(s.restrictions), rows)
        c.execute(insert(s.restriction_groups), assigns)
        drows, erows = [], []
        for i in range(args.devices):
            did, udid, serial = str(uuid.uuid4()), f"00008030-{i:016X}", f"SN{i:010d}"
            devices.append((udid, serial))
            drows.append(
                {
                    "id": did,
                    "tenant_id": t.id,
                    "udid": udid,
                    "serial": serial,
                    "product_name": "iPhone15,2",
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
                    "udid": udid,
                    "user_id": user_ids[i % len(user_ids)],
                    "status": "active",
                    "type": "byod",
                    "cert_fingerprint": uuid.uuid4().hex + uuid.uuid4().hex,
                    "topic": "com.apple.mgmt.x",
                    "started_at": now - timedelta(days=i % 300),
                    "awaiting_configuration": False,
                }
            )
        for k in range(0, len(drows), 20000):
            c.execute(insert(s.devices), drows[k : k + 20000])
            c.execute(insert(s.enrollments), erows[k : k + 20000])
    return t.id, user_ids, devices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--groups", type=int, default=500)
    ap.add_argument("--restrictions", type=int, default=50)
    ap.add_argument("--devices", type=int, default=200_000)
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--db", default="sqlite", choices=["sqlite", "postgres"])
    args = ap.parse_args()
    print(f"machine: {machine()}")
    pg_admin = os.environ.get("POMONA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    url = fresh_pg_database(pg_admin) if args.db == "postgres" else None
    p = build(Settings(data_dir=Path(tempfile.mkdtemp(prefix="pomona-bench-policy-")), database_url=url))
    try:
        t0 = time.perf_counter()
        tenant_id, user_ids, devices = populate(p, args)
        print(
            f"populated {args.users} users, {args.groups} groups, {args.restrictions} restrictions, "
            f"{args.devices} devices in {time.perf_counter() - t0:.1f} s"
        )
        rnd = random.Random(11)
        samples = []
        outcomes: dict[str, int] = {}
        for i in range(args.decisions):
            uid = rnd.choice(user_ids)
            udid, serial = devices[rnd.randrange(len(devices))] if i % 2 else (f"NEW-{i}", f"NEWSN{i:07d}")
            start = time.perf_counter()
            with p.db.unit_of_work(readonly=True) as uow:
                tenant = uow.tenants.get(tenant_id)
                user = uow.users.get(tenant_id, uid)
                assert tenant is not None
                d = decide(
                    p.policy.policy_input(
                        uow,
                        tenant,
                        stage=Stage.AUTHENTICATE,
                        user=user,
                        platform=Platform.IOS if i % 3 else Platform.IPADOS,
                        os_version="17.4",
                        serial=serial,
                        udid=udid,
                    )
                )
            samples.append((time.perf_counter() - start) * 1000)
            key = d.reason.value if d.reason else "ALLOWED"
            outcomes[key] = outcomes.get(key, 0) + 1
        samples.sort()
        p95 = samples[int(len(samples) * 0.95)]
        print(
            f"[{args.db}] policy decision: p50 {statistics.median(samples):.2f} ms, p95 {p95:.2f} ms, "
            f"max {samples[-1]:.2f} ms over {len(samples)} decisions   target p95 < 5 ms"
        )
        print(f"outcomes: {outcomes}")
    finally:
        p.close()
        if url:
            drop_pg_database(pg_admin, url)


if __name__ == "__main__":
    main()
