#!/usr/bin/env python3
"""Server CPU per signed idle check-in and per full enrollment, against a live server.

    .venv/bin/python bench/checkin.py [--devices 200] [--idle 20000] [--concurrency 8] [--db sqlite,postgres]

A full enrollment is: profile download, SCEP (GetCACaps, GetCACert, PKCSReq), Authenticate, TokenUpdate.
An idle check-in is a signed `Status: Idle` report on the command channel with an empty queue. CPU is
read from /proc for the server process, so the client's own work does not count. Targets on the 2-core
machine: <= 0.6 ms per idle check-in, <= 15 ms per full enrollment.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from _common import drop_pg_database, fresh_pg_database, live, machine, total_cpu

from pomona.protocol import cms
from pomona.protocol.command import COMMAND_CONTENT_TYPE
from pomona.testing.keypool import KeyPool
from pomona.testing.virtual_device import VirtualDevice


def run(db_name: str, database_url: str | None, args: argparse.Namespace) -> dict[str, float]:
    server, setup = live(database_url, workers=args.workers)
    try:
        pool = KeyPool.load_or_create(None, size=args.devices)
        devices = [VirtualDevice(setup.enroll_url, key=pool.take()) for _ in range(args.devices)]
        before = total_cpu(server)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as ex:
            list(ex.map(lambda d: d.enroll(), devices))
        enroll_wall = time.perf_counter() - t0
        enroll_cpu = total_cpu(server) - before

        # Pre-signed idle reports (an iPhone signs each one; the body of an idle report never changes).
        target = urlsplit(devices[0].server_url or "")
        msgs = []
        for d in devices:
            body = d.idle_message()
            assert d.identity_cert is not None
            sig = base64.b64encode(cms.sign_detached(body, d.identity_cert, d.key)).decode()
            msgs.append((body, sig))
        per_thread = args.idle // args.concurrency
        errors = []

        def worker(i: int) -> None:
            conn = http.client.HTTPConnection(target.hostname, target.port)
            for n in range(per_thread):
                body, sig = msgs[(i * per_thread + n) % len(msgs)]
                conn.request(
                    "PUT",
                    target.path,
                    body=body,
                    headers={"Content-Type": COMMAND_CONTENT_TYPE, "Mdm-Signature": sig},
                )
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    errors.append(r.status)
            conn.close()

        # warm-up
        worker_threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
        before = total_cpu(server)
        t0 = time.perf_counter()
        for th in worker_threads:
            th.start()
        for th in worker_threads:
            th.join()
        idle_wall = time.perf_counter() - t0
        idle_cpu = total_cpu(server) - before
        n_idle = per_thread * args.concurrency
        if errors:
            print(f"  {len(errors)} idle check-ins failed: {sorted(set(errors))}", file=sys.stderr)
        return {
            "devices": args.devices,
            "enroll_cpu_ms": enroll_cpu / args.devices * 1000,
            "enroll_per_s": args.devices / enroll_wall,
            "idle": n_idle,
            "idle_cpu_ms": idle_cpu / n_idle * 1000,
            "idle_per_s": n_idle / idle_wall,
        }
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--idle", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--db", default="sqlite,postgres")
    ap.add_argument("--workers", type=int, default=1, help="server processes (PostgreSQL only when > 1)")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    pg_admin = os.environ.get("POMONA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    for db_name in args.db.split(","):
        url = None
        if db_name == "postgres":
            url = fresh_pg_database(pg_admin)
            if url is None:
                continue
        try:
            r = run(db_name, url, args)
        finally:
            if url:
                drop_pg_database(pg_admin, url)
        print(
            f"[{db_name}] full enrollment: {r['enroll_cpu_ms']:.2f} ms server CPU each "
            f"({r['devices']} devices, {r['enroll_per_s']:.1f} enrollments/s)   target <= 15 ms"
        )
        print(
            f"[{db_name}] signed idle check-in: {r['idle_cpu_ms']:.3f} ms server CPU each "
            f"({r['idle']} check-ins, {r['idle_per_s']:.0f}/s)   target <= 0.6 ms"
        )


if __name__ == "__main__":
    main()
