"""ABM sync throughput: devices synced per second from the ABM emulator into Pomona's database.

    python bench/abm_sync.py [--devices 200000] [--database-url URL] [--http] [--default-profile]

A tenant with a server token the emulator issued; then a full fetch (``/server/devices``, 1,000 a page,
each page one transaction with bulk upserts) and a second sync that follows the cursor with nothing new.
By default the emulator answers in-process (its httpx transport: the figure is Pomona's cost plus the
emulator's); ``--http`` puts it behind a real local HTTP server. Target (issue 12): 200,000 devices, one
token's maximum, in under 60 s on SQLite. ``--default-profile`` makes a default ADE profile first: the
full fetch's reconciliation then assigns it to every device (``PUT /profile/devices``, 1,000 a call), and
the second sync reads every device's change back and finds nothing left to assign.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import machine

from pomona.app import Settings, build
from pomona.net.abm import HttpAbmConnector
from pomona.pki.abm import LocalAbmKeys
from pomona.services.abm import AbmService
from pomona.services.enrollment import Urls
from pomona.testing.abm_emulator import AbmEmulator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=200_000)
    ap.add_argument("--database-url", default=None, help="default: SQLite in a temporary folder")
    ap.add_argument("--http", action="store_true", help="serve the emulator over local HTTP")
    ap.add_argument("--default-profile", action="store_true", help="assign a default ADE profile to all")
    args = ap.parse_args()

    t0 = time.perf_counter()
    emu = AbmEmulator(devices=args.devices, serial_prefix="B")
    made = time.perf_counter() - t0
    server = emu.serve_in_thread() if args.http else None
    url = server.url if server else "http://abm.emulator"
    data_dir = Path(tempfile.mkdtemp(prefix="pomona-bench-abm-"))
    p = build(Settings(data_dir=data_dir, database_url=args.database_url, public_url="https://pomona.test"))
    connector = HttpAbmConnector(url, transport=None if server else emu.transport())
    abm = AbmService(p.db, p.clock, LocalAbmKeys(), connector, urls=Urls("https://pomona.test"))
    p.admin.create_tenant("bench", "bench.example")
    cert, _ = abm.keypair("bench")
    if args.default_profile:  # made before the token: the first sync defines it and assigns it to all
        abm.create_profile("bench", "staff", default=True)
    abm.upload_token("bench", emu.issue_token(cert))

    t1 = time.perf_counter()
    (full,) = abm.sync("bench")
    full_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    (again,) = abm.sync("bench")
    again_s = time.perf_counter() - t2
    stored = abm.device_count("bench")

    print(f"machine: {machine()}")
    print(f"database: {p.db.display_url.split(':')[0]}  emulator: {'HTTP' if server else 'in-process'}")
    print(f"emulator set-up: {args.devices:,} devices in {made:.1f} s")
    print(
        f"full fetch: {full.fetched:,} devices, {full.pages} pages, {full_s:.1f} s -> "
        f"{full.fetched / full_s:,.0f} devices/s (target: 200,000 in < 60 s = 3,333/s)"
    )
    if args.default_profile:
        print(f"default profile assigned by the full fetch's reconciliation: {full.assigned:,} devices")
        print(
            f"next sync (reads {again.fetched:,} assignment changes back, assigns {again.assigned}): "
            f"{again_s:.1f} s; devices stored: {stored:,}"
        )
    else:
        print(f"cursor sync with nothing new: {again_s * 1000:.0f} ms; devices stored: {stored:,}")
    if server:
        server.close()
    p.close()


if __name__ == "__main__":
    main()
