#!/usr/bin/env python3
"""Cost of the state shared between processes (issue 14), per call, on SQLite and PostgreSQL.

    .venv/bin/python bench/shared_state.py [--n 2000] [--pg postgresql://postgres@127.0.0.1:5432/postgres]

What an unauthenticated refused sign-in pays before anything else is one limiter check
(``RateLimiter.blocked_for``: one read by primary key); a failed try adds ``fail`` (one upsert). Also
timed: the TOTP step claim and one lease renewal (every LEASE_RENEW seconds per process and job). Figures
are wall time per call in this process (median and p99), and this process's CPU per call; on PostgreSQL
the server's own CPU is not in the CPU figure. Last, a whole sign-in refused by the limit (the check,
the try counted, and the event every refusal leaves). A scratch PostgreSQL database is made and dropped.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import machine, setup_tenant

from pomona.app import Settings, build
from pomona.services.portal import RateLimiter, SignInStatus
from pomona.storage.sql import SqlDatabase


def timed(label: str, n: int, fn: Callable[[int], object]) -> None:
    for i in range(50):  # warm-up
        fn(-i - 1)
    walls = []
    cpu0 = time.process_time()
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        walls.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / n
    walls.sort()
    print(
        f"  {label:<38} median {statistics.median(walls) * 1e3:6.3f} ms"
        f"  p99 {walls[int(n * 0.99)] * 1e3:6.3f} ms  cpu {cpu * 1e3:6.3f} ms"
    )


def refused_sign_in(url: str, n: int) -> None:
    """A whole sign-in refused by the limit, in process: the check, the try counted, its event."""
    with tempfile.TemporaryDirectory() as d:
        p = build(Settings(data_dir=Path(d), database_url=url, public_url="https://pomona.test"))
        setup_tenant(p, "acme", push=False)
        tenant = p.portal.tenant("acme")
        for _ in range(10):
            p.portal.sign_in_password(tenant, "pia@acme.example", "wrong", "203.0.113.9")

        def refused(_i: int) -> None:
            got = p.portal.sign_in_password(tenant, "pia@acme.example", "wrong", "203.0.113.9")
            assert got.status is SignInStatus.RATE_LIMITED

        timed("sign-in refused by the limit (whole)", n, refused)
        p.close()


def run(name: str, url: str, n: int) -> None:
    db = SqlDatabase(url)
    db.create_all()
    limiter = RateLimiter(db)
    now = datetime.now(UTC)
    for _ in range(12):
        limiter.fail("pw|limited", now)
    print(f"{name}:")
    timed("limiter check, key never seen", n, lambda i: limiter.blocked_for(f"pw|fresh{i}", now))
    timed("limiter check, key limited (refused)", n, lambda i: limiter.blocked_for("pw|limited", now))
    timed("limiter fail (upsert)", n, lambda i: limiter.fail(f"pw|k{i % 100}", now))
    timed("TOTP step claim (upsert)", n, lambda i: db.totp_claim(f"user{i % 100}", 1000 + i))
    timed("lease renewal (upsert)", n, lambda i: db.lease_acquire("bench", "me", now, 10.0))
    limiter.purge(now + timedelta(hours=1))
    db.dispose()
    refused_sign_in(url, n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as d:
        run("SQLite", f"sqlite:///{Path(d) / 'pomona.db'}", args.n)
    import psycopg

    scratch = f"bench_shared_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{scratch}"')
    try:
        run("PostgreSQL", f"{args.pg.rsplit('/', 1)[0]}/{scratch}", args.n)
    finally:
        with psycopg.connect(args.pg, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{scratch}" WITH (FORCE)')


if __name__ == "__main__":
    main()
