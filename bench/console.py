#!/usr/bin/env python3
"""Server time of each console page on a large tenant (SQLite by default), from Server-Timing.

    .venv/bin/python bench/console.py [--devices 200000] [--rounds 20] [--database-url URL] [--tenant-events N]

Seeds one tenant with ``--devices`` devices (iPhones and iPads, seven OS versions, every enrollment type,
one in 50 retired, one in 500 blocked, one in 1000 awaiting configuration, one in 10 silent for a month or
more), each with an enrollment, one user per two devices and a
30-day failure roll-up (bulk inserts, not measured), signs a tenant admin in, then requests each page
``--rounds`` times: the dashboard, the device list (first page, a page deep in the list by its keyset
cursor, sorted by last check-in, filtered by a prefix, and by each of the list's filters: platform, OS,
ownership, enrollment type, state, last check-in, combinations, a filtered second page), a device's page (and one
with a long timeline: 5,000 events, 1,000 commands, 200 ABM entries, among --tenant-events (100,000) events of
other devices; its first and an older page), troubleshoot for a user
(the diagnosis runs), users and groups (first page, a page deep by its cursor, a UPN prefix), and the
enrollment restrictions (with the policy dry run for a user), and Apple settings (every device in ABM,
assigned one of two ADE profiles: the page counts them), domains and DNS (the resolver answers from a
table), reports (30 and 90 days, filtered, CSV) and an incident summary (it reads the failure events:
one per roll-up count, about 3,000). Enrollments started over 90 days feed the dashboard's chart. One user in ten is in one of two groups,
each with a device limit restriction. Each response carries the console's own Server-Timing (time inside the console
app, database included; not the client). The issue's target: under 300 ms per page.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import machine, setup_tenant
from sqlalchemy import insert, select, text

from pomona.app import Settings, build, create_app
from pomona.storage import schema as s

EMAIL = "bench-admin@acme.example"
PASSWORD = "bench-password-1"
OS_VERSIONS = ["15.8", "16.7.2", "17.0", "17.4", "17.5.1", "18.1", "18.2"]
TYPES = ["byod", "byod", "byod", "corporate", "ade", "ade", "dem", "account_driven"]
REASONS = ["DEVICE_LIMIT_REACHED", "USER_NOT_LICENSED", "PERSONAL_DEVICE_BLOCKED", "ENROLLMENT_TOKEN_INVALID"]


def server_ms(resp: object) -> float:
    m = re.search(r"app;dur=([0-9.]+)", resp.headers.get("server-timing", ""))  # type: ignore[attr-defined]
    assert m, resp
    return float(m.group(1))


def time_page(c: Any, path: str, rounds: int) -> tuple[list[float], Any]:
    """The page's server times (ms, sorted) over ``rounds`` requests after two warm-up ones, and the last
    response."""
    times = []
    for i in range(rounds + 2):
        r = c.get(path)
        assert r.status_code == 200, (path, r.status_code)
        if i >= 2:  # two warm-up requests
            times.append(server_ms(r))
    times.sort()
    return times, r


def p95(times: list[float]) -> float:
    return times[min(len(times) - 1, int(len(times) * 0.95))]


def seed(p: object, tenant_id: str, n: int, n_users: int) -> float:
    start = time.perf_counter()
    now = datetime.now(UTC)
    db = p.db  # type: ignore[attr-defined]
    user_ids = [str(uuid.uuid4()) for _ in range(n_users)]
    with db.unit_of_work() as uow:
        c = uow.conn
        c.execute(
            insert(s.users),
            [
                {
                    "id": uid,
                    "tenant_id": tenant_id,
                    "upn": f"user{i}@acme.example",
                    "email": f"user{i}@acme.example",
                    "display_name": f"User {i}",
                    "created_at": now,
                    "enabled": True,
                    "licensed": True,
                    "mfa_required": False,
                    "is_dem": False,
                }
                for i, uid in enumerate(user_ids)
            ],
        )
        for k in range(0, n, 20000):
            drows, erows = [], []
            for i in range(k, min(n, k + 20000)):
                did, udid = str(uuid.uuid4()), f"00008030-{i:016X}"
                drows.append(
                    {
                        "id": did,
                        "tenant_id": tenant_id,
                        "udid": udid,
                        "serial": f"F{i:010d}",
                        "device_name": f"Device {i % 9973:04d}-{i}",
                        "product_name": "iPhone15,2" if i % 3 else "iPad13,18",
                        "os_version": OS_VERSIONS[i % len(OS_VERSIONS)],
                        "created_at": now,
                        # one in 10 last seen 30 to 120 days ago; the rest within the last 2 days
                        "last_seen_at": now - timedelta(days=30 + i % 90)
                        if i % 10 == 9
                        else now - timedelta(seconds=i),
                    }
                )
                erows.append(
                    {
                        "id": str(uuid.uuid4()),
                        "tenant_id": tenant_id,
                        "device_id": did,
                        "udid": udid,
                        "user_id": user_ids[i % n_users],
                        # one in 50 retired, one in 500 blocked; the rest active
                        "status": "retired" if i % 50 == 7 else "blocked" if i % 500 == 11 else "active",
                        "type": TYPES[i % len(TYPES)],
                        "cert_fingerprint": uuid.uuid4().hex * 2,
                        "topic": "com.apple.mgmt.x",
                        "started_at": now - timedelta(days=i % 90, seconds=i),  # over 90 days
                        "awaiting_configuration": i % 1000 == 3,  # one in 1000 held at Setup Assistant
                        # one in 2000 silent since 6 hours
                        "first_unanswered_push_at": now - timedelta(hours=6) if i % 2000 == 5 else None,
                    }
                )
            c.execute(insert(s.devices), drows)
            c.execute(insert(s.enrollments), erows)
            c.execute(
                insert(s.blocked_devices),
                [
                    {
                        "id": str(uuid.uuid4()),
                        "tenant_id": tenant_id,
                        "kind": "serial",
                        "value": r["serial"],
                        "note": None,
                        "created_at": now,
                    }
                    for r, e in zip(drows, erows, strict=True)
                    if e["status"] == "blocked"
                ],
            )
            print(f"  devices {min(n, k + 20000):>8}", end="\r", flush=True)
        groups = [(str(uuid.uuid4()), name) for name in ("Sales", "Staff")]
        c.execute(
            insert(s.groups),
            [{"id": g, "tenant_id": tenant_id, "name": n, "created_at": now} for g, n in groups],
        )
        c.execute(
            insert(s.group_members),
            [{"group_id": groups[i % 2][0], "user_id": uid} for i, uid in enumerate(user_ids) if i % 10 < 2],
        )
        c.execute(
            insert(s.failure_rollup),
            [
                {
                    "tenant_id": tenant_id,
                    "day": (now - timedelta(days=d)).strftime("%Y-%m-%d"),
                    "reason": r,
                    "platform": "ios",
                    "enrollment_type": "byod",
                    "step": "portal",
                    "count": 10 + d,
                }
                for d in range(30)
                for r in REASONS
            ],
        )
        # the failure events the roll-up counts (what the incident summary reads), one per count
        for d in range(30):
            c.execute(
                insert(s.events),
                [
                    {
                        "tenant_id": tenant_id,
                        "at": now - timedelta(days=d, seconds=k),
                        "step": "portal",
                        "outcome": "failed",
                        "reason": r,
                        "upn": f"user{k}@acme.example",
                        "detail": '{"platform": "ios"}',
                    }
                    for r in REASONS
                    for k in range(10 + d)
                ],
            )
        if c.dialect.name == "postgresql":
            c.execute(text("ANALYZE"))  # as autovacuum would soon: without statistics the planner guesses
    print()
    return time.perf_counter() - start


def seed_timeline(p: object, tenant_id: str, device_id: str, others: int, n: int = 5000) -> str:
    """A busy device for its page's timeline: ``n`` events (half naming its serial, half its UDID), n/5
    answered commands, n/25 ABM timeline entries and its enrollment's last push, over the last 30 days,
    among ``others`` check-in events of other devices. Returns the serial."""
    now = datetime.now(UTC)
    db = p.db  # type: ignore[attr-defined]
    with db.unit_of_work() as uow:
        c = uow.conn
        d = c.execute(select(s.devices.c.udid, s.devices.c.serial).where(s.devices.c.id == device_id)).one()
        eid = c.execute(select(s.enrollments.c.id).where(s.enrollments.c.device_id == device_id)).scalar_one()
        span = timedelta(days=30)
        c.execute(
            insert(s.events),
            [
                {
                    "tenant_id": tenant_id,
                    "at": now - span * i / n,
                    "step": "checkin" if i % 7 else "push",
                    "outcome": "ok" if i % 7 else "failed",
                    "reason": None if i % 7 else "PUSH_REJECTED",
                    "serial": d.serial if i % 2 else None,
                    "udid": None if i % 2 else d.udid,
                }
                for i in range(n)
            ],
        )
        c.execute(
            insert(s.commands),
            [
                {
                    "tenant_id": tenant_id,
                    "command_uuid": str(uuid.uuid4()),
                    "enrollment_id": eid,
                    "device_id": device_id,
                    "request_type": "DeviceInformation",
                    "body": b"<plist/>",
                    "status": "Acknowledged",
                    "created_at": now - span * (n // 5 - i) / (n // 5),
                    "result_at": now - span * (n // 5 - i) / (n // 5) + timedelta(seconds=5),
                }
                for i in range(n // 5)
            ],
        )
        c.execute(
            insert(s.abm_device_history),
            [
                {
                    "tenant_id": tenant_id,
                    "serial_number": d.serial,
                    "token_id": "bench",
                    "at": now - span * (n // 25 - i) / (n // 25),
                    "op_type": "modified",
                    "profile_status": "assigned",
                    "profile_uuid": "P",
                    "device_assigned_by": "",
                }
                for i in range(n // 25)
            ],
        )
        c.execute(
            s.enrollments.update()
            .where(s.enrollments.c.id == eid)
            .values(last_push_at=now - timedelta(minutes=3), last_push_status="delivered")
        )
        # and the rest of the tenant busy too: check-in events of other devices over the same days
        for k in range(0, others, 20_000):
            c.execute(
                insert(s.events),
                [
                    {
                        "tenant_id": tenant_id,
                        "at": now - span * i / others,
                        "step": "checkin",
                        "outcome": "ok",
                        "serial": f"F{i:010d}" if i % 2 else None,
                        "udid": None if i % 2 else f"00008030-{i:016X}",
                    }
                    for i in range(k, min(others, k + 20_000))
                ],
            )
        if c.dialect.name == "postgresql":
            c.execute(text("ANALYZE"))
    return str(d.serial)


class BenchResolver:
    """The resolver port answering from a table: the DNS round trip is the name server's, not Pomona's."""

    def __init__(self, cnames: dict[str, str]) -> None:
        self.cnames = cnames

    def cname(self, name: str) -> str | None:
        return self.cnames.get(name.lower())


def seed_abm(p: object, tenant_id: str, n: int) -> float:
    """Apple settings' data: one ABM token listing every device (serials as the devices'), two ADE
    profiles (one the default), each device assigned one of them and ABM showing it on nine in ten."""
    start = time.perf_counter()
    now = datetime.now(UTC)
    token, profiles = str(uuid.uuid4()), [str(uuid.uuid4()), str(uuid.uuid4())]
    with p.db.unit_of_work() as uow:  # type: ignore[attr-defined]
        c = uow.conn
        c.execute(
            insert(s.abm_tokens),
            [
                {
                    "id": token,
                    "tenant_id": tenant_id,
                    "name": "main",
                    "consumer_key": "CK_bench",
                    "secret": b"not used by the page",
                    "access_token_expiry": now + timedelta(days=200),
                    "created_at": now,
                    "last_sync_at": now,
                }
            ],
        )
        c.execute(
            insert(s.abm_profiles),
            [
                {
                    "id": pid,
                    "tenant_id": tenant_id,
                    "token_id": None,
                    "name": f"profile-{i}",
                    "settings": '{"auth": "modern"}',
                    "is_default": i == 0,
                    "created_at": now,
                    "updated_at": now,
                }
                for i, pid in enumerate(profiles)
            ],
        )
        c.execute(
            insert(s.abm_profile_definitions),
            [
                {"profile_id": pid, "token_id": token, "profile_uuid": f"U{i}", "defined_at": now}
                for i, pid in enumerate(profiles)
            ],
        )
        for k in range(0, n, 20000):
            rows = range(k, min(n, k + 20000))
            c.execute(
                insert(s.abm_devices),
                [
                    {
                        "tenant_id": tenant_id,
                        "serial_number": f"F{i:010d}",
                        "token_id": token,
                        "model": "iPhone 15",
                        "device_family": "iPhone",
                        "os": "iOS",
                        "profile_status": "assigned" if i % 10 else "empty",
                        "profile_uuid": f"U{i % 2}" if i % 10 else "",
                        "deleted": False,
                        "first_seen_at": now,
                        "updated_at": now,
                    }
                    for i in rows
                ],
            )
            c.execute(
                insert(s.abm_assignments),
                [
                    {
                        "tenant_id": tenant_id,
                        "serial_number": f"F{i:010d}",
                        "profile_id": profiles[i % 2],
                        "explicit": False,
                        "attempts": 0 if i % 10 else 1,
                        "last_error": None if i % 10 else "FAILED",
                    }
                    for i in rows
                ],
            )
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=0, help="Default: one user per two devices.")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--database-url", default=None)
    ap.add_argument(
        "--tenant-events",
        type=int,
        default=100_000,
        help="Check-in events of other devices (the device page's timeline reads among them).",
    )
    args = ap.parse_args()
    from starlette.testclient import TestClient

    print(machine())
    with tempfile.TemporaryDirectory() as d:
        p = build(
            Settings(data_dir=Path(d), database_url=args.database_url, public_url="https://pomona.test")
        )
        t = setup_tenant(p, "acme")
        users = args.users or max(1, args.devices // 2)
        seconds = seed(p, t.tenant_id, args.devices, users)
        print(f"seeded {args.devices} devices (active enrollments), {users} users in {seconds:.0f} s")
        seconds = seed_abm(p, t.tenant_id, args.devices)
        print(f"seeded {args.devices} ABM devices and assignments to 2 ADE profiles in {seconds:.0f} s")
        for n, (g, limit) in enumerate((("Sales", 3), ("Staff", 5)), start=1):
            p.policy.create_restriction("acme", type_="limit", priority=n, groups=[g], limit=limit)
        p.console.create_account(EMAIL, PASSWORD, "admin", "acme")
        p.console_reports.resolver = BenchResolver({"enterpriseenrollment.acme.example": "pomona.test"})
        app = create_app(pomona=p)
        with TestClient(app, base_url="https://pomona.test", follow_redirects=False) as c:  # type: ignore[arg-type]
            html = c.get("/console/signin").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
            r = c.post("/console/signin", data={"csrf": csrf, "email": EMAIL, "password": PASSWORD})
            assert r.status_code == 303, r.text[:300]
            first = c.get("/console/t/acme/devices").text
            device = re.search(r'data-device="([^"]+)"', first).group(1)  # type: ignore[union-attr]
            # a cursor 100 pages into the list
            after = ""
            for _ in range(100):
                page = c.get(f"/console/t/acme/devices?after={after}").text
                after = re.search(r"after=([A-Za-z0-9_-]+)", page).group(1)  # type: ignore[union-attr]
            page = c.get("/console/t/acme/devices?platform=ipados&state=active").text
            filtered_page2 = re.search(r'id="next-page" href="[^"?]+\?([^"]+)"', page).group(1)  # type: ignore[union-attr]
            filtered_page2 = filtered_page2.replace("&amp;", "&")
            busy = re.findall(r'data-device="([^"]+)"', first)[1]  # another device, with a long timeline
            seed_timeline(p, t.tenant_id, busy, args.tenant_events)
            older = re.search(
                r'href="([^"]+)" id="timeline-older"', c.get(f"/console/t/acme/devices/{busy}").text
            )
            older_page = older.group(1).replace("&amp;", "&")  # type: ignore[union-attr]
            users_after = ""
            for _ in range(100):
                page = c.get(f"/console/t/acme/users?after={users_after}").text
                users_after = re.search(r"after=([^\"&]+)", page).group(1)  # type: ignore[union-attr]
            pages = {
                "dashboard": "/console/t/acme",
                "devices (first page)": "/console/t/acme/devices",
                "devices (page 101, keyset)": f"/console/t/acme/devices?after={after}",
                "devices (by last check-in)": "/console/t/acme/devices?sort=last_seen",
                "devices (filter 'Device 0042')": "/console/t/acme/devices?q=Device+0042",
                "devices (filter by serial)": f"/console/t/acme/devices?q=F{args.devices // 2:010d}",
                "devices (platform iPadOS)": "/console/t/acme/devices?platform=ipados",
                "devices (OS 17.x)": "/console/t/acme/devices?os=17",
                "devices (OS at least 17.5)": "/console/t/acme/devices?os_min=17.5",
                "devices (corporate)": "/console/t/acme/devices?ownership=corporate",
                "devices (personal)": "/console/t/acme/devices?ownership=personal",
                "devices (type ADE)": "/console/t/acme/devices?type=ade",
                "devices (state active)": "/console/t/acme/devices?state=active",
                "devices (awaiting config.)": "/console/t/acme/devices?state=awaiting",
                "devices (unresponsive)": "/console/t/acme/devices?state=unresponsive",
                "devices (retired)": "/console/t/acme/devices?state=retired",
                "devices (blocked)": "/console/t/acme/devices?state=blocked",
                "devices (not enrolled)": "/console/t/acme/devices?state=unenrolled",
                "devices (seen > 30 days ago)": "/console/t/acme/devices?stale=30",
                "devices (iPad, ADE, seen > 30 d)": "/console/t/acme/devices?platform=ipados&type=ade&stale=30",
                "devices (matching none)": "/console/t/acme/devices?platform=ios&type=dem&stale=30",
                "devices (corporate, 17+, by seen)": "/console/t/acme/devices?ownership=corporate&os_min=17&sort=last_seen",
                "devices (filtered, page 2)": f"/console/t/acme/devices?{filtered_page2}",
                "device page": f"/console/t/acme/devices/{device}",
                "device page (busy timeline)": f"/console/t/acme/devices/{busy}",
                "device page (older timeline page)": older_page,
                "troubleshoot (user)": "/console/t/acme/troubleshoot?upn=user7@acme.example",
                "users (first page)": "/console/t/acme/users",
                "users (page 101, keyset)": f"/console/t/acme/users?after={users_after}",
                "users (UPN prefix 'user4242')": "/console/t/acme/users?q=user4242",
                "restrictions": "/console/t/acme/restrictions",
                "restrictions (dry run)": "/console/t/acme/restrictions?upn=user10@acme.example&platform=ios",
                "apple settings": "/console/t/acme/apple",
                "domains and DNS": "/console/t/acme/domains",
                "reports (30 days, by reason)": "/console/t/acme/reports",
                "reports (90 days, by day, filtered)": (
                    f"/console/t/acme/reports?since={(datetime.now(UTC) - timedelta(days=89)).date()}"
                    "&group=day&reason=DEVICE_LIMIT_REACHED&step=portal&platform=ios"
                ),
                "reports (CSV)": "/console/t/acme/reports?format=csv",
                "incident summary (a reason)": "/console/t/acme/reports/incident?code=DEVICE_LIMIT_REACHED",
                "corporate identifiers": "/console/t/acme/corporate",
                "administration": "/console/t/acme/admin",
                "audit (filtered)": "/console/t/acme/audit?action=device.",
            }
            print(f"{'page':<36} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
            for name, path in pages.items():
                times, _ = time_page(c, path, args.rounds)
                print(f"{name:<36} {statistics.median(times):>10.1f} {p95(times):>8.1f} {times[-1]:>8.1f}")
            # The chart's enrollment counts are reused for a minute (services/console_reports.py): a first
            # view pays for counting them.
            for name, path in (("dashboard", "/console/t/acme"), ("reports", "/console/t/acme/reports")):
                cold = []
                for _ in range(3):
                    p.console_reports._counts.clear()
                    cold.append(server_ms(c.get(path)))
                print(f"{name + ' (counts not cached)':<36} {statistics.median(cold):>10.1f}")
        p.close()


if __name__ == "__main__":
    main()
