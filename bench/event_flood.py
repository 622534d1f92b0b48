#!/usr/bin/env python3
"""What a flood of refused device requests costs the event log, in process (SQLite).

    .venv/bin/python bench/event_flood.py [--requests 1000]

Sends N refused requests without any identity (half SCEP PKIOperation with a 20 kB junk body, half
check-ins with a 20 kB unsigned body) from one client address, and prints the event rows and detail
bytes they left, the requests per second, and the start-up cost of sealing at rest (seal_at_rest over
the tenants' CA keys and the settings).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import machine, setup_tenant
from sqlalchemy import func, select
from starlette.testclient import TestClient

from pomona.app import Settings, build, create_app
from pomona.storage import schema as s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--tenants", type=int, default=50)
    args = ap.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        p = build(Settings(data_dir=Path(tmp), public_url="https://pomona.test"))
        acme = setup_tenant(p, push=False)
        for i in range(args.tenants - 1):
            p.admin.create_tenant(f"t{i}", f"t{i}.example")
        with p.db.engine.connect() as conn:
            before = conn.execute(select(func.count()).select_from(s.events)).scalar_one()
        t0 = time.perf_counter()
        with TestClient(create_app(pomona=p), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
            for i in range(args.requests):
                if i % 2:
                    c.post(
                        f"/scep/{acme.tenant_id}?operation=PKIOperation", content=b"\x30\x82" + b"M" * 20_000
                    )
                else:
                    c.put(f"/mdm/{acme.tenant_id}/checkin", content=b"<plist>" + b"x" * 20_000)
        elapsed = time.perf_counter() - t0
        with p.db.engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(s.events)).scalar_one() - before
            size = conn.execute(select(func.sum(func.length(s.events.c.detail)))).scalar_one() or 0
        print(f"{args.requests} refused requests: {rows} event rows, {size} detail bytes in the event log")
        print(f"{args.requests / elapsed:.0f} requests/s in process")
        t0 = time.perf_counter()
        report = p.db.seal_at_rest()
        ms = (time.perf_counter() - t0) * 1000
        print(f"seal_at_rest at start-up: {report.current} sealed values opened and verified in {ms:.1f} ms")
        p.close()


if __name__ == "__main__":
    main()
