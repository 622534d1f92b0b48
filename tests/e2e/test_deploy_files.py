"""deploy/: each shipped file is checked by its real tool (systemd-analyze, nginx -t, caddy validate), and
the proxy configurations carry a real enrollment: `pomona serve` behind nginx and behind Caddy, the shipped
file adapted only in its ports, paths and certificate, a virtual device enrolling over HTTPS through it and
answering a command queued through it.

systemd is not PID 1 in this container, and does not need to be: `systemd-analyze verify` loads a unit
file offline (it checks every directive and that ExecStart's program exists) and `systemd-analyze
security --offline=yes` scores its hardening without a running manager. What cannot be checked here is
systemd STARTING the unit (the sandbox really applied); docs/deploy.md's systemctl lines are not run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy_support import (
    DEPLOY,
    ProxyCert,
    caddy_config,
    caddy_env,
    make_cert,
    nginx_main,
    nginx_site,
    stop,
    tool,
    wait_for,
)
from helpers import LiveServer, TenantSetup, free_port, setup_tenant, start_server
from pomona.app import Settings, build
from pomona.testing.virtual_device import VirtualDevice

UNITS = DEPLOY / "systemd"
PORTAL_UPN = "pia@acme.example"
PASSWORD = "portal-pass-1"
VENV_POMONA = str(Path(sys.executable).parent / "pomona")


def unit_here(tmp_path: Path, name: str) -> Path:
    """The shipped unit with ExecStart's /opt/pomona (docs/deploy.md's venv) as this machine's venv:
    verify checks that the program exists."""
    text = (UNITS / name).read_text()
    assert name.endswith(".timer") or "/opt/pomona/bin/pomona" in text
    out = tmp_path / name
    out.write_text(text.replace("/opt/pomona/bin/pomona", VENV_POMONA))
    return out


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("systemd-analyze"), *args], capture_output=True, text=True, timeout=60, check=False
    )


class TestSystemdUnits:
    @pytest.mark.parametrize("names", [["pomona.service"], ["pomona-backup.service", "pomona-backup.timer"]])
    def test_verify_is_clean(self, tmp_path: Path, names: list[str]) -> None:
        """`systemd-analyze verify` accepts the units with no warning at all (an unknown or misspelt
        directive is only a warning to systemd, so any output fails here)."""
        paths = [str(unit_here(tmp_path, n)) for n in names]
        done = analyze("verify", *paths)
        assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stderr

    def test_verify_catches_a_mistake(self, tmp_path: Path) -> None:
        """The check can fail: a misspelt directive in the shipped unit is reported."""
        unit = unit_here(tmp_path, "pomona.service")
        unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
        done = analyze("verify", str(unit))
        assert "Unknown key" in done.stderr

    @pytest.mark.parametrize("name,most", [("pomona.service", 2.0), ("pomona-backup.service", 1.0)])
    def test_hardening_score(self, tmp_path: Path, name: str, most: float) -> None:
        """`systemd-analyze security --offline` rates the service's exposure low (0 is best, 10 worst)."""
        done = analyze("security", "--offline=yes", str(unit_here(tmp_path, name)))
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
        assert m, done.stdout + done.stderr
        assert float(m.group(1)) <= most, done.stdout

    def test_service_shape(self) -> None:
        """The service runs `pomona serve` on 127.0.0.1:8080 as the user pomona, with the environment file,
        a private data folder under /var/lib/pomona and the hardening the deployment guide promises."""
        text = (UNITS / "pomona.service").read_text()
        lines = set(text.splitlines())
        for line in (
            "User=pomona",
            "EnvironmentFile=/etc/pomona/pomona.env",
            "ExecStart=/opt/pomona/bin/pomona serve --host 127.0.0.1 --port 8080",
            "StateDirectory=pomona",
            "StateDirectoryMode=0700",
            "ReadWritePaths=/var/lib/pomona",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "Restart=on-failure",
        ):
            assert line in lines, line
        env = (DEPLOY / "pomona.env").read_text()
        assert "POMONA_DATA_DIR=/var/lib/pomona\n" in env
        assert "POMONA_TRUSTED_PROXIES=127.0.0.1,::1\n" in env
        Settings.from_environ(
            dict(line.split("=", 1) for line in env.splitlines() if line.strip() and not line.startswith("#"))
        )


class TestProxyConfigsParse:
    def test_nginx_t(self, tmp_path: Path) -> None:
        """`nginx -t` accepts the shipped site (test-made certificate, a temporary prefix)."""
        cert = make_cert(tmp_path)
        site = tmp_path / "pomona.conf"
        site.write_text(nginx_site(https_port=8443, http_port=8081, upstream_port=8080, cert=cert))
        conf = nginx_main(tmp_path, site)
        done = subprocess.run(
            [tool("nginx"), "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True
        )
        assert done.returncode == 0 and "test is successful" in done.stderr, done.stderr
        assert "[warn]" not in done.stderr, done.stderr

    def test_nginx_t_catches_a_mistake(self, tmp_path: Path) -> None:
        """The check can fail: a misspelt directive is refused."""
        cert = make_cert(tmp_path)
        site = tmp_path / "pomona.conf"
        text = nginx_site(https_port=8443, http_port=8081, upstream_port=8080, cert=cert)
        site.write_text(text.replace("proxy_request_buffering", "proxy_request_bufering"))
        done = subprocess.run(
            [tool("nginx"), "-t", "-p", str(tmp_path), "-c", str(nginx_main(tmp_path, site))],
            capture_output=True,
            text=True,
        )
        assert done.returncode != 0

    def test_caddy_validate(self, tmp_path: Path) -> None:
        """`caddy validate` accepts the shipped Caddyfile as it is (automatic HTTPS for mdm.example.com),
        and it is formatted as `caddy fmt` writes it (Caddy warns otherwise)."""
        caddyfile = DEPLOY / "caddy" / "Caddyfile"
        done = subprocess.run(
            [tool("caddy"), "validate", "--config", str(caddyfile), "--adapter", "caddyfile"],
            capture_output=True,
            text=True,
            env=caddy_env(tmp_path),
            timeout=60,
        )
        assert done.returncode == 0 and "Valid configuration" in done.stdout + done.stderr, done.stderr
        assert '"level":"warn"' not in done.stderr, done.stderr
        fmt = subprocess.run([tool("caddy"), "fmt", str(caddyfile)], capture_output=True, text=True)
        assert fmt.stdout == caddyfile.read_text()

    def test_caddy_validate_catches_a_mistake(self, tmp_path: Path) -> None:
        """The check can fail: a misspelt directive is refused."""
        bad = tmp_path / "Caddyfile"
        bad.write_text((DEPLOY / "caddy" / "Caddyfile").read_text().replace("reverse_proxy", "reverse_proxi"))
        done = subprocess.run(
            [tool("caddy"), "validate", "--config", str(bad), "--adapter", "caddyfile"],
            capture_output=True,
            text=True,
            env=caddy_env(tmp_path),
            timeout=60,
        )
        assert done.returncode != 0


# --- a real enrollment through each proxy ----------------------------------------------------------------
@pytest.fixture
def cert(tmp_path: Path) -> ProxyCert:
    return make_cert(tmp_path)


def pomona_behind(tmp_path: Path, https_port: int) -> tuple[LiveServer, TenantSetup]:
    """A tenant whose public URL is the proxy's, and `pomona serve` trusting the proxy's headers."""
    data = tmp_path / "data"
    public = f"https://127.0.0.1:{https_port}"
    p = build(Settings(data_dir=data, public_url=public))
    try:
        setup = setup_tenant(p, "acme")
        p.admin.create_user("acme", PORTAL_UPN, password=PASSWORD)
        p.policy.licence("acme", PORTAL_UPN, assign=True)
    finally:
        p.close()
    server = start_server(data, public_url=public, env={"POMONA_TRUSTED_PROXIES": "127.0.0.1,::1"})
    return server, setup


def enroll_and_command(base: str, setup: TenantSetup, cert: ProxyCert) -> None:
    """A virtual device enrolls through the proxy over HTTPS, a command is queued through the proxy with
    the admin API, and the device answers it on its command channel (through the proxy)."""
    with httpx.Client(verify=cert.context(), timeout=30) as client:
        device = VirtualDevice(setup.enroll_url, client=client)
        device.enroll()
        assert device.server_url is not None and device.server_url.startswith(base + "/mdm/")
        r = client.post(
            f"{base}/api/v1/tenants/acme/commands",
            headers={"Authorization": f"Bearer {setup.admin_token}"},
            json={"request_type": "DeviceInformation", "devices": [device.udid]},
        )
        assert r.status_code == 201, r.text
        assert [c.status for c in device.poll()] == ["Acknowledged"]


def sign_in(base: str, cert: ProxyCert, local: str, password: str) -> int:
    """One portal sign-in as a browser makes it, from the loopback address ``local``, through the proxy."""
    transport = httpx.HTTPTransport(local_address=local, verify=cert.context())
    with httpx.Client(base_url=base, transport=transport, timeout=30) as c:
        page = c.get("/portal/acme/signin")
        m = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
        assert m, page.text[:300]
        r = c.post("/portal/acme/signin", data={"csrf": m.group(1), "upn": PORTAL_UPN, "password": password})
        return r.status_code


def clients_told_apart(base: str, cert: ProxyCert) -> None:
    """Pomona sees each client's own address behind the proxy (X-Forwarded-For from a trusted proxy):
    ten failed sign-ins from 127.0.0.2 lock out 127.0.0.2 only; 127.0.0.3 signs in. Were the proxy's
    headers missing or not believed, both would be the proxy's 127.0.0.1, and both locked out."""
    for _ in range(10):
        assert sign_in(base, cert, "127.0.0.2", "wrong-password") == 401
    assert sign_in(base, cert, "127.0.0.2", PASSWORD) == 429
    assert sign_in(base, cert, "127.0.0.3", PASSWORD) in (200, 303)


@pytest.fixture
def behind_nginx(tmp_path: Path, cert: ProxyCert) -> Iterator[tuple[str, TenantSetup]]:
    https_port, http_port = free_port(), free_port()
    server, setup = pomona_behind(tmp_path, https_port)
    upstream = int(server.url.rsplit(":", 1)[1])
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    site = prefix / "pomona.conf"
    site.write_text(nginx_site(https_port=https_port, http_port=http_port, upstream_port=upstream, cert=cert))
    log = prefix / "error.log"
    proc = subprocess.Popen(
        [tool("nginx"), "-p", str(prefix), "-c", str(nginx_main(prefix, site)), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"https://127.0.0.1:{https_port}"
    try:
        wait_for(f"{base}/healthz", proc, log, verify=cert.context())
        yield base, setup
    finally:
        stop(proc)
        server.stop()


@pytest.fixture
def behind_caddy(tmp_path: Path, cert: ProxyCert) -> Iterator[tuple[str, TenantSetup]]:
    https_port = free_port()
    server, setup = pomona_behind(tmp_path, https_port)
    upstream = int(server.url.rsplit(":", 1)[1])
    home = tmp_path / "caddy"
    home.mkdir()
    caddyfile = home / "Caddyfile"
    caddyfile.write_text(caddy_config(https_port=https_port, upstream_port=upstream, cert=cert))
    log = home / "caddy.log"
    proc = subprocess.Popen(
        [tool("caddy"), "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=caddy_env(home),
    )
    base = f"https://127.0.0.1:{https_port}"
    try:
        wait_for(f"{base}/healthz", proc, log, verify=cert.context())
        yield base, setup
    finally:
        stop(proc)
        server.stop()


class TestThroughTheProxies:
    def test_enroll_through_nginx(self, behind_nginx: tuple[str, TenantSetup], cert: ProxyCert) -> None:
        """Behind the shipped nginx site, a device enrolls over HTTPS and answers a queued command, and
        Pomona tells clients apart by the address nginx forwards."""
        base, setup = behind_nginx
        enroll_and_command(base, setup, cert)
        clients_told_apart(base, cert)

    def test_nginx_streams_device_bodies(
        self, behind_nginx: tuple[str, TenantSetup], cert: ProxyCert, tmp_path: Path
    ) -> None:
        """A 100 KiB check-in body goes to Pomona as it arrives (no temporary file: nginx would log that
        it buffered it), while an admin API body of that size is buffered as usual (the check can fail)."""
        base, setup = behind_nginx
        log = tmp_path / "nginx" / "error.log"
        body = b"x" * (100 * 1024)
        with httpx.Client(verify=cert.context(), timeout=30) as client:
            r = client.put(
                f"{base}/mdm/{setup.tenant_id}/checkin",
                content=body,
                headers={"Content-Type": "application/x-apple-aspen-mdm-checkin"},
            )
            assert r.status_code in (400, 401), r.text
            assert "buffered to a temporary file" not in log.read_text()
            client.post(
                f"{base}/api/v1/tenants/acme/users",
                content=body,
                headers={"Authorization": f"Bearer {setup.admin_token}", "Content-Type": "application/json"},
            )
        assert "buffered to a temporary file" in log.read_text()

    def test_enroll_through_caddy(self, behind_caddy: tuple[str, TenantSetup], cert: ProxyCert) -> None:
        """Behind the shipped Caddyfile, a device enrolls over HTTPS and answers a queued command, and
        Pomona tells clients apart by the address Caddy forwards."""
        base, setup = behind_caddy
        enroll_and_command(base, setup, cert)
        clients_told_apart(base, cert)
