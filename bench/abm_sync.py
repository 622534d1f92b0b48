"""ABM sync throughput: devices synced per second from the ABM emulator into Pomona's database.

    python bench/abm_sync.py [--devices 200000] [--database-url URL] [--http]

A tenant with a server token the emulator issued; then a full fetch (``/server/devices``, 1,000 a page,
each page one transaction with bulk upserts) and a second sync that follows the cursor with nothing new.
By default the emulator answers in-process (its httpx transport: the figure is Pomona's cost plus the
emulator's); ``--http`` puts it behind a real local HTTP server. Target (issue 12): 200,000 devices, one
token's maximum, in under 60 s on SQLite.
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
from pomona.testing.abm_emulator import AbmEmulator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=200_000)
    ap.add_argument("--database-url", default=None, help="default: SQLite in a temporary folder")
    ap.add_argument("--http", action="store_true", help="serve the emulator over local HTTP")
    args = ap.parse_args()

    t0 = time.perf_counter()
    emu = AbmEmulator(devices=args.devices, serial_prefix="B")
    made = time.perf_counter() - t0
    server = emu.serve_in_thread() if args.http else None
    url = server.url if server else "http://abm.emulator"
    data_dir = Path(tempfile.mkdtemp(prefix="pomona-bench-abm-"))
    p = build(Settings(data_dir=data_dir, database_url=args.database_url, public_url="https://pomona.test"))
    connector = HttpAbmConnector(url, transport=None if server else emu.transport())
    abm = AbmService(p.db, p.clock, LocalAbmKeys(), connector)
    p.admin.create_tenant("bench", "bench.example")
    cert, _ = abm.keypair("bench")
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
    print(f"cursor sync with nothing new: {again_s * 1000:.0f} ms; devices stored: {stored:,}")
    if server:
        server.close()
    p.close()


if __name__ == "__main__":
    main()
