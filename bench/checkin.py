#!/usr/bin/env python3
"""Server CPU per signed idle check-in (at paced rates, as a fleet sends them) and per full enrollment.

    .venv/bin/python bench/checkin.py [--devices 200] [--rates 100,500,max] [--rounds 5] [--seconds 4]
                                      [--db sqlite,postgres] [--workers 1] [--only enroll]

A full enrollment is: profile download, SCEP (GetCACaps, GetCACert, PKCSReq), Authenticate, TokenUpdate.

An idle check-in is a signed ``Status: Idle`` report on the command channel with an empty queue, sent as
an iPhone sends it: the same headers (MDM user agent, Content-Type, Mdm-Signature, keep-alive) and a body
signed by the device's own identity. Each enrolled device keeps its own keep-alive connection (opened on
its first check-in, reused after), and check-ins arrive at a paced rate (Poisson arrivals, fixed seed)
spread over the whole pool of devices, one request in flight per device at most: not a few hot
connections. ``max`` is flat out: 16 check-ins in flight at all times, still over the whole pool.

CPU is read from /proc for the server process (and its workers; every thread's schedstat, in ns), so
the client's own work does not count; on PostgreSQL the CPU of the database's backends is printed beside
it (it is not in the server's figure, as a peer's measurement would not count it either). Each rate has a warm-up, then ``--rounds`` rounds; the figure is the median round, with the
spread (min-max) beside it, the round-trip p50/p99, the load average and the CPU other processes of the
machine used meanwhile (``others``: the machine's busy time from /proc/stat less the server's and this
client's). The machine is shared: compare runs made at the same load, and ratios rather than absolutes.
Targets (issue 14): <= 0.6 ms per idle check-in at 500/s on SQLite, <= 0.7 ms on PostgreSQL, <= 0.4 ms
flat out on SQLite; <= 12 ms (SQLite) / 15 ms (PostgreSQL) per full enrollment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    drop_pg_database,
    fresh_pg_database,
    live,
    machine,
    server_pids,
    signed_idle_requests,
    total_cpu,
)

from pomona.testing.keypool import KeyPool
from pomona.testing.virtual_device import VirtualDevice

FLAT_OUT_IN_FLIGHT = 16
TARGETS = {("sqlite", "500"): 0.6, ("postgres", "500"): 0.7, ("sqlite", "max"): 0.4}


def machine_busy() -> float:
    """Seconds of CPU the whole machine spent busy (every process), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def precise_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes, every thread, in nanoseconds from /proc/<pid>/task/*/schedstat
    (the tick-based /proc/<pid>/stat counts in 10 ms steps: 0.03 ms per check-in over a 3 s round)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that ended meanwhile
    return total / 1e9


def server_cpu(server: object) -> float:
    try:
        return precise_cpu(server_pids(server))  # type: ignore[arg-type]
    except OSError:
        return total_cpu(server)  # type: ignore[arg-type]


def db_pids(database_url: str | None) -> list[int]:
    """The PostgreSQL backends serving the bench's database (their CPU is the database's share)."""
    if database_url is None:
        return []
    import psycopg

    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)).fetchall()
    return [int(r[0]) for r in rows]


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class Device:
    """One device's wire: its pre-built request (an idle report's body never changes) and connection."""

    request: bytes
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    busy: bool = False


@dataclass
class Round:
    count: int = 0
    errors: int = 0
    skipped: int = 0  # arrivals with every device still waiting for its last answer
    latencies: list[float] = field(default_factory=list)


class Fleet:
    def __init__(self, host: str, port: int, requests: list[bytes]) -> None:
        self.host, self.port = host, port
        self.devices = [Device(r) for r in requests]
        self.next = 0
        self.round = Round()
        self.in_flight = 0

    def idle_device(self) -> Device | None:
        """The next device in turn that has no request in flight (a device sends one at a time)."""
        n = len(self.devices)
        for _ in range(n):
            d = self.devices[self.next]
            self.next = (self.next + 1) % n
            if not d.busy:
                return d
        return None

    async def checkin(self, d: Device) -> None:
        d.busy = True
        self.in_flight += 1
        t0 = time.perf_counter()
        try:
            for attempt in (0, 1):
                try:
                    if d.writer is None:
                        d.reader, d.writer = await asyncio.open_connection(self.host, self.port)
                    assert d.reader is not None
                    d.writer.write(d.request)
                    head = await d.reader.readuntil(b"\r\n\r\n")
                    break
                except (ConnectionError, asyncio.IncompleteReadError):
                    # The server closed an idle keep-alive connection: a device opens a new one.
                    if d.writer is not None:
                        d.writer.close()
                    d.reader = d.writer = None
                    if attempt:
                        raise
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await d.reader.readexactly(length)
            r = self.round
            r.count += 1
            r.latencies.append(time.perf_counter() - t0)
            if status != 200:
                r.errors += 1
        except Exception:  # noqa: BLE001 - counted; the run goes on
            self.round.errors += 1
            if d.writer is not None:
                d.writer.close()
            d.reader = d.writer = None
        finally:
            d.busy = False
            self.in_flight -= 1

    async def paced(self, rate: float, seconds: float, rng: random.Random) -> None:
        """Poisson arrivals at ``rate`` per second for ``seconds``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        due = loop.time()
        tasks: set[asyncio.Task[None]] = set()
        while True:
            due += rng.expovariate(rate)
            if due >= end:
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            d = self.idle_device()
            if d is None:
                self.round.skipped += 1  # every device busy: the server is not keeping up
                continue
            t = asyncio.ensure_future(self.checkin(d))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def flat_out(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds

        async def lane() -> None:
            while loop.time() < end:
                d = self.idle_device()
                if d is None:
                    await asyncio.sleep(0.001)
                    continue
                await self.checkin(d)

        await asyncio.gather(*(lane() for _ in range(FLAT_OUT_IN_FLIGHT)))

    async def close(self) -> None:
        for d in self.devices:
            if d.writer is not None:
                d.writer.close()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))]


async def measure_rate(
    fleet: Fleet, server: object, rate: str, args: argparse.Namespace, database_url: str | None
) -> dict[str, object]:
    rng = random.Random(14)

    async def drive(seconds: float) -> None:
        if rate == "max":
            await fleet.flat_out(seconds)
        else:
            await fleet.paced(float(rate), seconds, rng)

    fleet.round = Round()
    await drive(args.warmup)  # caches, connections, the server's first-use work
    rounds = []
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        fleet.round = Round()
        backends = db_pids(database_url)
        db0 = precise_cpu(backends)
        cpu0, busy0, me0, t0 = server_cpu(server), machine_busy(), self_cpu(), time.perf_counter()
        await drive(args.seconds)
        cpu = server_cpu(server) - cpu0
        wall = time.perf_counter() - t0
        db_cpu = precise_cpu([p for p in backends if Path(f"/proc/{p}").exists()]) - db0
        others = machine_busy() - busy0 - cpu - db_cpu - (self_cpu() - me0)
        r = fleet.round
        rounds.append(
            {
                "cpu_ms": cpu / max(r.count, 1) * 1000,
                "per_s": r.count / wall,
                "p50": percentile(r.latencies, 0.50) * 1000,
                "p99": percentile(r.latencies, 0.99) * 1000,
                "errors": r.errors,
                "skipped": r.skipped,
                "db_ms": db_cpu / max(r.count, 1) * 1000,
                "others": max(others, 0.0) / wall,  # cores' worth used by other processes
            }
        )
    med = sorted(rounds, key=lambda x: float(x["cpu_ms"]))[len(rounds) // 2]
    cpus = [float(x["cpu_ms"]) for x in rounds]
    return {
        "rate": rate,
        "cpu_ms": statistics.median(cpus),
        "cpu_min": min(cpus),
        "cpu_max": max(cpus),
        "per_s": statistics.median(float(x["per_s"]) for x in rounds),
        "p50": med["p50"],
        "p99": med["p99"],
        "errors": sum(int(x["errors"]) for x in rounds),  # type: ignore[call-overload]
        "skipped": sum(int(x["skipped"]) for x in rounds),  # type: ignore[call-overload]
        "db_ms": statistics.median(float(x["db_ms"]) for x in rounds),
        "others": statistics.median(float(x["others"]) for x in rounds),
        "load": (load_before, os.getloadavg()[0]),
    }


idle_requests = signed_idle_requests  # one builder for every bench (bench/_common.py)


def run(db_name: str, database_url: str | None, args: argparse.Namespace) -> None:
    server, setup = live(database_url, workers=args.workers)
    try:
        pool = KeyPool.load_or_create(None, size=args.devices)
        devices = [VirtualDevice(setup.enroll_url, key=pool.take()) for _ in range(args.devices)]
        load = os.getloadavg()[0]
        before = server_cpu(server)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as ex:
            list(ex.map(lambda d: d.enroll(), devices))
        enroll_wall = time.perf_counter() - t0
        enroll_cpu = (server_cpu(server) - before) / args.devices * 1000
        target = 12 if db_name == "sqlite" else 15
        print(
            f"[{db_name}] full enrollment: {enroll_cpu:.2f} ms server CPU each ({args.devices} devices, "
            f"{args.devices / enroll_wall:.1f}/s, {args.concurrency} at once)   target <= {target} ms"
            f"   | load {load:.2f}",
            flush=True,
        )

        if args.only == "enroll":
            return

        # What the server spends with no request at all (lease renewals, the push worker's polls): part of
        # every figure below, more of it at low rates.
        time.sleep(1.0)
        quiet0, q0 = server_cpu(server), time.perf_counter()
        time.sleep(args.quiet)
        quiet = (server_cpu(server) - quiet0) / (time.perf_counter() - q0) * 1000
        print(
            f"[{db_name}] no traffic: {quiet:.1f} ms server CPU per second (background jobs; "
            f"{quiet / 100:.3f} ms per check-in at 100/s, {quiet / 500:.3f} at 500/s)"
            f"   | load {os.getloadavg()[0]:.2f}",
            flush=True,
        )

        host, port, requests = idle_requests(devices)

        async def main() -> None:
            fleet = Fleet(host, port, requests)
            try:
                for rate in args.rates.split(","):
                    r = await measure_rate(fleet, server, rate, args, database_url)
                    goal = TARGETS.get((db_name, rate))
                    label = "flat out" if rate == "max" else f"{rate}/s"
                    print(
                        f"[{db_name}] idle check-in {label:>8}: {r['cpu_ms']:.3f} ms server CPU each "
                        f"(median of {args.rounds}, spread {r['cpu_min']:.3f}-{r['cpu_max']:.3f}), "
                        f"{r['per_s']:.0f}/s, p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms, "
                        f"{r['errors']} errors"
                        + (f", {r['skipped']} arrivals with every device busy" if r["skipped"] else "")
                        + (f" (+ {r['db_ms']:.3f} ms PostgreSQL backend CPU)" if database_url else "")
                        + (f"   target <= {goal} ms" if goal else "")
                        + f"   | load {r['load'][0]:.2f}->{r['load'][1]:.2f}, others {r['others']:.2f} cores",  # type: ignore[index]
                        flush=True,
                    )
            finally:
                await fleet.close()

        asyncio.run(main())
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=200, help="devices enrolled, each its own connection")
    ap.add_argument("--rates", default="100,500,max", help="check-ins per second, or max (flat out)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0, help="length of one round")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds at each rate before measuring")
    ap.add_argument("--quiet", type=float, default=4.0, help="seconds without traffic (background CPU)")
    ap.add_argument("--concurrency", type=int, default=8, help="enrollments at once")
    ap.add_argument("--db", default="sqlite,postgres")
    ap.add_argument("--workers", type=int, default=1, help="server processes (PostgreSQL only when > 1)")
    ap.add_argument(
        "--only",
        choices=["enroll"],
        default=None,
        help="enroll: the full-enrollment figure only (no background or check-in rounds)",
    )
    args = ap.parse_args()
    print(f"machine: {machine()} | load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    pg_admin = os.environ.get("POMONA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    for db_name in args.db.split(","):
        url = None
        if db_name == "postgres":
            url = fresh_pg_database(pg_admin)
            if url is None:
                continue
        try:
            run(db_name, url, args)
        finally:
            if url:
                drop_pg_database(pg_admin, url)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
