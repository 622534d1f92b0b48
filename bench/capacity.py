#!/usr/bin/env python3
"""What one device operation costs the server and the database, and the capacity model built on it.

    .venv/bin/python bench/capacity.py [--db sqlite,postgres] [--database-url URL] [--private-pg]
                                       [--devices 200] [--rate 200] [--seconds 10] [--json]
    .venv/bin/python bench/capacity.py --model FIGURES.json      (the model from saved figures)

A live ``pomona serve`` (bench/_common.py) with the APNs emulator as Apple's push service. Per operation:

- full enrollment: profile, SCEP (GetCACaps, GetCACert, PKCSReq), Authenticate, TokenUpdate;
- idle check-in: a signed ``Status: Idle`` with an empty queue, paced at ``--rate`` per second over the
  fleet's keep-alive connections (bench/checkin.py's Fleet);
- push: one push accepted by the emulator (a canary push queued for every device, ``--push-rounds`` times);
- queue a command: one admin API request queues a command for every device (figure per device);
- command round: the device connects (Idle), takes the command (SecurityInfo) and reports its result;
- weekly inventory: the same with ``DeviceInformation`` and Pomona's default query set (24 queries), the
  result carrying the device's answers;
- background: what the server spends per second with no traffic (leases, the push worker's polls).

For each: server CPU (every thread of the server process, from /proc, ns), the PostgreSQL backends' CPU,
and the database's work: statements (pg_stat_statements when ``shared_preload_libraries`` has it; on SQLite
an ``sqlite3`` trace callback in the server, bench/sqltrace/), transactions and rows written
(pg_stat_database, pg_stat_user_tables), database growth (pg_database_size; SQLite page_count), WAL bytes
(pg_current_wal_lsn differences: cluster-wide, so other databases' work on a shared server counts too;
``--private-pg`` starts a throwaway cluster of its own with pg_stat_statements loaded) and event rows.
The statement counter's trace callback costs the SQLite server a few microseconds per statement.

``--model`` turns the figures into cores, PostgreSQL size and the bottleneck for 10k, 100k and 1M devices
(assumptions are options, printed with the result); with a run it is printed after the figures.
The machine is shared: the machine line and the load average go with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _common import ROOT, drop_pg_database, free_port, fresh_pg_database, live, machine
from checkin import Fleet, Round, db_pids, idle_requests, precise_cpu, server_cpu

from pomona.services.checkin import TOUCH_EVERY
from pomona.testing.apns_emulator import ApnsEmulator
from pomona.testing.keypool import KeyPool
from pomona.testing.virtual_device import VirtualDevice

OPERATIONS = ("enroll", "daily", "idle", "push", "queue", "command", "inventory")
LABELS = {
    "background": "background (per second)",
    "enroll": "full enrollment",
    "daily": "daily check-in (Idle, last-seen written)",
    "idle": "idle check-in (seen < 60 s ago)",
    "push": "push (accepted by APNs)",
    "queue": "queue a command (per device)",
    "command": "command round (Idle+fetch+result)",
    "inventory": "weekly inventory (DeviceInformation)",
}
PROBE = "/* capacity-probe */"
KEPT = frozenset({"enroll", "queue", "command", "inventory"})
"""Operations whose rows are kept (Pomona prunes neither events nor finished commands)."""


# --- the database's side -------------------------------------------------------------------------------


class PgProbe:
    """Counters of one PostgreSQL database, read in one transaction (its own work is left out)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        preload = str(self.conn.execute("SHOW shared_preload_libraries").fetchone()[0])  # type: ignore[index]
        self.statements = "pg_stat_statements" in preload
        if self.statements:
            self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            time.sleep(1.1)
            self.conn.execute("SELECT 1")  # flushes this backend's statistics of the CREATE
        self.note = (
            "statements from pg_stat_statements"
            if self.statements
            else "pg_stat_statements not loaded (shared_preload_libraries): no statement counts"
        )

    def snapshot(self) -> dict[str, float]:
        time.sleep(1.2)  # backends flush their statistics at most once a second
        c = self.conn
        with c.transaction():
            xacts, ins, upd, dele, size, wal = c.execute(
                f"SELECT {PROBE} d.xact_commit + d.xact_rollback, d.tup_inserted, d.tup_updated, "
                "d.tup_deleted, pg_database_size(current_database()), pg_current_wal_lsn() - '0/0'::pg_lsn "
                "FROM pg_stat_database d WHERE d.datname = current_database()"
            ).fetchone()  # type: ignore[misc]
            events = c.execute(
                f"SELECT {PROBE} coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables WHERE relname = 'events'"
            ).fetchone()[0]  # type: ignore[index]
            conns = c.execute(
                f"SELECT {PROBE} count(*) FROM pg_stat_activity WHERE datname = current_database()"
            ).fetchone()[0]  # type: ignore[index]
            out = {
                "xacts": float(xacts) - 1,  # this snapshot's own transaction
                "rows_written": float(ins + upd + dele),
                "db_bytes": float(size),
                "wal_bytes": float(wal),
                "events": float(events),
                "connections": float(conns) - 1,
            }
            if self.statements:
                out["statements"] = float(
                    c.execute(
                        f"SELECT {PROBE} coalesce(sum(calls), 0) FROM pg_stat_statements s "
                        "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database() "
                        "AND s.query NOT LIKE '%capacity-probe%'"
                    ).fetchone()[0]  # type: ignore[index]
                )
        return out

    def close(self) -> None:
        self.conn.close()


class SqliteProbe:
    """The SQLite file's logical size and event rows, and the statements the server ran (counted by
    bench/sqltrace/sitecustomize.py in the server process, written out on SIGUSR2)."""

    note = "statements from an sqlite3 trace callback in the server"

    def __init__(self, db_path: Path, counts: Path, pid: int) -> None:
        self.db_path, self.counts, self.pid = db_path, counts, pid

    def snapshot(self) -> dict[str, float]:
        import sqlite3

        out: dict[str, float] = {}
        target = Path(f"{self.counts}.{self.pid}")
        before = target.stat().st_mtime_ns if target.exists() else 0
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if target.exists() and target.stat().st_mtime_ns != before:
                break
            time.sleep(0.02)
        with contextlib.suppress(OSError, ValueError):
            counts = json.loads(target.read_text())
            out["statements"] = float(sum(counts.values()))
            out["rows_written"] = float(sum(counts.get(k, 0) for k in ("insert", "update", "delete")))
            out["xacts"] = float(counts.get("commit", 0) + counts.get("rollback", 0))
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            out["db_bytes"] = float(pages * page)
            out["events"] = float(conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])
        finally:
            conn.close()
        return out

    def close(self) -> None:
        pass


class PrivatePg:
    """A throwaway PostgreSQL cluster (initdb as the postgres user when run as root) with
    pg_stat_statements loaded, so that statements and WAL are this bench's alone."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
        bindir = bins[-1].parent
        self.dir = Path(tempfile.mkdtemp(prefix="pomona-capacity-pg-"))
        self.port = free_port()
        as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if as_pg:
            shutil.chown(self.dir, "postgres")
        data = self.dir / "data"
        subprocess.run(
            [*as_pg, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
            check=True,
            capture_output=True,
        )
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} "
            "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all "
            "-c max_connections=200"
        )
        subprocess.run(
            [
                *as_pg,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                opts,
                "-l",
                str(self.dir / "log"),
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        self.bindir, self.data, self.as_pg = bindir, data, as_pg
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            [*self.as_pg, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


# --- measuring -------------------------------------------------------------------------------------------


@dataclass
class Meter:
    """Server CPU, database CPU and database counters around one phase; ``count`` operations in it."""

    name: str
    count: int = 0
    figures: dict[str, float] = field(default_factory=dict)


class Bench:
    def __init__(self, server: Any, probe: PgProbe | SqliteProbe, database_url: str | None) -> None:
        self.server, self.probe, self.database_url = server, probe, database_url
        self.results: dict[str, dict[str, float]] = {}
        self.max_connections = 0.0

    @contextlib.contextmanager
    def meter(self, name: str) -> Iterator[Meter]:
        m = Meter(name)
        db0 = self.probe.snapshot()
        backends = db_pids(self.database_url)
        dbc0 = precise_cpu(backends)
        cpu0, t0, load0 = server_cpu(self.server), time.perf_counter(), os.getloadavg()[0]
        yield m
        cpu = server_cpu(self.server) - cpu0
        wall = time.perf_counter() - t0
        db_cpu = precise_cpu([p for p in backends if Path(f"/proc/{p}").exists()]) - dbc0
        new = [p for p in db_pids(self.database_url) if p not in backends]
        db_cpu += precise_cpu(new)  # backends opened meanwhile (their whole life is in the phase)
        db1 = self.probe.snapshot()
        n = max(m.count, 1)
        fig: dict[str, float] = {
            "count": float(m.count),
            "wall_s": wall,
            "per_s": m.count / wall if wall else 0.0,
            "cpu_ms": cpu / n * 1000,
            "load": max(load0, os.getloadavg()[0]),
        }
        if self.database_url:
            fig["db_cpu_ms"] = db_cpu / n * 1000
        for k, v in db1.items():
            if k == "connections":
                self.max_connections = max(self.max_connections, v, db0.get(k, 0.0))
            elif k in db0:
                fig[k] = (v - db0[k]) / n
        m.figures = fig
        self.results[name] = fig


def enroll_all(devices: list[VirtualDevice], concurrency: int) -> None:
    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(lambda d: d.enroll(), devices))


def poll_all(devices: list[VirtualDevice], concurrency: int, request_type: str) -> int:
    """Every device connects and answers what is queued; the number that answered ``request_type``."""
    with ThreadPoolExecutor(concurrency) as ex:
        handled = list(ex.map(lambda d: d.poll(), devices))
    return sum(1 for h in handled for c in h if c.request_type == request_type and c.status == "Acknowledged")


def queue(url: str, token: str, request_type: str, udids: list[str]) -> None:
    r = httpx.post(
        f"{url}/api/v1/tenants/bench/commands",
        headers={"Authorization": f"Bearer {token}"},
        json={"request_type": request_type, "devices": udids, "push": False},
        timeout=300,
    )
    if r.status_code != 201:
        raise RuntimeError(f"queueing {request_type}: HTTP {r.status_code} {r.text[:200]}")


def run(db_name: str, database_url: str | None, args: argparse.Namespace) -> dict[str, Any]:
    counts = Path(tempfile.mkdtemp(prefix="pomona-capacity-")) / "sql-counts"
    with ApnsEmulator.start(delivery_workers=4) as emu:
        env = {"POMONA_APNS_URL": emu.url, "POMONA_APNS_CA": str(emu.ca_path)}
        if database_url is None:
            trace = str(ROOT / "bench" / "sqltrace")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (trace, os.environ.get("PYTHONPATH", "")) if p)
            env["POMONA_BENCH_SQL_COUNTS"] = str(counts)
        server, setup = live(database_url, push_cert=emu.issue_push_cert(), env=env)
        probe: PgProbe | SqliteProbe
        if database_url:
            probe = PgProbe(database_url)
        else:
            probe = SqliteProbe(server.data_dir / "pomona.db", counts, server.process.pid)
        bench = Bench(server, probe, database_url)
        try:
            pool = KeyPool.load_or_create(None, size=args.devices)
            devices = [VirtualDevice(setup.enroll_url, key=pool.take()) for _ in range(args.devices)]
            with bench.meter("enroll") as m:
                enroll_all(devices, args.concurrency)
                m.count = len(devices)

            # No traffic until no device has been seen for TOUCH_EVERY: the server's background work, and
            # then every device's first check-in of the day (its last-seen time is written).
            with bench.meter("background") as m:
                time.sleep(max(args.quiet, TOUCH_EVERY.total_seconds() + 2))
                m.count = 1
            bg = bench.results["background"]
            wall = bg["wall_s"]
            for k in list(bg):
                if k not in ("count", "wall_s", "per_s", "load"):
                    bg[k] /= wall  # per second, not per phase
            bg["count"] = wall

            host, port, requests = idle_requests(devices)

            async def idle() -> None:
                fleet = Fleet(host, port, requests)
                rng = random.Random(14)
                gate = asyncio.Semaphore(args.concurrency)

                async def once(d: Any) -> None:
                    async with gate:
                        await fleet.checkin(d)

                try:
                    with bench.meter("daily") as m:
                        await asyncio.gather(*(once(d) for d in fleet.devices))
                        m.count = fleet.round.count - fleet.round.errors
                    await fleet.paced(args.rate, args.warmup, rng)
                    with bench.meter("idle") as m:
                        fleet.round = Round()
                        await fleet.paced(args.rate, args.seconds, rng)
                        m.count = fleet.round.count - fleet.round.errors
                    if fleet.round.errors:
                        print(f"[{db_name}] idle check-ins: {fleet.round.errors} errors", file=sys.stderr)
                finally:
                    await fleet.close()

            asyncio.run(idle())

            # Pushes: a canary push to every device, --push-rounds times (each round waits for the last).
            from pomona.app import Settings, build
            from pomona.ports import PushKind

            p = build(Settings(data_dir=server.data_dir, database_url=database_url, public_url=server.url))
            try:
                with p.db.unit_of_work(readonly=True) as uow:
                    from sqlalchemy import select

                    from pomona.storage import schema as s

                    eids = [r[0] for r in uow.conn.execute(select(s.enrollments.c.id))]  # type: ignore[attr-defined]
                emu.reset_stats()
                with bench.meter("push") as m:
                    for _ in range(args.push_rounds):
                        goal = emu.stats().accepted + len(eids)
                        with p.db.unit_of_work() as uow:
                            uow.pushes.request(
                                setup.tenant_id, eids, dt.datetime.now(dt.UTC), kind=PushKind.CANARY
                            )
                        t0 = time.monotonic()
                        while emu.stats().accepted < goal and time.monotonic() - t0 < 60:
                            time.sleep(0.01)
                    m.count = emu.stats().accepted
            finally:
                p.close()

            udids = [d.udid for d in devices]
            for request_type, name in (("SecurityInfo", "command"), ("DeviceInformation", "inventory")):
                with bench.meter("queue" if name == "command" else "queue_inventory") as m:
                    queue(server.url, setup.admin_token, request_type, udids)
                    m.count = len(udids)
                with bench.meter(name) as m:
                    m.count = poll_all(devices, args.concurrency, request_type)
                if m.count < len(devices):
                    print(f"[{db_name}] {name}: {m.count} of {len(devices)} answered", file=sys.stderr)
        finally:
            probe.close()
            server.stop()
            shutil.rmtree(counts.parent, ignore_errors=True)
            shutil.rmtree(server.data_dir, ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "db": db_name,
        "commit": commit.stdout.strip() or "?",
        "devices": args.devices,
        "rate": args.rate,
        "machine": machine(),
        "loadavg": list(os.getloadavg()),
        "statements_note": probe.note,
        "connections_per_process": bench.max_connections,
        "operations": bench.results,
    }


# --- the model -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assumptions:
    checkins_per_day: float = 1.0  # the at-least-daily check-in: a push and an idle check-in
    inventories_per_week: float = 1.0
    commands_per_week: float = 2.0  # other commands (profiles, apps, security queries)
    churn_per_week: float = 0.01  # new enrollments per device per week (and as many removed)
    peak_factor: float = 10.0  # the morning peak over the day's average
    burst_minutes: float = 60.0  # one command to the whole fleet must be done in this time
    utilisation: float = 0.7  # the share of a core planned for
    cores_per_host: int = 4
    retention_days: int = 365  # history kept a year (POMONA_*_RETENTION_DAYS; the default 0 keeps it all)
    pg_cores: int = 8  # one PostgreSQL host's cores
    pg_disk_gb: int = 1000  # one PostgreSQL host's disk
    pg_commits_per_s: int = 5000  # what one primary commits (group commit, SSD): assumed, not measured here


def daily_ops(a: Assumptions) -> dict[str, float]:
    """Operations per device per day, by kind."""
    commands = a.commands_per_week / 7
    inventories = a.inventories_per_week / 7
    return {
        "daily": a.checkins_per_day,
        "push": a.checkins_per_day + commands + inventories,
        "queue": commands + inventories,
        "command": commands,
        "inventory": inventories,
        "enroll": a.churn_per_week / 7,
    }


def bottleneck(shares: dict[str, float]) -> str:
    """The resource nearest to its limit, or none when every one is below a tenth of what one unit gives."""
    top = max(shares, key=lambda k: shares[k])
    return top if shares[top] >= 0.1 else f"none (every resource below 10% of one unit; the largest: {top})"


def model(
    fig: dict[str, Any], a: Assumptions, sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
) -> list[dict[str, Any]]:
    """Cores, PostgreSQL size and the bottleneck for each fleet size, from measured per-operation figures."""
    ops = fig["operations"]
    per_day = daily_ops(a)
    burst_mix = {"push": 1.0, "queue": 1.0, "command": 1.0}  # one command to every device
    burst_s = a.burst_minutes * 60

    def total(key: str, mix: dict[str, float]) -> float:
        return sum(rate * float(ops.get(k, {}).get(key, 0.0)) for k, rate in mix.items())

    out = []
    for n in sizes:
        cpu_day = n * total("cpu_ms", per_day) / 1000  # server CPU seconds a day
        avg_cores = cpu_day / 86400
        peak_cores = avg_cores * a.peak_factor
        burst_cores = n * total("cpu_ms", burst_mix) / 1000 / burst_s
        need = max(peak_cores, burst_cores) / a.utilisation
        processes = max(1, math.ceil(need))
        hosts = max(1, math.ceil(processes / a.cores_per_host))
        db_cpu_day = n * total("db_cpu_ms", per_day) / 1000
        db_peak = max(db_cpu_day / 86400 * a.peak_factor, n * total("db_cpu_ms", burst_mix) / 1000 / burst_s)
        enroll_bytes = float(ops.get("enroll", {}).get("db_bytes", 0.0))
        # What stays: command rows (with their results) and events. A check-in's last-seen update and a
        # push's queue row are rewritten or deleted in place: their growth is reclaimed by (auto)vacuum.
        growth_day = n * total("db_bytes", {k: v for k, v in per_day.items() if k in KEPT})
        storage = n * enroll_bytes + growth_day * a.retention_days
        wal_day = n * total("wal_bytes", per_day)
        xacts_day = n * total("xacts", per_day)
        peak_commits = max(xacts_day / 86400 * a.peak_factor, n * total("xacts", burst_mix) / burst_s)
        peak_wal = max(wal_day / 86400 * a.peak_factor, n * total("wal_bytes", burst_mix) / burst_s)
        # One process pushes as fast as its CPU allows (bench/push.py: the push worker is CPU-bound).
        push_ms = float(ops.get("push", {}).get("cpu_ms", 0.0))
        pushes_per_s = processes * a.utilisation * 1000 / push_ms if push_ms else float("nan")
        # Each resource's load as a share of what one unit of it gives; the largest is the bottleneck.
        shares = {
            "Python CPU (server processes)": need / a.cores_per_host,
            "PostgreSQL CPU (one primary)": db_peak / a.utilisation / a.pg_cores,
            "PostgreSQL commits (one primary)": peak_commits / a.pg_commits_per_s,
            "event log and command history (disk)": storage / (a.pg_disk_gb * 1e9),
        }
        out.append(
            {
                "devices": n,
                "server_cpu_s_per_day": cpu_day,
                "avg_cores": avg_cores,
                "peak_cores": peak_cores,
                "burst_cores": burst_cores,
                "processes": processes,
                "hosts": hosts,
                "pg_cpu_peak_cores": db_peak,
                "pg_connections": processes * float(fig.get("connections_per_process", 0.0)),
                "storage_gb": storage / 1e9,
                "growth_gb_per_day": growth_day / 1e9,
                "wal_gb_per_day": wal_day / 1e9,
                "statements_per_day": n * total("statements", per_day),
                "events_per_day": n * total("events", per_day),
                "peak_commits_per_s": peak_commits,
                "peak_wal_mb_per_s": peak_wal / 1e6,
                "pushes_per_s": pushes_per_s,
                "push_everyone_min": n / pushes_per_s / 60 if pushes_per_s else float("nan"),
                "shares": shares,
                "bottleneck": bottleneck(shares),
            }
        )
    return out


def merge_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One run per database: each figure the median of the runs', the server CPU's spread beside it."""
    out = []
    for db in dict.fromkeys(r["db"] for r in runs):
        mine = [r for r in runs if r["db"] == db]
        if len(mine) == 1:
            out.append(mine[0])
            continue
        ops: dict[str, dict[str, float]] = {}
        for name in dict.fromkeys(k for r in mine for k in r["operations"]):
            have = [r["operations"][name] for r in mine if name in r["operations"]]
            fig = {k: statistics.median(float(f[k]) for f in have if k in f) for k in have[0]}
            fig["cpu_ms_min"] = min(float(f["cpu_ms"]) for f in have)
            fig["cpu_ms_max"] = max(float(f["cpu_ms"]) for f in have)
            ops[name] = fig
        out.append(
            {
                **mine[0],
                "commit": ",".join(dict.fromkeys(str(r.get("commit", "?")) for r in mine)),
                "runs": len(mine),
                "loadavg": [max(float(r["loadavg"][i]) for r in mine) for i in range(3)],
                "connections_per_process": max(float(r.get("connections_per_process", 0)) for r in mine),
                "operations": ops,
            }
        )
    return out


# --- printing --------------------------------------------------------------------------------------------


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def print_figures(r: dict[str, Any]) -> None:
    ops = r["operations"]
    pg = r["db"] != "sqlite"
    runs = f"median of {r['runs']} runs (server CPU: spread), " if r.get("runs", 1) > 1 else ""
    print(
        f"\n[{r['db']}] {runs}commit {r.get('commit', '?')}, {r['devices']} devices, idle check-ins at {r['rate']:g}/s; "
        f"{r['statements_note']}" + ("; a private PostgreSQL cluster" if r.get("private_pg") else "")
    )
    cols = [
        "operation",
        "n",
        "server CPU ms",
        "PG CPU ms",
        "statements",
        "xacts",
        "rows written",
        "DB bytes",
        "WAL bytes",
        "events",
        "load",
    ]
    rows = []
    for name in ("background", *OPERATIONS, "queue_inventory"):
        f = ops.get(name)
        if not f:
            continue
        label = LABELS.get(name, "queue an inventory (per device)")
        rows.append(
            [
                label,
                fmt(f["count"], 0),
                fmt(f["cpu_ms"])
                + (f" ({fmt(f['cpu_ms_min'])}-{fmt(f['cpu_ms_max'])})" if "cpu_ms_min" in f else ""),
                fmt(f.get("db_cpu_ms")) if pg else "-",
                fmt(f.get("statements"), 1),
                fmt(f.get("xacts"), 2),
                fmt(f.get("rows_written"), 1),
                fmt(f.get("db_bytes"), 0),
                fmt(f.get("wal_bytes"), 0) if pg else "-",
                fmt(f.get("events"), 2),
                f"{f['load']:.2f}",
            ]
        )
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cols)))
    for row in rows:
        print("  ".join(v.ljust(widths[0]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(row)))
    print(
        f"(background: per second of no traffic; others: per operation.) PostgreSQL connections per "
        f"server process (most seen): {fmt(r.get('connections_per_process'), 0)}"
        if pg
        else "(background: per second of no traffic; others: per operation.)"
    )


def print_model(fig: dict[str, Any], a: Assumptions) -> None:
    rows = model(fig, a)
    print(
        f"\nCapacity model from the [{fig['db']}] figures ({fig['machine']}; load up to {fig['loadavg'][0]:.2f}):"
    )
    print(
        f"  assumptions: {a.checkins_per_day:g} check-in (push + idle) a day per device; {a.inventories_per_week:g} "
        f"inventory and {a.commands_per_week:g} other commands a week; enrollment churn {a.churn_per_week:.0%} a "
        f"week; morning peak {a.peak_factor:g}x the day's average; one command to the whole fleet within "
        f"{a.burst_minutes:g} min; cores planned at {a.utilisation:.0%}; {a.cores_per_host} cores per host; "
        f"{a.retention_days} days of events and commands kept; a {a.pg_cores}-core PostgreSQL host with "
        f"{a.pg_disk_gb} GB committing {a.pg_commits_per_s:,} transactions/s (assumed)"
    )
    keys = [
        ("server CPU s/day", "server_cpu_s_per_day", 0),
        ("cores: day average", "avg_cores", 3),
        ("cores: morning peak", "peak_cores", 3),
        ("cores: fleet-wide command", "burst_cores", 3),
        ("server processes", "processes", 0),
        ("hosts", "hosts", 0),
        ("PostgreSQL CPU at peak (cores)", "pg_cpu_peak_cores", 3),
        ("PostgreSQL connections", "pg_connections", 0),
        ("database size (GB, retention)", "storage_gb", 2),
        ("database growth (GB/day)", "growth_gb_per_day", 3),
        ("WAL (GB/day)", "wal_gb_per_day", 3),
        ("statements/day", "statements_per_day", 0),
        ("events/day", "events_per_day", 0),
        ("commits/s at peak (write IOPS bound)", "peak_commits_per_s", 1),
        ("WAL MB/s at peak", "peak_wal_mb_per_s", 3),
        ("pushes/s (those processes)", "pushes_per_s", 0),
        ("push to everyone (min)", "push_everyone_min", 1),
    ]
    sizes = [f"{r['devices']:,}" for r in rows]
    w = max(len(k[0]) for k in keys)
    print("  " + "".ljust(w) + "".join(s.rjust(14) for s in sizes))
    for label, key, d in keys:
        print("  " + label.ljust(w) + "".join(fmt(float(r[key]), d).rjust(14) for r in rows))
    for r in rows:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in r["shares"].items())
        print(f"  bottleneck at {r['devices']:,}: {r['bottleneck']}  (share of one unit: {shares})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="sqlite,postgres")
    ap.add_argument(
        "--database-url",
        default=os.environ.get("POMONA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server's admin URL (a fresh database is made there)",
    )
    ap.add_argument("--private-pg", action="store_true", help="start a throwaway PostgreSQL cluster instead")
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--rate", type=float, default=200.0, help="idle check-ins per second")
    ap.add_argument("--seconds", type=float, default=10.0, help="idle check-ins measured for this long")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument(
        "--quiet",
        type=float,
        default=0.0,
        help="seconds without traffic after enrolling (at least TOUCH_EVERY + 2 s)",
    )
    ap.add_argument("--push-rounds", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--json", action="store_true", help="the figures (and the model) as JSON")
    ap.add_argument(
        "--model",
        nargs="+",
        metavar="FIGURES.json",
        help="print the model from saved --json figures (several runs: the median of each figure)",
    )
    for f in Assumptions.__dataclass_fields__.values():
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)  # type: ignore[arg-type]
    args = ap.parse_args()
    a = Assumptions(**{k: getattr(args, k) for k in Assumptions.__dataclass_fields__})

    if args.model:
        runs = merge_runs(
            [r for path in args.model for r in json.loads(Path(path).read_text()).get("runs", [])]
        )
        if args.json:
            print(
                json.dumps(
                    {
                        "assumptions": a.__dict__,
                        "models": [{"db": r["db"], "model": model(r, a)} for r in runs],
                    },
                    indent=2,
                )
            )
            return
        for r in runs:
            print_figures(r)
            print_model(r, a)
        return

    if not args.json:
        print(f"machine: {machine()} | load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    runs = []
    private: PrivatePg | None = None
    try:
        for db_name in args.db.split(","):
            url = None
            admin = args.database_url
            if db_name == "postgres":
                if args.private_pg:
                    private = private or PrivatePg()
                    admin = private.url
                url = fresh_pg_database(admin)
                if url is None:
                    continue
            try:
                r = run(db_name, url, args)
            finally:
                if url:
                    drop_pg_database(admin, url)
            r["private_pg"] = bool(args.private_pg and url)
            runs.append(r)
            if not args.json:
                print_figures(r)
                print_model(r, a)
                sys.stdout.flush()
    finally:
        if private is not None:
            private.stop()
    if args.json:
        print(
            json.dumps(
                {
                    "runs": runs,
                    "assumptions": a.__dict__,
                    "models": [{"db": r["db"], "model": model(r, a)} for r in runs],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
