"""The console's ADE profile page (issue 13, page 7) on a large ABM tenant: server time per page.

Seeds what bench/console.py seeds (devices, users, and one ABM token listing every device, two ADE
profiles each assigned to half of them) plus a third profile no device has, then prints the profile
page's server time (the ``server-timing`` header) for: the first page of a profile on 100,000 devices,
a page deep into it (keyset), the page of the profile with no device (before migration 0017 its walks
read every row; its indexes now find none at once), and the Apple settings page for comparison. Run
from the repository root:

    PYTHONPATH=src python bench/ade_profile.py --devices 200000
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

from _common import machine, setup_tenant
from console import EMAIL, PASSWORD, p95, seed, seed_abm, time_page
from sqlalchemy import insert, select

from pomona.app import Settings, build, create_app
from pomona.storage import schema as s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    from starlette.testclient import TestClient

    print(machine())
    with tempfile.TemporaryDirectory() as d:
        p = build(
            Settings(data_dir=Path(d), database_url=args.database_url, public_url="https://pomona.test")
        )
        t = setup_tenant(p, "acme")
        seconds = seed(p, t.tenant_id, args.devices, max(1, args.devices // 2))
        seconds += seed_abm(p, t.tenant_id, args.devices)
        print(f"seeded {args.devices} devices and ABM devices in {seconds:.0f} s")
        now = datetime.now(UTC)
        empty = str(uuid.uuid4())
        with p.db.unit_of_work() as uow:  # type: ignore[attr-defined]
            c = uow.conn
            token = c.execute(
                select(s.abm_tokens.c.id).where(s.abm_tokens.c.tenant_id == t.tenant_id)
            ).scalar()
            c.execute(
                insert(s.abm_profiles),
                [
                    {
                        "id": empty,
                        "tenant_id": t.tenant_id,
                        "token_id": None,
                        "name": "nobody",
                        "settings": '{"auth": "modern"}',
                        "is_default": False,
                        "created_at": now,
                        "updated_at": now,
                    }
                ],
            )
            c.execute(
                insert(s.abm_profile_definitions),
                [{"profile_id": empty, "token_id": token, "profile_uuid": "U9", "defined_at": now}],
            )
            busy = c.execute(select(s.abm_profiles.c.id).where(s.abm_profiles.c.name == "profile-0")).scalar()
        p.console.create_account(EMAIL, PASSWORD, "admin", "acme")
        app = create_app(pomona=p)
        with TestClient(app, base_url="https://pomona.test", follow_redirects=False) as c:  # type: ignore[arg-type]
            html = c.get("/console/signin").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
            r = c.post("/console/signin", data={"csrf": csrf, "email": EMAIL, "password": PASSWORD})
            assert r.status_code == 303, r.text[:300]
            base = f"/console/t/acme/apple/profiles/{busy}"
            deep = f"F{args.devices // 2:010d}"
            pages = {
                "ADE profile (first page)": base,
                "ADE profile (keyset, mid-list)": f"{base}?after={deep}",
                "ADE profile (no device)": f"/console/t/acme/apple/profiles/{empty}",
                "apple settings": "/console/t/acme/apple",
            }
            print(f"{'page':<36} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'rows':>5}")
            for name, path in pages.items():
                times, r = time_page(c, path, args.rounds)
                n = len(re.findall(r"<tr data-serial=", r.text))
                print(
                    f"{name:<36} {statistics.median(times):>10.1f} {p95(times):>8.1f} {times[-1]:>8.1f} {n:>5}"
                )
        p.close()


if __name__ == "__main__":
    main()
