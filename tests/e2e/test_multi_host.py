"""Several hosts (issue 14): two `pomona serve` processes on one PostgreSQL database, each with its own data
folder holding the same server key, behind the shipped deploy/nginx/pomona-multi.conf (adapted only in its
ports, backends and certificate). Virtual devices enroll, check in and answer pushed commands through
nginx while the backend that leads the singleton jobs is SIGKILLed and then restarted."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import psycopg
import pytest

from deploy_support import ProxyCert, make_cert, nginx_main, nginx_multi_site, stop, tool, wait_for
from helpers import LiveServer, free_port, start_server
from pomona.app import Settings, build
from pomona.services.jobs import LEASE_RENEW, LEASE_TTL
from pomona.testing.apns_emulator import ApnsEmulator
from pomona.testing.keypool import KeyPool
from pomona.testing.virtual_device import EnrollmentRefused, VirtualDevice

DEVICES = 20
FIRST = 12  # enrolled before the kill; the others enroll while it happens
RETRIES = 4  # a device sends a failed request again this many times (after 0.2, 0.4, 0.8, 1.6 s)
UPN = "fleet@acme.example"
PASSWORD = "portal-pass-1"
WAIT = 30.0  # a guard against hanging, not a timing assertion
T = TypeVar("T")


def transient(exc: BaseException) -> bool:
    """A failure a device outlives by trying again later: no answer, or the proxy's 502/503/504."""
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, EnrollmentRefused) and exc.status in (502, 503, 504)


@dataclass
class Device:
    """A virtual device that, as an iPhone does, holds one connection to the server at a time and tries
    a failed request again a few times before giving up."""

    vd: VirtualDevice
    retried: int = 0
    failure: str | None = None
    ready: bool = False  # enrolled: it checks in from now on
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attempt(self, step: Callable[[], T]) -> T:
        for i in range(RETRIES + 1):
            try:
                return step()
            except Exception as exc:
                if not transient(exc) or i == RETRIES:
                    raise
                self.retried += 1
                time.sleep(0.2 * 2**i)
        raise AssertionError("unreachable")

    def enroll(self) -> None:
        try:
            with self.lock:
                self.attempt(self.vd.download)
                self.attempt(self.vd.run_scep)
                self.attempt(self.vd.complete_enrollment)
            self.ready = True
        except Exception as exc:  # noqa: BLE001 - counted and asserted on, never lost
            self.failure = self.failure or f"enroll: {exc!r}"

    def poll(self) -> None:
        if self.failure is not None or not self.ready or not self.vd.enrolled:
            return
        try:
            with self.lock:
                self.attempt(self.vd.poll)
        except Exception as exc:  # noqa: BLE001
            self.failure = f"poll: {exc!r}"


@dataclass
class Site:
    base: str
    enroll_url: str
    cert: ProxyCert
    pg_url: str
    admin_token: str
    servers: list[LiveServer]
    env: dict[str, str]
    access_log: Path
    emu: ApnsEmulator

    def client(self) -> httpx.Client:
        return httpx.Client(verify=self.cert.context(), timeout=30)

    def queue(self, request_type: str, udids: list[str]) -> list[str]:
        """Queue one command for each device with the admin API, through nginx."""
        with self.client() as c:
            r = c.post(
                f"{self.base}/api/v1/tenants/acme/commands",
                headers={"Authorization": f"Bearer {self.admin_token}"},
                json={"request_type": request_type, "devices": udids},
            )
        assert r.status_code == 201, r.text
        return [x["command_uuid"] for x in r.json()["commands"]]

    def restart(self, index: int) -> None:
        old = self.servers[index]
        port = int(old.url.rsplit(":", 1)[1])
        self.servers[index] = start_server(
            old.data_dir, self.pg_url, port=port, public_url=self.base, env=self.env
        )


def backend_env(emu: ApnsEmulator) -> dict[str, str]:
    return {
        "POMONA_APNS_URL": emu.url,
        "POMONA_APNS_CA": str(emu.ca_path),
        "POMONA_PUSH_REPUSH": "2,4,8",
        "POMONA_PUSH_RETRY_BASE": "0.5",
        "POMONA_PUSH_POLL": "0.2",
        "POMONA_TRUSTED_PROXIES": "127.0.0.1",  # the load balancer (10.0.0.10 in the shipped file)
    }


@pytest.fixture
def site(tmp_path: Path, pg_url: str) -> Iterator[Site]:
    """The tenant set up as an admin would, two backends (data folders a/ and b/, the server key copied
    from one to the other as docs/deploy.md says), and nginx in front of them."""
    cert = make_cert(tmp_path)
    https_port, http_port = free_port(), free_port()
    base = f"https://127.0.0.1:{https_port}"
    dirs = [tmp_path / "a", tmp_path / "b"]
    servers: list[LiveServer] = []
    proc: subprocess.Popen[bytes] | None = None
    with ApnsEmulator.start(seed=14, delivery_workers=4) as emu:
        p = build(Settings(data_dir=dirs[0], database_url=pg_url, public_url=base, push_worker=False))
        try:
            p.admin.create_tenant("acme", "acme.example")
            push_cert, key = emu.issue_push_cert()
            p.apns.upload("acme", push_cert, key, apple_id="mdm@acme.example", canary=False)
            p.admin.set_authority("acme", "pomona")
            p.policy.set_seats("acme", 10)
            p.admin.create_user("acme", UPN, password=PASSWORD)
            p.policy.licence("acme", UPN, assign=True)
            p.policy.set_user_flags("acme", UPN, is_dem=True)  # no per-user device limit
            enroll_url = p.enrollment.urls.enroll(
                p.admin.create_enrollment_token("acme", UPN, uses=DEVICES * 4).secret
            )
            token = p.admin.create_api_token("acme").secret
        finally:
            p.close()
        dirs[1].mkdir(mode=0o700)
        shutil.copy2(dirs[0] / "server.key", dirs[1] / "server.key")
        env = backend_env(emu)
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        try:
            with ThreadPoolExecutor(2) as ex:  # both start at once, as two hosts would
                servers = list(ex.map(lambda d: start_server(d, pg_url, public_url=base, env=env), dirs))
            ports = [int(s.url.rsplit(":", 1)[1]) for s in servers]
            conf = prefix / "pomona-multi.conf"
            conf.write_text(
                nginx_multi_site(https_port=https_port, http_port=http_port, backends=ports, cert=cert)
            )
            main = nginx_main(prefix, conf)
            access_log = prefix / "access.log"
            main.write_text(
                main.read_text().replace(
                    "    access_log off;\n",
                    f"    log_format upstreams '$upstream_addr $status $request_method $uri';\n"
                    f"    access_log {access_log} upstreams;\n",
                )
            )
            proc = subprocess.Popen(
                [tool("nginx"), "-p", str(prefix), "-c", str(main), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for(f"{base}/healthz", proc, prefix / "error.log", verify=cert.context())
            yield Site(base, enroll_url, cert, pg_url, token, servers, env, access_log, emu)
        finally:
            if proc is not None:
                stop(proc)
            for server in servers:  # both stop at once
                if server.process.poll() is None:
                    server.process.terminate()
            for server in servers:
                server.stop()


def lease_holder_pid(pg_url: str, name: str) -> int | None:
    """The process that holds the lease ``name`` now, read from the leases table (holder: host:pid:random)."""
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT holder FROM leases WHERE name = %s AND expires_at > %s", (name, time.time())
        ).fetchone()
    return None if row is None else int(str(row[0]).split(":")[-2])


def wait_for_lease(pg_url: str, pids: set[int], within: float) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pid = lease_holder_pid(pg_url, "health")
        if pid in pids:
            return pid
        time.sleep(0.2)
    raise AssertionError(
        f"no process of {pids} holds the health lease ({lease_holder_pid(pg_url, 'health')})"
    )


def upstream_ports(log: Path, start: int = 0) -> Counter[str]:
    """Which backend port answered each device request in nginx's access log (from line ``start``)."""
    lines = log.read_text().splitlines()[start:]
    return Counter(
        line.split()[0].rsplit(":", 1)[-1] for line in lines if " /mdm/" in line and line.split()[1] == "200"
    )


def sign_in(s: Site, local: str, password: str) -> int:
    """One portal sign-in from the loopback address ``local``, through nginx (a new connection each)."""
    transport = httpx.HTTPTransport(local_address=local, verify=s.cert.context())
    with httpx.Client(base_url=s.base, transport=transport, timeout=30) as c:
        page = c.get("/portal/acme/signin")
        m = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
        assert m, page.text[:300]
        return c.post(
            "/portal/acme/signin", data={"csrf": m.group(1), "upn": UPN, "password": password}
        ).status_code


class TestMultiHost:
    def test_nginx_t(self, tmp_path: Path) -> None:
        """`nginx -t` accepts the shipped several-hosts site without a warning."""
        cert = make_cert(tmp_path)
        site_conf = tmp_path / "pomona-multi.conf"
        site_conf.write_text(
            nginx_multi_site(https_port=8443, http_port=8081, backends=[8080, 8082], cert=cert)
        )
        done = subprocess.run(
            [tool("nginx"), "-t", "-p", str(tmp_path), "-c", str(nginx_main(tmp_path, site_conf))],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0 and "test is successful" in done.stderr, done.stderr
        assert "[warn]" not in done.stderr, done.stderr

    @pytest.mark.postgres
    def test_a_host_without_the_server_key_refuses_to_start(self, tmp_path: Path, pg_url: str) -> None:
        """A second host on the database whose data folder lacks the first host's server key (it would
        make a key of its own) does not start: SERVER_KEY_MISMATCH, as docs/deploy.md says."""
        p = build(
            Settings(data_dir=tmp_path / "a", database_url=pg_url, public_url="https://mdm.example.com")
        )
        try:
            p.admin.create_tenant("acme", "acme.example")  # its CA key is sealed with a/'s key
        finally:
            p.close()
        (tmp_path / "c").mkdir(mode=0o700)
        with pytest.raises(RuntimeError, match="SERVER_KEY_MISMATCH"):
            start_server(tmp_path / "c", pg_url).stop()

    @pytest.mark.postgres
    def test_a_backend_killed_under_load(self, site: Site) -> None:
        """Devices enroll, check in and answer pushed commands through nginx while the leading backend is
        SIGKILLed and restarted: every command is acknowledged once, every device has one enrollment, no
        device fails beyond its retries, the lease moves within its lifetime, the restarted backend
        serves again, and the sign-in lockout (shared, per forwarded client) holds across both."""
        pool = KeyPool.load_or_create(None, DEVICES)
        clients = [site.client() for _ in range(4)]
        devices = [
            Device(VirtualDevice(site.enroll_url, key=pool.take(), client=clients[i % 4]))
            for i in range(DEVICES)
        ]
        stopping = threading.Event()

        def enroll(d: Device) -> None:
            d.enroll()
            if d.vd.push_token is not None:
                site.emu.register(d.vd.push_token, d.poll)  # a push wakes the device: it polls

        def check_in_forever() -> None:
            while not stopping.is_set():
                for d in devices:
                    d.poll()
                time.sleep(0.2)

        checker: threading.Thread | None = None
        by_pid = {s.process.pid: i for i, s in enumerate(site.servers)}
        uuids: list[str] = []
        try:
            with ThreadPoolExecutor(4) as ex:
                list(ex.map(enroll, devices[:FIRST]))
            leader = wait_for_lease(site.pg_url, set(by_pid), within=10)
            victim = by_pid[leader]
            checker = threading.Thread(target=check_in_forever, daemon=True)
            checker.start()
            uuids += site.queue("DeviceInformation", [d.vd.udid for d in devices[:FIRST]])
            with ThreadPoolExecutor(4) as ex:
                late = ex.map(enroll, devices[FIRST:])
                time.sleep(0.3)  # pushes, polls and enrollments are under way
                site.servers[victim].process.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                site.servers[victim].process.wait(10)
                list(late)
            uuids += site.queue("SecurityInfo", [d.vd.udid for d in devices])  # through the survivor
            (survivor,) = set(by_pid) - {leader}
            assert wait_for_lease(site.pg_url, {survivor}, within=LEASE_TTL + 3 * LEASE_RENEW) == survivor
            took_over = time.monotonic() - killed_at
            seen = len(site.access_log.read_text().splitlines())
            site.restart(victim)
            restarted = site.servers[victim].url.rsplit(":", 1)[1]
            back = time.monotonic() + WAIT  # nginx tries it again after fail_timeout (5 s)
            while time.monotonic() < back and not upstream_ports(site.access_log, seen)[restarted]:
                time.sleep(0.2)
            uuids += site.queue("DeviceInformation", [d.vd.udid for d in devices])
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline and _acknowledged(site.pg_url, uuids) < len(uuids):
                time.sleep(0.25)
        finally:
            stopping.set()
            for d in devices:  # no push wakes a device after the test
                if d.vd.push_token is not None:
                    site.emu.unregister(d.vd.push_token)
            if checker is not None:
                checker.join(WAIT)
            for c in clients:
                c.close()
        assert took_over <= LEASE_TTL + 3 * LEASE_RENEW
        assert {d.vd.udid: d.failure for d in devices if d.failure} == {}
        assert _acknowledged(site.pg_url, uuids) == len(uuids) == FIRST + 2 * DEVICES
        results = _result_events(site.pg_url)
        assert {u: results[u] for u in uuids if results[u] != 1} == {}  # acknowledged exactly once
        assert _active_enrollments(site.pg_url) == {d.vd.udid: 1 for d in devices}
        assert upstream_ports(site.access_log, seen)[restarted] > 0  # back in rotation
        assert len(upstream_ports(site.access_log)) == 2
        pushes = site.emu.stats()
        # Most commands wake their device by push (a device that fetched its command on its own is not
        # pushed), sent by whichever backend's push worker got to it.
        assert pushes.delivered >= DEVICES // 2 and pushes.delivery_errors == 0
        print(
            f"lease moved in {took_over:.1f} s; pushes delivered: {pushes.delivered}; "
            f"device retries: {sum(d.retried for d in devices)}; "
            f"device requests by backend: {dict(upstream_ports(site.access_log))}"
        )
        # Clients told apart by the address nginx forwards, with the counts shared by both backends:
        # ten failures from 127.0.0.2, spread over the two, lock 127.0.0.2 out and nobody else.
        for _ in range(10):
            assert sign_in(site, "127.0.0.2", "wrong-password") == 401
        assert sign_in(site, "127.0.0.2", PASSWORD) == 429
        assert sign_in(site, "127.0.0.3", PASSWORD) in (200, 303)


def _acknowledged(pg_url: str, uuids: list[str]) -> int:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM commands WHERE command_uuid = ANY(%s) AND status = 'Acknowledged'", (uuids,)
        ).fetchone()
    return int(row[0]) if row else 0


def _result_events(pg_url: str) -> Counter[str]:
    """How many results the server recorded for each command (one event per result it stored)."""
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT detail FROM events WHERE step = 'command' AND outcome = 'ok'").fetchall()
    return Counter(str(json.loads(r[0]).get("command_uuid")) for r in rows if r[0])


def _active_enrollments(pg_url: str) -> dict[str, int]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT udid, count(*) FROM enrollments WHERE status = 'active' GROUP BY udid"
        ).fetchall()
    return {str(u): int(n) for u, n in rows}
