"""Shared pieces of the benchmarks: the machine line, a live server, CPU time read from /proc."""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import LiveServer, TenantSetup, free_port, setup_tenant, start_server  # noqa: E402
from pomona.app import Settings, build  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()} | {os.cpu_count()} cores | {cpu} | Python {platform.python_version()} | {platform.platform()}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / CLK_TCK


def server_pids(server: LiveServer) -> list[int]:
    """The server process and its children (uvicorn workers)."""
    pids = [server.process.pid]
    try:
        children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    return pids


def total_cpu(server: LiveServer) -> float:
    return sum(cpu_seconds(p) for p in server_pids(server))


def live(
    database_url: str | None,
    *,
    uses: int = 100_000,
    workers: int = 1,
    push_cert: tuple[bytes, bytes] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[LiveServer, TenantSetup]:
    """A live server with the tenant "bench" and a DEM user; ``push_cert`` (certificate PEM, key PEM) is
    the tenant's push certificate (an APNs emulator's) instead of a stand-in; ``env`` goes to the server."""
    data_dir = Path(tempfile.mkdtemp(prefix="pomona-bench-"))
    port = free_port()
    p = build(Settings(data_dir=data_dir, database_url=database_url, public_url=f"http://127.0.0.1:{port}"))
    try:
        setup = setup_tenant(p, "bench", uses=uses, push=push_cert is None)
        if push_cert is not None:
            topic = p.apns.upload("bench", *push_cert, canary=False).topic
            setup = dataclasses.replace(setup, topic=topic)
        # One user enrolls the whole bench fleet: a device enrollment manager (up to 1,000 devices).
        p.policy.set_user_flags("bench", setup.upn, is_dem=True)
    finally:
        p.close()
    return start_server(data_dir, database_url, workers=workers, port=port, env=env), setup


def fresh_pg_database(admin_url: str) -> str | None:
    """A new empty database on the PostgreSQL server, or None when it is not reachable."""
    import uuid

    try:
        import psycopg

        name = f"pomona_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return admin_url.rsplit("/", 1)[0] + "/" + name
    except Exception as exc:  # noqa: BLE001
        print(f"PostgreSQL not reachable at {admin_url}: {exc}", file=sys.stderr)
        return None


def drop_pg_database(admin_url: str, url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def signed_idle_requests(devices: list[Any]) -> tuple[str, int, list[bytes]]:
    """Each enrolled VirtualDevice's idle report as an iPhone sends it: its own identity's signature, an
    MDM user agent, keep-alive. Returns (host, port, one raw HTTP/1.1 request per device)."""
    import base64
    from urllib.parse import urlsplit

    from pomona.protocol import cms
    from pomona.protocol.command import COMMAND_CONTENT_TYPE

    url = urlsplit(devices[0].server_url or "")
    requests = []
    for d in devices:
        body = d.idle_message()
        assert d.identity_cert is not None
        sig = base64.b64encode(cms.sign_detached(body, d.identity_cert, d.key)).decode()
        head = (
            f"PUT {url.path} HTTP/1.1\r\n"
            f"Host: {url.netloc}\r\n"
            f"Content-Type: {COMMAND_CONTENT_TYPE}\r\n"
            f"Mdm-Signature: {sig}\r\n"
            f"User-Agent: MDM/1.0 iPhone/17.5 (21F79)\r\n"
            "Accept: */*\r\n"
            "Accept-Language: en-GB,en;q=0.9\r\n"
            "Accept-Encoding: gzip, deflate, br\r\n"
            "Connection: keep-alive\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return url.hostname or "127.0.0.1", url.port or 80, requests
