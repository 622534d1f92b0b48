#!/usr/bin/env python3
"""Several `pomona serve` processes on one PostgreSQL behind nginx: throughput and latency by backend count.

    .venv/bin/python bench/scale.py [--backends 1,2,4] [--devices 100] [--idle 20000] [--concurrency 16]

For each backend count: a fresh PostgreSQL database, that many `pomona serve` processes (one worker each,
one data folder), and nginx with the shipped deploy/nginx/pomona-multi.conf in front of them (TLS with a
self-signed certificate, its upstream block listing the backends). Then, through nginx:

- ``--devices`` full enrollments (profile, SCEP, Authenticate, TokenUpdate), ``--concurrency`` at a time:
  enrollments per second and server CPU per enrollment;
- ``--idle`` signed idle check-ins (pre-signed, as an iPhone sends them; each client thread keeps its
  connection, as iOS does): check-ins per second, server CPU per check-in (all backends together, read
  from /proc: the client's and nginx's work do not count) and p50/p99 latency as the client sees it.

The issue's target (issue 14): with 2 processes on a 2-core machine, at least 1.7 times one process's
check-ins per second. The client, nginx and PostgreSQL share the machine with the backends: compare
ratios, and read the machine line printed first. Not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from _common import ROOT, drop_pg_database, fresh_pg_database, machine, total_cpu

from deploy_support import make_cert, nginx_main, replace_once, stop, tool, wait_for
from helpers import LiveServer, free_port, setup_tenant, start_server
from pomona.app import Settings, build
from pomona.protocol import cms
from pomona.protocol.command import COMMAND_CONTENT_TYPE
from pomona.testing.fleet import percentile
from pomona.testing.keypool import KeyPool
from pomona.testing.virtual_device import VirtualDevice

SHIPPED = ROOT / "deploy" / "nginx" / "pomona-multi.conf"
UPSTREAMS = (
    "    server 10.0.0.11:8080 max_fails=1 fail_timeout=5s;\n"
    "    server 10.0.0.12:8080 max_fails=1 fail_timeout=5s;\n"
)


def site(https_port: int, http_port: int, backends: list[int], cert: Path, key: Path) -> str:
    """The shipped site on local ports, its upstream block listing ``backends``."""
    text = SHIPPED.read_text()
    text = replace_once(text, "    listen [::]:80;\n", "")
    text = replace_once(text, "    listen [::]:443 ssl http2;\n", "")
    text = replace_once(text, "listen 80;", f"listen 127.0.0.1:{http_port};")
    text = replace_once(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    lines = "".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;\n" for p in backends)
    text = replace_once(text, UPSTREAMS, lines)
    text = replace_once(text, "/etc/letsencrypt/live/mdm.example.com/fullchain.pem", str(cert))
    return replace_once(text, "/etc/letsencrypt/live/mdm.example.com/privkey.pem", str(key))


def run(n: int, database_url: str, args: argparse.Namespace) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="pomona-scale-"))
    servers: list[LiveServer] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        cert = make_cert(work)
        https_port, http_port = free_port(), free_port()
        base = f"https://127.0.0.1:{https_port}"
        data = work / "data"
        p = build(Settings(data_dir=data, database_url=database_url, public_url=base, push_worker=False))
        try:
            setup = setup_tenant(p, "bench", uses=args.devices * 2)
            p.policy.set_user_flags("bench", setup.upn, is_dem=True)  # one user enrolls the whole fleet
        finally:
            p.close()
        env = {"POMONA_TRUSTED_PROXIES": "127.0.0.1"}
        with ThreadPoolExecutor(n) as ex:
            servers = list(
                ex.map(lambda _: start_server(data, database_url, public_url=base, env=env), range(n))
            )
        prefix = work / "nginx"
        prefix.mkdir()
        conf = prefix / "pomona-multi.conf"
        conf.write_text(
            site(https_port, http_port, [int(s.url.rsplit(":", 1)[1]) for s in servers], cert.cert, cert.key)
        )
        proc = subprocess.Popen(
            [tool("nginx"), "-p", str(prefix), "-c", str(nginx_main(prefix, conf)), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(f"{base}/healthz", proc, prefix / "error.log", verify=cert.context())

        def cpu() -> float:
            return sum(total_cpu(s) for s in servers)

        # Full enrollments through nginx.
        pool = KeyPool.load_or_create(None, size=args.devices)
        local = threading.local()
        clients: list[httpx.Client] = []

        def enroll(key: object) -> VirtualDevice:
            client = getattr(local, "client", None)
            if client is None:  # one client (kept-alive connections) per thread, as a fleet's workers
                client = local.client = httpx.Client(verify=cert.context(), timeout=60)
                clients.append(client)
            d = VirtualDevice(setup.enroll_url, key=key, client=client)  # type: ignore[arg-type]
            d.enroll()
            return d

        keys = [pool.take() for _ in range(args.devices)]
        before, t0 = cpu(), time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as ex:
            devices = list(ex.map(enroll, keys))
        enroll_wall, enroll_cpu = time.perf_counter() - t0, cpu() - before
        for c in clients:
            c.close()

        # Signed idle check-ins through nginx, pre-signed, one kept-alive connection per client thread.
        target = urlsplit(devices[0].server_url or "")
        msgs = []
        for d in devices:
            body = d.idle_message()
            assert d.identity_cert is not None
            msgs.append((body, base64.b64encode(cms.sign_detached(body, d.identity_cert, d.key)).decode()))
        per_thread = args.idle // args.concurrency
        latencies: list[list[float]] = [[] for _ in range(args.concurrency)]
        errors: list[int] = []
        context = cert.context()

        def worker(i: int) -> None:
            conn = http.client.HTTPSConnection(target.hostname or "", target.port, context=context)
            for k in range(per_thread):
                body, sig = msgs[(i * per_thread + k) % len(msgs)]
                t = time.perf_counter()
                conn.request(
                    "PUT",
                    target.path,
                    body=body,
                    headers={"Content-Type": COMMAND_CONTENT_TYPE, "Mdm-Signature": sig},
                )
                r = conn.getresponse()
                r.read()
                latencies[i].append(time.perf_counter() - t)
                if r.status != 200:
                    errors.append(r.status)
            conn.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
        before, t0 = cpu(), time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        idle_wall, idle_cpu = time.perf_counter() - t0, cpu() - before
        all_lat = [x for part in latencies for x in part]
        n_idle = len(all_lat)
        if errors:
            print(f"  {len(errors)} idle check-ins failed: {sorted(set(errors))}", file=sys.stderr)
        return {
            "enroll_per_s": args.devices / enroll_wall,
            "enroll_cpu_ms": enroll_cpu / args.devices * 1000,
            "idle_per_s": n_idle / idle_wall,
            "idle_cpu_ms": idle_cpu / n_idle * 1000,
            "p50_ms": (percentile(all_lat, 50) or 0) * 1000,
            "p99_ms": (percentile(all_lat, 99) or 0) * 1000,
        }
    finally:
        if proc is not None:
            stop(proc)
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="1,2,4", help="backend counts to measure, comma-separated")
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--idle", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    pg_admin = os.environ.get("POMONA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    first: float | None = None
    for n in (int(x) for x in args.backends.split(",")):
        url = fresh_pg_database(pg_admin)
        if url is None:
            sys.exit("PostgreSQL is needed (POMONA_TEST_PG)")
        try:
            r = run(n, url, args)
        finally:
            drop_pg_database(pg_admin, url)
        first = first or r["idle_per_s"]
        print(
            f"[{n} backend{'s' if n > 1 else ''}] idle check-ins: {r['idle_per_s']:.0f}/s "
            f"(x{r['idle_per_s'] / first:.2f} of the first), {r['idle_cpu_ms']:.3f} ms server CPU each, "
            f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; full enrollments: {r['enroll_per_s']:.1f}/s, "
            f"{r['enroll_cpu_ms']:.1f} ms server CPU each"
        )


if __name__ == "__main__":
    main()
