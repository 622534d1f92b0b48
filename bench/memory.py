#!/usr/bin/env python3
"""Memory of `pomona serve` (a real process, SQLite) with 100,000 enrolled devices (issue 14, item 5).

    PYTHONPATH=src python bench/memory.py [--devices 100000] [--enrolled 1000] [--soak-seconds 600]
                                          [--warmup-seconds 330]
                                          [--sample 5] [--rate 100] [--command-rate 5] [--web-rate 2]

The database is seeded with ``--devices`` less ``--enrolled`` devices and their active enrollments (bulk
inserts, bench/console.py's seed: users, groups, a failure roll-up and its events too), then the server
starts and ``--enrolled`` virtual devices enroll through it for real (profile, SCEP, Authenticate,
TokenUpdate), so that their signed check-ins are accepted. Printed, with the load average beside each:

- RSS at rest: after start-up and a first request, then after the enrollments (and a pause);
- RSS while every enrolled device checks in at once (``--waves`` waves: one connection per device,
  all opened, then every signed idle check-in sent at once), sampled every 20 ms: the peak;
- RSS over a mixed soak of ``--soak-seconds``, sampled every ``--sample`` seconds: paced idle check-ins
  over the whole fleet (keep-alive connections, ``--rate`` per second), commands queued through the
  admin API and fetched and answered by the devices (``--command-rate``), and console, portal and API
  pages (``--web-rate``). The same traffic runs ``--warmup-seconds`` first, not judged: the server's
  scheduled jobs (the health round, the ADE release watch) first run 5 minutes after its start, and a
  first run loads what only it uses (modules, statements prepared on the pool's connections), once.
  Over the soak itself: the difference, each minute's peak, and the trend (least squares), which
  decides: RSS moves by 1-4 MB within a minute, so two single samples differ by that much either way
  (GROWTH_LIMIT).

RSS is the server's (and its workers'), from /proc/<pid>/status. Targets: < 150 MB at rest, < 250 MB
under the 1,000 concurrent check-ins, no growth over the soak (a trend under GROWTH_LIMIT).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from _common import machine, server_pids, setup_tenant, signed_idle_requests, start_server
from checkin import Fleet
from console import seed

from pomona.app import Settings, build
from pomona.testing.keypool import KeyPool
from pomona.testing.virtual_device import VirtualDevice

EMAIL = "bench-admin@acme.example"
PASSWORD = "bench-password-1"


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares MB per second of (seconds, MB) samples: a leak keeps it above zero; a cache that
    fills once (a step, then flat) does not."""
    if len(samples) < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / len(samples)
    mm = sum(mb for _, mb in samples) / len(samples)
    var = sum((t - mt) ** 2 for t, _ in samples)
    return sum((t - mt) * (mb - mm) for t, mb in samples) / var if var else 0.0


#: The soak's "no growth": a least-squares trend under this many MB per minute. RSS moves up and down by
#: 2-4 MB within a minute (glibc's heap between two hand-backs of its free pages, services/jobs.py
#: Background.trim), so the first and last samples alone differ by that much either way; a leak of a
#: few hundred bytes per request shows as a steady trend of a megabyte a minute or more at these rates.
GROWTH_LIMIT = 0.1


def minute_peaks(samples: list[tuple[float, float]]) -> list[float]:
    """The highest RSS of each whole minute of (seconds, MB) samples, from the first sample on (a last
    minute cut short is left out)."""
    if not samples:
        return []
    t0 = samples[0][0]
    peaks: dict[int, float] = {}
    for t, mb in samples:
        k = int((t - t0) // 60)
        peaks[k] = max(peaks.get(k, 0.0), mb)
    last = int((samples[-1][0] - t0) // 60)
    return [peaks[k] for k in sorted(peaks) if k < last]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Sampler:
    """RSS of the server every ``interval`` seconds, on a thread, until stopped."""

    def __init__(self, pids: list[int], interval: float, *, echo: bool = False) -> None:
        self.pids, self.interval, self.echo = pids, interval, echo
        self.samples: list[tuple[float, float]] = []
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.perf_counter()

    def _run(self) -> None:
        while not self._stop.is_set():
            t, mb = time.perf_counter() - self.t0, rss_mb(self.pids)
            self.samples.append((t, mb))
            if self.echo:
                done = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
                print(f"  {t:6.0f} s  RSS {mb:6.1f} MB   ({done})   | load {load()}", flush=True)
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter() - self.t0, rss_mb(self.pids)))

    def peak(self) -> float:
        return max(mb for _, mb in self.samples)


async def all_at_once(host: str, port: int, requests: list[bytes]) -> tuple[int, int]:
    """One connection per device, all opened, then every request sent at once: (answered 200, errors)."""
    conns = await asyncio.gather(*(asyncio.open_connection(host, port) for _ in requests))
    ok = errors = 0

    async def one(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes) -> bool:
        reader, writer = conn
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            return head[9:12] == b"200"
        except (ConnectionError, asyncio.IncompleteReadError):
            return False
        finally:
            writer.close()

    for good in await asyncio.gather(*(one(c, r) for c, r in zip(conns, requests, strict=True))):
        ok, errors = ok + good, errors + (not good)
    return ok, errors


def console_client(url: str) -> httpx.Client:
    """A signed-in console session. The console's cookies are Secure and this server is plain http: the
    client keeps them itself (httpx would not send a Secure cookie over http)."""
    jar: dict[str, str] = {}

    def keep(response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            jar[name.strip()] = rest.split(";", 1)[0]

    def send(request: httpx.Request) -> None:
        request.headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())

    c = httpx.Client(
        base_url=url, follow_redirects=False, timeout=60, event_hooks={"request": [send], "response": [keep]}
    )
    html = c.get("/console/signin").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    r = c.post("/console/signin", data={"csrf": csrf, "email": EMAIL, "password": PASSWORD})
    assert r.status_code == 303, (r.status_code, r.text[:300])
    return c


def commands_loop(
    url: str,
    token: str,
    devices: list[VirtualDevice],
    rate: float,
    stop: threading.Event,
    counts: dict[str, int],
) -> None:
    """Queue a command for the next device through the admin API; the device fetches and answers it."""
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    rng = random.Random(5)
    i = 0
    while not stop.is_set():
        d = devices[i % len(devices)]
        i += 1
        try:
            kind = rng.choice(["DeviceInformation", "SecurityInfo", "InstalledApplicationList"])
            r = api.post(
                "/api/v1/tenants/bench/commands",
                json={"request_type": kind, "devices": [d.udid], "push": False},
            )
            assert r.status_code == 201, r.text[:200]
            handled = d.poll()
            counts["commands"] = counts.get("commands", 0) + len(handled)
        except Exception as exc:  # noqa: BLE001 - counted; the soak goes on
            counts["command errors"] = counts.get("command errors", 0) + 1
            if counts["command errors"] <= 3:
                print(f"  command error: {exc!r}"[:300], flush=True)
        stop.wait(1 / rate)


def web_loop(
    url: str, token: str, udid: str, rate: float, stop: threading.Event, counts: dict[str, int]
) -> None:
    """Console, portal and admin API pages in turn."""
    console = console_client(url)
    first = console.get("/console/t/bench/devices").text
    device = re.search(r'data-device="([^"]+)"', first).group(1)  # type: ignore[union-attr]
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    anon = httpx.Client(base_url=url, timeout=60)
    pages = [
        (console, "/console/t/bench"),
        (console, "/console/t/bench/devices"),
        (console, "/console/t/bench/devices?q=Device+0042"),
        (console, f"/console/t/bench/devices/{device}"),
        (console, "/console/t/bench/users"),
        (console, "/console/t/bench/reports"),
        (anon, "/portal/bench/signin"),
        (api, "/api/v1/tenants/bench/devices?limit=50"),
        (api, f"/api/v1/tenants/bench/devices/{udid}"),
        (api, "/api/v1/tenants/bench/events?limit=50"),
    ]
    i = 0
    while not stop.is_set():
        client, path = pages[i % len(pages)]
        i += 1
        try:
            r = client.get(path)
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        key = "pages" if ok else "page errors"
        counts[key] = counts.get(key, 0) + 1
        if not ok and counts[key] <= 3:
            print(f"  page error: {path}", flush=True)
        stop.wait(1 / rate)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=100_000, help="enrolled devices in all (seeded + real)")
    ap.add_argument("--enrolled", type=int, default=1000, help="of which enroll through the server")
    ap.add_argument("--waves", type=int, default=3, help="times every real device checks in at once")
    ap.add_argument("--soak-seconds", type=float, default=600.0)
    ap.add_argument(
        "--warmup-seconds",
        type=float,
        default=330.0,
        help="the soak's traffic before it, not judged (the scheduled jobs' first rounds: 5 min after start)",
    )
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples in the soak")
    ap.add_argument("--rate", type=float, default=100.0, help="idle check-ins per second in the soak")
    ap.add_argument("--command-rate", type=float, default=5.0, help="commands per second in the soak")
    ap.add_argument("--web-rate", type=float, default=2.0, help="console/portal/API pages per second")
    ap.add_argument("--concurrency", type=int, default=8, help="enrollments at once")
    args = ap.parse_args()
    print(f"machine: {machine()} | load {load()}", flush=True)

    import tempfile

    from helpers import free_port

    data_dir = Path(tempfile.mkdtemp(prefix="pomona-bench-memory-"))
    port = free_port()
    p = build(Settings(data_dir=data_dir, public_url=f"http://127.0.0.1:{port}"))
    try:
        setup = setup_tenant(p, "bench", uses=args.enrolled + 10)
        p.policy.set_user_flags("bench", setup.upn, is_dem=True)  # one user enrolls the real devices
        seeded = args.devices - args.enrolled
        seconds = seed(p, setup.tenant_id, seeded, max(1, seeded // 2))
        print(f"seeded {seeded} devices with active enrollments in {seconds:.0f} s", flush=True)
        p.console.create_account(EMAIL, PASSWORD, "admin", "bench")
    finally:
        p.close()

    server = start_server(data_dir, port=port)
    try:
        pids = server_pids(server)
        httpx.get(f"{server.url}/healthz")
        time.sleep(2.0)
        print(
            f"RSS at rest after start-up and a first request: {rss_mb(pids):.1f} MB   target < 150 MB"
            f"   | load {load()}",
            flush=True,
        )

        pool = KeyPool.load_or_create(None, size=args.enrolled)
        devices = [VirtualDevice(setup.enroll_url, key=pool.take()) for _ in range(args.enrolled)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as ex:
            list(ex.map(lambda d: d.enroll(), devices))
        print(
            f"enrolled {args.enrolled} devices through the server in {time.perf_counter() - t0:.0f} s "
            f"(RSS now {rss_mb(pids):.1f} MB)",
            flush=True,
        )
        time.sleep(10.0)  # idle keep-alive connections closed, the enrollments' garbage collected
        print(
            f"RSS at rest with {args.devices} enrolled devices: {rss_mb(pids):.1f} MB   target < 150 MB"
            f"   | load {load()}",
            flush=True,
        )

        host, port_, requests = signed_idle_requests(devices)
        for wave in range(1, args.waves + 1):
            with Sampler(pids, 0.02) as s:
                t0 = time.perf_counter()
                ok, errors = asyncio.run(all_at_once(host, port_, requests))
                took = time.perf_counter() - t0
            print(
                f"wave {wave}: {len(requests)} check-ins at once: {ok} answered 200, {errors} errors in "
                f"{took:.1f} s; RSS peak {s.peak():.1f} MB, after {s.samples[-1][1]:.1f} MB   target < 250 MB"
                f"   | load {load()}",
                flush=True,
            )
            time.sleep(2.0)

        print(
            f"soak: {args.soak_seconds:.0f} s after {args.warmup_seconds:.0f} s of warm-up (times below count "
            f"from the warm-up's start): idle check-ins {args.rate:g}/s, commands {args.command_rate:g}/s, "
            f"pages {args.web_rate:g}/s",
            flush=True,
        )
        stop = threading.Event()
        with Sampler(pids, args.sample, echo=True) as s:
            counts = s.counts
            threads = [
                threading.Thread(
                    target=commands_loop,
                    args=(server.url, setup.admin_token, devices, args.command_rate, stop, counts),
                    daemon=True,
                ),
                threading.Thread(
                    target=web_loop,
                    args=(server.url, setup.admin_token, devices[0].udid, args.web_rate, stop, counts),
                    daemon=True,
                ),
            ]
            for t in threads:
                t.start()

            async def checkins() -> None:
                fleet = Fleet(host, port_, requests)
                rng = random.Random(14)
                end = time.perf_counter() + args.warmup_seconds + args.soak_seconds
                try:
                    while (left := end - time.perf_counter()) > 0:
                        await fleet.paced(args.rate, min(left, args.sample), rng)
                        counts["check-ins"] = counts.get("check-ins", 0) + fleet.round.count
                        counts["check-in errors"] = counts.get("check-in errors", 0) + fleet.round.errors
                        fleet.round.count = fleet.round.errors = 0
                finally:
                    await fleet.close()

            asyncio.run(checkins())
            stop.set()
            for t in threads:
                t.join(60)
        mark = args.warmup_seconds  # the soak's start
        at_mark = next(mb for t, mb in s.samples if t >= mark)
        end_mb = s.samples[-1][1]
        after = [(t, mb) for t, mb in s.samples if t >= mark]
        half = [(t, mb) for t, mb in s.samples if t >= mark + args.soak_seconds / 2]
        trend = slope(after) * 60
        minutes = minute_peaks(after)
        print(
            f"soak: RSS {at_mark:.1f} MB at {mark:.0f} s, {end_mb:.1f} MB at the end ({end_mb - at_mark:+.1f} MB); "
            f"peak {s.peak():.1f} MB   | load {load()}",
            flush=True,
        )
        print(
            f"soak: each minute's peak from {mark:.0f} s: {' '.join(f'{mb:.1f}' for mb in minutes)} MB",
            flush=True,
        )
        print(
            f"soak: trend from {mark:.0f} s to the end {trend:+.2f} MB per minute "
            f"({trend * (s.samples[-1][0] - mark) / 60:+.1f} MB over those {(s.samples[-1][0] - mark) / 60:.0f} "
            f"minutes; least squares), over the second half {slope(half) * 60:+.2f} MB per minute   "
            f"target: no growth (a trend under {GROWTH_LIMIT:g} MB per minute)"
            f"{'' if trend < GROWTH_LIMIT else '   ** GROWING **'}",
            flush=True,
        )
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
